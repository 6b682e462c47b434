//! Reference-model test of namespace operations: random sequences of
//! create / write / truncate / rename / link / unlink / mkdir / rmdir /
//! remount run against a real swiftgate mount and against a tiny in-memory
//! model of a POSIX tree (Linux errno rules). After every operation the
//! outcome (success or the exact errno) and the whole tree (paths, types,
//! contents, sizes, st_nlink, st_ino sharing of hard links) must agree.
//! In the style of awslabs/mountpoint-s3's reference tests; proptest shrinks
//! a failure down to a minimal operation sequence.

mod common;
use common::*;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY, EPERM};

// ---------------------------------------------------------------------------
// Operations

/// File content, generated from (len, seed) so failures print compactly.
#[derive(Clone, Copy)]
struct Data {
    len: usize,
    seed: u64,
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        random_bytes(self.len, self.seed)
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B#{}", self.len, self.seed)
    }
}

/// An operation on paths of type `P`: generated with [`Pick`]s, which are
/// resolved against the model's current tree into plain paths just before
/// the operation runs.
#[derive(Clone, Debug)]
enum Op<P = String> {
    /// open(O_WRONLY|O_CREAT|O_TRUNC, or O_CREAT|O_EXCL) + write.
    Create {
        path: P,
        data: Data,
        excl: bool,
    },
    /// open(O_WRONLY) + pwrite; may extend the file (the gap reads as zeros).
    Write {
        path: P,
        offset: u64,
        data: Data,
    },
    Truncate {
        path: P,
        len: u64,
    },
    Rename {
        from: P,
        to: P,
    },
    Link {
        from: P,
        to: P,
    },
    Unlink {
        path: P,
    },
    Mkdir {
        path: P,
    },
    Rmdir {
        path: P,
    },
    /// Unmount and mount again; with `wipe_cache` the local cache is deleted
    /// first, so everything is rebuilt from the object store.
    Remount {
        wipe_cache: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Want {
    File,
    Dir,
    Any,
}

/// How a generated operation names a path. Purely random paths mostly miss
/// (ENOENT), so most operations pick among what currently exists.
#[derive(Clone)]
enum Pick {
    /// A literal path from the small universe.
    Lit(String),
    /// The n-th existing entry of a kind ("a" when there is none).
    Existing(Want, Index),
    /// `leaf` inside the n-th existing directory of depth < 3 (or the top).
    Under(Index, &'static str),
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pick::Lit(p) => write!(f, "{p:?}"),
            Pick::Existing(w, i) => write!(f, "Existing({w:?}, {i:?})"),
            Pick::Under(i, leaf) => write!(f, "Under({i:?}, {leaf:?})"),
        }
    }
}

// ---------------------------------------------------------------------------
// Model

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ent {
    Dir,
    File(u64),
}

struct Inode {
    data: Vec<u8>,
    nlink: u64,
}

/// Paths are relative to the case directory, '/'-separated, no leading '/';
/// "" is the case directory itself.
#[derive(Default)]
struct Model {
    tree: BTreeMap<String, Ent>,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Is `a` a proper ancestor directory of `b`?
fn is_ancestor(a: &str, b: &str) -> bool {
    if a.is_empty() {
        !b.is_empty()
    } else {
        b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/'
    }
}

/// The child of ancestor `a` on the way to its descendant `b`.
fn child_towards(a: &str, b: &str) -> String {
    let rest = if a.is_empty() { b } else { &b[a.len() + 1..] };
    join(a, rest.split('/').next().unwrap())
}

/// Linux lock_rename(): the dentry that must be neither the source (EINVAL:
/// moving a directory into its own subtree) nor the target (ENOTEMPTY: the
/// target is an ancestor of the source).
fn rename_trap(old_dir: &str, new_dir: &str) -> Option<String> {
    if old_dir == new_dir {
        None
    } else if is_ancestor(old_dir, new_dir) {
        Some(child_towards(old_dir, new_dir))
    } else if is_ancestor(new_dir, old_dir) {
        Some(child_towards(new_dir, old_dir))
    } else {
        None
    }
}

impl Model {
    /// Path walk of a directory: every component must exist and be a dir.
    fn walk_dir(&self, dir: &str) -> Result<(), i32> {
        if dir.is_empty() {
            return Ok(());
        }
        let ends = dir
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(dir.len()));
        for end in ends {
            match self.tree.get(&dir[..end]) {
                Some(Ent::Dir) => {}
                Some(Ent::File(_)) => return Err(ENOTDIR),
                None => return Err(ENOENT),
            }
        }
        Ok(())
    }

    /// Resolve the parent (errors as the kernel reports them), then the
    /// last component, which may be absent.
    fn lookup(&self, p: &str) -> Result<Option<Ent>, i32> {
        self.walk_dir(parent_of(p))?;
        Ok(self.tree.get(p).copied())
    }

    fn has_children(&self, dir: &str) -> bool {
        let pre = format!("{dir}/");
        self.tree
            .range(pre.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&pre))
    }

    fn new_inode(&mut self, data: Vec<u8>) -> u64 {
        self.next_ino += 1;
        self.inodes.insert(self.next_ino, Inode { data, nlink: 1 });
        self.next_ino
    }

    fn drop_link(&mut self, ino: u64) {
        let i = self.inodes.get_mut(&ino).unwrap();
        i.nlink -= 1;
        if i.nlink == 0 {
            self.inodes.remove(&ino);
        }
    }

    fn data_mut(&mut self, ino: u64) -> &mut Vec<u8> {
        &mut self.inodes.get_mut(&ino).unwrap().data
    }

    fn pick(&self, p: &Pick) -> String {
        match p {
            Pick::Lit(p) => p.clone(),
            Pick::Existing(want, i) => {
                let c: Vec<&String> = self
                    .tree
                    .iter()
                    .filter(|(_, e)| match want {
                        Want::File => matches!(e, Ent::File(_)),
                        Want::Dir => **e == Ent::Dir,
                        Want::Any => true,
                    })
                    .map(|(k, _)| k)
                    .collect();
                if c.is_empty() {
                    "a".into()
                } else {
                    c[i.index(c.len())].clone()
                }
            }
            Pick::Under(i, leaf) => {
                let mut c = vec![""];
                c.extend(
                    self.tree
                        .iter()
                        .filter(|(k, e)| **e == Ent::Dir && k.matches('/').count() < 2)
                        .map(|(k, _)| k.as_str()),
                );
                join(c[i.index(c.len())], leaf)
            }
        }
    }

    fn resolve(&self, op: &Op<Pick>) -> Op {
        let p = |x: &Pick| self.pick(x);
        match op {
            Op::Create { path, data, excl } => Op::Create {
                path: p(path),
                data: *data,
                excl: *excl,
            },
            Op::Write { path, offset, data } => Op::Write {
                path: p(path),
                offset: *offset,
                data: *data,
            },
            Op::Truncate { path, len } => Op::Truncate {
                path: p(path),
                len: *len,
            },
            Op::Rename { from, to } => Op::Rename {
                from: p(from),
                to: p(to),
            },
            Op::Link { from, to } => Op::Link {
                from: p(from),
                to: p(to),
            },
            Op::Unlink { path } => Op::Unlink { path: p(path) },
            Op::Mkdir { path } => Op::Mkdir { path: p(path) },
            Op::Rmdir { path } => Op::Rmdir { path: p(path) },
            Op::Remount { wipe_cache } => Op::Remount {
                wipe_cache: *wipe_cache,
            },
        }
    }

    /// For the coverage statistics: which interesting variant `op` is.
    fn variant(&self, op: &Op) -> &'static str {
        match op {
            Op::Rename { from, to } | Op::Link { from, to } => {
                match (self.tree.get(from), self.tree.get(to)) {
                    _ if from == to => " (same name)",
                    (Some(Ent::File(a)), Some(Ent::File(b))) if a == b => " (same inode)",
                    (Some(Ent::File(_)), Some(Ent::File(_))) => " (over file)",
                    (Some(Ent::Dir), Some(Ent::Dir)) => " (dir over dir)",
                    (Some(Ent::Dir), None) => " (dir)",
                    _ => "",
                }
            }
            Op::Write { offset, .. } if *offset >= 65530 => " (far)",
            Op::Truncate { len, .. } if *len >= 65530 => " (far)",
            _ => "",
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Create { path, data, excl } => match self.lookup(path)? {
                Some(_) if *excl => Err(EEXIST),
                Some(Ent::Dir) => Err(EISDIR),
                Some(Ent::File(ino)) => {
                    *self.data_mut(ino) = data.bytes();
                    Ok(())
                }
                None => {
                    let ino = self.new_inode(data.bytes());
                    self.tree.insert(path.clone(), Ent::File(ino));
                    Ok(())
                }
            },
            Op::Write { path, offset, data } => match self.lookup(path)? {
                None => Err(ENOENT),
                Some(Ent::Dir) => Err(EISDIR),
                Some(Ent::File(ino)) => {
                    let d = data.bytes();
                    if !d.is_empty() {
                        let f = self.data_mut(ino);
                        let (start, end) = (*offset as usize, *offset as usize + d.len());
                        if f.len() < end {
                            f.resize(end, 0);
                        }
                        f[start..end].copy_from_slice(&d);
                    }
                    Ok(())
                }
            },
            Op::Truncate { path, len } => match self.lookup(path)? {
                None => Err(ENOENT),
                Some(Ent::Dir) => Err(EISDIR),
                Some(Ent::File(ino)) => {
                    self.data_mut(ino).resize(*len as usize, 0);
                    Ok(())
                }
            },
            Op::Rename { from, to } => self.rename(from, to),
            Op::Link { from, to } => {
                // linkat: old path lookup, then create-lookup of the new
                // name (EEXIST), then vfs_link refuses directories.
                let src = self.lookup(from)?.ok_or(ENOENT)?;
                if self.lookup(to)?.is_some() {
                    return Err(EEXIST);
                }
                let Ent::File(ino) = src else {
                    return Err(EPERM);
                };
                self.inodes.get_mut(&ino).unwrap().nlink += 1;
                self.tree.insert(to.clone(), src);
                Ok(())
            }
            Op::Unlink { path } => match self.lookup(path)? {
                None => Err(ENOENT),
                Some(Ent::Dir) => Err(EISDIR),
                Some(Ent::File(ino)) => {
                    self.tree.remove(path);
                    self.drop_link(ino);
                    Ok(())
                }
            },
            Op::Mkdir { path } => match self.lookup(path)? {
                Some(_) => Err(EEXIST),
                None => {
                    self.tree.insert(path.clone(), Ent::Dir);
                    Ok(())
                }
            },
            Op::Rmdir { path } => match self.lookup(path)? {
                None => Err(ENOENT),
                Some(Ent::File(_)) => Err(ENOTDIR),
                Some(Ent::Dir) if self.has_children(path) => Err(ENOTEMPTY),
                Some(Ent::Dir) => {
                    self.tree.remove(path);
                    Ok(())
                }
            },
            Op::Remount { .. } => Ok(()),
        }
    }

    /// rename(2) in the order Linux checks: both parents, source exists,
    /// subtree traps, same inode (no-op), type mismatch, non-empty target.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        self.walk_dir(parent_of(from))?;
        self.walk_dir(parent_of(to))?;
        let src = self.tree.get(from).copied().ok_or(ENOENT)?;
        if let Some(trap) = rename_trap(parent_of(from), parent_of(to)) {
            if trap == from {
                return Err(EINVAL);
            }
            if trap == to {
                return Err(ENOTEMPTY);
            }
        }
        let dst = self.tree.get(to).copied();
        let same_inode = match (src, dst) {
            (Ent::File(a), Some(Ent::File(b))) => a == b,
            _ => from == to,
        };
        if same_inode {
            return Ok(());
        }
        match (src, dst) {
            (_, None) => {}
            (Ent::Dir, Some(Ent::File(_))) => return Err(ENOTDIR),
            (Ent::File(_), Some(Ent::Dir)) => return Err(EISDIR),
            (Ent::Dir, Some(Ent::Dir)) => {
                if self.has_children(to) {
                    return Err(ENOTEMPTY);
                }
                self.tree.remove(to);
            }
            (Ent::File(_), Some(Ent::File(ino))) => {
                self.tree.remove(to);
                self.drop_link(ino);
            }
        }
        let sub = format!("{from}/");
        let moved: Vec<(String, Ent)> = self
            .tree
            .iter()
            .filter(|(k, _)| *k == from || k.starts_with(&sub))
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        for (k, e) in moved {
            self.tree.remove(&k);
            self.tree.insert(format!("{to}{}", &k[from.len()..]), e);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The real filesystem

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn apply_real(t: &TestFs, base: &Path, op: &Op) -> Result<(), i32> {
    let p = |s: &str| base.join(s);
    let r: std::io::Result<()> = match op {
        Op::Create { path, data, excl } => {
            let mut o = OpenOptions::new();
            o.write(true);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true).truncate(true);
            }
            o.open(p(path)).and_then(|mut f| f.write_all(&data.bytes()))
        }
        Op::Write { path, offset, data } => OpenOptions::new()
            .write(true)
            .open(p(path))
            .and_then(|f| f.write_all_at(&data.bytes(), *offset)),
        Op::Truncate { path, len } => {
            let c = CString::new(p(path).as_os_str().as_bytes()).unwrap();
            if unsafe { libc::truncate(c.as_ptr(), *len as libc::off_t) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        Op::Rename { from, to } => fs::rename(p(from), p(to)),
        Op::Link { from, to } => fs::hard_link(p(from), p(to)),
        Op::Unlink { path } => fs::remove_file(p(path)),
        Op::Mkdir { path } => fs::create_dir(p(path)),
        Op::Rmdir { path } => fs::remove_dir(p(path)),
        Op::Remount { wipe_cache } => {
            t.umount();
            if *wipe_cache {
                fs::remove_dir_all(&t.cache).unwrap();
            }
            t.mount(&[]);
            Ok(())
        }
    };
    r.map_err(errno)
}

struct RealEnt {
    dir: bool,
    data: Vec<u8>,
    size: u64,
    nlink: u64,
    ino: u64,
}

fn snapshot(base: &Path, rel: &str, out: &mut BTreeMap<String, RealEnt>) -> Result<(), String> {
    let dir = base.join(rel);
    let rd = fs::read_dir(&dir).map_err(|e| format!("read_dir {rel:?}: {e}"))?;
    for e in rd {
        let e = e.map_err(|e| format!("read_dir {rel:?}: {e}"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let r = join(rel, &name);
        let md = fs::symlink_metadata(base.join(&r)).map_err(|e| format!("lstat {r:?}: {e}"))?;
        let dir = md.is_dir();
        let data = if dir {
            Vec::new()
        } else if md.is_file() {
            fs::read(base.join(&r)).map_err(|e| format!("read {r:?}: {e}"))?
        } else {
            return Err(format!("{r:?}: unexpected file type {:?}", md.file_type()));
        };
        out.insert(
            r.clone(),
            RealEnt {
                dir,
                data,
                size: md.len(),
                nlink: md.nlink(),
                ino: md.ino(),
            },
        );
        if dir {
            snapshot(base, &r, out)?;
        }
    }
    Ok(())
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn describe(m: &Model) -> String {
    m.tree
        .iter()
        .map(|(k, e)| match e {
            Ent::Dir => format!("  {k}/"),
            Ent::File(ino) => {
                let i = &m.inodes[ino];
                format!(
                    "  {k} (ino {ino}, {} bytes, nlink {})",
                    i.data.len(),
                    i.nlink
                )
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole tree under `base` must equal the model.
fn compare(base: &Path, m: &Model) -> Result<(), String> {
    let mut real = BTreeMap::new();
    snapshot(base, "", &mut real)?;
    let mut errs = Vec::new();
    // Model identity -> st_ino and back: hard links share st_ino, distinct
    // inodes (and directories) must not.
    let mut m2r: HashMap<String, (u64, &str)> = HashMap::new();
    let mut r2m: HashMap<u64, (String, &str)> = HashMap::new();
    for (k, e) in &m.tree {
        let Some(r) = real.get(k) else {
            errs.push(format!("{k}: missing (model: {e:?})"));
            continue;
        };
        let id = match e {
            Ent::Dir => {
                if !r.dir {
                    errs.push(format!("{k}: is a file, model has a directory"));
                } else {
                    // "." and the entry in its parent, plus each subdir's "..".
                    let subdirs = m
                        .tree
                        .iter()
                        .filter(|(c, ce)| **ce == Ent::Dir && parent_of(c) == k)
                        .count() as u64;
                    if r.nlink != 2 + subdirs {
                        errs.push(format!(
                            "{k}/: st_nlink {} but it has {subdirs} subdirectories",
                            r.nlink
                        ));
                    }
                }
                format!("dir {k}")
            }
            Ent::File(ino) => {
                let want = &m.inodes[ino];
                if r.dir {
                    errs.push(format!("{k}: is a directory, model has a file"));
                } else {
                    if r.data != want.data {
                        errs.push(format!(
                            "{k}: content differs: read {} bytes, model {} bytes, first difference at {}",
                            r.data.len(),
                            want.data.len(),
                            first_diff(&r.data, &want.data)
                        ));
                    }
                    if r.size != want.data.len() as u64 {
                        errs.push(format!(
                            "{k}: st_size {} but model has {} bytes",
                            r.size,
                            want.data.len()
                        ));
                    }
                    if r.nlink != want.nlink {
                        errs.push(format!(
                            "{k}: st_nlink {} but model {}",
                            r.nlink, want.nlink
                        ));
                    }
                }
                format!("ino {ino}")
            }
        };
        let (ri, rp) = *m2r.entry(id.clone()).or_insert((r.ino, k));
        if ri != r.ino {
            errs.push(format!(
                "{rp} and {k} are hard links (model {id}) but have st_ino {ri} and {}",
                r.ino
            ));
        }
        let (mi, mp) = r2m.entry(r.ino).or_insert((id.clone(), k)).clone();
        if mi != id {
            errs.push(format!(
                "{mp} ({mi}) and {k} ({id}) share st_ino {} but are different objects",
                r.ino
            ));
        }
    }
    for k in real.keys() {
        if !m.tree.contains_key(k) {
            errs.push(format!("{k}: exists but not in the model"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nmodel tree:\n{}", errs.join("\n"), describe(m)))
    }
}

fn show(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => {
            let name = match e {
                ENOENT => "ENOENT",
                EEXIST => "EEXIST",
                ENOTDIR => "ENOTDIR",
                EISDIR => "EISDIR",
                ENOTEMPTY => "ENOTEMPTY",
                EINVAL => "EINVAL",
                EPERM => "EPERM",
                _ => "?",
            };
            format!("Err({name} = {e})")
        }
    }
}

/// Outcome counts per operation kind, e.g. "Rename Err(ENOTEMPTY = 39)".
type Stats = Mutex<BTreeMap<String, u64>>;

fn kind<P>(op: &Op<P>) -> &'static str {
    match op {
        Op::Create { excl: false, .. } => "Create",
        Op::Create { excl: true, .. } => "CreateExcl",
        Op::Write { .. } => "Write",
        Op::Truncate { .. } => "Truncate",
        Op::Rename { .. } => "Rename",
        Op::Link { .. } => "Link",
        Op::Unlink { .. } => "Unlink",
        Op::Mkdir { .. } => "Mkdir",
        Op::Rmdir { .. } => "Rmdir",
        Op::Remount { wipe_cache: false } => "Remount",
        Op::Remount { wipe_cache: true } => "RemountWipeCache",
    }
}

fn run_case(t: &TestFs, stats: &Stats, n: u64, ops: &[Op<Pick>]) -> Result<(), TestCaseError> {
    if !is_mounted(&t.mp) {
        // A previous (failed) case may have died between umount and mount.
        t.mount(&[]);
    }
    let base = t.path(&format!("case{n}"));
    fs::create_dir(&base).map_err(|e| TestCaseError::fail(format!("mkdir case dir: {e}")))?;
    let mut m = Model::default();
    let mut done: Vec<String> = Vec::new();
    let mut res = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let op = m.resolve(op);
        let before = describe(&m);
        let variant = m.variant(&op);
        let real = apply_real(t, &base, &op);
        let want = m.apply(&op);
        *stats
            .lock()
            .unwrap()
            .entry(format!("{}{variant} {}", kind(&op), show(want)))
            .or_default() += 1;
        done.push(format!("  #{i} {op:?} -> {}", show(want)));
        let history = || format!("resolved operations:\n{}", done.join("\n"));
        if real != want {
            res = Err(TestCaseError::fail(format!(
                "op #{i} {op:?}: swiftgate returned {}, model {}\nmodel tree before:\n{before}\n{}",
                show(real),
                show(want),
                history()
            )));
            break;
        }
        if let Err(e) = compare(&base, &m) {
            res = Err(TestCaseError::fail(format!(
                "after op #{i} {op:?}:\n{e}\n{}",
                history()
            )));
            break;
        }
    }
    let _ = fs::remove_dir_all(&base);
    res
}

// ---------------------------------------------------------------------------
// Strategies

/// A path of depth 1..=3: mostly top level, directories named d and e.
fn path_with(leaf: impl Strategy<Value = &'static str>) -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        6 => Just(""),
        3 => select(vec!["d/", "e/"]),
        1 => select(vec!["d/d/", "d/e/", "e/d/", "e/e/"]),
    ];
    (prefix, leaf).prop_map(|(p, l)| format!("{p}{l}"))
}

const FILE_LEAF: [&str; 3] = ["a", "b", "c"];
const DIR_LEAF: [&str; 2] = ["d", "e"];

fn file_leaf() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => select(&FILE_LEAF[..]), 1 => select(&DIR_LEAF[..])]
}

fn dir_leaf() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => select(&DIR_LEAF[..]), 1 => select(&FILE_LEAF[..])]
}

fn any_leaf() -> impl Strategy<Value = &'static str> {
    select(vec!["a", "b", "c", "d", "e"])
}

/// A new name: a literal path, or a leaf inside an existing directory.
fn fresh(leaf: fn() -> BoxedStrategy<&'static str>) -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => path_with(leaf()).prop_map(Pick::Lit),
        2 => (any::<Index>(), leaf()).prop_map(|(i, l)| Pick::Under(i, l)),
    ]
}

/// Mostly an existing entry of kind `want`, sometimes any literal path.
fn existing(want: Want) -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => path_with(any_leaf()).prop_map(Pick::Lit),
        4 => any::<Index>().prop_map(move |i| Pick::Existing(want, i)),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    (0usize..300, any::<u16>()).prop_map(|(len, seed)| Data {
        len,
        seed: seed as u64,
    })
}

/// Small offsets / lengths, sometimes across the first 64 KiB block boundary.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..400, 1 => 65530u64..70000]
}

fn op() -> impl Strategy<Value = Op<Pick>> {
    let file_leaf = || file_leaf().boxed();
    let dir_leaf = || dir_leaf().boxed();
    let any_leaf = || any_leaf().boxed();
    // Targets: usually a new name (collisions are frequent anyway), some-
    // times an existing entry (replacing, same-inode and subtree cases).
    let target = move |leaf| {
        prop_oneof![
            3 => fresh(leaf),
            1 => existing(Want::Any),
        ]
    };
    prop_oneof![
        12 => (
            prop_oneof![3 => fresh(file_leaf), 1 => existing(Want::File)],
            data(),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(path, data, excl)| Op::Create { path, data, excl }),
        10 => (existing(Want::File), offset(), data())
            .prop_map(|(path, offset, data)| Op::Write { path, offset, data }),
        5 => (existing(Want::File), offset()).prop_map(|(path, len)| Op::Truncate { path, len }),
        12 => (existing(Want::Any), target(any_leaf))
            .prop_map(|(from, to)| Op::Rename { from, to }),
        7 => (
            prop_oneof![4 => existing(Want::File), 1 => existing(Want::Dir)],
            target(file_leaf)
        )
            .prop_map(|(from, to)| Op::Link { from, to }),
        6 => existing(Want::File).prop_map(|path| Op::Unlink { path }),
        10 => fresh(dir_leaf).prop_map(|path| Op::Mkdir { path }),
        6 => existing(Want::Dir).prop_map(|path| Op::Rmdir { path }),
        1 => any::<bool>().prop_map(|wipe_cache| Op::Remount { wipe_cache }),
    ]
}

#[test]
fn namespace_ops_match_reference_model() {
    let t = TestFs::new_mounted();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking replays sequences with remounts; bound it.
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let n = AtomicU64::new(0);
    let stats = Stats::default();
    let started = Instant::now();
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        run_case(&t, &stats, n.fetch_add(1, Ordering::Relaxed), &ops)
    });
    eprintln!(
        "model test: {} case runs in {:.1?}",
        n.load(Ordering::Relaxed),
        started.elapsed()
    );
    for (outcome, count) in stats.lock().unwrap().iter() {
        eprintln!("  {outcome:<48} {count}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
