//! Which smbd process a Samba session belongs to. `root postexec` never
//! runs when smbd is killed or crashes, so each session is tied to the
//! smbd process that opened it, and the daemon drops sessions whose
//! process is gone: otherwise such a home would stay mounted for ever.

use serde::{Deserialize, Serialize};

/// An smbd process: its pid and its start time (clock ticks after boot,
/// field 22 of /proc/PID/stat), so a reused pid is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmbdProcess {
    pub pid: u32,
    pub start: u64,
}

/// (command name, parent pid, start time) of a process.
fn stat(pid: u32) -> Option<(String, u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may itself hold spaces or ')'.
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 2..)?.split(' ').collect();
    // rest[0] is field 3 (state): ppid is field 4, starttime field 22.
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((name, ppid, start))
}

/// The smbd process among the caller's ancestors (the hook runs under
/// smbd, possibly through a shell), if any.
pub fn smbd_ancestor() -> Option<SmbdProcess> {
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..8 {
        if pid <= 1 {
            return None;
        }
        let (name, ppid, start) = stat(pid)?;
        if name.starts_with("smbd") {
            return Some(SmbdProcess { pid, start });
        }
        pid = ppid;
    }
    None
}

impl SmbdProcess {
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(_, _, start)| start == self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_tells_a_reused_pid() {
        let me = std::process::id();
        let (name, ppid, start) = stat(me).unwrap();
        assert!(!name.is_empty());
        assert_eq!(ppid, std::os::unix::process::parent_id());
        assert!(SmbdProcess { pid: me, start }.alive());
        assert!(!SmbdProcess {
            pid: me,
            start: start + 1
        }
        .alive());
        // No smbd above a test runner.
        assert_eq!(smbd_ancestor(), None);
    }
}
