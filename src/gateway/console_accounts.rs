//! The console's administrators in the gateway state backup: the Unix
//! accounts in `[console] admin_group`, with their shadow password hashes,
//! so that a gateway rebuilt from the store lets the same people log in to
//! its console with the same passwords. The hash travels only inside the
//! encrypted backup and goes back through `chpasswd -e` on stdin (never
//! argv).

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use zeroize::Zeroize;

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsoleAccount {
    pub name: String,
    pub uid: u32,
    pub gecos: String,
    pub shell: String,
    pub home: String,
    /// The crypt(3) hash from /etc/shadow ("!" or "*" for no password).
    pub shadow_hash: String,
}

impl std::fmt::Debug for ConsoleAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleAccount")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("shadow_hash", &"<redacted>")
            .finish()
    }
}

impl Drop for ConsoleAccount {
    fn drop(&mut self) {
        self.shadow_hash.zeroize();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleAccountError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error(transparent)]
    Run(#[from] super::command::CommandFailed),
}

/// The hash of `user` in a shadow file's text (`name:hash:...`).
fn shadow_hash(shadow: &str, user: &str) -> Option<String> {
    shadow.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        (f.next()? == user).then(|| f.next().unwrap_or("").to_string())
    })
}

/// Members of `group` (supplementary, and those whose primary group it is)
/// from passwd/group/shadow texts: what `collect` reads from /etc.
fn members_from(
    group: &str,
    group_text: &str,
    passwd_text: &str,
    shadow_text: &str,
) -> Vec<ConsoleAccount> {
    let Some((gid, listed)) = group_text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == group).then(|| (f[2].to_string(), f[3].to_string()))
    }) else {
        return Vec::new();
    };
    let listed: Vec<&str> = listed.split(',').filter(|s| !s.is_empty()).collect();
    let mut out: Vec<ConsoleAccount> = passwd_text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0] == "root" {
                return None;
            }
            if !(listed.contains(&f[0]) || f[3] == gid) {
                return None;
            }
            Some(ConsoleAccount {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gecos: f[4].into(),
                home: f[5].into(),
                shell: f[6].into(),
                shadow_hash: shadow_hash(shadow_text, f[0]).unwrap_or_else(|| "!".into()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read(p: &str) -> Result<zeroize::Zeroizing<String>, ConsoleAccountError> {
    std::fs::read_to_string(p)
        .map(zeroize::Zeroizing::new)
        .map_err(|cause| ConsoleAccountError::Read {
            path: p.into(),
            cause,
        })
}

/// The console's administrators on this machine (root never: it is every
/// machine's own).
pub fn collect(admin_group: &str) -> Result<Vec<ConsoleAccount>, ConsoleAccountError> {
    Ok(members_from(
        admin_group,
        &read("/etc/group")?,
        &read("/etc/passwd")?,
        &read("/etc/shadow")?,
    ))
}

/// Why an account cannot come back (checked before the restore writes
/// anything): a different account of that name exists here.
pub fn conflicts(accounts: &[ConsoleAccount]) -> Vec<String> {
    accounts
        .iter()
        .filter_map(|a| {
            let u = nix::unistd::User::from_name(&a.name).ok().flatten()?;
            (u.uid.as_raw() != a.uid).then(|| {
                format!(
                    "a Unix account {} (uid {}) already exists and is not the console administrator of the backup (uid {}): it is never taken over; remove or rename it, or restore on a fresh machine",
                    a.name,
                    u.uid.as_raw(),
                    a.uid
                )
            })
        })
        .collect()
}

fn run(what: &str, c: &mut Command, stdin: Option<&[u8]>) -> Result<(), ConsoleAccountError> {
    match stdin {
        Some(input) => super::command::run_with_stdin(what, c, input),
        None => super::command::run(what, c),
    }
    .map(drop)
    .map_err(ConsoleAccountError::from)
}

/// Bring the administrators back: the group, each account (same uid when
/// free, its home made if missing) with its password hash, in the group.
/// An account already here with the same uid keeps its own password.
pub fn restore(
    accounts: &[ConsoleAccount],
    admin_group: &str,
) -> Result<Vec<String>, ConsoleAccountError> {
    let mut report = Vec::new();
    if accounts.is_empty() {
        return Ok(report);
    }
    if nix::unistd::Group::from_name(admin_group)
        .ok()
        .flatten()
        .is_none()
    {
        run(
            "groupadd",
            Command::new("groupadd").args(["--system", admin_group]),
            None,
        )?;
    }
    for a in accounts {
        if nix::unistd::User::from_name(&a.name)
            .ok()
            .flatten()
            .is_none()
        {
            let mut c = Command::new("useradd");
            c.args([
                "--comment",
                &a.gecos,
                "--shell",
                &a.shell,
                "--home-dir",
                &a.home,
            ]);
            if !Path::new(&a.home).exists() {
                c.arg("--create-home");
            }
            if nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(a.uid))
                .ok()
                .flatten()
                .is_none()
            {
                c.args(["--uid", &a.uid.to_string()]);
            }
            run("useradd", c.arg(&a.name), None)?;
            let line = zeroize::Zeroizing::new(format!("{}:{}\n", a.name, a.shadow_hash));
            run(
                "chpasswd",
                Command::new("chpasswd").arg("--encrypted"),
                Some(line.as_bytes()),
            )?;
            report.push(format!("console administrator {} (password kept)", a.name));
        } else {
            report.push(format!(
                "console administrator {} already here (its own password)",
                a.name
            ));
        }
        run(
            "usermod",
            Command::new("usermod").args(["--append", "--groups", admin_group, &a.name]),
            None,
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_listed_and_primary_ones_with_their_hashes_never_root() {
        let group = "swiftgate-admin:x:990:ops,ann\nops:x:1001:\nroot:x:0:\n";
        let passwd = "root:x:0:0:root:/root:/bin/bash\nops:x:1001:1001:Ops Team,,,:/home/ops:/bin/bash\nann:x:1002:1002::/home/ann:/bin/sh\nbob:x:1003:990::/home/bob:/bin/sh\neve:x:1004:1004::/home/eve:/bin/sh\n";
        let shadow =
            "root:$y$root:19000::::::\nops:$y$j9T$abc$def:19000:0:99999:7:::\nann:!:19000::::::\n";
        let m = members_from("swiftgate-admin", group, passwd, shadow);
        let names: Vec<&str> = m.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob", "ops"]);
        let ops = m.iter().find(|a| a.name == "ops").unwrap();
        assert_eq!(ops.shadow_hash, "$y$j9T$abc$def");
        assert_eq!((ops.uid, ops.gecos.as_str()), (1001, "Ops Team,,,"));
        assert_eq!(ops.home, "/home/ops");
        // No shadow line: no password, not an empty one.
        assert_eq!(m.iter().find(|a| a.name == "bob").unwrap().shadow_hash, "!");
        assert!(!format!("{ops:?}").contains("abc$def"));
        assert!(members_from("nosuch", group, passwd, shadow).is_empty());
    }
}
