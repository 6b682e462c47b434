//! Blocks just fetched from the store: held in memory for the readers
//! waiting for them, while their cache file is written past the page
//! cache (O_DIRECT). Writing every byte of a cold read into the page cache
//! was 36-42 % of the mount's cold-read CPU (BENCHMARKS.md, session 18)
//! and kept each byte in RAM twice (the FUSE file's pages and the cache
//! file's). The memory is bounded for the whole process: past the budget
//! a block is written the buffered way, as before.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of fresh blocks the whole process holds at most: one reader's
/// prefetch window (64 MiB) and a run past it. Past it, blocks go into
/// the page cache as before (a slower path, not a failure).
pub(super) const FRESH_MAX: usize = 96 << 20;

/// A fresh block no reader has finished within this long is dropped (its
/// cache file has it): a reader that stopped must not pin memory.
pub(super) const FRESH_AGE: Duration = Duration::from_secs(5);

/// Freed buffers kept for the next blocks (a new multi-MiB buffer costs
/// page faults and the kernel's zeroing, about what its copy costs): at
/// most these bytes (a few 4 MiB blocks; with 64 MiB blocks none is kept),
/// and an unused one for this long.
const POOL_BYTES: usize = 24 << 20;
const POOL_AGE: Duration = Duration::from_secs(30);

/// O_DIRECT wants the buffer, offset and length aligned to the device's
/// logical block; 4 KiB covers every disk a cache sits on.
const ALIGN: usize = 4096;

/// Bytes of fresh blocks held, against a bound.
pub(super) struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(super) const fn new(max: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.max).then_some(u + n)
            })
            .is_ok()
    }
}

/// The one budget every cache in the process draws on.
pub(super) static PROCESS_BUDGET: Budget = Budget::new(FRESH_MAX);
static POOL: Mutex<Vec<(Vec<u8>, Instant)>> = parking_lot::const_mutex(Vec::new());

/// A block's plaintext at a 4 KiB-aligned address, zero-padded to whole
/// 4 KiB pages.
pub(super) struct FreshBlock {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    served: AtomicU64,
    born: Instant,
    /// Counted against `budget` (a pooled buffer may be larger).
    charged: usize,
    budget: &'static Budget,
}

impl FreshBlock {
    /// A copy of `plain`; None when `budget` is spent already.
    pub(super) fn new(plain: &[u8], budget: &'static Budget) -> Option<FreshBlock> {
        let padded = plain.len().div_ceil(ALIGN) * ALIGN;
        let need = padded + ALIGN;
        if !budget.take(need) {
            return None;
        }
        let mut buf = take_buffer(need);
        let addr = buf.as_ptr() as usize;
        let start = addr.next_multiple_of(ALIGN) - addr;
        // Only the padding is zeroed: the content is copied in once.
        buf.resize(start, 0);
        buf.extend_from_slice(plain);
        buf.resize(start + padded, 0);
        Some(FreshBlock {
            buf,
            start,
            len: plain.len(),
            served: AtomicU64::new(0),
            born: Instant::now(),
            charged: need,
            budget,
        })
    }

    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn padded(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Count `n` bytes served from it; true the one time the count reaches
    /// its length (a sequential reader is done with it).
    pub(super) fn note_served(&self, n: usize) -> bool {
        let before = self.served.fetch_add(n as u64, Ordering::Relaxed);
        let len = self.len as u64;
        before < len && before + n as u64 >= len
    }
}

impl Drop for FreshBlock {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.charged, Ordering::AcqRel);
        give_buffer(std::mem::take(&mut self.buf));
    }
}

/// A pooled buffer of at least `need` bytes' capacity, or a new one.
fn take_buffer(need: usize) -> Vec<u8> {
    let mut pool = POOL.lock();
    if let Some(i) = pool.iter().position(|(b, _)| b.capacity() >= need) {
        let (mut b, _) = pool.swap_remove(i);
        b.clear();
        return b;
    }
    drop(pool);
    Vec::with_capacity(need)
}

fn give_buffer(buf: Vec<u8>) {
    let mut pool = POOL.lock();
    let held: usize = pool.iter().map(|(b, _)| b.capacity()).sum();
    if held + buf.capacity() <= POOL_BYTES {
        pool.push((buf, Instant::now()));
    }
}

/// Free pooled buffers unused for a while: an idle gateway gives the
/// memory back.
fn trim_pool(now: Instant) {
    POOL.lock()
        .retain(|(_, t)| now.saturating_duration_since(*t) < POOL_AGE);
}

/// One cache's fresh blocks, by block id (ids are never reused, and a
/// block's content never changes), and the budget they draw on.
pub(super) struct Fresh {
    blocks: HashMap<i64, Arc<FreshBlock>>,
    budget: &'static Budget,
}

impl Default for Fresh {
    fn default() -> Fresh {
        Fresh {
            blocks: HashMap::new(),
            budget: &PROCESS_BUDGET,
        }
    }
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh")
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Fresh {
    pub(super) fn budget(&self) -> &'static Budget {
        self.budget
    }

    /// Draw on another budget (a test's own, not the process's, which
    /// tests running alongside share).
    #[cfg(test)]
    pub(super) fn set_budget(&mut self, budget: &'static Budget) {
        self.budget = budget;
    }

    pub(super) fn get(&self, id: i64) -> Option<Arc<FreshBlock>> {
        self.blocks.get(&id).cloned()
    }

    pub(super) fn insert(&mut self, id: i64, b: Arc<FreshBlock>) {
        self.blocks.insert(id, b);
    }

    /// Drop `id` if it still is `b` (not a later fetch of it).
    pub(super) fn remove(&mut self, id: i64, b: &Arc<FreshBlock>) {
        if self.blocks.get(&id).is_some_and(|x| Arc::ptr_eq(x, b)) {
            self.blocks.remove(&id);
        }
    }

    /// Drop blocks older than [`FRESH_AGE`] at `now`.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.blocks
            .retain(|_, b| now.saturating_duration_since(b.born) < FRESH_AGE);
        trim_pool(now);
    }

    pub(super) fn clear(&mut self) {
        self.blocks.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }
}

/// Write `b`'s content to a new file at `path` (0600), past the page cache
/// where the filesystem allows it; `direct` is cleared the first time it
/// does not (tmpfs before Linux 6.6, some FUSE or network filesystems).
pub(super) fn write_file(path: &Path, b: &FreshBlock, direct: &AtomicBool) -> io::Result<()> {
    if direct.load(Ordering::Relaxed) {
        match write_direct(path, b) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(
                    "the cache's filesystem refused O_DIRECT ({e}); writing through the page cache"
                );
                direct.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    write_plain(path, b.data())
}

/// Write `data` to a new file at `path`, 0600 from its creation, through
/// the page cache.
pub(super) fn write_plain(path: &Path, data: &[u8]) -> io::Result<()> {
    create(path, 0)?.write_all(data)
}

fn create(path: &Path, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(flags)
        .open(path)
}

fn write_direct(path: &Path, b: &FreshBlock) -> io::Result<()> {
    let f = create(path, libc::O_DIRECT)?;
    let p = b.padded();
    let mut done = 0;
    while done < p.len() {
        match f.write_at(&p[done..], done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // The padding goes: the file holds the block's length exactly.
    if p.len() != b.len {
        f.set_len(b.len as u64)?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A budget of its own for a test (the process's is shared by the
    /// tests running alongside).
    pub(in crate::cache) fn own_budget() -> &'static Budget {
        Box::leak(Box::new(Budget::new(FRESH_MAX)))
    }

    #[test]
    fn a_spent_budget_keeps_nothing_and_a_dropped_block_gives_back() {
        let b = own_budget();
        let big = pattern(FRESH_MAX / 2);
        let one = FreshBlock::new(&big, b).expect("room for one");
        assert!(FreshBlock::new(&big, b).is_none(), "past the budget");
        drop(one);
        assert!(
            FreshBlock::new(&big, b).is_some(),
            "given back when dropped"
        );
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn a_fresh_block_is_aligned_and_written_whole_with_or_without_o_direct() {
        let dir = tempfile::tempdir().unwrap();
        for len in [4 << 20, (1 << 20) + 1, 4095, 1] {
            let plain = pattern(len);
            let b = FreshBlock::new(&plain, own_budget()).expect("within the budget");
            assert_eq!(b.data(), &plain[..]);
            assert_eq!(b.padded().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.padded().len() % ALIGN, 0);
            for direct in [true, false] {
                let path = dir.path().join(format!("{len}.{direct}"));
                let flag = AtomicBool::new(direct);
                write_file(&path, &b, &flag).unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), plain, "len {len}");
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn a_block_is_done_once_its_length_has_been_served() {
        let b = FreshBlock::new(&pattern(10_000), own_budget()).unwrap();
        assert!(!b.note_served(4096));
        assert!(!b.note_served(4096));
        assert!(b.note_served(4096));
        // Only once: a second pass does not report it again.
        assert!(!b.note_served(10_000));
    }

    #[test]
    fn old_blocks_are_swept() {
        let mut f = Fresh::default();
        let a = Arc::new(FreshBlock::new(&pattern(100), own_budget()).unwrap());
        f.insert(1, a.clone());
        f.sweep(Instant::now());
        assert_eq!(f.len(), 1);
        f.sweep(Instant::now() + FRESH_AGE + Duration::from_secs(1));
        assert_eq!(f.len(), 0);
        // A later fetch of the same id is not removed by the earlier's end.
        let b = Arc::new(FreshBlock::new(&pattern(100), own_budget()).unwrap());
        f.insert(1, b.clone());
        f.remove(1, &a);
        assert_eq!(f.len(), 1);
        f.remove(1, &b);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_bytes() {
        for _ in 0..(POOL_BYTES >> 20) + 4 {
            give_buffer(Vec::with_capacity(1 << 20));
        }
        give_buffer(Vec::with_capacity(64 << 20));
        let held: usize = POOL.lock().iter().map(|(b, _)| b.capacity()).sum();
        assert!(held <= POOL_BYTES, "{held}");
        assert!(POOL.lock().iter().all(|(b, _)| b.capacity() < 64 << 20));
    }
}
