//! ptfs: a minimal pass-through FUSE filesystem over a backing directory,
//! mounted with swiftgate's options (src/cli/mount.rs), to measure what
//! FUSE passthrough (Linux 6.9+) gives against reads served by the daemon.
//!
//!   ptfs classic|keepcache|passthrough BACKING MOUNTPOINT [--direct-writers]
//!
//! classic:     every read goes to the daemon, which preads the backing file
//!              into the reply (swiftgate's path: no FOPEN_KEEP_CACHE, so
//!              each open starts with an empty FUSE page cache).
//! keepcache:   classic plus FOPEN_KEEP_CACHE (a second open reads the FUSE
//!              inode's page cache without asking the daemon).
//! passthrough: read-only opens register the backing file with the kernel
//!              (a backing id) and reply FOPEN_PASSTHROUGH: the kernel reads
//!              the backing file itself. Opens for writing stay on the
//!              daemon path (swiftgate must see writes), with FOPEN_DIRECT_IO
//!              if --direct-writers is given (such opens do not put the
//!              inode in caching mode, which passthrough opens exclude).
//!
//! Runs in the foreground until the mount is unmounted.

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Classic,
    KeepCache,
    Passthrough,
}

struct Inodes {
    path: HashMap<u64, PathBuf>,
    ino: HashMap<PathBuf, u64>,
    next: u64,
}

struct Handle {
    file: Arc<File>,
    /// Held so the kernel keeps the backing file until release.
    backing: Option<u64>,
}

struct Ptfs {
    mode: Mode,
    direct_writers: bool,
    no_writeback: bool,
    stack_depth: u32,
    root: PathBuf,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// One backing id per inode, shared by its concurrent opens: the kernel
    /// refuses a second, different backing file for an inode (EBUSY).
    backing: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
    next_fh: AtomicU64,
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

fn attr(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let kind = match m.mode() & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        _ => FileType::RegularFile,
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: ts(m.atime(), m.atime_nsec()),
        mtime: ts(m.mtime(), m.mtime_nsec()),
        ctime: ts(m.ctime(), m.ctime_nsec()),
        crtime: ts(m.ctime(), m.ctime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl Ptfs {
    fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        self.inodes.lock().unwrap().path.get(&ino.0).cloned()
    }

    fn ino_of(&self, p: &Path) -> u64 {
        let mut i = self.inodes.lock().unwrap();
        if let Some(n) = i.ino.get(p) {
            return *n;
        }
        let n = i.next;
        i.next += 1;
        i.ino.insert(p.to_path_buf(), n);
        i.path.insert(n, p.to_path_buf());
        n
    }

    fn add_handle(&self, file: File, backing: Option<u64>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(
            fh,
            Handle {
                file: Arc::new(file),
                backing,
            },
        );
        fh
    }

    fn file(&self, fh: FileHandle) -> Option<Arc<File>> {
        self.handles
            .lock()
            .unwrap()
            .get(&fh.0)
            .map(|h| h.file.clone())
    }
}

impl fuser::Filesystem for Ptfs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // As swiftgate asks (src/fs/fuse.rs), so the comparison is fair.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        if !self.no_writeback {
            let _ = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        if self.mode == Mode::Passthrough {
            // FUSE_PASSTHROUGH alone is not enough: the kernel enables it
            // only with max_stack_depth >= 1 in the init reply (1: the
            // backing files are on a plain fs, not on another stacked one).
            if let Err(missing) = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                eprintln!(
                    "ptfs: kernel lacks {missing:?} (Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH)"
                );
                return Err(std::io::Error::from_raw_os_error(libc::ENOSYS));
            }
            config
                .set_max_stack_depth(self.stack_depth)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) => reply.entry(&TTL, &attr(self.ino_of(&p), &m), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::symlink_metadata(&p) {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(s) = size {
            if let Err(e) = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(s))
            {
                return reply.error(errno(&e));
            }
        }
        match std::fs::symlink_metadata(&p) {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let acc = flags.0 & libc::O_ACCMODE;
        let writer = acc != libc::O_RDONLY;
        // The writeback cache may read a page back from a write-only open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writer)
            .custom_flags(flags.0 & libc::O_APPEND)
            .open(&p);
        let file = match file {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        if self.mode == Mode::Passthrough && !writer {
            let mut b = self.backing.lock().unwrap();
            let id = match b.get_mut(&ino.0) {
                Some((id, n)) => {
                    *n += 1;
                    id.clone()
                }
                None => match reply.open_backing(&file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        b.insert(ino.0, (id.clone(), 1));
                        id
                    }
                    Err(e) => {
                        eprintln!("ptfs: FUSE_DEV_IOC_BACKING_OPEN failed: {e}");
                        return reply.error(errno(&e));
                    }
                },
            };
            drop(b);
            let fh = self.add_handle(file, Some(ino.0));
            return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
        }
        let fl = match self.mode {
            _ if writer && self.direct_writers => FopenFlags::FOPEN_DIRECT_IO,
            Mode::KeepCache => FopenFlags::FOPEN_KEEP_CACHE,
            _ => FopenFlags::empty(),
        };
        let fh = self.add_handle(file, None);
        reply.opened(FileHandle(fh), fl)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got])
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.handles.lock().unwrap().remove(&fh.0);
        if let Some(ino) = h.and_then(|h| h.backing) {
            let mut b = self.backing.lock().unwrap();
            if let Some((_, n)) = b.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    // Dropping the last reference closes the backing id.
                    b.remove(&ino);
                }
            }
        }
        reply.ok()
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty())
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in rd.flatten() {
            let p = e.path();
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            entries.push((self.ino_of(&p), kind, e.file_name()));
        }
        for (i, (n, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(n), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let c = CString::new(self.root.as_os_str().as_bytes()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        )
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENODATA)
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ptfs classic|keepcache|passthrough BACKING MOUNTPOINT [--direct-writers]";
    if args.len() < 4 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let mode = match args[1].as_str() {
        "classic" => Mode::Classic,
        "keepcache" => Mode::KeepCache,
        "passthrough" => Mode::Passthrough,
        m => {
            eprintln!("ptfs: unknown mode {m:?}\n{usage}");
            std::process::exit(2);
        }
    };
    let root = match std::fs::canonicalize(&args[2]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ptfs: backing directory {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let mut inodes = Inodes {
        path: HashMap::new(),
        ino: HashMap::new(),
        next: 2,
    };
    inodes.path.insert(1, root.clone());
    inodes.ino.insert(root.clone(), 1);
    let fs = Ptfs {
        mode,
        direct_writers: args.iter().any(|a| a == "--direct-writers"),
        no_writeback: args.iter().any(|a| a == "--no-writeback-cache"),
        // Only to show that 0 (fuser's default) disables passthrough.
        stack_depth: if args.iter().any(|a| a == "--stack-depth-0") {
            0
        } else {
            1
        },
        root,
        inodes: Mutex::new(inodes),
        handles: Mutex::new(HashMap::new()),
        backing: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
    };
    // swiftgate's mount (src/cli/mount.rs): same options, 4 threads, one
    // cloned /dev/fuse fd per thread, allow_other for smbd.
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("ptfs:{}", args[1])),
        fuser::MountOption::Subtype("ptfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(4);
    cfg.clone_fd = true;
    let session = match fuser::Session::new(fs, &args[3], &cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ptfs: mounting {}: {e}", args[3]);
            std::process::exit(1);
        }
    };
    if let Err(e) = session.run() {
        eprintln!("ptfs: session ended: {e}");
        std::process::exit(1);
    }
}
