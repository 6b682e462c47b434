//! Local files are root's alone. The cache holds plaintext (block files, the
//! cache database, metadata with every file name), so everything swiftgate
//! writes on local disk is created 0600/0700 from the first byte: the
//! process umask is 077 before anything is opened, and installs made before
//! that are tightened when they are next used.
//!
//! Below every layer: `store/` (the local store) and up use it.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Owner-only creation for this whole process (all threads, and children).
/// `main` calls it first; library users (tests) may call it too.
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Create `path` (and missing parents) owner-only; an existing directory is
/// left as it is (it may be a shared one the operator named, like /tmp).
pub fn new_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A directory wholly swiftgate's: create it owner-only, and tighten
/// everything in it if it exists with wider permissions (an install from
/// before this rule).
pub fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let m = std::fs::metadata(path)?;
    if m.mode() & 0o077 != 0 {
        tighten_tree(path)?;
    }
    Ok(())
}

/// A directory others must be able to pass through (the gateway's mount
/// root, which smbd enters as each user): 0755, nothing readable inside
/// but the mounts themselves.
pub fn passable_dir(path: &Path) -> io::Result<()> {
    // Every directory made here gets 0755, parents too: under the daemon's
    // umask a recursive create would leave a new /srv/swiftgate 0700 and
    // every user locked out of their mounted home below it.
    let mut missing = Vec::new();
    let mut p = path;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let m = std::fs::metadata(path)?;
    if m.mode() & 0o7777 != 0o755 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Remove group and other bits from everything under `root` (symlinks are
/// not followed; mount points below are skipped, they are not ours to
/// change).
pub fn tighten_tree(root: &Path) -> io::Result<()> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if m.file_type().is_symlink() || m.dev() != dev {
            continue;
        }
        if m.mode() & 0o077 != 0 {
            let mode = m.mode() & 0o7700;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// Make one existing file owner-only (a log or database opened by name).
pub fn private_file(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode() & 0o7700))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create `path`'s parent directory owner-only if it is missing.
pub fn new_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => new_dir(dir),
        _ => Ok(()),
    }
}

/// Write a root-only file atomically (temp file created 0600, fsync,
/// rename): a reader sees the old file or the new one, never a part.
pub fn write_private(path: &Path, body: &[u8]) -> io::Result<()> {
    // The pid in the temp name: two processes writing the same file never
    // share (and truncate) one temp file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Append one line to a root-only file (created 0600 if missing, with its
/// parent directory 0700).
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    new_parent(path)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // One write call: concurrent appenders never interleave within a line.
    f.write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn passable_dir_makes_every_new_parent_passable_under_a_tight_umask() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("sg-passable-{}", std::process::id()));
        let leaf = base.join("srv/swiftgate/home");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let r = super::passable_dir(&leaf);
        nix::sys::stat::umask(old);
        r.unwrap();
        for d in [base.join("srv"), base.join("srv/swiftgate"), leaf.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{}", d.display());
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_old_install_is_tightened_whole() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        for p in [&root, &root.join("a"), &root.join("a/b")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(root.join("a/b/f"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        private_dir(&root).unwrap();
        for (p, want) in [
            (root.clone(), 0o700),
            (root.join("a"), 0o700),
            (root.join("a/b"), 0o700),
            (root.join("a/b/f"), 0o600),
        ] {
            let mode = std::fs::metadata(&p).unwrap().mode() & 0o7777;
            assert_eq!(mode, want, "{}", p.display());
        }
    }

    #[test]
    fn written_and_appended_files_are_private_from_the_first_byte() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.json");
        write_private(&f, b"one").unwrap();
        write_private(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        let log = d.path().join("new/dir/audit.log");
        append_line(&log, "x").unwrap();
        append_line(&log, "y").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "x\ny\n");
        assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        let dir = log.parent().unwrap();
        assert_eq!(std::fs::metadata(dir).unwrap().mode() & 0o777, 0o700);
        // Nothing left behind but the files themselves.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
