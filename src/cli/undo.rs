//! What one `swiftgate setup` run wrote, so a step that fails half-way
//! (groupadd, usermod, the recovery key) leaves the machine as it found
//! it: files get their previous contents back, what the run created goes.

use crate::gateway::command;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

enum Step {
    /// A file and what it held before (None: the run created it).
    File(PathBuf, Option<(Vec<u8>, u32)>),
    Dir(PathBuf),
    Group(String),
    Member {
        user: String,
        group: String,
    },
}

#[derive(Default)]
pub struct Undo {
    steps: Vec<Step>,
}

impl Undo {
    /// Before `p` is written: its contents now, and the first of its
    /// parents that does not exist yet (created with it).
    pub fn file(&mut self, p: &Path) {
        if let Some(top) = first_missing(p.parent()) {
            self.steps.push(Step::Dir(top));
        }
        let old = std::fs::read(p)
            .ok()
            .map(|b| (b, std::fs::metadata(p).map_or(0o600, |m| m.mode() & 0o7777)));
        self.steps.push(Step::File(p.to_path_buf(), old));
    }

    /// Before `d` is created (with its missing parents).
    pub fn dir(&mut self, d: &Path) {
        if let Some(top) = first_missing(Some(d)) {
            self.steps.push(Step::Dir(top));
        }
    }

    /// A directory created already (the cache, made for its probe).
    pub fn created_dir(&mut self, d: PathBuf) {
        self.steps.push(Step::Dir(d));
    }

    pub fn group(&mut self, g: &str) {
        self.steps.push(Step::Group(g.into()));
    }

    pub fn member(&mut self, user: &str, group: &str) {
        self.steps.push(Step::Member {
            user: user.into(),
            group: group.into(),
        });
    }

    /// Everything back, newest first; what could not be undone, said.
    pub fn rollback(self) -> Vec<String> {
        let mut failed = Vec::new();
        for s in self.steps.into_iter().rev() {
            let r = match &s {
                Step::File(p, None) => std::fs::remove_file(p)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| format!("removing {}: {e}", p.display())),
                Step::File(p, Some((body, mode))) => crate::secure::write_private(p, body)
                    .and_then(|_| {
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode))
                    })
                    .map_err(|e| format!("restoring {}: {e}", p.display())),
                Step::Dir(d) => std::fs::remove_dir_all(d)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| format!("removing {}: {e}", d.display())),
                Step::Group(g) => command::run("groupdel", Command::new("groupdel").arg(g))
                    .map(drop)
                    .map_err(|e| format!("groupdel {g}: {}", e.stderr)),
                Step::Member { user, group } => command::run(
                    "gpasswd",
                    Command::new("gpasswd").args(["--delete", user, group]),
                )
                .map(drop)
                .map_err(|e| format!("gpasswd --delete {user} {group}: {}", e.stderr)),
            };
            if let Err(e) = r {
                failed.push(e);
            }
        }
        failed
    }
}

/// The outermost directory of `d`'s chain that does not exist.
fn first_missing(d: Option<&Path>) -> Option<PathBuf> {
    let mut top = None;
    let mut cur = d;
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        top = Some(p.to_path_buf());
        cur = p.parent();
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_restores_old_contents_and_removes_what_was_created() {
        let d = std::env::temp_dir().join(format!("sg-undo-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let old = d.join("old.conf");
        std::fs::write(&old, "before").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut u = Undo::default();
        u.file(&old);
        std::fs::write(&old, "after").unwrap();
        let new = d.join("a/b/new.key");
        u.file(&new);
        std::fs::create_dir_all(new.parent().unwrap()).unwrap();
        std::fs::write(&new, "k").unwrap();
        assert!(u.rollback().is_empty());
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "before");
        assert_eq!(
            std::fs::metadata(&old).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!d.join("a").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
