//! Windows' Previous Versions end to end: snapshots of a home through the
//! gateway, seen by real smbd (vfs_shadow_copy2) with smbclient and with
//! smbprotocol as a Windows client would ask (snapshot enumeration, a
//! time-warp open, a server-side copy for Restore).

mod common;

use common::gw::*;
use common::*;
use std::fs;

fn local_gw() -> Gw {
    let store = format!("local://{}/homes/{{user}}", unique_dir("pvstore").display());
    Gw::new(&store, "", &[], "service")
}

/// `swiftgate snapshot create` for a user: the snapshot's name.
fn snapshot(g: &Gw, user: &str) -> String {
    let out =
        String::from_utf8_lossy(&ok(g.sg(&["snapshot", "create", "--user", user], "")).stdout)
            .into_owned();
    out.split_whitespace()
        .find(|w| w.starts_with("@GMT-"))
        .unwrap_or_else(|| panic!("no snapshot name in {out:?}"))
        .to_string()
}

#[test]
fn previous_versions_through_samba() {
    let mut g = local_gw();
    let u = unique_user("pv");
    ok(g.add_user(&u, "pw-pv", &[]));
    let work = unique_dir("pvwork");
    fs::write(work.join("report.txt"), b"version one").unwrap();
    smb_ok(g.smbclient(&u, "pw-pv", "mkdir docs; cd docs; put report.txt", &work));
    let first = snapshot(&g, &u);
    // Snapshots are named by the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(work.join("report.txt"), b"version two, longer").unwrap();
    smb_ok(g.smbclient(&u, "pw-pv", "cd docs; put report.txt", &work));
    let second = snapshot(&g, &u);
    fs::write(work.join("report.txt"), b"version three, the live one").unwrap();
    smb_ok(g.smbclient(&u, "pw-pv", "cd docs; put report.txt", &work));

    // smbclient: allinfo lists both versions, and each reads back.
    let out = smb_ok(g.smbclient(&u, "pw-pv", r"allinfo docs\report.txt", &work));
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    smb_ok(g.smbclient(
        &u,
        "pw-pv",
        &format!(r#"get "{first}\docs\report.txt" v1.txt; get "{second}\docs\report.txt" v2.txt"#),
        &work,
    ));
    assert_eq!(fs::read(work.join("v1.txt")).unwrap(), b"version one");
    assert_eq!(
        fs::read(work.join("v2.txt")).unwrap(),
        b"version two, longer"
    );
    // Snapshots are read-only through SMB too.
    let o = g.smbclient(
        &u,
        "pw-pv",
        &format!(r#"put report.txt "{first}\docs\report.txt""#),
        &work,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("NT_STATUS_"),
        "a write into a snapshot went through: {text}"
    );

    // smbprotocol, as Explorer: enumerate the snapshots of the file, open
    // the first one with a time-warp token, and Restore it by a
    // server-side copy over the live file.
    let script = format!(
        r#"
import uuid, datetime
from smbprotocol.connection import Connection
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect
from smbprotocol.open import (Open, CreateDisposition, CreateOptions, FileAttributes,
    FilePipePrinterAccessMask, ImpersonationLevel, ShareAccess)
from smbprotocol.ioctl import (CtlCode, IOCTLFlags, SMB2IOCTLRequest, SMB2IOCTLResponse,
    SMB2SrvSnapshotArray, SMB2SrvRequestResumeKey, SMB2SrvCopyChunk, SMB2SrvCopyChunkCopy,
    SMB2SrvCopyChunkResponse)
from smbprotocol.create_contexts import (CreateContextName, SMB2CreateContextRequest,
    SMB2CreateTimewarpToken)

conn = Connection(uuid.uuid4(), "127.0.0.1", {port})
conn.connect()
sess = Session(conn, "{u}", "pw-pv", require_encryption=False)
sess.connect()
tree = TreeConnect(sess, r"\\127.0.0.1\home")
tree.connect()
SHARE = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE

def ioctl(f, code, out_size, buf=b""):
    req = SMB2IOCTLRequest()
    req["ctl_code"] = code
    req["file_id"] = f.file_id
    req["max_output_response"] = out_size
    req["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
    req["buffer"] = buf
    r = conn.send(req, sid=sess.session_id, tid=tree.tree_connect_id)
    resp = SMB2IOCTLResponse()
    resp.unpack(conn.receive(r)["data"].get_value())
    return resp["buffer"].get_value()

def open_file(path, access, disposition, contexts=None):
    f = Open(tree, path)
    f.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL,
             SHARE, disposition, CreateOptions.FILE_NON_DIRECTORY_FILE, create_contexts=contexts)
    return f

live = open_file(r"docs\report.txt", FilePipePrinterAccessMask.GENERIC_READ, CreateDisposition.FILE_OPEN)
# Samba 4.17 answers BUFFER_TOO_SMALL to a small buffer: ask with 64 KiB.
arr = SMB2SrvSnapshotArray()
arr.unpack(ioctl(live, CtlCode.FSCTL_SRV_ENUMERATE_SNAPSHOTS, 65536))
names = [n for n in arr["snapshots"].get_value().decode("utf-16-le").split("\x00") if n]
live.close()
assert arr["number_of_snapshots"].get_value() == 2, names
assert sorted(names) == sorted(["{first}", "{second}"]), names

when = datetime.datetime.strptime("{first}", "@GMT-%Y.%m.%d-%H.%M.%S").replace(tzinfo=datetime.timezone.utc)
tw = SMB2CreateTimewarpToken()
tw["timestamp"] = when
ctx = SMB2CreateContextRequest()
ctx["buffer_name"] = CreateContextName.SMB2_CREATE_TIMEWARP_TOKEN
ctx["buffer_data"] = tw
old = open_file(r"docs\report.txt", FilePipePrinterAccessMask.GENERIC_READ, CreateDisposition.FILE_OPEN, [ctx])
assert old.read(0, 100) == b"version one", "time-warp open read the wrong version"
rk = SMB2SrvRequestResumeKey()
rk.unpack(ioctl(old, CtlCode.FSCTL_SRV_REQUEST_RESUME_KEY, 32))
dst = open_file(r"docs\report.txt",
                FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
                CreateDisposition.FILE_OVERWRITE_IF)
chunk = SMB2SrvCopyChunk()
chunk["source_offset"] = 0
chunk["target_offset"] = 0
chunk["length"] = len(b"version one")
copy = SMB2SrvCopyChunkCopy()
copy["source_key"] = rk["resume_key"].get_value()
copy["chunks"] = [chunk]
res = SMB2SrvCopyChunkResponse()
res.unpack(ioctl(dst, CtlCode.FSCTL_SRV_COPYCHUNK_WRITE, 12, copy))
assert res["chunks_written"].get_value() == 1, res
dst.close()
old.close()
print("previous versions OK")
"#,
        port = g.port,
    );
    let out = run_smbprotocol(&script);
    assert!(out.contains("previous versions OK"), "{out}");
    // The restored bytes are the live file's now, for every reader.
    smb_ok(g.smbclient(&u, "pw-pv", r"get docs\report.txt restored.txt", &work));
    assert_eq!(fs::read(work.join("restored.txt")).unwrap(), b"version one");
    assert_eq!(
        fs::read(g.home(&u).join("docs/report.txt")).unwrap(),
        b"version one"
    );
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn scheduled_snapshots_follow_the_config_per_user() {
    let store = format!("local://{}/homes/{{user}}", unique_dir("pvsched").display());
    let (u, quiet) = (unique_user("ps"), unique_user("pq"));
    let extra = format!(
        "[snapshots]\ncheck_interval = \"1s\"\n[snapshots.user.{quiet}]\nhourly = 0\ndaily = 0\nweekly = 0\n"
    );
    let mut g = Gw::new(&store, &extra, &[], "service");
    ok(g.add_user(&u, "pw-ps", &[]));
    ok(g.add_user(&quiet, "pw-pq", &[]));
    let work = unique_dir("pswork");
    fs::write(work.join("f.txt"), b"scheduled").unwrap();
    smb_ok(g.smbclient(&u, "pw-ps", "put f.txt", &work));
    smb_ok(g.smbclient(&quiet, "pw-pq", "put f.txt", &work));
    let list = |user: &str| -> serde_json::Value {
        serde_json::from_slice(
            &ok(g.sg(&["snapshot", "list", "--json", "--user", user], "")).stdout,
        )
        .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let taken = loop {
        let l = list(&u);
        let auto: Vec<_> = l["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["label"] == "hourly")
            .cloned()
            .collect();
        if !auto.is_empty() {
            break auto;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled snapshot: {l}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(taken.len(), 1, "one per hour: {taken:?}");
    // Its tree holds the file; the user with everything at 0 has none.
    let name = taken[0]["name"].as_str().unwrap();
    assert_eq!(
        fs::read(g.home(&u).join(".snapshots").join(name).join("f.txt")).unwrap(),
        b"scheduled"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(list(&quiet)["snapshots"].as_array().unwrap().len(), 0);
    assert_eq!(
        list(&u)["snapshots"].as_array().unwrap().len(),
        1,
        "nothing more within the hour"
    );
}
