//! The recycle bin of one mounted home or team share: measure it, purge
//! what expired, empty it. It works through the kernel on the mount (as
//! root) with directory descriptors opened O_NOFOLLOW, relative to their
//! parent: a symlink in the bin is removed as an entry, never followed,
//! and nothing outside `#recycle` is ever reached.

use super::samba::RECYCLE_DIR;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Deeper than any tree Samba's keeptree makes from a real share; a
/// deeper one is left alone rather than risk the stack.
const MAX_DEPTH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum RecycleError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: Errno },
    #[error("{0} is not a directory: not a recycle bin, left alone")]
    NotADirectory(PathBuf),
}

/// What a walk found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinReport {
    /// Files (and other non-folders) left in the bin, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Removed by this walk.
    pub removed_files: u64,
    pub removed_bytes: u64,
    pub removed_dirs: u64,
    /// Entries that could not be removed (the first error's words).
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Mode_ {
    Measure,
    /// Remove what was deleted before this Unix time.
    Purge(i64),
    Empty,
}

/// Count the files in the bin of the filesystem mounted at `mountpoint`.
pub fn measure(mountpoint: &Path) -> Result<BinReport, RecycleError> {
    walk_bin(mountpoint, Mode_::Measure)
}

/// Remove the entries deleted before `cutoff_unix`, and the folders
/// left empty. An entry's deletion time is its access time (Samba's
/// `recycle:touch` stamps it) or its change time (the move into the bin
/// sets it): either one older than the cutoff expires it.
pub fn purge(mountpoint: &Path, cutoff_unix: i64) -> Result<BinReport, RecycleError> {
    walk_bin(mountpoint, Mode_::Purge(cutoff_unix))
}

/// Remove everything in the bin (the folder itself stays).
pub fn empty(mountpoint: &Path) -> Result<BinReport, RecycleError> {
    walk_bin(mountpoint, Mode_::Empty)
}

fn walk_bin(mountpoint: &Path, mode: Mode_) -> Result<BinReport, RecycleError> {
    let io = |path: PathBuf| move |cause| RecycleError::Io { path, cause };
    let root = Dir::open(
        mountpoint,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(mountpoint.to_path_buf()))?;
    let dev = fstat(root.as_raw_fd())
        .map_err(io(mountpoint.to_path_buf()))?
        .st_dev;
    let bin_path = mountpoint.join(RECYCLE_DIR);
    let bin = match open_dir_at(&root, OsStr::new(RECYCLE_DIR)) {
        Ok(d) => d,
        // No bin yet: nothing was deleted.
        Err(Errno::ENOENT) => return Ok(BinReport::default()),
        // A file or a symlink named #recycle is the user's, not a bin.
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            return Err(RecycleError::NotADirectory(bin_path))
        }
        Err(e) => return Err(io(bin_path)(e)),
    };
    let mut r = BinReport::default();
    let mut w = Walker {
        mode,
        dev,
        report: &mut r,
    };
    w.dir(bin, &bin_path, 0);
    Ok(r)
}

fn open_dir_at(parent: &Dir, name: &OsStr) -> nix::Result<Dir> {
    Dir::openat(
        Some(parent.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

struct Walker<'a> {
    mode: Mode_,
    /// The mount's device: a walk never crosses into another filesystem.
    dev: u64,
    report: &'a mut BinReport,
}

impl Walker<'_> {
    fn error(&mut self, path: &Path, e: impl std::fmt::Display) {
        self.report.errors += 1;
        if self.report.first_error.is_none() {
            self.report.first_error = Some(format!("{}: {e}", path.display()));
        }
        tracing::warn!(path = %path.display(), "recycle bin: {e}");
    }

    fn expired(&self, st: &FileStat) -> bool {
        match self.mode {
            Mode_::Measure => false,
            Mode_::Empty => true,
            Mode_::Purge(cutoff) => st.st_atime < cutoff || st.st_ctime < cutoff,
        }
    }

    /// Walk one folder of the bin; returns whether it is empty now.
    fn dir(&mut self, mut d: Dir, path: &Path, depth: usize) -> bool {
        // Names first: removing entries while reading the stream may skip some.
        let mut names: Vec<OsString> = Vec::new();
        for e in d.iter() {
            match e {
                Ok(e) => {
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(OsStr::from_bytes(n).to_os_string());
                    }
                }
                Err(e) => {
                    self.error(path, e);
                    return false;
                }
            }
        }
        let mut left = 0usize;
        for name in names {
            let p = path.join(&name);
            let st = match fstatat(
                Some(d.as_raw_fd()),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                // Restored or removed meanwhile.
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    self.error(&p, e);
                    left += 1;
                    continue;
                }
            };
            let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
            if is_dir {
                if st.st_dev != self.dev || depth >= MAX_DEPTH {
                    left += 1;
                    continue;
                }
                let sub = match open_dir_at(&d, &name) {
                    Ok(s) => s,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => {
                        self.error(&p, e);
                        left += 1;
                        continue;
                    }
                };
                let removed_before = self.report.removed_files + self.report.removed_dirs;
                let now_empty = self.dir(sub, &p, depth + 1);
                let emptied_now =
                    self.report.removed_files + self.report.removed_dirs > removed_before;
                // A folder goes once empty: emptied by this walk, or left
                // empty (a restore) for longer than the retention. A fresh
                // empty one may be Samba's, about to receive a file.
                let remove = now_empty
                    && match self.mode {
                        Mode_::Measure => false,
                        Mode_::Empty => true,
                        Mode_::Purge(cutoff) => emptied_now || st.st_mtime < cutoff,
                    };
                if remove {
                    match unlinkat(
                        Some(d.as_raw_fd()),
                        name.as_os_str(),
                        UnlinkatFlags::RemoveDir,
                    ) {
                        Ok(()) => {
                            self.report.removed_dirs += 1;
                            continue;
                        }
                        // Samba put a file in meanwhile.
                        Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
                        Err(Errno::ENOENT) => continue,
                        Err(e) => self.error(&p, e),
                    }
                }
                left += 1;
                continue;
            }
            let size = u64::try_from(st.st_size).unwrap_or(0);
            if self.expired(&st) {
                match unlinkat(
                    Some(d.as_raw_fd()),
                    name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) => {
                        self.report.removed_files += 1;
                        self.report.removed_bytes += size;
                        continue;
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(e) => self.error(&p, e),
                }
            }
            self.report.files += 1;
            self.report.bytes += size;
            left += 1;
        }
        left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn set_times(p: &Path, atime: i64) {
        let t = nix::sys::time::TimeSpec::new(atime, 0);
        nix::sys::stat::utimensat(
            None,
            p,
            &t,
            &nix::sys::time::TimeSpec::UTIME_OMIT,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    #[test]
    fn purge_removes_only_expired_entries_inside_the_bin() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let bin = root.join(RECYCLE_DIR);
        let outside = root.join("outside");
        fs::create_dir_all(bin.join("docs/sub")).unwrap();
        fs::create_dir_all(bin.join("fresh")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep.txt"), b"precious").unwrap();
        fs::write(root.join("top.txt"), b"precious").unwrap();
        fs::write(bin.join("docs/sub/old.txt"), b"0123456789").unwrap();
        fs::write(bin.join("docs/new.txt"), b"abc").unwrap();
        fs::write(bin.join("fresh/new2.txt"), b"abcd").unwrap();
        // Symlinks out of the bin (to a folder and to a file): removed as
        // entries when old, never followed.
        symlink(&outside, bin.join("docs/sub/link-dir")).unwrap();
        symlink(outside.join("keep.txt"), bin.join("link-file")).unwrap();
        let old = crate::clock::unix_now() as i64 - 40 * 86400;
        set_times(&bin.join("docs/sub/old.txt"), old);
        set_times(&bin.join("docs/sub/link-dir"), old);
        // Files outside the bin, however old, are never looked at.
        set_times(&outside.join("keep.txt"), old);
        set_times(&root.join("top.txt"), old);

        let links = (outside.as_os_str().len() + outside.join("keep.txt").as_os_str().len()) as u64;
        let m = measure(root).unwrap();
        assert_eq!((m.files, m.bytes, m.removed_files), (5, 17 + links, 0));
        let cutoff = crate::clock::unix_now() as i64 - 30 * 86400;
        let r = purge(root, cutoff).unwrap();
        assert_eq!(
            (r.removed_files, r.removed_dirs, r.errors),
            (2, 1, 0),
            "{r:?}"
        );
        assert!(!bin.join("docs/sub").exists(), "emptied folder removed");
        assert!(bin.join("docs/new.txt").exists() && bin.join("fresh/new2.txt").exists());
        assert!(
            fs::symlink_metadata(bin.join("link-file")).is_ok(),
            "fresh link kept"
        );
        assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"precious");
        assert_eq!(fs::read(root.join("top.txt")).unwrap(), b"precious");
        assert_eq!(r.files, 3);

        let e = empty(root).unwrap();
        assert_eq!(e.removed_files, 3);
        assert!(bin.is_dir(), "the bin itself stays");
        assert_eq!(fs::read_dir(&bin).unwrap().count(), 0);
        assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"precious");
        assert!(outside.is_dir());
    }

    #[test]
    fn a_missing_bin_is_empty_and_a_symlinked_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(measure(t.path()).unwrap(), BinReport::default());
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("f"), b"x").unwrap();
        symlink(&elsewhere, t.path().join(RECYCLE_DIR)).unwrap();
        let e = empty(t.path()).unwrap_err();
        assert!(matches!(e, RecycleError::NotADirectory(_)), "{e}");
        assert!(elsewhere.join("f").exists());
    }
}
