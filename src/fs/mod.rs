//! POSIX semantics over metadata and cache, independent of FUSE: every
//! method takes plain values and returns a result whose error is an errno.
//! `fuse.rs` only translates between this and the kernel protocol.

pub mod commands;
pub mod dispatch;
pub mod engine;
pub mod fuse;
pub mod fuse_readers;
pub mod quota;
pub mod snapshots;
pub mod snapview;
mod sparse;
#[cfg(test)]
pub(crate) mod testing;
pub mod ticker;

use crate::cache::{Cache, CacheError};
use crate::meta::ship::Shipper;
use crate::meta::{self, Attr, Meta, MetaError, SetAttr, CAPS_XATTR};
use parking_lot::{Mutex, RwLock};
use snapview::{is_snapshot_ino, SnapViews, Tree, SNAPDIR_INO, SNAPDIR_NAME};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// Each thread's buffer for reads (see [`Fs::read_with`]).
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
/// A larger read buffer is not kept (FUSE reads are at most 1 MiB). The
/// threads keeping one are shared by every mount: the pool's workers and
/// the FUSE readers (`fuse_readers`), a few each.
const READ_BUF_KEEP: usize = 4 << 20;

/// `f` with this thread's read buffer, let go afterwards if it grew past
/// [`READ_BUF_KEEP`].
fn with_read_buf<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let r = f(&mut buf);
        if buf.len() > READ_BUF_KEEP {
            *buf = Vec::new();
        }
        r
    })
}

/// Largest file we accept: 2^50 bytes (1 PiB), well past the 1 TiB promise.
pub const MAX_FILE_SIZE: u64 = 1 << 50;
pub const XATTR_SIZE_MAX: usize = 65536;
pub const PATH_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl From<MetaError> for Errno {
    fn from(e: MetaError) -> Errno {
        Errno(match e {
            MetaError::NotFound => libc::ENOENT,
            MetaError::Exists => libc::EEXIST,
            MetaError::NotEmpty => libc::ENOTEMPTY,
            MetaError::NotDir => libc::ENOTDIR,
            MetaError::IsDir => libc::EISDIR,
            MetaError::Invalid("name too long") => libc::ENAMETOOLONG,
            MetaError::Invalid("hard link to a directory") => libc::EPERM,
            MetaError::Invalid(_) => libc::EINVAL,
            MetaError::NoAttr => libc::ENODATA,
            MetaError::TooManyLinks => libc::EMLINK,
            e @ (MetaError::Db(_) | MetaError::Corrupt(_)) => {
                tracing::error!("metadata error: {e}");
                libc::EIO
            }
        })
    }
}

impl From<CacheError> for Errno {
    fn from(e: CacheError) -> Errno {
        match e {
            CacheError::Meta(m) => m.into(),
            // Reported (rate-limited) where it was found.
            CacheError::NoSpace => Errno(libc::ENOSPC),
            CacheError::Io { ref cause, .. } if cause.raw_os_error() == Some(libc::ENOSPC) => {
                tracing::error!("{e}");
                Errno(libc::ENOSPC)
            }
            e => {
                tracing::error!("{e}");
                Errno(libc::EIO)
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Durability {
    /// fsync: data on the local cache disk.
    Local,
    /// fsync: data and metadata in the object store.
    Remote,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "local" => Ok(Durability::Local),
            "remote" => Ok(Durability::Remote),
            _ => Err(format!("invalid durability {s:?}: use local or remote")),
        }
    }
}

/// Who is asking: for ownership of new nodes.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(i64),
}

#[derive(Debug, Default, Clone)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// What the kernel must forget after a change made outside its requests
/// (a restore from a snapshot): a file's pages and attributes, or a name.
#[derive(Debug, Clone, Copy)]
pub enum KernelInval<'a> {
    Inode(u64),
    Entry(u64, &'a [u8]),
}

pub type Invalidator = Arc<dyn Fn(KernelInval<'_>) + Send + Sync>;

pub struct Fs {
    meta: Arc<Meta>,
    cache: Arc<Cache>,
    shipper: Arc<Shipper>,
    durability: Durability,
    /// Open handles per inode: an unlinked file lives until the last closes.
    open: Mutex<HashMap<u64, u32>>,
    /// Last read end per inode, to spot sequential readers for prefetch.
    last_read: Mutex<HashMap<u64, ReadAhead>>,
    prefetch_blocks: u64,
    quota: RwLock<quota::Quota>,
    /// The store account's quota, refreshed now and then by the engine.
    account: Mutex<Option<crate::store::Capacity>>,
    /// `/.snapshots`: the read-only trees of kept snapshots.
    views: SnapViews,
    /// Set by the FUSE adapter once its session exists.
    invalidator: std::sync::OnceLock<Invalidator>,
    /// See [`Fs::superseded`].
    lease_lost: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs").finish()
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > meta::NAME_MAX {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

fn resolve(t: TimeSet) -> i64 {
    match t {
        TimeSet::Now => meta::now_ns(),
        TimeSet::At(v) => v,
    }
}

impl Fs {
    pub fn new(
        meta: Arc<Meta>,
        cache: Arc<Cache>,
        shipper: Arc<Shipper>,
        durability: Durability,
    ) -> Result<Fs> {
        // Files unlinked while open when the last run ended are garbage now.
        for ino in meta.orphans()? {
            cache.drop_inode(ino);
            meta.purge_inode(ino, shipper.next_gen())?;
        }
        let bs = cache.block_size();
        let views_dir = meta
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("snapviews");
        let views = SnapViews::new(views_dir, &meta)?;
        Ok(Fs {
            meta,
            cache,
            shipper,
            durability,
            open: Mutex::new(HashMap::new()),
            last_read: Mutex::new(HashMap::new()),
            prefetch_blocks: ((64u64 << 20) / bs).clamp(2, 16),
            quota: RwLock::new(quota::Quota::default()),
            account: Mutex::new(None),
            views,
            invalidator: std::sync::OnceLock::new(),
            lease_lost: false.into(),
        })
    }

    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Tell the kernel (if mounted) to drop what it caches of `what`.
    pub(crate) fn invalidate(&self, what: KernelInval<'_>) {
        if let Some(f) = self.invalidator.get() {
            f(what);
        }
    }

    fn tree(&self) -> Tree<'_> {
        Tree {
            live: &self.meta,
            shipper: &self.shipper,
            cache: &self.cache,
            views: &self.views,
        }
    }

    pub(crate) fn views(&self) -> &SnapViews {
        &self.views
    }

    /// Snapshot trees are read-only; `/.snapshots` is not a name anyone
    /// can create, remove or rename to.
    fn writable(&self, parent: u64, name: &[u8]) -> Result<()> {
        if is_snapshot_ino(parent) || self.superseded() {
            return Err(Errno(libc::EROFS));
        }
        if parent == meta::ROOT_INO && name == SNAPDIR_NAME {
            return Err(Errno(libc::EPERM));
        }
        Ok(())
    }

    fn live(&self, ino: u64) -> Result<()> {
        if is_snapshot_ino(ino) || self.superseded() {
            return Err(Errno(libc::EROFS));
        }
        Ok(())
    }

    /// Another mount took this filesystem over (this one's lease was lost,
    /// or its metadata chain was taken): nothing accepted from now on could
    /// ever be stored, so the mount is read-only (EROFS) until unmounted.
    pub fn superseded(&self) -> bool {
        self.lease_lost.load(std::sync::atomic::Ordering::Acquire) || self.shipper.is_fenced()
    }

    /// This mount's lease is held by another mount now.
    pub fn set_lease_lost(&self) {
        if !self
            .lease_lost
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::error!(
                "another mount took this filesystem over: this mount is read-only from now on; unmount it (changes not yet stored stay in its local cache)"
            );
        }
    }

    /// Whether the kernel may keep `dir`'s listing until it changes it
    /// itself: not `/.snapshots`, which changes behind its back.
    pub fn listing_cacheable(&self, dir: u64) -> bool {
        dir != SNAPDIR_INO
    }

    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }
    pub fn shipper(&self) -> &Arc<Shipper> {
        &self.shipper
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        check_name(name)?;
        if is_snapshot_ino(parent) {
            return self.tree().lookup(parent, name);
        }
        if parent == meta::ROOT_INO && name == SNAPDIR_NAME {
            return self.tree().getattr(SNAPDIR_INO);
        }
        Ok(self.meta.lookup(parent, name)?)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        if is_snapshot_ino(ino) {
            return self.tree().getattr(ino);
        }
        Ok(self.meta.getattr(ino)?)
    }

    pub fn setattr(&self, ino: u64, ch: &AttrChange) -> Result<Attr> {
        self.live(ino)?;
        let now = meta::now_ns();
        let mut s = SetAttr {
            mode: ch.mode,
            uid: ch.uid,
            gid: ch.gid,
            atime: ch.atime.map(resolve),
            mtime: ch.mtime.map(resolve),
            ctime: Some(now),
            size: None,
        };
        if let Some(size) = ch.size {
            if size > MAX_FILE_SIZE {
                return Err(Errno(libc::EFBIG));
            }
            let lock = self.cache.inode_lock(ino);
            let _g = lock.write();
            let a = self.meta.getattr(ino)?;
            if a.is_dir() {
                return Err(Errno(libc::EISDIR));
            }
            if !a.is_reg() {
                return Err(Errno(libc::EINVAL));
            }
            self.check_growth(size.saturating_sub(a.size))?;
            self.cache.truncate(ino, a.size, size)?;
            s.size = Some(size);
            if s.mtime.is_none() {
                s.mtime = Some(now);
            }
            return Ok(self.meta.setattr(ino, &s)?);
        }
        Ok(self.meta.setattr(ino, &s)?)
    }

    /// New nodes: owner is the caller; group and the setgid bit of
    /// directories follow a setgid parent (BSD/SysV semantics).
    fn owner(&self, parent: u64, c: Caller, mode: u32) -> Result<(u32, u32)> {
        let pa = self.meta.getattr(parent)?;
        if pa.mode & libc::S_ISGID != 0 {
            let mode = if mode & libc::S_IFMT == libc::S_IFDIR {
                mode | libc::S_ISGID
            } else {
                mode
            };
            return Ok((pa.gid, mode));
        }
        Ok((c.gid, mode))
    }

    pub fn mknod(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<Attr> {
        check_name(name)?;
        self.writable(parent, name)?;
        let mode = mode & !(umask & 0o777);
        let kind = mode & libc::S_IFMT;
        let mode = if kind == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {}
            _ => return Err(Errno(libc::EINVAL)),
        }
        self.check_new_inode(parent, name, false)?;
        let (gid, mode) = self.owner(parent, c, mode)?;
        Ok(self
            .meta
            .mknod(parent, name, mode, c.uid, gid, rdev, None)?)
    }

    pub fn mkdir(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<Attr> {
        check_name(name)?;
        self.writable(parent, name)?;
        let mode = libc::S_IFDIR | (mode & !(umask & 0o777) & 0o7777);
        self.check_new_inode(parent, name, true)?;
        let (gid, mode) = self.owner(parent, c, mode)?;
        Ok(self.meta.mknod(parent, name, mode, c.uid, gid, 0, None)?)
    }

    pub fn symlink(&self, c: Caller, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr> {
        check_name(name)?;
        self.writable(parent, name)?;
        if target.len() >= PATH_MAX {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        self.check_new_inode(parent, name, false)?;
        let (gid, _) = self.owner(parent, c, libc::S_IFLNK)?;
        Ok(self.meta.mknod(
            parent,
            name,
            libc::S_IFLNK | 0o777,
            c.uid,
            gid,
            0,
            Some(target),
        )?)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        if is_snapshot_ino(ino) {
            return self.tree().readlink(ino);
        }
        Ok(self.meta.readlink(ino)?)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        self.live(ino)?;
        self.writable(newparent, newname)?;
        Ok(self.meta.link(ino, newparent, newname)?)
    }

    /// A name went away: free the inode if nothing refers to it any more.
    fn released_name(&self, u: meta::Unlinked) -> Result<()> {
        if u.nlink == 0 && self.open.lock().get(&u.ino).copied().unwrap_or(0) == 0 {
            self.purge(u.ino)?;
        }
        Ok(())
    }

    fn purge(&self, ino: u64) -> Result<()> {
        let lock = self.cache.inode_lock(ino);
        let _g = lock.write();
        self.cache.drop_inode(ino);
        self.meta.purge_inode(ino, self.shipper.next_gen())?;
        drop(_g);
        self.cache.forget_inode_lock(ino);
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.writable(parent, name)?;
        let u = self.meta.unlink(parent, name)?;
        self.released_name(u)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.writable(parent, name)?;
        let u = self.meta.rmdir(parent, name)?;
        self.released_name(u)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        check_name(name)?;
        check_name(newname)?;
        self.writable(parent, name)?;
        self.writable(newparent, newname)?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(Errno(libc::EINVAL));
        }
        if let Some(u) = self
            .meta
            .rename(parent, name, newparent, newname, noreplace, exchange)?
        {
            self.released_name(u)?;
        }
        Ok(())
    }

    /// open(2) with its `flags` (access mode and O_TRUNC matter here).
    pub fn open(&self, ino: u64, flags: i32) -> Result<Attr> {
        let truncate = flags & libc::O_TRUNC != 0;
        if is_snapshot_ino(ino) {
            if truncate || flags & libc::O_ACCMODE != libc::O_RDONLY {
                return Err(Errno(libc::EROFS));
            }
            return self.tree().getattr(ino);
        }
        if (truncate || flags & libc::O_ACCMODE != libc::O_RDONLY) && self.superseded() {
            return Err(Errno(libc::EROFS));
        }
        let a = self.meta.getattr(ino)?;
        *self.open.lock().entry(ino).or_insert(0) += 1;
        if truncate && a.is_reg() && a.size > 0 {
            return self.setattr(
                ino,
                &AttrChange {
                    size: Some(0),
                    ..Default::default()
                },
            );
        }
        Ok(a)
    }

    pub fn create(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<Attr> {
        let a = self.mknod(c, parent, name, mode, umask, 0)?;
        *self.open.lock().entry(a.ino).or_insert(0) += 1;
        Ok(a)
    }

    /// close(2) of a descriptor. Nothing to do: written blocks are in the
    /// cache already and committed within the group window.
    pub fn flush(&self, _ino: u64) -> Result<()> {
        Ok(())
    }

    pub fn release(&self, ino: u64) -> Result<()> {
        if is_snapshot_ino(ino) {
            return Ok(());
        }
        let last = {
            let mut o = self.open.lock();
            let n = o.entry(ino).or_insert(1);
            *n -= 1;
            if *n == 0 {
                o.remove(&ino);
                true
            } else {
                false
            }
        };
        if last {
            self.last_read.lock().remove(&ino);
            if let Ok(a) = self.meta.getattr(ino) {
                if a.nlink == 0 {
                    self.purge(ino)?;
                }
            }
        }
        Ok(())
    }

    pub fn read(&self, ino: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        self.read_with(ino, off, size, |d| d.to_vec())
    }

    /// The bytes at `off` (up to `size` of them), handed to `f` from a
    /// buffer this thread keeps: a FUSE read replies from it without a
    /// fresh, zeroed allocation per request (page faults and clearing
    /// were a tenth of a cold read's CPU).
    pub fn read_with<R>(
        &self,
        ino: u64,
        off: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if is_snapshot_ino(ino) {
            return Ok(f(&self.tree().read(ino, off, size)?));
        }
        let lock = self.cache.inode_lock(ino);
        let _g = lock.read();
        let a = self.meta.getattr(ino)?;
        if a.is_dir() {
            return Err(Errno(libc::EISDIR));
        }
        with_read_buf(|buf| {
            let n = self.read_locked_into(ino, off, size as u64, a.size, buf)?;
            if n > 0 {
                self.maybe_prefetch(ino, off, off + n as u64, a.size);
                if needs_atime(&a) {
                    let _ = self.meta.touch_atime(ino, meta::now_ns());
                }
            }
            Ok(f(&buf[..n]))
        })
    }

    /// [`read_with`](Self::read_with) where it is asked (a shared FUSE
    /// reader thread), when every byte is in the page cache already: a
    /// hand-over to a worker costs more than copying a cached read.
    /// None (and `f` not called) where it would wait: a writer, the
    /// database in use, an atime to store, a block being fetched or on the
    /// disk, any error.
    pub fn read_now<R>(
        &self,
        ino: u64,
        off: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        // Neither a snapshot view nor a database in use: both may wait.
        if is_snapshot_ino(ino) || self.meta.busy() {
            return None;
        }
        let lock = self.cache.inode_lock(ino);
        let _g = lock.try_read()?;
        let a = self.meta.getattr(ino).ok()?;
        if a.is_dir() || needs_atime(&a) {
            return None;
        }
        with_read_buf(|buf| {
            let n = self
                .read_blocks_into(off, size as u64, a.size, buf, |idx, in_blk, dst| {
                    self.cache.read_block_now(ino, idx, in_blk, dst)
                })
                .ok()??;
            if n > 0 {
                self.maybe_prefetch(ino, off, off + n as u64, a.size);
            }
            Some(f(&buf[..n]))
        })
    }

    /// The bytes at `off` (up to `size` of them, not past `file_size`);
    /// the caller holds the inode lock.
    fn read_locked(&self, ino: u64, off: u64, size: u64, file_size: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let n = self.read_locked_into(ino, off, size, file_size, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// [`read_locked`](Self::read_locked) into the first bytes of `out`
    /// (grown as needed, never shrunk); how many.
    fn read_locked_into(
        &self,
        ino: u64,
        off: u64,
        size: u64,
        file_size: u64,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        let n = self.read_blocks_into(off, size, file_size, out, |idx, in_blk, dst| {
            self.cache.read_block(ino, idx, in_blk, dst).map(|()| true)
        })?;
        Ok(n.unwrap_or(0))
    }

    /// The bytes at `off` (up to `size`, not past `file_size`) into the
    /// first bytes of `out` (grown as needed, never shrunk), block by block
    /// through `each(index, offset in block, where)`; how many, or None
    /// as soon as `each` declines a block.
    fn read_blocks_into(
        &self,
        off: u64,
        size: u64,
        file_size: u64,
        out: &mut Vec<u8>,
        mut each: impl FnMut(u64, u64, &mut [u8]) -> std::result::Result<bool, CacheError>,
    ) -> Result<Option<usize>> {
        if off >= file_size {
            return Ok(Some(0));
        }
        let end = file_size.min(off.saturating_add(size));
        let len = (end - off) as usize;
        if out.len() < len {
            out.resize(len, 0);
        }
        let bs = self.cache.block_size();
        let mut pos = off;
        while pos < end {
            let idx = pos / bs;
            let in_blk = pos % bs;
            let n = (bs - in_blk).min(end - pos);
            // Every byte of `dst` is written (holes and short blocks as
            // zeros): the buffer holds an earlier read's bytes.
            let dst = &mut out[(pos - off) as usize..(pos - off + n) as usize];
            if !each(idx, in_blk, dst)? {
                return Ok(None);
            }
            pos += n;
        }
        Ok(Some(len))
    }

    fn maybe_prefetch(&self, ino: u64, off: u64, end: u64, size: u64) {
        let bs = self.cache.block_size();
        let last = size.saturating_sub(1) / bs;
        let (first, upto) = {
            let mut lr = self.last_read.lock();
            // A first read is not sequential yet.
            let Some(ra) = lr.get_mut(&ino) else {
                lr.insert(ino, ReadAhead { end, ahead: 0 });
                return;
            };
            // The kernel's read-ahead requests reach the worker threads
            // out of order: a read starting within 1 MiB of where the last
            // ended is still this reader going forward. A jump (random
            // access) is a new start.
            const REORDER: u64 = 1 << 20;
            if off.abs_diff(ra.end) > REORDER {
                ra.end = end;
                ra.ahead = 0;
                return;
            }
            ra.end = ra.end.max(end);
            let end = ra.end;
            // Asked for in batches of half the window once the reader is
            // within half a window of what was asked for: consecutive
            // blocks in one request (see Cache::prefetch), not one block
            // per boundary crossed.
            let cur = end / bs;
            let want = last.min(cur + self.prefetch_blocks);
            let first = (cur + 1).max(ra.ahead + 1);
            if first > want || ra.ahead >= cur + self.prefetch_blocks / 2 {
                return;
            }
            ra.ahead = want;
            (first, want)
        };
        let mut refs = Vec::new();
        let mut at_upto = false;
        for idx in first..=upto {
            if let Ok(Some(b)) = self.meta.block_at(ino, idx) {
                refs.push(b);
                at_upto = idx == upto;
            }
        }
        // A batch ending inside an object takes the rest of that object
        // too (at most half a window more): the next batch then starts at
        // an object's first block, and each object of a file written in
        // one go comes down in one GET instead of two.
        let mut ext = upto;
        while at_upto && ext < last && ext - upto < self.prefetch_blocks / 2 {
            let prev = &refs[refs.len() - 1];
            match self.meta.block_at(ino, ext + 1) {
                Ok(Some(b)) if b.stored_right_after(prev) => {
                    refs.push(b);
                    ext += 1;
                }
                _ => break,
            }
        }
        if ext > upto {
            if let Some(ra) = self.last_read.lock().get_mut(&ino) {
                ra.ahead = ra.ahead.max(ext);
            }
        }
        if !refs.is_empty() {
            self.cache.prefetch(refs);
        }
    }

    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> Result<u32> {
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Errno(libc::EFBIG))?;
        if end > MAX_FILE_SIZE {
            return Err(Errno(libc::EFBIG));
        }
        self.live(ino)?;
        let _room = self.cache.wait_for_room(data.len() as u64)?;
        let lock = self.cache.inode_lock(ino);
        let _g = lock.write();
        let a = self.meta.getattr(ino)?;
        if !a.is_reg() {
            return Err(Errno(libc::EINVAL));
        }
        // Refused whole: a short write would leave the caller guessing.
        self.check_growth(end.saturating_sub(a.size))?;
        if off > a.size {
            // The gap between the old end and this write reads as zeros.
            self.cache.cut_past_eof(ino, a.size)?;
        }
        self.write_locked(ino, off, data, a.size)?;
        self.meta.note_write(ino, end, meta::now_ns())?;
        Ok(data.len() as u32)
    }

    /// Write `data` at `off` into the cache, leaving the inode alone; the
    /// caller holds the inode lock exclusively and `size` is the file's.
    fn write_locked(&self, ino: u64, off: u64, data: &[u8], size: u64) -> Result<()> {
        let end = off + data.len() as u64;
        let bs = self.cache.block_size();
        let mut pos = off;
        while pos < end {
            let idx = pos / bs;
            let in_blk = pos % bs;
            let n = (bs - in_blk).min(end - pos);
            let src = &data[(pos - off) as usize..(pos - off + n) as usize];
            // The block holding `size` is read only up to `size` here; a
            // write starting past the end had the caller cut what is
            // stored past it (`Cache::cut_past_eof`: a shared block may
            // hold another file's bytes there), so a gap reads as zeros.
            self.write_block_retrying(ino, idx, in_blk, src, size)?;
            pos += n;
        }
        Ok(())
    }

    /// A full cache disk is a reason to wait for uploads, not to fail.
    fn write_block_retrying(
        &self,
        ino: u64,
        idx: u64,
        off: u64,
        data: &[u8],
        size: u64,
    ) -> Result<()> {
        // Bounded: the room check below fails by itself once waiting
        // cannot help; this is the backstop.
        let deadline = Instant::now() + self.cache.nospace_wait() + Duration::from_secs(5);
        loop {
            match self.cache.write_block(ino, idx, off, data, size) {
                Err(CacheError::NoSpace) if Instant::now() < deadline => {
                    self.cache.note_disk_full();
                    drop(self.cache.wait_for_room(0)?);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(CacheError::NoSpace) => return Err(Errno(libc::ENOSPC)),
                r => return Ok(r?),
            }
        }
    }

    pub fn fsync(&self, ino: u64) -> Result<()> {
        if is_snapshot_ino(ino) {
            return Ok(());
        }
        match self.durability {
            Durability::Local => {
                self.cache.sync_local(ino)?;
                self.meta.sync()?;
            }
            Durability::Remote => {
                self.cache.flush(Some(ino))?;
                self.shipper.ship(false).map_err(|e| {
                    tracing::error!("fsync: shipping metadata failed: {e}");
                    Errno(libc::EIO)
                })?;
            }
        }
        Ok(())
    }

    /// Directory listing from a stable cookie: 0 starts, each entry's
    /// offset resumes after it; `.` and `..` come first. Calls
    /// `add(offset, ino, mode, name)` for each entry until it returns true
    /// (the reply is full). Served from the in-memory listing.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, u32, &[u8]) -> bool,
    ) -> Result<()> {
        if is_snapshot_ino(ino) {
            return self
                .tree()
                .readdir_plus(ino, offset, |off, name, a| add(off, a.ino, a.mode, name));
        }
        if self.dot_entries(ino, offset, false, |off, name, a| {
            add(off, a.ino, a.mode, name)
        })? {
            return Ok(());
        }
        let after = offset.saturating_sub(2) as i64;
        self.meta.readdir(ino, after, |id, i, mode, name| {
            add(id as u64 + 2, i, mode, name)
        })?;
        Ok(())
    }

    /// `readdir` with each entry's attributes: `add(offset, name, attr)`.
    pub fn readdir_plus(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, &[u8], &Attr) -> bool,
    ) -> Result<()> {
        if is_snapshot_ino(ino) {
            return self.tree().readdir_plus(ino, offset, add);
        }
        if self.dot_entries(ino, offset, true, &mut add)? {
            return Ok(());
        }
        let after = offset.saturating_sub(2) as i64;
        self.meta
            .readdir_plus(ino, after, |id, name, a| add(id as u64 + 2, name, a))?;
        Ok(())
    }

    /// `.` and `..` (offsets 1 and 2) for a listing from `offset`; true
    /// when `add` found the reply full. Without `parent_attrs`, `..` carries
    /// only its inode and type (all a plain listing reads; Samba lists a
    /// directory for every new name, so no lookup of the parent's row).
    fn dot_entries(
        &self,
        ino: u64,
        offset: u64,
        parent_attrs: bool,
        mut add: impl FnMut(u64, &[u8], &Attr) -> bool,
    ) -> Result<bool> {
        if offset >= 2 {
            return Ok(false);
        }
        let a = self.meta.getattr(ino)?;
        if !a.is_dir() {
            return Err(Errno(libc::ENOTDIR));
        }
        if offset < 1 && add(1, b".", &a) {
            return Ok(true);
        }
        let p = self.meta.parent_of(ino)?;
        let parent = if parent_attrs {
            self.meta.getattr(p)?
        } else {
            Attr { ino: p, ..a }
        };
        Ok(add(2, b"..", &parent))
    }

    pub fn statfs(&self) -> Result<StatFs> {
        if let Some(s) = self.quota_statfs()? {
            return Ok(s);
        }
        let counts = self.counts()?;
        let bsize = 4096u64;
        if let Some(s) = self.account_statfs(bsize, counts.inodes) {
            return Ok(s);
        }
        // An object store has no fixed capacity: report 1 PiB total so
        // tools see real usage and plenty of room.
        let total = (1u64 << 50) / bsize;
        let used = counts.stored_bytes.div_ceil(bsize).min(total);
        let files = 1u64 << 32;
        Ok(StatFs {
            blocks: total,
            bfree: total - used,
            files,
            ffree: files.saturating_sub(counts.inodes),
            bsize: bsize as u32,
            namelen: meta::NAME_MAX as u32,
        })
    }

    /// Files, bytes, blocks and objects, as of now (kept totals: a few
    /// rows read).
    pub fn counts(&self) -> Result<meta::Counts> {
        Ok(self.meta.counts()?)
    }

    fn check_xattr_name(name: &[u8]) -> Result<()> {
        if name.is_empty() || name.len() > 255 {
            return Err(Errno(if name.is_empty() {
                libc::EINVAL
            } else {
                libc::ERANGE
            }));
        }
        if !Self::xattr_held(name) {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// Whether this filesystem holds attributes of that name. Not POSIX
    /// ACLs: the kernel enforces them on a FUSE mount only with
    /// FUSE_POSIX_ACL, so stored ones would grant or deny nothing while
    /// `getfacl` showed them (Windows ACLs live whole in security.NTACL).
    /// Not SELinux labels: a FUSE mount is labelled by the host's policy,
    /// never from the file. Refusing both, as a `noacl` mount does, also
    /// lets `ls -l` stop asking after the first file instead of costing two
    /// round trips per entry.
    fn xattr_held(name: &[u8]) -> bool {
        (name.starts_with(b"user.")
            || name.starts_with(b"security.")
            || name.starts_with(b"trusted."))
            && name != b"security.selinux"
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        Self::check_xattr_name(name)?;
        self.live(ino)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno(libc::E2BIG));
        }
        let a = self.meta.getattr(ino)?;
        // Linux allows user.* only on regular files and directories.
        if name.starts_with(b"user.") && !(a.is_reg() || a.is_dir()) {
            return Err(Errno(libc::EPERM));
        }
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        Ok(self.meta.setxattr(ino, name, value, create, replace)?)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        Self::check_xattr_name(name)?;
        if is_snapshot_ino(ino) {
            return self.tree().getxattr(ino, name);
        }
        // The kernel asks for it before each file's first write and on
        // every chown; it is almost never there.
        if name == CAPS_XATTR && !self.meta.caps_possible()? {
            return Err(Errno(libc::ENODATA));
        }
        Ok(self.meta.getxattr(ino, name)?)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let names = if is_snapshot_ino(ino) {
            self.tree().listxattr(ino)?
        } else {
            self.meta.listxattr(ino)?
        };
        // Any stored before they were refused stay, unlisted like unread.
        for n in names.into_iter().filter(|n| Self::xattr_held(n)) {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        Self::check_xattr_name(name)?;
        self.live(ino)?;
        Ok(self.meta.removexattr(ino, name)?)
    }

    /// Flush everything and ship metadata (umount, `ctl flush`).
    pub fn flush_all(&self) -> Result<()> {
        self.cache.flush(None)?;
        self.shipper.ship(false).map_err(|e| {
            tracing::error!("shipping metadata failed: {e}");
            Errno(libc::EIO)
        })?;
        Ok(())
    }
}

/// relatime: a read stores the time only when the old atime is not newer
/// than mtime or ctime.
fn needs_atime(a: &Attr) -> bool {
    a.atime <= a.mtime || a.atime <= a.ctime
}

/// A reader's position and how far ahead blocks were asked for.
#[derive(Debug, Clone, Copy)]
struct ReadAhead {
    /// Where this reader's reads have reached.
    end: u64,
    /// The last block index asked for (0: none).
    ahead: u64,
}

#[cfg(test)]
mod tests {
    use super::testing::TestEngine;
    use super::*;

    #[test]
    fn acls_and_selinux_labels_are_refused_and_old_ones_unlisted() {
        let t = TestEngine::new();
        let (fs, root) = (t.fs(), meta::ROOT_INO);
        let me = Caller { uid: 0, gid: 0 };
        let a = fs.create(me, root, b"f", 0o644, 0).unwrap();
        fs.release(a.ino).unwrap();
        for n in [
            &b"system.posix_acl_access"[..],
            b"system.posix_acl_default",
            b"security.selinux",
        ] {
            assert_eq!(fs.setxattr(a.ino, n, b"v", 0), Err(Errno(libc::EOPNOTSUPP)));
            assert_eq!(fs.getxattr(a.ino, n), Err(Errno(libc::EOPNOTSUPP)));
            // As an older version stored them: still there, not shown.
            fs.meta().setxattr(a.ino, n, b"old", false, false).unwrap();
        }
        fs.setxattr(a.ino, b"security.NTACL", b"nt", 0).unwrap();
        fs.setxattr(a.ino, b"user.DOSATTRIB", b"d", 0).unwrap();
        assert_eq!(
            fs.listxattr(a.ino).unwrap(),
            b"security.NTACL\0user.DOSATTRIB\0"
        );
        assert_eq!(fs.getxattr(a.ino, b"security.NTACL").unwrap(), b"nt");
    }

    #[test]
    fn cached_reads_are_answered_where_asked_and_the_rest_declined() {
        let t = TestEngine::new();
        let fs = t.fs();
        let me = Caller { uid: 0, gid: 0 };
        let a = fs.create(me, meta::ROOT_INO, b"f", 0o644, 0).unwrap();
        let data: Vec<u8> = (0..200u32 << 10).map(|i| (i % 251) as u8).collect();
        fs.write(a.ino, 0, &data).unwrap();
        fs.release(a.ino).unwrap();
        // The first read after a change stores the atime: a worker's job.
        assert!(fs.read_now(a.ino, 0, 4096, |d| d.to_vec()).is_none());
        fs.read_with(a.ino, 0, 4096, |_| ()).unwrap();
        // Across two 64 KiB blocks, both in the page cache: two hits.
        let hits = || fs.cache().stats().read_hits;
        let h0 = hits();
        let got = fs.read_now(a.ino, 60_000, 60_000, |d| d.to_vec());
        assert_eq!(got.as_deref(), Some(&data[60_000..120_000]));
        assert_eq!(hits(), h0 + 2);
        assert_eq!(fs.read_now(a.ino, 300 << 10, 10, |d| d.len()), Some(0));
        // A writer holds the file: declined, not waited for.
        let lock = fs.cache.inode_lock(a.ino);
        let w = lock.write();
        let h1 = hits();
        assert!(fs.read_now(a.ino, 0, 10, |d| d.len()).is_none());
        assert_eq!(hits(), h1, "a declined read is counted where it is served");
        drop(w);
        assert_eq!(fs.read_now(a.ino, 0, 10, |d| d.len()), Some(10));
        assert!(fs.read_now(meta::ROOT_INO, 0, 10, |d| d.len()).is_none());
    }

    /// A file's blocks are uploaded in objects of several blocks; read
    /// back in order, each object comes down in one request (the
    /// prefetch's batches end at object boundaries), plus the first read,
    /// made before the reader is known to be sequential.
    #[test]
    fn a_sequential_reader_fetches_each_object_in_one_request() {
        use crate::store::fault::{FaultConfig, FaultStore};
        use std::sync::atomic::Ordering;
        const BS: u64 = 4 << 20;
        let mut faults = None;
        let t = TestEngine::with(BS as u32, |s| {
            let f = Arc::new(FaultStore::new(s, FaultConfig::default()));
            faults = Some(f.clone());
            f
        });
        let faults = faults.unwrap();
        let fs = t.fs();
        let me = Caller { uid: 0, gid: 0 };
        let a = fs.create(me, meta::ROOT_INO, b"f", 0o644, 0).unwrap();
        let blocks = 26u64;
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
        for mb in 0..blocks * 4 {
            let mut c = chunk.clone();
            c[..8].copy_from_slice(&mb.to_le_bytes()); // no two blocks alike
            fs.write(a.ino, mb << 20, &c).unwrap();
        }
        fs.release(a.ino).unwrap();
        t.engine.flush(&|_| {}).unwrap();
        fs.cache().drop_clean();
        let objects: std::collections::HashSet<i64> = (0..blocks)
            .map(|i| fs.meta().block_at(a.ino, i).unwrap().unwrap().object)
            .collect();
        assert!(
            objects.len() >= 6,
            "{} objects: want several",
            objects.len()
        );
        let before = faults.range_gets.load(Ordering::Relaxed);
        for mb in 0..blocks * 4 {
            let n = fs.read_with(a.ino, mb << 20, 1 << 20, |d| {
                assert_eq!(&d[..8], &mb.to_le_bytes());
                d.len()
            });
            assert_eq!(n.unwrap(), 1 << 20);
        }
        let gets = faults.range_gets.load(Ordering::Relaxed) - before;
        assert!(
            gets <= objects.len() as u64 + 1,
            "{gets} requests for {} objects",
            objects.len()
        );
    }
}
