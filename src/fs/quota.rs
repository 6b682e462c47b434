//! Quotas: a limit on the logical bytes (file sizes) and/or the inodes of
//! one filesystem, enforced where a caller still waits for the answer.
//!
//! The mount uses the kernel's writeback cache, so most data reaches
//! `write` after the application's write returned; an error there only
//! surfaces at close, and not reliably through Samba: its time update
//! before the close flushes the pages and swallows the error, and the
//! client is told the copy succeeded. So growth is refused up front
//! where the writer waits: creating a node, a growing truncate
//! (Explorer sets the end of file before copying), fallocate, and
//! `write` itself, which under a byte quota sees every write because
//! files opened for writing bypass the page cache (fuse.rs). Writes from
//! the page cache (a file opened before the quota was set) are refused
//! with ENOSPC: the kernel would turn EDQUOT into EIO at close.
//! Shrinking, deleting and renaming are never refused: Samba's recycle
//! bin deletes a file for good when its move into `#recycle` fails.

use super::{Errno, Fs, Result};
use crate::meta::Usage;

/// The folder Samba's vfs_recycle moves deleted files into (at the root
/// of a home or share); creating folders there is never refused.
pub const RECYCLE_DIR: &str = "#recycle";

/// In JSON an object (`{"bytes": 53687091200, "files": 100000}`, either
/// left out for no limit) or the command line's text (`"50G,100000"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Quota {
    /// Most bytes of file content (logical: file sizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Most inodes (files, folders, links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
}

impl<'de> serde::Deserialize<'de> for Quota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Quota, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Fields {
                #[serde(default)]
                bytes: Option<u64>,
                #[serde(default)]
                files: Option<u64>,
            },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Repr::Fields { bytes, files } => Ok(Quota { bytes, files }),
        }
    }
}

impl Quota {
    pub fn is_none(&self) -> bool {
        self.bytes.is_none() && self.files.is_none()
    }

    /// The highest share of a limit in use (0.0 ..), None without limits.
    pub fn fill(&self, u: &Usage) -> Option<f64> {
        let b = self.bytes.map(|q| u.bytes as f64 / q.max(1) as f64);
        let f = self.files.map(|q| u.files as f64 / q.max(1) as f64);
        match (b, f) {
            (Some(b), Some(f)) => Some(b.max(f)),
            (b, f) => b.or(f),
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.bytes, self.files) {
            (None, None) => write!(f, "none"),
            (Some(b), None) => write!(f, "{}", size_text(b)),
            (None, Some(n)) => write!(f, ",{n}"),
            (Some(b), Some(n)) => write!(f, "{},{n}", size_text(b)),
        }
    }
}

/// Exact, so that parsing it back gives the same quota.
fn size_text(b: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    b.to_string()
}

const QUOTA_HELP: &str =
    "use a size like 50G, a size and a file count like 50G,100000, ',100000' for files only, or none";

fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(format!("unknown unit in {s:?}: {QUOTA_HELP}")),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{s:?} is not a size: {QUOTA_HELP}"))
}

impl std::str::FromStr for Quota {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Quota, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("none") {
            return Ok(Quota::default());
        }
        let (b, f) = match t.split_once(',') {
            Some((b, f)) => (b.trim(), Some(f.trim())),
            None => (t, None),
        };
        let bytes = if b.is_empty() {
            None
        } else {
            Some(parse_bytes(b)?)
        };
        let files = match f {
            None | Some("") => None,
            Some(f) => Some(
                f.parse::<u64>()
                    .map_err(|_| format!("{f:?} is not a file count: {QUOTA_HELP}"))?,
            ),
        };
        // A limit of 0 would make the filesystem unusable (even its root
        // counts as a file): surely a mistake, and "none" says it better.
        if bytes == Some(0) || files == Some(0) {
            return Err(format!(
                "a quota of 0 in {s:?} leaves no room: {QUOTA_HELP}"
            ));
        }
        Ok(Quota { bytes, files })
    }
}

impl Fs {
    pub fn quota(&self) -> Quota {
        *self.quota.read()
    }

    /// Takes effect at once, for the next request (raising it lets a
    /// refused write through without a remount).
    pub fn set_quota(&self, q: Quota) {
        *self.quota.write() = q;
    }

    /// Logical use (a running figure, cheap).
    pub fn usage(&self) -> Result<Usage> {
        Ok(self.meta.usage()?)
    }

    /// Refuse growth of one file by `growth` bytes past the byte quota.
    pub(super) fn check_growth(&self, growth: u64) -> Result<()> {
        if growth == 0 {
            return Ok(());
        }
        let Some(limit) = self.quota.read().bytes else {
            return Ok(());
        };
        let used = self.meta.usage()?.bytes;
        if used.saturating_add(growth) > limit {
            tracing::debug!(used, growth, limit, "byte quota reached");
            return Err(Errno(libc::EDQUOT));
        }
        Ok(())
    }

    /// Refuse a new inode in `parent` past the file quota, except folders
    /// of the recycle bin (see the module comment).
    pub(super) fn check_new_inode(&self, parent: u64, name: &[u8], dir: bool) -> Result<()> {
        let Some(limit) = self.quota.read().files else {
            return Ok(());
        };
        if self.meta.usage()?.files < limit {
            return Ok(());
        }
        if dir && self.in_recycle(parent, name)? {
            return Ok(());
        }
        tracing::debug!(limit, "file quota reached");
        Err(Errno(libc::EDQUOT))
    }

    /// Whether `parent/name` is the recycle folder or inside it.
    fn in_recycle(&self, parent: u64, name: &[u8]) -> Result<bool> {
        if parent == crate::meta::ROOT_INO {
            return Ok(name == RECYCLE_DIR.as_bytes());
        }
        let path = self.meta.path_of(parent)?;
        let first = path.trim_start_matches('/').split('/').next();
        Ok(first == Some(RECYCLE_DIR))
    }

    /// statfs under a quota: the limit is the capacity, what is left is
    /// free (Explorer's "12.3 GB free of 50 GB"). A dimension without a
    /// limit shows a large figure with real use. Never 0 blocks in all:
    /// smbd takes that for a broken statfs and shows 20 MiB.
    pub(super) fn quota_statfs(&self) -> Result<Option<super::StatFs>> {
        let q = self.quota();
        if q.is_none() {
            return Ok(None);
        }
        let u = self.usage()?;
        let bsize = 4096u64;
        let (blocks, bfree) = match q.bytes {
            Some(limit) => (
                limit.div_ceil(bsize).max(1),
                limit.saturating_sub(u.bytes) / bsize,
            ),
            None => {
                let total = (1u64 << 50) / bsize;
                (total, total.saturating_sub(u.bytes.div_ceil(bsize)))
            }
        };
        let files = q.files.unwrap_or(1 << 32);
        Ok(Some(super::StatFs {
            blocks,
            bfree,
            files,
            ffree: files.saturating_sub(u.files),
            bsize: bsize as u32,
            namelen: crate::meta::NAME_MAX as u32,
        }))
    }

    /// The store account's quota as last read (see the engine's loop).
    pub fn set_account_capacity(&self, c: Option<crate::store::Capacity>) {
        *self.account.lock() = c;
    }

    /// statfs without a quota of our own but with an account quota: that
    /// is the honest size. Its figures are physical bytes (compressed,
    /// deduplicated, every container of the account) and lag a little.
    pub(super) fn account_statfs(&self, bsize: u64, inodes: u64) -> Option<super::StatFs> {
        let c = (*self.account.lock())?;
        let files = 1u64 << 32;
        Some(super::StatFs {
            blocks: c.quota_bytes.div_ceil(bsize).max(1),
            bfree: c.quota_bytes.saturating_sub(c.used_bytes) / bsize,
            files,
            ffree: files.saturating_sub(inodes),
            bsize: bsize as u32,
            namelen: crate::meta::NAME_MAX as u32,
        })
    }

    /// Whether files opened for writing bypass the page cache: under a
    /// byte quota, however far from it (a file opened with room to spare
    /// is written to the limit as well; see the module comment).
    pub fn write_direct(&self) -> bool {
        self.quota.read().bytes.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::TestEngine;
    use crate::fs::{AttrChange, Caller};

    const ME: Caller = Caller { uid: 0, gid: 0 };
    const ROOT: u64 = crate::meta::ROOT_INO;

    struct T {
        engine: TestEngine,
    }

    impl T {
        fn new() -> T {
            T {
                engine: TestEngine::new(),
            }
        }
        fn fs(&self) -> &Fs {
            self.engine.fs()
        }
        fn file(&self, name: &str, len: usize) -> u64 {
            let a = self
                .fs()
                .create(ME, ROOT, name.as_bytes(), 0o644, 0)
                .unwrap();
            if len > 0 {
                self.fs().write(a.ino, 0, &vec![7u8; len]).unwrap();
            }
            self.fs().release(a.ino).unwrap();
            a.ino
        }
        /// The running figure, checked against a count from scratch.
        fn usage(&self) -> Usage {
            let u = self.fs().usage().unwrap();
            assert_eq!(u, self.fs().meta().usage_recount().unwrap());
            u
        }
    }

    fn size(fs: &Fs, ino: u64, size: u64) -> Result<crate::meta::Attr> {
        fs.setattr(
            ino,
            &AttrChange {
                size: Some(size),
                ..Default::default()
            },
        )
    }

    #[test]
    fn parses_and_prints_quotas() {
        let q: Quota = "50G".parse().unwrap();
        assert_eq!((q.bytes, q.files), (Some(50 << 30), None));
        assert_eq!(q.to_string(), "50G");
        assert!("1.5G".parse::<Quota>().is_err());
        let q: Quota = "10MiB, 1000".parse().unwrap();
        assert_eq!((q.bytes, q.files), (Some(10 << 20), Some(1000)));
        assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
        let q: Quota = ",500".parse().unwrap();
        assert_eq!((q.bytes, q.files), (None, Some(500)));
        assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
        assert!("none".parse::<Quota>().unwrap().is_none());
        let j: Quota = serde_json::from_str(r#""2G,10""#).unwrap();
        assert_eq!((j.bytes, j.files), (Some(2 << 30), Some(10)));
        let j: Quota = serde_json::from_str(r#"{"bytes":5}"#).unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), r#"{"bytes":5}"#);
        assert!(serde_json::from_str::<Quota>(r#""lots""#).is_err());
        assert!("12345".parse::<Quota>().unwrap().bytes == Some(12345));
        for bad in ["0", "10X", "5G,many", "G"] {
            let e = bad.parse::<Quota>().unwrap_err();
            assert!(e.contains("50G"), "{bad}: {e}");
        }
    }

    #[test]
    fn usage_follows_overwrite_truncate_and_links() {
        let t = T::new();
        let fs = t.fs();
        let base = t.usage();
        let a = t.file("a", 100_000);
        assert_eq!(t.usage().bytes, base.bytes + 100_000);
        assert_eq!(t.usage().files, base.files + 1);
        // Overwriting inside the file does not grow it; past the end does.
        fs.write(a, 0, &[1u8; 50_000]).unwrap();
        assert_eq!(t.usage().bytes, base.bytes + 100_000);
        fs.write(a, 90_000, &[1u8; 20_000]).unwrap();
        assert_eq!(t.usage().bytes, base.bytes + 110_000);
        // Truncate down and up (a sparse growth counts: logical bytes).
        size(fs, a, 10).unwrap();
        assert_eq!(t.usage().bytes, base.bytes + 10);
        size(fs, a, 1 << 20).unwrap();
        assert_eq!(t.usage().bytes, base.bytes + (1 << 20));
        // A hard link is the same inode: counted once, until the last name.
        fs.link(a, ROOT, b"a2").unwrap();
        assert_eq!(t.usage().bytes, base.bytes + (1 << 20));
        assert_eq!(t.usage().files, base.files + 1);
        fs.unlink(ROOT, b"a").unwrap();
        assert_eq!(t.usage().bytes, base.bytes + (1 << 20));
        fs.unlink(ROOT, b"a2").unwrap();
        assert_eq!(t.usage(), base);
        // Folders and symlinks count as files, not bytes.
        fs.mkdir(ME, ROOT, b"d", 0o755, 0).unwrap();
        fs.symlink(ME, ROOT, b"l", b"some/target").unwrap();
        assert_eq!(t.usage().bytes, base.bytes);
        assert_eq!(t.usage().files, base.files + 2);
    }

    #[test]
    fn usage_stays_right_through_random_operations() {
        let t = T::new();
        let fs = t.fs();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names: Vec<Vec<u8>> = (0..6).map(|i| format!("f{i}").into_bytes()).collect();
        let mut open: Vec<u64> = Vec::new();
        let mut done = 0;
        for step in 0..400 {
            let name = &names[rnd(names.len() as u64) as usize];
            let ino = fs.lookup(ROOT, name).ok().map(|a| a.ino);
            let other = names[rnd(names.len() as u64) as usize].clone();
            match (rnd(9), ino) {
                (0, None) => {
                    let a = fs.create(ME, ROOT, name, 0o644, 0).unwrap();
                    open.push(a.ino);
                }
                (1, Some(i)) => {
                    let off = rnd(300_000);
                    fs.write(i, off, &vec![step as u8; rnd(100_000) as usize + 1])
                        .unwrap();
                }
                (2, Some(i)) => {
                    size(fs, i, rnd(400_000)).unwrap();
                }
                (3, Some(_)) => fs.unlink(ROOT, name).unwrap(),
                (4, Some(i)) => {
                    let _ = fs.link(i, ROOT, &other);
                }
                (5, Some(_)) => fs.rename(ROOT, name, ROOT, &other, 0).unwrap(),
                (6, Some(i)) => {
                    let mode = [0, libc::FALLOC_FL_KEEP_SIZE][rnd(2) as usize];
                    fs.fallocate(i, rnd(300_000), rnd(200_000) + 1, mode)
                        .unwrap();
                }
                (7, Some(i)) => {
                    if let Ok(d) = fs.lookup(ROOT, &other) {
                        if d.ino != i {
                            let _ = fs.copy_file_range(
                                i,
                                rnd(100_000),
                                d.ino,
                                rnd(200_000),
                                rnd(300_000),
                            );
                        }
                    }
                }
                (8, _) if !open.is_empty() => {
                    let i = open.remove(rnd(open.len() as u64) as usize);
                    fs.release(i).unwrap();
                }
                _ => continue,
            }
            done += 1;
            t.usage();
        }
        assert!(done > 150, "only {done} operations ran");
        for i in open {
            fs.release(i).unwrap();
        }
        t.usage();
    }

    #[test]
    fn an_unlinked_open_file_counts_until_its_last_close() {
        let t = T::new();
        let fs = t.fs();
        let base = t.usage();
        let a = fs.create(ME, ROOT, b"open", 0o644, 0).unwrap().ino;
        fs.write(a, 0, &[3u8; 70_000]).unwrap();
        fs.unlink(ROOT, b"open").unwrap();
        // Still readable by whoever holds it, so still using space.
        assert_eq!(t.usage().bytes, base.bytes + 70_000);
        fs.write(a, 70_000, &[3u8; 1000]).unwrap();
        assert_eq!(t.usage().bytes, base.bytes + 71_000);
        fs.release(a).unwrap();
        assert_eq!(t.usage(), base);
    }

    #[test]
    fn usage_survives_a_reopen_and_is_seeded_for_an_old_database() {
        let t = T::new();
        t.file("x", 12_345);
        let want = t.usage();
        // A database from before quotas: no table, no triggers.
        let path = t.fs().meta().path().to_path_buf();
        t.fs().meta().commit().unwrap();
        t.fs().meta().drop_usage_tracking().unwrap();
        let m = crate::meta::Meta::open(&path).unwrap();
        assert_eq!(m.usage().unwrap(), want);
    }

    #[test]
    fn byte_quota_refuses_growth_with_edquot_and_allows_shrinking() {
        let t = T::new();
        let fs = t.fs();
        let used = t.usage().bytes;
        fs.set_quota(Quota {
            bytes: Some(used + 100_000),
            files: None,
        });
        let a = t.file("a", 60_000);
        // write: growth past the limit is refused whole, nothing changes.
        assert_eq!(
            fs.write(a, 60_000, &[1u8; 50_000]),
            Err(Errno(libc::EDQUOT))
        );
        assert_eq!(fs.getattr(a).unwrap().size, 60_000);
        // ... while an overwrite in place and growth up to the limit pass.
        fs.write(a, 0, &[2u8; 60_000]).unwrap();
        fs.write(a, 60_000, &[2u8; 40_000]).unwrap();
        assert_eq!(t.usage().bytes, used + 100_000);
        // truncate up and fallocate past it: refused; down: fine.
        assert_eq!(size(fs, a, 100_001).unwrap_err(), Errno(libc::EDQUOT));
        assert_eq!(fs.fallocate(a, 0, 200_000, 0), Err(Errno(libc::EDQUOT)));
        // Keeping the size allocates nothing logical.
        fs.fallocate(a, 0, 200_000, libc::FALLOC_FL_KEEP_SIZE)
            .unwrap();
        // A new empty file is fine (no file quota), writing to it is not.
        let b = t.file("b", 0);
        assert_eq!(fs.write(b, 0, b"x"), Err(Errno(libc::EDQUOT)));
        // A shared-block copy grows the destination too.
        assert_eq!(
            fs.copy_file_range(a, 0, b, 0, 65536),
            Err(Errno(libc::EDQUOT))
        );
        // Over the quota (lowered below use), deleting and shrinking work.
        fs.set_quota(Quota {
            bytes: Some(used + 10),
            files: None,
        });
        size(fs, a, 50_000).unwrap();
        fs.rename(ROOT, b"a", ROOT, b"a-moved", 0).unwrap();
        fs.unlink(ROOT, b"a-moved").unwrap();
        assert_eq!(t.usage().bytes, used);
        // Raising it lets the same write through at once.
        fs.set_quota(Quota {
            bytes: Some(used + 1000),
            files: None,
        });
        fs.write(b, 0, b"x").unwrap();
    }

    #[test]
    fn file_quota_refuses_new_nodes_but_never_the_recycle_bin() {
        let t = T::new();
        let fs = t.fs();
        let files = t.usage().files;
        fs.set_quota(Quota {
            bytes: None,
            files: Some(files + 2),
        });
        t.file("one", 10);
        let d = fs.mkdir(ME, ROOT, b"dir", 0o755, 0).unwrap().ino;
        let edq = Err(Errno(libc::EDQUOT));
        assert_eq!(fs.create(ME, ROOT, b"two", 0o644, 0).map(|_| ()), edq);
        assert_eq!(fs.mknod(ME, d, b"two", 0o644, 0, 0).map(|_| ()), edq);
        assert_eq!(fs.mkdir(ME, d, b"sub", 0o755, 0).map(|_| ()), edq);
        assert_eq!(fs.symlink(ME, ROOT, b"ln", b"one").map(|_| ()), edq);
        // vfs_recycle makes #recycle/<tree> then renames into it.
        let r = fs
            .mkdir(ME, ROOT, RECYCLE_DIR.as_bytes(), 0o700, 0)
            .unwrap()
            .ino;
        let rd = fs.mkdir(ME, r, b"dir", 0o700, 0).unwrap().ino;
        fs.rename(ROOT, b"one", rd, b"one", 0).unwrap();
        // A folder named like it elsewhere is no exception.
        assert_eq!(
            fs.mkdir(ME, d, RECYCLE_DIR.as_bytes(), 0o755, 0)
                .map(|_| ()),
            edq
        );
        // Deleting makes room again (the bin's folders went past it).
        fs.unlink(rd, b"one").unwrap();
        fs.rmdir(r, b"dir").unwrap();
        fs.rmdir(ROOT, RECYCLE_DIR.as_bytes()).unwrap();
        t.file("three", 1);
    }

    #[test]
    fn statfs_shows_the_quota_as_capacity() {
        let t = T::new();
        let fs = t.fs();
        let free = fs.statfs().unwrap();
        assert!(free.blocks > 1 << 30, "no quota: a large honest figure");
        let used = t.usage().bytes;
        fs.set_quota(Quota {
            bytes: Some(used + (10 << 20)),
            files: Some(1000),
        });
        t.file("a", 4 << 20);
        let s = fs.statfs().unwrap();
        let bs = s.bsize as u64;
        assert_eq!(s.blocks, (used + (10 << 20)).div_ceil(bs));
        assert_eq!(s.bfree, (6 << 20) / bs);
        assert_eq!(s.files, 1000);
        assert_eq!(s.ffree, 1000 - t.usage().files);
        // Over the quota: nothing free, never zero blocks in all.
        fs.set_quota(Quota {
            bytes: Some(1),
            files: None,
        });
        let s = fs.statfs().unwrap();
        assert_eq!((s.blocks, s.bfree), (1, 0));
        // Without a quota of its own: the store account's, when known.
        fs.set_quota(Quota::default());
        fs.set_account_capacity(Some(crate::store::Capacity {
            quota_bytes: 100 << 30,
            used_bytes: 40 << 30,
        }));
        let s = fs.statfs().unwrap();
        assert_eq!(s.blocks * s.bsize as u64, 100 << 30);
        assert_eq!(s.bfree * s.bsize as u64, 60 << 30);
        fs.set_account_capacity(None);
        assert!(fs.statfs().unwrap().blocks > 1 << 30);
    }
}
