//! Thin adapter from fuser's callbacks to `Fs`: converts types, replies.

use super::{AttrChange, Caller, Errno as FsErrno, Fs, TimeSet};
use crate::meta::Attr;
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a filesystem is mounted where the standalone mount and the
/// gateway's homes legitimately differ; everything else is decided once,
/// in [`session`].
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// Let users other than the mounting one in (`allow_other`). A home
    /// needs it (smbd serves it as the Samba user); a standalone mount
    /// asks for it with `--allow-other`.
    pub allow_other: bool,
    /// Honour device nodes and set-user/group-ID bits (the kernel's
    /// `dev`, `suid`). Off for homes: users write them over SMB and must
    /// not get a device or a set-uid program on the gateway that way. On
    /// for the standalone mount, a general filesystem an admin mounts
    /// like any other (POSIX conformance includes both).
    pub devices_and_setuid: bool,
    /// Requests of this mount served at once (on the shared pool, see
    /// [`super::dispatch`]); the device is read by the process's shared
    /// readers ([`super::fuse_readers`]).
    pub concurrency: usize,
}

/// Options of the kernel mount and the FUSE session; `source` is what
/// the mount table shows as the filesystem (`swiftgate:<source>`).
fn config(source: &str, s: &MountSettings) -> fuser::Config {
    use fuser::MountOption as O;
    let mut cfg = fuser::Config::default();
    let (dev, suid) = if s.devices_and_setuid {
        (O::Dev, O::Suid)
    } else {
        (O::NoDev, O::NoSuid)
    };
    cfg.mount_options = vec![
        O::FSName(format!("swiftgate:{source}")),
        O::Subtype("swiftgate".into()),
        O::DefaultPermissions,
        O::NoAtime,
        dev,
        suid,
    ];
    if s.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    // `n_threads` is left alone: the shared readers (fuse_readers) read
    // the device, never `Session::run`.
    cfg
}

/// Mount `engine`'s filesystem at `mountpoint`: the one place a FUSE
/// session is built (the standalone mount and every gateway home); it is
/// then served by [`super::fuse_readers::serve`].
pub fn session(
    engine: &super::engine::Engine,
    mountpoint: &Path,
    s: &MountSettings,
) -> std::io::Result<fuser::Session<FuseFs>> {
    let cfg = config(&engine.store.url(), s);
    let fs = FuseFs::new(engine.fs.clone(), s.concurrency);
    let notifier = fs.notifier_slot();
    let session = fuser::Session::new(fs, mountpoint, &cfg)?;
    let _ = notifier.set(session.notifier());
    Ok(session)
}

/// How long the kernel keeps names and attributes of the live tree.
/// Every change to it goes through this mount (one mount per filesystem,
/// by the lease), which the kernel tracks itself, and the daemon's own
/// changes (a snapshot restore) invalidate what they touch. So a listing
/// repeated later (Explorer refreshing a folder of 100,000 files) costs
/// no lookup per entry; the bound only limits how long a change the
/// daemon failed to announce could stay unseen.
const TTL: Duration = Duration::from_secs(3600);
/// Snapshot trees: made and deleted by the schedule, behind the kernel.
const SNAP_TTL: Duration = Duration::from_secs(1);
/// How long a directory's full listing with attributes is taken as still
/// held by the kernel for Samba's rescans (see `readdirplus`): short, as
/// memory pressure may have dropped entries since.
const RESCAN_WINDOW: Duration = Duration::from_secs(1);

/// The lifetime of what the kernel learns about `ino` (or a name that is
/// not there, in directory `ino`).
fn ttl(ino: u64) -> &'static Duration {
    if super::snapview::is_snapshot_ino(ino) {
        &SNAP_TTL
    } else {
        &TTL
    }
}
const GEN: Generation = Generation(0);

pub struct FuseFs {
    fs: Arc<Fs>,
    /// To make the kernel hand over a file's cached writes (see `lseek`);
    /// set once the session exists.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// One such hand-over at a time: each holds a thread while the
    /// mount's reader and the pool serve the writes it causes.
    handover: Arc<parking_lot::Mutex<()>>,
    /// When each directory last got a full readdirplus from offset 0.
    listed: parking_lot::Mutex<HashMap<u64, Instant>>,
    /// This mount's share of the pool serving requests that may block.
    lane: super::dispatch::Lane,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>, concurrency: usize) -> FuseFs {
        let notifier: Arc<std::sync::OnceLock<fuser::Notifier>> = Arc::default();
        let slot = notifier.clone();
        fs.set_invalidator(Arc::new(move |what| {
            let Some(n) = slot.get() else { return };
            let r = match what {
                super::KernelInval::Inode(ino) => n.inval_inode(INodeNo(ino), 0, 0),
                super::KernelInval::Entry(parent, name) => {
                    n.inval_entry(INodeNo(parent), OsStr::from_bytes(name))
                }
            };
            // ENOENT: the kernel holds nothing of it, which is fine.
            if let Err(e) = r {
                tracing::debug!("kernel cache invalidation: {e}");
            }
        }));
        FuseFs {
            fs,
            notifier,
            handover: Arc::default(),
            listed: parking_lot::Mutex::new(HashMap::new()),
            lane: super::dispatch::pool().lane(concurrency),
        }
    }

    /// Serve a request on the shared pool when `blocking` (it may wait on
    /// the store, an upload, backpressure or the database's write lock),
    /// else here on the reader, which is cheaper by a thread hand-off.
    ///
    /// The reader is shared by other mounts (`fuse_readers`): a request
    /// that would wait for this mount's database (a long scan or a commit
    /// under way) goes to the pool too, so it holds up nobody else.
    fn serve(&self, blocking: bool, f: impl FnOnce(&Fs) + Send + 'static) {
        if blocking || self.db_busy() {
            let fs = self.fs.clone();
            self.lane.spawn(move || f(&fs));
        } else {
            f(&self.fs)
        }
    }

    fn db_busy(&self) -> bool {
        self.fs.meta().busy()
    }

    /// Where the session's notifier goes once the session exists.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// Whether `dir` got attributes with a full listing within the rescan
    /// window (the kernel still holds them); notes this listing otherwise.
    fn listed_recently(&self, dir: u64) -> bool {
        let now = Instant::now();
        let mut l = self.listed.lock();
        if l.get(&dir)
            .is_some_and(|t| now.duration_since(*t) < RESCAN_WINDOW)
        {
            return true;
        }
        if l.len() >= 4096 {
            l.retain(|_, t| now.duration_since(*t) < RESCAN_WINDOW);
        }
        l.insert(dir, now);
        false
    }
}

/// Under a byte quota a file opened for writing bypasses the page
/// cache: its writes reach `Fs::write` in the writer's own call, which
/// then fails with EDQUOT (Samba: disk full on that write) instead of
/// the data being dropped at writeback.
///
/// Otherwise the kernel keeps a file's cached pages across opens: every
/// change to the bytes goes through it (writes are cached here, with
/// the writeback cache) or is told to it (a restore invalidates), and
/// without this each open dropped the pages and a hot read was served
/// by the daemon at a quarter of the plain directory's speed
/// (tests/bench/passthrough/RESULTS.md).
fn open_flags(fs: &Fs, flags: i32) -> FopenFlags {
    if fs.write_direct() {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        }
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

/// Whether a request about `ino` reads a snapshot view, whose metadata
/// may first have to come from the store.
fn snap(ino: INodeNo) -> bool {
    super::snapview::is_snapshot_ino(ino.0)
}

fn name(n: &OsStr) -> Vec<u8> {
    n.as_bytes().to_vec()
}

fn e(err: FsErrno) -> Errno {
    Errno::from_i32(err.0)
}

fn ts(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: ts(a.atime),
        mtime: ts(a.mtime),
        ctime: ts(a.ctime),
        crtime: ts(a.crtime),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(ns(t)),
    }
}

fn entry(reply: ReplyEntry, r: super::Result<Attr>) {
    match r {
        Ok(a) => reply.entry(ttl(a.ino), &file_attr(&a), GEN),
        Err(err) => reply.error(e(err)),
    }
}

fn empty(reply: ReplyEmpty, r: super::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(e(err)),
    }
}

fn xattr_reply(reply: ReplyXattr, r: super::Result<Vec<u8>>, size: u32) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(err) => reply.error(e(err)),
    }
}

/// lookup, with a negative entry for a name that is not there.
fn lookup(fs: &Fs, parent: INodeNo, name: &[u8], reply: ReplyEntry) {
    match fs.lookup(parent.0, name) {
        // A negative entry the kernel may cache: every change to this
        // namespace goes through this kernel, which replaces it on
        // create. Samba probes many names that do not exist.
        Err(FsErrno(libc::ENOENT)) => {
            let a = FileAttr {
                ino: INodeNo(0),
                size: 0,
                blocks: 0,
                atime: UNIX_EPOCH,
                mtime: UNIX_EPOCH,
                ctime: UNIX_EPOCH,
                crtime: UNIX_EPOCH,
                kind: FileType::RegularFile,
                perm: 0,
                nlink: 0,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 0,
                flags: 0,
            };
            reply.entry(ttl(parent.0), &a, Generation(0))
        }
        r => entry(reply, r),
    }
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Readdirplus saves a lookup per entry for readers that stat what
        // they list; "auto" makes the kernel ask for it only at offset 0
        // and after lookups in the directory (see `readdirplus`).
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS
                | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS,
        );
        // The kernel's page cache takes writes and hands them over in
        // large pieces on close, fsync or memory pressure: one request for
        // a small file written in many pieces (tar, Samba), and no size or
        // mtime update per write.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        // Requests still on the pool finish before the engine is closed.
        self.lane.drain();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        if !snap(parent) && !self.db_busy() {
            // Answered here: the name needs no copy for another thread.
            return lookup(&self.fs, parent, n.as_bytes(), reply);
        }
        let n = name(n);
        self.serve(true, move |fs| lookup(fs, parent, &n, reply))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.serve(snap(ino), move |fs| match fs.getattr(ino.0) {
            Ok(a) => reply.attr(ttl(a.ino), &file_attr(&a)),
            Err(err) => reply.error(e(err)),
        })
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ch = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        // Blocking: a truncation may need its last block from the store.
        self.serve(true, move |fs| match fs.setattr(ino.0, &ch) {
            Ok(a) => reply.attr(ttl(a.ino), &file_attr(&a)),
            Err(err) => reply.error(e(err)),
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.serve(snap(ino), move |fs| match fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(err) => reply.error(e(err)),
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (c, n) = (caller(req), name(name_));
        self.serve(true, move |fs| {
            entry(reply, fs.mknod(c, parent.0, &n, mode, umask, rdev))
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (c, n) = (caller(req), name(name_));
        self.serve(true, move |fs| {
            entry(reply, fs.mkdir(c, parent.0, &n, mode, umask))
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = name(n);
        self.serve(true, move |fs| empty(reply, fs.unlink(parent.0, &n)))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = name(n);
        self.serve(true, move |fs| empty(reply, fs.rmdir(parent.0, &n)))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (c, n, t) = (caller(req), name(link_name), name(target.as_os_str()));
        self.serve(true, move |fs| {
            entry(reply, fs.symlink(c, parent.0, &n, &t))
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (n, nn) = (name(name_), name(newname));
        self.serve(true, move |fs| {
            empty(
                reply,
                fs.rename(parent.0, &n, newparent.0, &nn, flags.bits()),
            )
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let nn = name(newname);
        self.serve(true, move |fs| {
            entry(reply, fs.link(ino.0, newparent.0, &nn))
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Blocking when it truncates (setattr's reasons).
        let blocking = snap(ino) || flags.0 & libc::O_TRUNC != 0;
        self.serve(blocking, move |fs| match fs.open(ino.0, flags.0) {
            Ok(_) => reply.opened(FileHandle(0), open_flags(fs, flags.0)),
            Err(err) => reply.error(e(err)),
        })
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Cached bytes are copied out here; anything that may wait goes
        // to the pool. Either way the reply is sent from the thread's read
        // buffer (no copy of it).
        let mut reply = Some(reply);
        let answered = self.fs.read_now(ino.0, offset, size, |d| {
            if let Some(r) = reply.take() {
                r.data(d)
            }
        });
        let (None, Some(reply)) = (answered, reply) else {
            return;
        };
        self.serve(true, move |fs| {
            let mut reply = Some(reply);
            let r = fs.read_with(ino.0, offset, size, |d| {
                if let Some(r) = reply.take() {
                    r.data(d)
                }
            });
            if let (Err(err), Some(r)) = (r, reply) {
                r.error(e(err))
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A copy: the reader's buffer takes the next request meanwhile.
        let data = data.to_vec();
        self.serve(true, move |fs| match fs.write(ino.0, offset, &data) {
            Ok(n) => reply.written(n),
            // From the page cache, after the writer's call returned: the
            // kernel keeps only ENOSPC or EIO for close, and EIO would
            // tell Windows the disk failed rather than that it is full.
            Err(FsErrno(libc::EDQUOT)) if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) => {
                reply.error(Errno::ENOSPC)
            }
            Err(err) => reply.error(e(err)),
        })
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.serve(true, move |fs| empty(reply, fs.flush(ino.0)))
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(true, move |fs| empty(reply, fs.release(ino.0)))
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        self.serve(true, move |fs| empty(reply, fs.fsync(ino.0)))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(snap(ino), move |fs| match fs.getattr(ino.0) {
            // The kernel may keep listings: every change to this namespace
            // goes through it (one mount per filesystem, by the lease), and
            // it drops a directory's listing when the directory changes.
            Ok(a) if a.is_dir() && fs.listing_cacheable(ino.0) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok(a) if a.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(err) => reply.error(e(err)),
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.serve(snap(ino), move |fs| {
            let r = fs.readdir(ino.0, offset, |off, i, mode, name| {
                reply.add(INodeNo(i), off, kind(mode), OsStr::from_bytes(name))
            });
            match r {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        })
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // Samba rescans a whole directory for every new name (to rule out
        // a case variant), so a directory of n files costs n^2 entries, and
        // the kernel asks each scan's first reply as readdirplus. A
        // directory listed with attributes within the rescan window (the kernel
        // still holds them) gets a first reply of `.` and `..` only; the
        // kernel goes on with plain readdir, served from memory (~0.1 us an
        // entry, against ~2 us with attributes from SQLite). Later
        // readdirplus requests (after lookups) get full replies.
        let first = offset == 0 && self.listed_recently(ino.0);
        self.serve(snap(ino), move |fs| {
            let r = fs.readdir_plus(ino.0, offset, |off, name, a| {
                let full = reply.add(
                    INodeNo(a.ino),
                    off,
                    OsStr::from_bytes(name),
                    ttl(a.ino),
                    &file_attr(a),
                    GEN,
                );
                full || (first && off == 2)
            });
            match r {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        })
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(true, move |fs| {
            empty(reply, fs.meta().sync().map_err(FsErrno::from))
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A few rows (kept totals): answered like getattr.
        self.serve(false, move |fs| match fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(err) => reply.error(e(err)),
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name_: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (n, v) = (name(name_), value.to_vec());
        self.serve(true, move |fs| {
            empty(reply, fs.setxattr(ino.0, &n, &v, flags))
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name_: &OsStr, size: u32, reply: ReplyXattr) {
        if !snap(ino) && !self.db_busy() {
            // Answered here: the name needs no copy for another thread.
            return xattr_reply(reply, self.fs.getxattr(ino.0, name_.as_bytes()), size);
        }
        let n = name(name_);
        self.serve(true, move |fs| {
            xattr_reply(reply, fs.getxattr(ino.0, &n), size)
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.serve(snap(ino), move |fs| {
            xattr_reply(reply, fs.listxattr(ino.0), size)
        })
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name_: &OsStr, reply: ReplyEmpty) {
        let n = name(name_);
        self.serve(true, move |fs| empty(reply, fs.removexattr(ino.0, &n)))
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks access itself.
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (c, n) = (caller(req), name(name_));
        self.serve(true, move |fs| {
            match fs.create(c, parent.0, &n, mode, umask) {
                Ok(a) => reply.created(
                    ttl(a.ino),
                    &file_attr(&a),
                    GEN,
                    FileHandle(0),
                    open_flags(fs, flags),
                ),
                Err(err) => reply.error(e(err)),
            }
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.serve(true, move |fs| {
            empty(reply, fs.fallocate(ino.0, offset, length, mode))
        })
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if offset < 0 {
            return reply.error(Errno::ENXIO);
        }
        // With the writeback cache the kernel may still hold writes to this
        // file (and a larger size) that we have not seen, and it does not
        // flush them before asking: data there would look like a hole.
        // Invalidating the file's pages makes the kernel write the dirty
        // ones first (on other FUSE threads).
        // A thread of its own, not the pool's: the hand-over waits for
        // writes the pool must serve, and a pool full of hand-overs would
        // wait forever. Rare (SEEK_DATA, SEEK_HOLE; the kernel answers
        // the others).
        let (fs, notifier, handover) = (
            self.fs.clone(),
            self.notifier.clone(),
            self.handover.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("fuse-lseek".into())
            .spawn(move || {
                if let Some(n) = notifier.get() {
                    let _one = handover.lock();
                    if let Err(err) = n.inval_inode(ino, 0, 0) {
                        tracing::debug!(ino = ino.0, "inval_inode before lseek: {err}");
                    }
                }
                match fs.lseek(ino.0, offset as u64, whence) {
                    Ok(o) => reply.offset(o as i64),
                    Err(err) => reply.error(e(err)),
                }
            });
        if let Err(err) = spawned {
            tracing::error!(ino = ino.0, "cannot start a thread for lseek: {err}");
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // One reply carries at most a u32 count; callers loop on short copies.
        let len = len.min(u32::MAX as u64 & !0xfff);
        self.serve(true, move |fs| {
            match fs.copy_file_range(ino_in.0, offset_in, ino_out.0, offset_out, len) {
                Ok(n) => reply.written(n as u32),
                Err(err) => reply.error(e(err)),
            }
        })
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // No ioctl is ours; callers probe many (Samba, coreutils) and take
        // ENOTTY as "not this filesystem's".
        tracing::debug!(ino = ino.0, cmd, "ioctl not supported");
        reply.error(Errno::ENOTTY);
    }
}

#[cfg(test)]
mod tests {
    use super::{config, MountSettings};
    use fuser::MountOption as O;

    #[test]
    fn homes_and_the_standalone_mount_differ_only_where_settings_say() {
        let home = config(
            "local:///s",
            &MountSettings {
                allow_other: true,
                devices_and_setuid: false,
                concurrency: 4,
            },
        );
        let standalone = config(
            "local:///s",
            &MountSettings {
                allow_other: false,
                devices_and_setuid: true,
                concurrency: 0,
            },
        );
        let base = [
            O::FSName("swiftgate:local:///s".into()),
            O::Subtype("swiftgate".into()),
            O::DefaultPermissions,
            O::NoAtime,
        ];
        assert_eq!(home.mount_options[..4], base);
        assert_eq!(standalone.mount_options[..4], base);
        assert_eq!(home.mount_options[4..], [O::NoDev, O::NoSuid]);
        assert_eq!(standalone.mount_options[4..], [O::Dev, O::Suid]);
        assert_eq!(home.acl, fuser::SessionACL::All);
        assert_eq!(standalone.acl, fuser::SessionACL::Owner);
    }
}
