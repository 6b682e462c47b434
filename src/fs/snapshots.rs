//! Taking and dropping snapshots of a mounted filesystem (the read-only
//! trees are in `snapview.rs`).

use super::{AttrChange, Caller, Errno, Fs, KernelInval, Result, TimeSet};
use crate::meta::snapshots::{self, SnapshotCost, SnapshotError, SnapshotInfo};
use crate::meta::Attr;

/// Bytes one copy_file_range call moves out of a snapshot (callers loop).
const COPY_OUT_MAX: u64 = 8 << 20;

fn errno(e: SnapshotError) -> Errno {
    match e {
        SnapshotError::NotFound(_) => Errno(libc::ENOENT),
        SnapshotError::SameSecond(_) => Errno(libc::EEXIST),
        e => {
            tracing::error!("{e}");
            Errno(libc::EIO)
        }
    }
}

impl Fs {
    /// Take a snapshot now: what was written before the call (uploaded
    /// first, so the snapshot's blocks are all in the store). Its database
    /// is in the store when this returns; the metadata listing it goes
    /// with the next shipment (within the metadata interval, like any
    /// change): a second full shipment here would double the cost.
    pub fn snapshot_create(&self, label: &str) -> std::result::Result<SnapshotInfo, SnapshotError> {
        self.cache
            .flush(None)
            .map_err(|e| SnapshotError::Upload(e.to_string()))?;
        let info = self
            .shipper
            .snapshot(crate::clock::unix_now() as i64, label)?;
        // A lookup of the new name may have been cached as missing.
        self.new_name(super::snapview::SNAPDIR_INO, info.name.as_bytes());
        Ok(info)
    }

    /// Drop a snapshot; what only it held is freed once two more metadata
    /// generations are stored.
    pub fn snapshot_delete(&self, id: i64) -> std::result::Result<SnapshotInfo, SnapshotError> {
        let info = self.shipper.delete_snapshot(id)?;
        self.views().forget(&info);
        self.new_name(super::snapview::SNAPDIR_INO, info.name.as_bytes());
        self.shipper.ship(true)?;
        self.shipper.drop_snapshot_db(id)?;
        Ok(info)
    }

    /// Whether anything changed since snapshot `s` was taken.
    pub fn changed_since(&self, s: &SnapshotInfo) -> bool {
        self.shipper.shipped_gen() > s.gen || self.shipper.has_changes()
    }

    pub fn snapshot_list(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(snapshots::list(&self.meta)?)
    }

    pub fn snapshot_cost(&self) -> Result<SnapshotCost> {
        Ok(snapshots::cost(&self.meta)?)
    }

    /// A snapshot by its `@GMT-...` name or its id.
    pub fn snapshot_find(&self, name: &str) -> Result<SnapshotInfo> {
        let all = self.snapshot_list()?;
        all.into_iter()
            .find(|s| s.name == name || s.id.to_string() == name)
            .ok_or(Errno(libc::ENOENT))
    }

    /// copy_file_range out of a snapshot into a live file, by copying.
    pub(super) fn copy_from_snapshot(
        &self,
        src: u64,
        src_off: u64,
        dst: u64,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        let len = len.min(COPY_OUT_MAX);
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(1 << 20) as u32;
            let data = self.tree().read(src, src_off + done, chunk)?;
            if data.is_empty() {
                break;
            }
            self.write(dst, dst_off + done, &data)?;
            done += data.len() as u64;
        }
        Ok(done)
    }
}

impl From<SnapshotError> for Errno {
    fn from(e: SnapshotError) -> Errno {
        errno(e)
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Restored {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

impl Fs {
    /// Copy `path` (a file or folder, from the root; empty: everything) of
    /// snapshot `name` back over the live tree: files it holds replace the
    /// live ones, folders are merged, files created since are kept.
    pub fn snapshot_restore(&self, name: &str, path: &str) -> Result<Restored> {
        let snap = self.snapshot_find(name)?;
        let comps: Vec<&[u8]> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::as_bytes)
            .collect();
        if comps.iter().any(|c| *c == b"..") {
            return Err(Errno(libc::EINVAL));
        }
        let t = self.tree();
        let mut src = t.lookup(super::snapview::SNAPDIR_INO, snap.name.as_bytes())?;
        let mut live = self.meta.getattr(crate::meta::ROOT_INO)?;
        let mut out = Restored::default();
        let Some((last, parents)) = comps.split_last() else {
            self.copy_children(&src, live.ino, &mut out)?;
            return Ok(out);
        };
        for c in parents {
            src = t.lookup(src.ino, c)?;
            live = self.ensure_dir(&src, live.ino, c, &mut out)?;
        }
        let node = t.lookup(src.ino, last)?;
        self.copy_node(&node, live.ino, last, &mut out)?;
        Ok(out)
    }

    fn ensure_dir(&self, src: &Attr, parent: u64, name: &[u8], out: &mut Restored) -> Result<Attr> {
        match self.lookup(parent, name) {
            Ok(a) if a.is_dir() => Ok(a),
            Ok(_) => {
                self.unlink(parent, name)?;
                self.ensure_dir(src, parent, name, out)
            }
            Err(Errno(libc::ENOENT)) => {
                out.dirs += 1;
                let c = Caller {
                    uid: src.uid,
                    gid: src.gid,
                };
                let d = self.mkdir(c, parent, name, src.mode | 0o200, 0);
                self.new_name(parent, name);
                d
            }
            Err(e) => Err(e),
        }
    }

    fn copy_children(&self, src: &Attr, dir: u64, out: &mut Restored) -> Result<()> {
        let mut entries = Vec::new();
        self.tree().readdir_plus(src.ino, 2, |_, name, a| {
            entries.push((name.to_vec(), a.clone()));
            false
        })?;
        for (name, a) in entries {
            self.copy_node(&a, dir, &name, out)?;
        }
        Ok(())
    }

    fn copy_node(&self, src: &Attr, parent: u64, name: &[u8], out: &mut Restored) -> Result<()> {
        let existing = match self.lookup(parent, name) {
            Ok(a) => Some(a),
            Err(Errno(libc::ENOENT)) => None,
            Err(e) => return Err(e),
        };
        let c = Caller {
            uid: src.uid,
            gid: src.gid,
        };
        // The snapshot's permissions, write bits included (the tree shows
        // them cleared only because it is read-only).
        let mode = self.tree().original_mode(src.ino)?;
        let dst = match src.mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let d = self.ensure_dir(src, parent, name, out)?;
                self.copy_children(src, d.ino, out)?;
                d
            }
            libc::S_IFREG => {
                let f = match existing {
                    Some(a) if a.is_reg() => {
                        // The kernel writes back what it still holds first.
                        self.invalidate(KernelInval::Inode(a.ino));
                        self.setattr(
                            a.ino,
                            &AttrChange {
                                size: Some(0),
                                ..Default::default()
                            },
                        )?;
                        a
                    }
                    Some(a) => {
                        self.remove_any(parent, name, &a)?;
                        self.mknod(c, parent, name, libc::S_IFREG | 0o600, 0, 0)?
                    }
                    None => self.mknod(c, parent, name, libc::S_IFREG | 0o600, 0, 0)?,
                };
                self.new_name(parent, name);
                let mut off = 0;
                while off < src.size {
                    match self.copy_from_snapshot(src.ino, off, f.ino, off, src.size - off)? {
                        0 => break,
                        n => off += n,
                    }
                }
                out.files += 1;
                out.bytes += off;
                f
            }
            libc::S_IFLNK => {
                if let Some(a) = existing {
                    self.remove_any(parent, name, &a)?;
                }
                let target = self.tree().readlink(src.ino)?;
                self.symlink(c, parent, name, &target)?;
                self.new_name(parent, name);
                return Ok(());
            }
            // Devices, fifos and sockets are not worth restoring.
            _ => return Ok(()),
        };
        for n in self.tree().listxattr(src.ino)? {
            let v = self.tree().getxattr(src.ino, &n)?;
            self.setxattr(dst.ino, &n, &v, 0)?;
        }
        self.setattr(
            dst.ino,
            &AttrChange {
                mode: Some(mode & 0o7777),
                atime: Some(TimeSet::At(src.atime)),
                mtime: Some(TimeSet::At(src.mtime)),
                ..Default::default()
            },
        )?;
        self.invalidate(KernelInval::Inode(dst.ino));
        Ok(())
    }

    /// A name changed behind the kernel's back: its entry and the
    /// directory's cached listing go.
    fn new_name(&self, parent: u64, name: &[u8]) {
        self.invalidate(KernelInval::Entry(parent, name));
        self.invalidate(KernelInval::Inode(parent));
    }

    fn remove_any(&self, parent: u64, name: &[u8], a: &Attr) -> Result<()> {
        if a.is_dir() {
            // A live folder where the snapshot has a file: kept, refused.
            return Err(Errno(libc::EISDIR));
        }
        self.unlink(parent, name)
    }
}
