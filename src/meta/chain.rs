//! The metadata chain in the store: full snapshots now and then, and
//! between them the database's committed WAL frames as numbered segments,
//! each naming the checksum of the link before it.
//!
//! * `meta/snap-<gen>`: a full snapshot. Format 2 is a small manifest (size,
//!   SHA-256, part count) over parts `meta/snap-<gen>.<nonce>.<n>` of at
//!   most [`PART`] bytes each, so neither side ever holds the whole database
//!   in memory; format 1 (older releases) is the database in one record.
//! * `meta/wal-<gen>`: the frames committed since link `gen - 1`.
//! * `meta/latest`: the newest full snapshot's generation (a hint).
//!
//! Every link is created with a create-if-absent PUT: a gateway that lost
//! its lease finds its next generation already taken and stops (fencing).
//! A restore takes the newest readable snapshot and applies the segments
//! after it in order; at a missing or damaged link it stops, and says so.

use super::ship::{ShipError, DAMAGED_PREFIX};
use super::wal::{self, WalPos};
use crate::data::BlockCodec;
use crate::store::{DynStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const LATEST_KEY: &str = "meta/latest";
/// Plaintext bytes per snapshot part: what one side holds in memory.
pub const PART: u64 = 32 << 20;
/// Frames per segment, about: larger intervals ship several segments.
pub const SEGMENT_BYTES: u64 = 32 << 20;
/// A segment is one or more whole transactions; one transaction may exceed
/// [`SEGMENT_BYTES`], never this (the codec's record limit).
const MAX_SEGMENT: u64 = u32::MAX as u64 - 4096;
const SEG_MAGIC: &[u8; 8] = b"SGWAL01\n";
const SEG_HEADER: usize = 84;
const SNAP2_MAGIC: &[u8; 8] = b"SGSNAP2\n";
/// Segments fetched at once while restoring.
const PREFETCH: usize = 8;

pub type Hash = [u8; 32];

pub fn snap_key(gen: u64) -> String {
    format!("meta/snap-{gen:016x}")
}

pub fn wal_key(gen: u64) -> String {
    format!("meta/wal-{gen:016x}")
}

/// Part `n` of the database stored under manifest `key` by one attempt.
fn part_key(key: &str, nonce: &str, n: u64) -> String {
    format!("{key}.{nonce}.{n:04x}")
}

/// What a key under `meta/` is: (generation, is a snapshot manifest or
/// segment, is a part).
#[derive(Debug, PartialEq, Eq)]
enum Link {
    Snap(u64),
    Part(u64),
    Wal(u64),
}

fn parse_key(key: &str) -> Option<Link> {
    let hex = |s: &str| (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok())?;
    if let Some(rest) = key.strip_prefix("meta/snap-") {
        return match rest.split_once('.') {
            None => hex(rest).map(Link::Snap),
            Some((g, _)) => hex(g).map(Link::Part),
        };
    }
    key.strip_prefix("meta/wal-").and_then(hex).map(Link::Wal)
}

/// One segment, as stored (before encoding).
pub struct Segment {
    pub gen: u64,
    pub prev: Hash,
    /// Where in the WAL this segment ends (for diagnostics).
    pub end: Option<WalPos>,
    pub page_size: u32,
    pub count: u64,
    pub frames: Vec<u8>,
}

impl Segment {
    pub fn encode_plain(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(SEG_HEADER + self.frames.len());
        v.extend_from_slice(SEG_MAGIC);
        v.extend_from_slice(&self.gen.to_le_bytes());
        v.extend_from_slice(&self.prev);
        v.extend_from_slice(&self.page_size.to_le_bytes());
        let e = self.end.unwrap_or(WalPos {
            salt: [0, 0],
            offset: 0,
            cksum: [0, 0],
        });
        for w in [e.salt[0], e.salt[1]] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&e.offset.to_le_bytes());
        for w in [e.cksum[0], e.cksum[1]] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.count.to_le_bytes());
        v.extend_from_slice(&self.frames);
        v
    }

    /// The segment in `plain`, checked against the generation it is stored
    /// under.
    pub fn decode_plain(gen: u64, mut plain: Vec<u8>) -> Result<Segment, String> {
        if plain.len() < SEG_HEADER || &plain[..8] != SEG_MAGIC {
            return Err("not a metadata segment".into());
        }
        let u64at =
            |p: &[u8], i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap_or_default());
        let u32at =
            |p: &[u8], i: usize| u32::from_le_bytes(p[i..i + 4].try_into().unwrap_or_default());
        let stored_gen = u64at(&plain, 8);
        if stored_gen != gen {
            return Err(format!("holds generation {stored_gen}, not {gen}"));
        }
        let prev: Hash = plain[16..48].try_into().unwrap_or_default();
        let page_size = u32at(&plain, 48);
        let count = u64at(&plain, 76);
        if count > 0 && (!(512..=65536).contains(&page_size) || !page_size.is_power_of_two()) {
            return Err(format!("page size {page_size} is impossible"));
        }
        let want = (count as u128) * (8 + page_size as u128);
        if want != (plain.len() - SEG_HEADER) as u128 {
            return Err("frame data does not match its count".into());
        }
        let end = WalPos {
            salt: [u32at(&plain, 52), u32at(&plain, 56)],
            offset: u64at(&plain, 60),
            cksum: [u32at(&plain, 68), u32at(&plain, 72)],
        };
        let frames = plain.split_off(SEG_HEADER);
        Ok(Segment {
            gen,
            prev,
            end: (end.offset != 0).then_some(end),
            page_size,
            count,
            frames,
        })
    }
}

/// `plain` followed by its SHA-256: without a key the codec only
/// compresses, and a damaged record could still decompress.
fn seal(mut plain: Vec<u8>) -> Vec<u8> {
    let h = sha(&plain);
    plain.extend_from_slice(&h);
    plain
}

fn unseal(mut sealed: Vec<u8>) -> Result<Vec<u8>, String> {
    if sealed.len() < 32 {
        return Err("too short".into());
    }
    let body_len = sealed.len() - 32;
    if sha(&sealed[..body_len])[..] != sealed[body_len..] {
        return Err("checksum mismatch".into());
    }
    sealed.truncate(body_len);
    Ok(sealed)
}

pub fn sha(data: &[u8]) -> Hash {
    sha2::Sha256::digest(data).into()
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(h)
}

/// Store segment `seg` (create-if-absent). Returns its chain hash and
/// stored size.
pub fn put_segment(
    store: &DynStore,
    codec: &BlockCodec,
    seg: &Segment,
) -> Result<(Hash, u64), ShipError> {
    let plain = seal(seg.encode_plain());
    if plain.len() as u64 > MAX_SEGMENT {
        return Err(ShipError::Io(std::io::Error::other(format!(
            "one metadata transaction of {} bytes is larger than a segment can hold",
            plain.len()
        ))));
    }
    let key = wal_key(seg.gen);
    let rec = codec.encode(key.as_bytes(), &plain);
    create_link(store, &key, &rec, seg.gen)?;
    Ok((sha(&plain), rec.len() as u64))
}

fn create_link(store: &DynStore, key: &str, rec: &[u8], gen: u64) -> Result<(), ShipError> {
    match store.create(key, rec) {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => Err(ShipError::Fenced(gen)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    gen: u64,
    size: u64,
    sha256: String,
    part_size: u64,
    parts: u64,
    nonce: String,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    h: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
}

/// Store the database file at `db` as full snapshot `gen` (format 2):
/// parts first, the manifest last and create-if-absent. The file must not
/// change meanwhile (the shipper holds off checkpoints). Returns the
/// database's hash and the bytes stored.
pub fn put_snapshot(
    store: &DynStore,
    codec: &BlockCodec,
    gen: u64,
    db: &Path,
) -> Result<(Hash, u64), ShipError> {
    put_db(store, codec, &snap_key(gen), gen, db, true)
}

/// Store the database file at `db` under manifest `key` (format 2): 32 MiB
/// parts streamed through the codec, then the manifest naming them, the
/// database's size and SHA-256. `create`: the manifest is created only if
/// absent (a chain link; another writer's is [`ShipError::Fenced`]).
/// Memory: one part, whatever the database's size.
pub fn put_db(
    store: &DynStore,
    codec: &BlockCodec,
    key: &str,
    gen: u64,
    db: &Path,
    create: bool,
) -> Result<(Hash, u64), ShipError> {
    let mut f = Hashing {
        inner: std::fs::File::open(db)?,
        h: sha2::Sha256::new(),
    };
    let size = f.inner.metadata()?.len();
    // Parts are named per attempt: a fenced writer racing for the same
    // generation never overwrites the winner's parts.
    let nonce = format!("{:016x}", rand::random::<u64>());
    let parts = size.div_ceil(PART).max(1);
    let mut stored = 0;
    for n in 0..parts {
        let len = PART.min(size - n * PART);
        let pkey = part_key(key, &nonce, n);
        let rec = codec.encode_stream(pkey.as_bytes(), len, &mut (&mut f).take(len))?;
        stored += rec.len() as u64;
        store.put(&pkey, &rec)?;
    }
    let hash: Hash = f.h.finalize().into();
    let m = Manifest {
        format: 2,
        gen,
        size,
        sha256: hex(&hash),
        part_size: PART,
        parts,
        nonce,
    };
    let mut plain = SNAP2_MAGIC.to_vec();
    plain.extend_from_slice(&serde_json::to_vec(&m).map_err(std::io::Error::other)?);
    let plain = seal(plain);
    let rec = codec.encode(key.as_bytes(), &plain);
    stored += rec.len() as u64;
    if create {
        create_link(store, key, &rec, gen)?;
    } else {
        store.put(key, &rec)?;
    }
    Ok((hash, stored))
}

/// Delete a database stored by [`put_db`] under `key`: its manifest and
/// every part of every attempt (parts of an attempt that failed too).
pub fn delete_db(store: &DynStore, key: &str) -> Result<(), StoreError> {
    let mut dead: Vec<String> = store
        .list_all(&format!("{key}."))?
        .into_iter()
        .map(|o| o.key)
        .collect();
    dead.push(key.to_string());
    match store.delete_many(&dead) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Why a link could not be used.
#[derive(Debug)]
pub enum LinkError {
    Missing,
    Damaged(String),
    Store(StoreError),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Missing => write!(f, "missing"),
            LinkError::Damaged(s) => write!(f, "{s}"),
            LinkError::Store(e) => write!(f, "{e}"),
        }
    }
}

fn get_link(store: &DynStore, key: &str, max: u64) -> Result<Vec<u8>, LinkError> {
    match store.get_max(key, max) {
        Ok(d) => Ok(d),
        Err(e) if e.is_not_found() => Err(LinkError::Missing),
        Err(e @ StoreError::TooLarge { .. }) => Err(LinkError::Damaged(e.to_string())),
        Err(e) => Err(LinkError::Store(e)),
    }
}

/// Write full snapshot `gen` to `dest` (replaced); its hash.
pub fn get_snapshot(
    store: &DynStore,
    codec: &BlockCodec,
    gen: u64,
    dest: &Path,
) -> Result<Hash, LinkError> {
    get_db(store, codec, &snap_key(gen), gen, dest)
}

/// Write the database stored under `key` (by [`put_db`], or a format 1
/// record) to `dest` (replaced, 0600); its hash. Memory: one part.
pub fn get_db(
    store: &DynStore,
    codec: &BlockCodec,
    key: &str,
    gen: u64,
    dest: &Path,
) -> Result<Hash, LinkError> {
    let rec = get_link(store, key, super::ship::MAX_SNAPSHOT_RECORD)?;
    let plain = codec
        .decode_max(
            key.as_bytes(),
            &rec,
            super::ship::MAX_SNAPSHOT_RECORD as usize,
        )
        .map_err(|e| LinkError::Damaged(e.to_string()))?;
    drop(rec);
    let io = |e: std::io::Error| LinkError::Damaged(format!("writing {}: {e}", dest.display()));
    let _ = std::fs::remove_file(dest);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io)?;
    if !plain.starts_with(SNAP2_MAGIC) {
        // Format 1: checksum, then the database.
        let db = super::ship::check_v1(&plain).map_err(LinkError::Damaged)?;
        out.write_all(db).map_err(io)?;
        out.sync_all().map_err(io)?;
        return Ok(sha(db));
    }
    let plain = unseal(plain).map_err(LinkError::Damaged)?;
    let m: Manifest = serde_json::from_slice(&plain[8..])
        .map_err(|e| LinkError::Damaged(format!("unreadable manifest: {e}")))?;
    if m.gen != gen || m.format != 2 || m.part_size == 0 || m.part_size > 1 << 30 {
        return Err(LinkError::Damaged(
            "manifest does not match its name".into(),
        ));
    }
    if m.parts != m.size.div_ceil(m.part_size).max(1) {
        return Err(LinkError::Damaged("manifest's part count is wrong".into()));
    }
    let want = unhex(&m.sha256).ok_or_else(|| LinkError::Damaged("bad checksum".into()))?;
    let mut h = sha2::Sha256::new();
    for n in 0..m.parts {
        let key = part_key(key, &m.nonce, n);
        let len = m.part_size.min(m.size - n * m.part_size);
        let rec = get_link(store, &key, len + 4096).map_err(|e| match e {
            LinkError::Missing => LinkError::Damaged(format!("part {n} is missing")),
            e => e,
        })?;
        let part = codec
            .decode_max(key.as_bytes(), &rec, len as usize)
            .map_err(|e| LinkError::Damaged(format!("part {n}: {e}")))?;
        if part.len() as u64 != len {
            return Err(LinkError::Damaged(format!("part {n} has the wrong size")));
        }
        h.update(&part);
        out.write_all(&part).map_err(io)?;
    }
    if <[u8; 32]>::from(h.finalize()) != want {
        return Err(LinkError::Damaged("checksum mismatch".into()));
    }
    out.sync_all().map_err(io)?;
    Ok(want)
}

use std::os::unix::fs::OpenOptionsExt;

fn get_segment(
    store: &DynStore,
    codec: &BlockCodec,
    gen: u64,
) -> Result<(Segment, Hash), LinkError> {
    let key = wal_key(gen);
    let rec = get_link(store, &key, MAX_SEGMENT + 4096)?;
    let plain = codec
        .decode_max(key.as_bytes(), &rec, MAX_SEGMENT as usize)
        .map_err(|e| LinkError::Damaged(e.to_string()))?;
    let h = sha(&plain);
    let plain = unseal(plain).map_err(LinkError::Damaged)?;
    Ok((
        Segment::decode_plain(gen, plain).map_err(LinkError::Damaged)?,
        h,
    ))
}

/// The generations in the store: full snapshots and segments, from a
/// listing and then probed forward (a listing may lag).
#[derive(Debug, Default)]
pub struct Links {
    pub snaps: BTreeSet<u64>,
    pub wals: BTreeSet<u64>,
    pub end: u64,
}

pub fn links(store: &DynStore) -> Result<Links, StoreError> {
    let mut l = Links::default();
    for o in store.list_all("meta/")? {
        match parse_key(&o.key) {
            Some(Link::Snap(g)) => {
                l.snaps.insert(g);
            }
            Some(Link::Wal(g)) => {
                l.wals.insert(g);
            }
            _ => {}
        }
    }
    let hint = match store.get_max(LATEST_KEY, 64) {
        Ok(d) => String::from_utf8_lossy(&d)
            .trim()
            .parse::<u64>()
            .unwrap_or(0),
        Err(e) if e.is_not_found() => 0,
        Err(e) => return Err(e),
    };
    if hint > 0 && !l.snaps.contains(&hint) && store.head(&snap_key(hint))?.is_some() {
        l.snaps.insert(hint);
    }
    l.end = [l.snaps.last(), l.wals.last()]
        .into_iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(hint);
    loop {
        let next = l.end + 1;
        if store.head(&wal_key(next))?.is_some() {
            l.wals.insert(next);
        } else if store.head(&snap_key(next))?.is_some() {
            l.snaps.insert(next);
        } else {
            break;
        }
        l.end = next;
    }
    Ok(l)
}

/// The newest link: its generation and key.
pub fn newest_link(store: &DynStore) -> Result<(u64, String), StoreError> {
    let l = links(store)?;
    let key = if l.wals.contains(&l.end) {
        wal_key(l.end)
    } else {
        snap_key(l.end)
    };
    Ok((l.end, key))
}

/// The newest generation in the store.
pub fn end(store: &DynStore) -> Result<u64, StoreError> {
    Ok(links(store)?.end)
}

/// What [`restore`] rebuilt.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    pub gen: u64,
    /// The full snapshot it started from.
    pub base: u64,
    pub hash: Hash,
    pub latest: u64,
    /// Links that could not be used, newest first, with why.
    pub failed: Vec<(u64, String)>,
    pub segments: u64,
    pub bytes: u64,
}

/// Rebuild the database at `dest` from the newest readable snapshot and
/// the segments after it, stopping at the first missing or damaged one.
pub fn restore(store: &DynStore, codec: &BlockCodec, dest: &Path) -> Result<Rebuilt, ShipError> {
    let l = links(store)?;
    let mut failed: Vec<(u64, String)> = Vec::new();
    let tmp = dest.with_extension("restore");
    for &base in l.snaps.iter().rev() {
        let hash = match get_snapshot(store, codec, base, &tmp) {
            Ok(h) => h,
            Err(LinkError::Store(e)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            Err(e) => {
                failed.push((base, e.to_string()));
                continue;
            }
        };
        let mut r = Rebuilt {
            gen: base,
            base,
            hash,
            latest: l.end,
            failed: Vec::new(),
            segments: 0,
            bytes: 0,
        };
        let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        let stop = apply_segments(store, codec, &l, &f, &mut r)?;
        f.sync_all()?;
        drop(f);
        if let Some(why) = stop {
            r.failed.push((r.gen + 1, why));
        }
        // Damaged newer snapshots passed over on the way down.
        r.failed
            .extend(failed.into_iter().filter(|(g, _)| *g > r.gen));
        r.failed.sort_by_key(|x| std::cmp::Reverse(x.0));
        r.failed.dedup_by_key(|x| x.0);
        for ext in ["db-wal", "db-shm"] {
            let _ = std::fs::remove_file(dest.with_extension(ext));
        }
        std::fs::rename(&tmp, dest)?;
        return Ok(r);
    }
    let _ = std::fs::remove_file(&tmp);
    Err(ShipError::NoSnapshot(if failed.is_empty() {
        "none found".into()
    } else {
        failed
            .iter()
            .map(|(g, e)| format!("generation {g}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    }))
}

/// Apply segments `r.gen + 1 ..= l.end` to `db` in order; why it stopped
/// early, if it did.
fn apply_segments(
    store: &DynStore,
    codec: &BlockCodec,
    l: &Links,
    db: &std::fs::File,
    r: &mut Rebuilt,
) -> Result<Option<String>, ShipError> {
    let mut next = r.gen + 1;
    while next <= l.end {
        let batch: Vec<u64> = (next..=l.end).take(PREFETCH).collect();
        let got: Vec<Result<(Segment, Hash), LinkError>> = std::thread::scope(|s| {
            let hs: Vec<_> = batch
                .iter()
                .map(|&g| s.spawn(move || get_segment(store, codec, g)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LinkError::Damaged("reading it failed unexpectedly".into()))
                    })
                })
                .collect()
        });
        for (g, res) in batch.into_iter().zip(got) {
            let (seg, h) = match res {
                Ok(v) => v,
                Err(LinkError::Store(e)) => return Err(e.into()),
                Err(LinkError::Missing) if l.snaps.contains(&g) => {
                    return Ok(Some(
                        "a full snapshot that could not be read; later links build on it".into(),
                    ))
                }
                Err(e) => return Ok(Some(e.to_string())),
            };
            if seg.prev != r.hash {
                return Ok(Some(format!(
                    "does not follow generation {} (another writer's, or damaged)",
                    r.gen
                )));
            }
            if seg.count > 0 {
                wal::apply(db, seg.page_size, &seg.frames)?;
            }
            r.gen = g;
            r.hash = h;
            r.segments += 1;
            r.bytes += seg.frames.len() as u64;
        }
        next = r.gen + 1;
    }
    Ok(None)
}

/// Delete links no restore needs: snapshots older than `keep_from` (with
/// their parts) and segments up to it. Damaged copies are never touched.
pub fn prune(store: &DynStore, keep_from: u64) -> Result<usize, StoreError> {
    let mut dead = Vec::new();
    for o in store.list_all("meta/")? {
        if o.key.starts_with(DAMAGED_PREFIX) {
            continue;
        }
        let old = match parse_key(&o.key) {
            Some(Link::Snap(g)) | Some(Link::Part(g)) => g < keep_from,
            Some(Link::Wal(g)) => g <= keep_from,
            None => false,
        };
        if old {
            dead.push(o.key);
        }
    }
    store.delete_many(&dead)?;
    Ok(dead.len())
}

/// The shipper's record of where the store's chain and the local WAL
/// stand, kept beside the database (`meta.db.chain`). Lost or not matching
/// the database file: the next shipment is a full snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainState {
    pub gen: u64,
    pub hash: String,
    /// Position in the WAL shipped up to; None: every frame of the WAL
    /// (it was emptied at `gen`).
    pub wal: Option<(u32, u32, u64, u32, u32)>,
    /// Every frame up to `wal` is folded into the database file: when the
    /// WAL restarts (new salts), the chain continues from its start.
    #[serde(default)]
    pub folded: bool,
    /// The database file as it was when the state was written (size,
    /// mtime ns): only checkpoints change it, and only the shipper runs them.
    pub db_size: u64,
    pub db_mtime_ns: i128,
    /// The newest full snapshot and the one before it.
    pub base: u64,
    pub prev_base: u64,
    pub segments_since_base: u64,
    pub bytes_since_base: u64,
}

pub fn state_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".chain");
    PathBuf::from(p)
}

pub fn db_stamp(db: &Path) -> std::io::Result<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(db)?;
    Ok((
        m.len(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    ))
}

impl ChainState {
    pub fn new(
        gen: u64,
        hash: &Hash,
        db: &Path,
        base: u64,
        prev_base: u64,
    ) -> std::io::Result<Self> {
        let (db_size, db_mtime_ns) = db_stamp(db)?;
        Ok(ChainState {
            gen,
            hash: hex(hash),
            wal: None,
            folded: false,
            db_size,
            db_mtime_ns,
            base,
            prev_base,
            segments_since_base: 0,
            bytes_since_base: 0,
        })
    }

    pub fn hash(&self) -> Option<Hash> {
        unhex(&self.hash)
    }

    pub fn set_hash(&mut self, h: &Hash) {
        self.hash = hex(h);
    }

    pub fn wal_pos(&self) -> Option<WalPos> {
        self.wal.map(|(a, b, offset, c, d)| WalPos {
            salt: [a, b],
            offset,
            cksum: [c, d],
        })
    }

    pub fn set_wal_pos(&mut self, p: Option<WalPos>) {
        self.wal = p.map(|p| (p.salt[0], p.salt[1], p.offset, p.cksum[0], p.cksum[1]));
    }

    pub fn load(db: &Path) -> Option<ChainState> {
        let d = std::fs::read(state_path(db)).ok()?;
        serde_json::from_slice(&d).ok()
    }

    pub fn save(&self, db: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::secure::write_private(&state_path(db), &body)
    }

    /// Does the database file still look as recorded?
    pub fn matches_db(&self, db: &Path) -> bool {
        db_stamp(db).is_ok_and(|(s, t)| s == self.db_size && t == self.db_mtime_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        assert_eq!(parse_key(&snap_key(42)), Some(Link::Snap(42)));
        assert_eq!(parse_key(&wal_key(7)), Some(Link::Wal(7)));
        assert_eq!(
            parse_key(&part_key(&snap_key(9), "ab", 3)),
            Some(Link::Part(9))
        );
        assert_eq!(parse_key("meta/damaged-snap-0000000000000001"), None);
        assert_eq!(parse_key("meta/snap-12"), None);
        assert_eq!(parse_key("meta/latest"), None);
    }

    #[test]
    fn a_segment_round_trips_and_checks_its_generation() {
        let s = Segment {
            gen: 5,
            prev: [3; 32],
            end: Some(WalPos {
                salt: [1, 2],
                offset: 4152,
                cksum: [9, 8],
            }),
            page_size: 512,
            count: 2,
            frames: vec![1; 2 * (8 + 512)],
        };
        let p = s.encode_plain();
        let d = Segment::decode_plain(5, p.clone()).unwrap();
        assert_eq!(
            (d.prev, d.count, d.end, d.frames.len()),
            (s.prev, 2, s.end, s.frames.len())
        );
        assert!(Segment::decode_plain(6, p.clone()).is_err());
        assert!(Segment::decode_plain(5, p[..p.len() - 1].to_vec()).is_err());
    }
}

#[cfg(test)]
mod db_tests {
    use super::*;

    /// A database larger than one part round-trips through the store in
    /// parts; a damaged part is reported; deleting removes every part of
    /// every attempt and nothing else.
    #[test]
    fn a_database_streams_in_parts_and_is_deleted_whole() {
        let d = tempfile::tempdir().unwrap();
        let store: DynStore =
            std::sync::Arc::new(crate::store::local::LocalStore::open(d.path().join("s")).unwrap());
        let codec = super::super::ship::meta_codec(None);
        let src = d.path().join("db");
        let mut data = Vec::with_capacity((2 * PART + 12345) as usize);
        let mut x = 1u64;
        while data.len() < (2 * PART + 12345) as usize {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(&(x >> 40).to_le_bytes()[..3]);
        }
        std::fs::write(&src, &data).unwrap();
        store
            .put("snapshots/0000000000000007x", b"a neighbour")
            .unwrap();
        // An attempt that died before its manifest.
        store
            .put("snapshots/0000000000000007.dead.0000", b"left")
            .unwrap();
        let key = "snapshots/0000000000000007";
        let (h, _) = put_db(&store, &codec, key, 7, &src, false).unwrap();
        let parts: Vec<String> = store
            .list_all(&format!("{key}."))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(parts.len(), 4, "{parts:?}");
        let out = d.path().join("out");
        assert_eq!(get_db(&store, &codec, key, 7, &out).unwrap(), h);
        assert!(std::fs::read(&out).unwrap() == data);
        // The manifest names its generation: another's is refused.
        assert!(matches!(
            get_db(&store, &codec, key, 8, &out),
            Err(LinkError::Damaged(_))
        ));
        let p1 = parts
            .iter()
            .find(|k| k.ends_with(".0001") && !k.contains("dead"))
            .unwrap();
        let mut rec = store.get(p1).unwrap();
        let n = rec.len();
        rec[n / 2] ^= 1;
        store.put(p1, &rec).unwrap();
        // Without a key (no MAC) the flip may decode: the checksum finds it.
        let e = get_db(&store, &codec, key, 7, &out).unwrap_err();
        assert!(matches!(e, LinkError::Damaged(_)), "{e}");
        delete_db(&store, key).unwrap();
        let left: Vec<String> = store
            .list_all("")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left, vec!["snapshots/0000000000000007x".to_string()]);
        // Deleting what is gone already is fine.
        delete_db(&store, key).unwrap();
    }
}
