//! SQLite's write-ahead log, read as the shipper needs it: the committed
//! frames after a known position, validated with SQLite's own salts and
//! cumulative checksums (a torn tail or a rolled-back transaction past the
//! last commit is never taken), and frames applied to a database file the
//! way a checkpoint does. Format: <https://www.sqlite.org/fileformat.html#the_write_ahead_log>.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEADER: u64 = 32;
pub const FRAME_HEADER: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
/// SQLite's page size is at most 64 KiB: anything else is not a WAL.
const MAX_PAGE: u32 = 65536;

pub fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// The WAL header fields the shipper keys on: a checkpoint that restarts
/// the log changes the salts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian: bool,
    pub page_size: u32,
    pub salt: [u32; 2],
    /// Checksum of the header: the seed of the first frame's checksum.
    pub cksum: [u32; 2],
}

/// A position in one WAL: the byte offset just past the last frame taken
/// and the cumulative checksum there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPos {
    pub salt: [u32; 2],
    pub offset: u64,
    pub cksum: [u32; 2],
}

/// Committed frames read from a WAL: `data` holds them back to back, each
/// `pgno u32 BE | commit u32 BE | page` (the WAL's own frame header minus
/// salts and checksums).
#[derive(Debug, Default)]
pub struct Frames {
    pub page_size: u32,
    pub data: Vec<u8>,
    pub count: u64,
    /// Where the next read continues.
    pub end: Option<WalPos>,
}

fn word(b: &[u8], big: bool) -> u32 {
    let a: [u8; 4] = b[..4].try_into().unwrap_or_default();
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing
/// from `s`.
fn checksum(data: &[u8], big: bool, s: [u32; 2]) -> [u32; 2] {
    let (mut s0, mut s1) = (s[0], s[1]);
    for c in data.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&c[..4], big)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&c[4..], big)).wrapping_add(s0);
    }
    [s0, s1]
}

/// The WAL's header, or None when the file is missing, empty or not a
/// valid header (SQLite writes a fresh one on the next commit).
pub fn header(f: &File) -> io::Result<Option<WalHeader>> {
    let mut h = [0u8; HEADER as usize];
    match f.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let magic = u32::from_be_bytes(h[..4].try_into().unwrap_or_default());
    let big_endian = match magic {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return Ok(None),
    };
    let be = |i: usize| u32::from_be_bytes(h[i..i + 4].try_into().unwrap_or_default());
    let page_size = match be(8) {
        1 => 65536,
        n => n,
    };
    if !(512..=MAX_PAGE).contains(&page_size) || !page_size.is_power_of_two() {
        return Ok(None);
    }
    let cksum = [be(24), be(28)];
    if checksum(&h[..24], big_endian, [0, 0]) != cksum {
        return Ok(None);
    }
    Ok(Some(WalHeader {
        big_endian,
        page_size,
        salt: [be(16), be(20)],
        cksum,
    }))
}

/// The start of a WAL whose header is `h`.
pub fn start(h: &WalHeader) -> WalPos {
    WalPos {
        salt: h.salt,
        offset: HEADER,
        cksum: h.cksum,
    }
}

/// Is `p` still the end of a frame in this WAL (salts and checksum as
/// recorded)? Not after a host crash lost the tail the position was taken
/// in: SQLite then writes new frames over it.
pub fn ends_at(f: &File, h: &WalHeader, p: WalPos) -> io::Result<bool> {
    if p.salt != h.salt {
        return Ok(false);
    }
    if p.offset == HEADER {
        return Ok(p.cksum == h.cksum);
    }
    let frame = FRAME_HEADER + h.page_size as u64;
    if p.offset < HEADER + frame || !(p.offset - HEADER).is_multiple_of(frame) {
        return Ok(false);
    }
    let mut fh = [0u8; FRAME_HEADER as usize];
    match f.read_exact_at(&mut fh, p.offset - frame) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let be = |i: usize| u32::from_be_bytes(fh[i..i + 4].try_into().unwrap_or_default());
    Ok([be(8), be(12)] == p.salt && [be(16), be(20)] == p.cksum)
}

/// Committed frames from `from` on, at most about `max_bytes` of them (but
/// always whole transactions, so at least one when there is one). Frames
/// after the last valid commit frame are left: a transaction in progress,
/// one rolled back, or a torn tail.
pub fn read_committed(f: &File, h: &WalHeader, from: WalPos, max_bytes: u64) -> io::Result<Frames> {
    let ps = h.page_size as u64;
    let frame = FRAME_HEADER + ps;
    let len = f.metadata()?.len();
    let mut out = Frames {
        page_size: h.page_size,
        ..Default::default()
    };
    // Read in runs of frames; keep only up to the last commit seen.
    let mut pos = from.offset;
    let mut s = from.cksum;
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_count = 0u64;
    let mut buf = vec![0u8; frame as usize];
    while pos + frame <= len {
        f.read_exact_at(&mut buf, pos)?;
        let be = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().unwrap_or_default());
        if [be(8), be(12)] != h.salt {
            break;
        }
        let mut c = checksum(&buf[..8], h.big_endian, s);
        c = checksum(&buf[FRAME_HEADER as usize..], h.big_endian, c);
        if c != [be(16), be(20)] {
            break;
        }
        s = c;
        pos += frame;
        pending.extend_from_slice(&buf[..8]);
        pending.extend_from_slice(&buf[FRAME_HEADER as usize..]);
        pending_count += 1;
        if be(4) != 0 {
            // A commit frame: everything so far is a whole transaction.
            out.data.append(&mut pending);
            out.count += pending_count;
            pending_count = 0;
            out.end = Some(WalPos {
                salt: h.salt,
                offset: pos,
                cksum: s,
            });
            if out.data.len() as u64 >= max_bytes {
                break;
            }
        }
    }
    Ok(out)
}

/// The net effect of whole transactions in the [`Frames::data`] layout, as
/// a checkpoint applies it: each page's last image (pages past the final
/// size dropped), in page order, the last frame carrying the final size.
/// A page rewritten by many transactions in an interval ships once.
pub fn squash(page_size: u32, data: &[u8]) -> Vec<u8> {
    let rec = 8 + page_size as usize;
    let mut last: std::collections::BTreeMap<u32, usize> = Default::default();
    let mut size = 0u32;
    for (i, fr) in data.chunks_exact(rec).enumerate() {
        let pgno = u32::from_be_bytes(fr[..4].try_into().unwrap_or_default());
        last.insert(pgno, i);
        let commit = u32::from_be_bytes(fr[4..8].try_into().unwrap_or_default());
        if commit != 0 {
            size = commit;
        }
    }
    if size == 0 {
        return data.to_vec();
    }
    let keep: Vec<(u32, usize)> = last.into_iter().filter(|(p, _)| *p <= size).collect();
    let mut out = Vec::with_capacity(keep.len() * rec);
    for (n, (pgno, i)) in keep.iter().enumerate() {
        out.extend_from_slice(&pgno.to_be_bytes());
        let commit = if n + 1 == keep.len() { size } else { 0 };
        out.extend_from_slice(&commit.to_be_bytes());
        out.extend_from_slice(&data[i * rec + 8..(i + 1) * rec]);
    }
    if keep.is_empty() {
        // Only a truncation: one frame is needed to carry the size; page 1
        // always exists and its last image is in `data` unless the size
        // is 0, which SQLite never commits.
        return data.to_vec();
    }
    out
}

/// Apply frames in the [`Frames::data`] layout to the database file `db`
/// as a checkpoint would: each page written in place, the file cut to the
/// database size at each commit. Returns the database size in pages.
pub fn apply(db: &File, page_size: u32, data: &[u8]) -> io::Result<u64> {
    let ps = page_size as usize;
    let rec = 8 + ps;
    if ps == 0 || !data.len().is_multiple_of(rec) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame data is not a whole number of frames",
        ));
    }
    let mut pages = db.metadata()?.len() / ps as u64;
    for fr in data.chunks_exact(rec) {
        let pgno = u32::from_be_bytes(fr[..4].try_into().unwrap_or_default()) as u64;
        let commit = u32::from_be_bytes(fr[4..8].try_into().unwrap_or_default()) as u64;
        if pgno == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "page number 0"));
        }
        db.write_all_at(&fr[8..], (pgno - 1) * ps as u64)?;
        if commit != 0 {
            db.set_len(commit * ps as u64)?;
            pages = commit;
        }
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn open(p: &Path) -> Connection {
        let c = Connection::open(p).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c
    }

    fn bytes_of(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    /// Copy of the database file alone, frames applied: equals what
    /// SQLite itself makes of main file + WAL.
    #[test]
    fn applying_the_committed_frames_equals_a_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        let c = open(&db);
        c.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        // Checkpoint once so the main file has a state to start from.
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let base = bytes_of(&db);
        for i in 0..300 {
            c.execute("INSERT INTO t(k, v) VALUES (?1, zeroblob(700))", [i as i64])
                .unwrap();
        }
        c.execute("DELETE FROM t WHERE k % 3 = 0", []).unwrap();
        let wal = File::open(wal_path(&db)).unwrap();
        let h = header(&wal).unwrap().unwrap();
        let fr = read_committed(&wal, &h, start(&h), u64::MAX).unwrap();
        assert!(fr.count > 0);
        // Ship in two parts, as two intervals would.
        let copy = d.path().join("copy.db");
        std::fs::write(&copy, &base).unwrap();
        let out = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        apply(&out, fr.page_size, &fr.data).unwrap();
        for k in 0..50 {
            c.execute("UPDATE t SET v = x'01' WHERE k = ?1", [k])
                .unwrap();
        }
        c.execute("DELETE FROM t WHERE k > 200", []).unwrap();
        c.execute_batch("VACUUM").unwrap();
        let fr2 = read_committed(&wal, &h, fr.end.unwrap(), u64::MAX).unwrap();
        assert!(fr2.count > 0);
        // Squashed: fewer frames, the same result.
        let sq = squash(fr2.page_size, &fr2.data);
        assert!(
            sq.len() < fr2.data.len() / 2,
            "{} -> {}",
            fr2.data.len(),
            sq.len()
        );
        apply(&out, fr2.page_size, &sq).unwrap();
        // Nothing new: nothing read.
        let fr3 = read_committed(&wal, &h, fr2.end.unwrap(), u64::MAX).unwrap();
        assert_eq!(fr3.count, 0);
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        assert_eq!(bytes_of(&copy), bytes_of(&db));
    }

    #[test]
    fn an_open_transaction_and_a_torn_tail_are_not_taken() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        let c = open(&db);
        c.execute_batch("CREATE TABLE t(v BLOB)").unwrap();
        let wal = File::open(wal_path(&db)).unwrap();
        let h = header(&wal).unwrap().unwrap();
        let committed = read_committed(&wal, &h, start(&h), u64::MAX).unwrap();
        let end = committed.end.unwrap();
        // A large transaction spills frames into the WAL before commit.
        c.pragma_update(None, "cache_size", 10).unwrap();
        c.execute_batch("BEGIN").unwrap();
        for _ in 0..200 {
            c.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .unwrap();
        }
        assert!(wal.metadata().unwrap().len() > end.offset, "no spill");
        let open_tx = read_committed(&wal, &h, end, u64::MAX).unwrap();
        assert_eq!(open_tx.count, 0, "an uncommitted transaction was taken");
        c.execute_batch("COMMIT").unwrap();
        let all = read_committed(&wal, &h, end, u64::MAX).unwrap();
        assert!(all.count > 0);
        // Damage the last frame: its transaction is no longer taken.
        let len = wal.metadata().unwrap().len();
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(wal_path(&db))
            .unwrap();
        w.write_all_at(b"garbage!", len - 100).unwrap();
        let torn = read_committed(&wal, &h, end, u64::MAX).unwrap();
        assert_eq!(torn.count, 0);
    }

    #[test]
    fn a_byte_budget_still_takes_whole_transactions() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        let c = open(&db);
        c.execute_batch("CREATE TABLE t(v BLOB)").unwrap();
        for _ in 0..20 {
            c.execute("INSERT INTO t VALUES (zeroblob(5000))", [])
                .unwrap();
        }
        let wal = File::open(wal_path(&db)).unwrap();
        let h = header(&wal).unwrap().unwrap();
        let mut pos = start(&h);
        let mut parts = 0;
        let mut total = 0;
        loop {
            let fr = read_committed(&wal, &h, pos, 1).unwrap();
            if fr.count == 0 {
                break;
            }
            let last = &fr.data[fr.data.len() - 8 - h.page_size as usize..];
            assert_ne!(
                &last[4..8],
                &[0, 0, 0, 0],
                "a part ends inside a transaction"
            );
            parts += 1;
            total += fr.count;
            pos = fr.end.unwrap();
        }
        assert_eq!(parts, 21);
        assert_eq!(
            (wal.metadata().unwrap().len() - HEADER) / (FRAME_HEADER + h.page_size as u64),
            total
        );
    }

    #[test]
    fn not_a_wal_is_no_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, [7u8; 64]).unwrap();
        assert!(header(&File::open(&p).unwrap()).unwrap().is_none());
        std::fs::write(&p, b"").unwrap();
        assert!(header(&File::open(&p).unwrap()).unwrap().is_none());
        assert!(apply(&File::open(&p).unwrap(), 4096, &[0u8; 10]).is_err());
    }
}
