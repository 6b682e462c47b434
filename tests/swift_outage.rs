//! Swift goes away while a mount is writing, and comes back. Its own test
//! binary: stopping the proxy would disturb any other Swift test running
//! beside it (cargo runs test binaries one after another).

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const FILE: usize = 2 << 20;

#[test]
fn swift_outage_during_writes_loses_nothing() {
    if std::env::var_os("SWIFT_AIO_STATE_DIR").is_none() {
        assert!(
            std::env::var("SWIFTGATE_REQUIRE_SWIFT").as_deref() != Ok("1"),
            "no Swift fixture: run `bash tests/swift/start DIR && . DIR/env` first"
        );
        eprintln!("skipped: no Swift fixture in the environment");
        return;
    }
    // The harness's Swift mode gives the filesystem its own container.
    std::env::set_var("SWIFTGATE_TEST_STORE", "swift");
    let mut t = TestFs::new(&["--passphrase", "outage"]);
    t.mount_env = vec![("SWIFTGATE_LOG".into(), "swiftgate=info".into())];
    t.mount(&["--dirty-limit", "256M", "--cache-size", "1G"]);
    let mut n = 0u64;
    let mut write = |t: &TestFs, count: u64| {
        for _ in 0..count {
            let p = t.path(&format!("f{n:03}"));
            fs::write(&p, random_bytes(FILE, n)).expect("write must not fail");
            n += 1;
        }
    };
    write(&t, 10);
    {
        let _down = ProxyDown::new();
        // Well below the dirty limit: every write and fsync (local
        // durability) succeeds while Swift is unreachable.
        write(&t, 40);
        let f = fs::File::open(t.path("f000")).unwrap();
        f.sync_all().unwrap();
        fs::create_dir(t.path("dir-made-offline")).unwrap();
        fs::rename(t.path("f001"), t.path("dir-made-offline/f001")).unwrap();
        // Cached data reads back, and the uploads are visibly failing.
        assert_eq!(fs::read(t.path("f005")).unwrap(), random_bytes(FILE, 5));
        std::thread::sleep(Duration::from_secs(3));
        let st = t.stat();
        assert!(
            st["cache"]["dirty_bytes"].as_u64().unwrap_or(0) > 0,
            "nothing pending while Swift is down? {st}"
        );
        assert!(
            st["cache"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("unreachable")),
            "stat should report why uploads stall: {st}"
        );
    }
    write(&t, 10);
    // umount waits until everything is in Swift.
    t.umount();
    let log = fs::read_to_string(t.cache.join("mount.log")).unwrap_or_default();
    assert!(
        log.contains("upload failed"),
        "the log should say why uploads stalled:\n{log}"
    );
    let o = t.fsck(&["--verify-data"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A new host (empty cache) sees every byte.
    fs::remove_dir_all(&t.cache).unwrap();
    t.mount(&[]);
    for i in 0..n {
        let name = if i == 1 {
            "dir-made-offline/f001".to_string()
        } else {
            format!("f{i:03}")
        };
        assert_eq!(
            fs::read(t.path(&name)).unwrap(),
            random_bytes(FILE, i),
            "{name}"
        );
    }
    t.umount();
}
