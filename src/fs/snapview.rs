//! Snapshots as a read-only tree: `/.snapshots/@GMT-YYYY.MM.DD-HH.MM.SS/`
//! holds each snapshot's files as they were, which is the layout Samba's
//! `vfs_shadow_copy2` turns into Windows' "Previous Versions".
//!
//! Inode numbers of the tree are the snapshot's own, moved into a space of
//! their own (bit 62 set, the snapshot's id above bit 40), so the kernel
//! and Samba never take a snapshot's file for the live one. Each snapshot's
//! database is fetched from the store on first use and opened read-only in
//! spirit (nothing here writes to it); its blocks are read without
//! entering the live cache.

use super::{Errno, Result};
use crate::meta::ship::Shipper;
use crate::meta::snapshots::{gmt_name, parse_gmt_name, SnapshotError, SnapshotInfo};
use crate::meta::{self, Attr, BlockRef, Meta, ROOT_INO};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// The directory's name at the root of the filesystem.
pub const SNAPDIR_NAME: &[u8] = b".snapshots";
const SNAP_BIT: u64 = 1 << 62;
const ID_SHIFT: u32 = 40;
/// Inode of `/.snapshots` itself.
pub const SNAPDIR_INO: u64 = SNAP_BIT;
/// Snapshot databases kept open at once (each holds a SQLite connection).
const MAX_OPEN: usize = 8;
/// Decoded blocks kept for sequential snapshot readers (a 4 MiB block is
/// 32 kernel reads): a few per reader, shared by all snapshots.
const MAX_BLOCKS: usize = 8;

pub fn is_snapshot_ino(ino: u64) -> bool {
    ino & SNAP_BIT != 0
}

fn encode(id: i64, ino: u64) -> Result<u64> {
    if ino >= 1 << ID_SHIFT || !(1..1 << (62 - ID_SHIFT)).contains(&id) {
        return Err(Errno(libc::EOVERFLOW));
    }
    Ok(SNAP_BIT | ((id as u64) << ID_SHIFT) | ino)
}

/// (snapshot id, its own inode) of a tree inode; None for `/.snapshots`.
fn decode(ino: u64) -> Option<(i64, u64)> {
    let id = ((ino & !SNAP_BIT) >> ID_SHIFT) as i64;
    (id != 0).then_some((id, ino & ((1 << ID_SHIFT) - 1)))
}

struct View {
    id: i64,
    meta: Meta,
}

pub struct SnapViews {
    dir: PathBuf,
    views: Mutex<HashMap<i64, Arc<View>>>,
    /// One download at a time.
    loading: Mutex<()>,
    blocks: Mutex<VecDeque<(i64, Arc<Vec<u8>>)>>,
}

impl SnapViews {
    /// Views whose databases live in `dir` (created 0700; copies of
    /// snapshots that no longer exist are removed).
    pub fn new(dir: PathBuf, live: &Meta) -> Result<SnapViews> {
        crate::secure::private_dir(&dir).map_err(|e| {
            tracing::error!("snapshot view directory {}: {e}", dir.display());
            Errno(libc::EIO)
        })?;
        let keep: Vec<String> = meta::snapshots::names(live)?
            .into_iter()
            .map(|(id, created)| file_stem(id, created))
            .collect();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.iter().any(|k| name.starts_with(k.as_str())) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(SnapViews {
            dir,
            views: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
            blocks: Mutex::new(VecDeque::new()),
        })
    }

    /// A snapshot is gone: close its view and delete its copy.
    pub fn forget(&self, info: &SnapshotInfo) {
        self.views.lock().remove(&info.id);
        let stem = file_stem(info.id, info.created);
        for ext in ["db", "db-wal", "db-shm", "part"] {
            let _ = std::fs::remove_file(self.dir.join(format!("{stem}.{ext}")));
        }
    }

    fn view(&self, live: &Meta, shipper: &Shipper, id: i64) -> Result<Arc<View>> {
        if let Some(v) = self.views.lock().get(&id) {
            return Ok(v.clone());
        }
        let _one = self.loading.lock();
        if let Some(v) = self.views.lock().get(&id) {
            return Ok(v.clone());
        }
        let info = meta::snapshots::get(live, id)?.ok_or(Errno(libc::ENOENT))?;
        let path = self
            .dir
            .join(format!("{}.db", file_stem(info.id, info.created)));
        if !path.exists() {
            shipper
                .fetch_snapshot_db(&info, &path)
                .map_err(|e| snapshot_errno(&info, e))?;
        }
        let m = Meta::open(&path).map_err(|e| {
            tracing::error!("snapshot {}: its database does not open: {e}", info.name);
            Errno(libc::EIO)
        })?;
        let v = Arc::new(View { id, meta: m });
        let mut views = self.views.lock();
        if views.len() >= MAX_OPEN {
            if let Some(&k) = views.keys().next() {
                views.remove(&k);
            }
        }
        views.insert(id, v.clone());
        Ok(v)
    }
}

fn file_stem(id: i64, created: i64) -> String {
    format!("{id}-{created}")
}

fn snapshot_errno(info: &SnapshotInfo, e: SnapshotError) -> Errno {
    tracing::error!("snapshot {} unreadable: {e}", info.name);
    Errno(libc::EIO)
}

fn view_attr(id: i64, mut a: Attr) -> Result<Attr> {
    a.ino = encode(id, a.ino)?;
    // Read-only, and said so: writers get EACCES/EROFS up front.
    a.mode &= !0o222;
    Ok(a)
}

/// Everything the tree needs from the live filesystem.
pub struct Tree<'a> {
    pub live: &'a Meta,
    pub shipper: &'a Shipper,
    pub cache: &'a crate::cache::Cache,
    pub views: &'a SnapViews,
}

impl Tree<'_> {
    fn snapdir_attr(&self) -> Result<Attr> {
        let root = self.live.getattr(ROOT_INO)?;
        let newest = meta::snapshots::names(self.live)?
            .last()
            .map(|&(_, c)| c * 1_000_000_000)
            .unwrap_or(root.crtime);
        Ok(Attr {
            ino: SNAPDIR_INO,
            mode: libc::S_IFDIR | 0o555,
            nlink: 2,
            size: 0,
            rdev: 0,
            atime: newest,
            mtime: newest,
            ctime: newest,
            ..root
        })
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if parent == SNAPDIR_INO {
            let t = std::str::from_utf8(name)
                .ok()
                .and_then(parse_gmt_name)
                .ok_or(Errno(libc::ENOENT))?;
            let (id, _) = meta::snapshots::names(self.live)?
                .into_iter()
                .find(|&(_, c)| c == t)
                .ok_or(Errno(libc::ENOENT))?;
            return self.getattr(encode(id, ROOT_INO)?);
        }
        let (id, ino) = decode(parent).ok_or(Errno(libc::ENOENT))?;
        let v = self.views.view(self.live, self.shipper, id)?;
        view_attr(id, v.meta.lookup(ino, name)?)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let Some((id, ino)) = decode(ino) else {
            return self.snapdir_attr();
        };
        let v = self.views.view(self.live, self.shipper, id)?;
        view_attr(id, v.meta.getattr(ino)?)
    }

    /// The mode a snapshot file had, write bits included.
    pub fn original_mode(&self, ino: u64) -> Result<u32> {
        let (id, ino) = decode(ino).ok_or(Errno(libc::EINVAL))?;
        let v = self.views.view(self.live, self.shipper, id)?;
        Ok(v.meta.getattr(ino)?.mode)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (id, ino) = decode(ino).ok_or(Errno(libc::EINVAL))?;
        let v = self.views.view(self.live, self.shipper, id)?;
        Ok(v.meta.readlink(ino)?)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let Some((id, ino)) = decode(ino) else {
            return Err(Errno(libc::ENODATA));
        };
        let v = self.views.view(self.live, self.shipper, id)?;
        Ok(v.meta.getxattr(ino, name)?)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let Some((id, ino)) = decode(ino) else {
            return Ok(Vec::new());
        };
        let v = self.views.view(self.live, self.shipper, id)?;
        Ok(v.meta.listxattr(ino)?)
    }

    /// Entries of a tree directory from `offset`: `add(offset, name, attr)`
    /// until it returns true (`.` and `..` are offsets 1 and 2).
    pub fn readdir_plus(
        &self,
        dir: u64,
        offset: u64,
        mut add: impl FnMut(u64, &[u8], &Attr) -> bool,
    ) -> Result<()> {
        let a = self.getattr(dir)?;
        if !a.is_dir() {
            return Err(Errno(libc::ENOTDIR));
        }
        let Some((id, ino)) = decode(dir) else {
            // `/.snapshots`: one directory per snapshot, by id.
            if offset < 1 && add(1, b".", &a) {
                return Ok(());
            }
            if offset < 2 && add(2, b"..", &self.live.getattr(ROOT_INO)?) {
                return Ok(());
            }
            let mut names = meta::snapshots::names(self.live)?;
            names.sort();
            for (id, created) in names {
                let off = id as u64 + 2;
                if off <= offset {
                    continue;
                }
                // A snapshot whose database cannot be read still shows, as
                // an empty directory: its listing must not fail the rest.
                let attr = self.getattr(encode(id, ROOT_INO)?).or_else(|_| {
                    Ok::<_, Errno>(Attr {
                        ino: encode(id, ROOT_INO)?,
                        mtime: created * 1_000_000_000,
                        ..a
                    })
                })?;
                if add(off, gmt_name(created).as_bytes(), &attr) {
                    return Ok(());
                }
            }
            return Ok(());
        };
        let v = self.views.view(self.live, self.shipper, id)?;
        if offset < 1 && add(1, b".", &a) {
            return Ok(());
        }
        if offset < 2 {
            let parent = if ino == ROOT_INO {
                self.snapdir_attr()?
            } else {
                view_attr(id, v.meta.getattr(v.meta.parent_of(ino)?)?)?
            };
            if add(2, b"..", &parent) {
                return Ok(());
            }
        }
        let after = offset.saturating_sub(2) as i64;
        let mut err = None;
        v.meta
            .readdir_plus(ino, after, |did, name, a| match view_attr(id, a.clone()) {
                Ok(a) => add(did as u64 + 2, name, &a),
                Err(e) => {
                    err = Some(e);
                    true
                }
            })?;
        err.map_or(Ok(()), Err)
    }

    pub fn read(&self, ino: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let (id, ino) = decode(ino).ok_or(Errno(libc::EISDIR))?;
        let v = self.views.view(self.live, self.shipper, id)?;
        let a = v.meta.getattr(ino)?;
        if a.is_dir() {
            return Err(Errno(libc::EISDIR));
        }
        if off >= a.size {
            return Ok(Vec::new());
        }
        let end = a.size.min(off.saturating_add(size as u64));
        let bs = self.cache.block_size();
        let mut out = vec![0u8; (end - off) as usize];
        let mut pos = off;
        while pos < end {
            let (idx, in_blk) = (pos / bs, pos % bs);
            let n = (bs - in_blk).min(end - pos);
            if let Some(b) = v.meta.block_at(ino, idx)? {
                let data = self.block(&v, &b)?;
                let dst = &mut out[(pos - off) as usize..(pos - off + n) as usize];
                // A block shorter than the range is a file's tail: zeros.
                let have = data.len().saturating_sub(in_blk as usize).min(dst.len());
                dst[..have].copy_from_slice(&data[in_blk as usize..in_blk as usize + have]);
            }
            pos += n;
        }
        Ok(out)
    }

    fn block(&self, v: &View, b: &BlockRef) -> Result<Arc<Vec<u8>>> {
        if let Some((_, d)) = self.views.blocks.lock().iter().find(|(i, _)| *i == b.id) {
            return Ok(d.clone());
        }
        let d = Arc::new(self.cache.read_uncached(b).map_err(|e| {
            tracing::error!("snapshot {} block {}: {e}", v.id, b.id);
            Errno::from(e)
        })?);
        let mut l = self.views.blocks.lock();
        if l.len() >= MAX_BLOCKS {
            l.pop_front();
        }
        l.push_back((b.id, d.clone()));
        Ok(d)
    }

    /// SEEK_DATA/SEEK_HOLE in a snapshot file: all data (no hole search).
    pub fn lseek(&self, ino: u64, off: u64, whence: i32) -> Result<u64> {
        let a = self.getattr(ino)?;
        if off >= a.size {
            return Err(Errno(libc::ENXIO));
        }
        match whence {
            libc::SEEK_DATA => Ok(off),
            libc::SEEK_HOLE => Ok(a.size),
            _ => Err(Errno(libc::EINVAL)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_spaces_do_not_meet() {
        let i = encode(3, 77).unwrap();
        assert!(is_snapshot_ino(i));
        assert_eq!(decode(i), Some((3, 77)));
        assert_eq!(decode(SNAPDIR_INO), None);
        assert!(is_snapshot_ino(SNAPDIR_INO));
        assert!(!is_snapshot_ino((1 << 40) - 1));
        assert_eq!(encode(1, 1 << 40), Err(Errno(libc::EOVERFLOW)));
        assert_eq!(encode(1 << 22, 1), Err(Errno(libc::EOVERFLOW)));
        assert_eq!(encode(0, 1), Err(Errno(libc::EOVERFLOW)));
    }
}
