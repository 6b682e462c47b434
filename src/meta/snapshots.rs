//! Filesystem snapshots: a point-in-time copy of the metadata database,
//! stored whole in the object store (`snapshots/<id>`), plus a record of
//! every object it reads ("pins"). Blocks are immutable, so a snapshot
//! copies no data; what it costs is its database and the objects the live
//! filesystem no longer needs but it still does.
//!
//! The pins live in the live database (shipped with it, so they survive a
//! lost gateway): an object pinned by a kept snapshot is never deleted or
//! rewritten by garbage collection.

use super::chain;
use super::ship::{copy_db, ShipError, Shipper};
use super::{Meta, MetaError};
use crate::store::StoreError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created INTEGER NOT NULL UNIQUE, label TEXT NOT NULL,
    files INTEGER NOT NULL, bytes INTEGER NOT NULL, meta_bytes INTEGER NOT NULL,
    gen INTEGER NOT NULL DEFAULT 0);
-- Objects each snapshot reads, with their size (their row in `objects`
-- goes when the live filesystem stops using them).
CREATE TABLE IF NOT EXISTS snapshot_objects(object INTEGER NOT NULL, snap INTEGER NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY(object, snap)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS snapshot_objects_by_snap ON snapshot_objects(snap);
";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Ship(#[from] ShipError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("snapshot I/O on {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("a snapshot taken at {0} exists already: snapshots are named by the second, try again in a second")]
    SameSecond(String),
    #[error("uploading what was written before the snapshot failed (nothing was taken): {0}")]
    Upload(String),
    #[error("no snapshot {0}: `swiftgate snapshot list` shows them")]
    NotFound(String),
    #[error("snapshot {name} is damaged in the store ({reason}); delete it with `swiftgate snapshot delete`")]
    Damaged { name: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub id: i64,
    /// Unix seconds (UTC).
    pub created: i64,
    /// `manual`, or the schedule that took it (`hourly`, `daily`, ...).
    pub label: String,
    /// The `@GMT-YYYY.MM.DD-HH.MM.SS` name Windows' Previous Versions use.
    pub name: String,
    /// Regular files and their bytes at the time.
    pub files: u64,
    pub bytes: u64,
    /// Its encoded database in the store.
    pub meta_bytes: u64,
    /// Stored bytes only it holds: what deleting it frees (besides
    /// `meta_bytes`).
    pub exclusive_bytes: u64,
    /// The metadata generation shipped right after it: while the store's
    /// newest is still this one, nothing has changed since.
    #[serde(default)]
    pub gen: u64,
}

/// What all snapshots of a filesystem cost in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotCost {
    pub snapshots: u64,
    /// Stored bytes the live filesystem no longer needs but snapshots do.
    pub held_bytes: u64,
    /// Their databases.
    pub meta_bytes: u64,
}

pub fn store_key(id: i64) -> String {
    format!("snapshots/{id:016x}")
}

/// `@GMT-YYYY.MM.DD-HH.MM.SS` (UTC) of unix time `t`.
pub fn gmt_name(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("@GMT-{y:04}.{mo:02}.{d:02}-{h:02}.{mi:02}.{s:02}")
}

/// The unix time a `@GMT-...` name stands for.
pub fn parse_gmt_name(name: &str) -> Option<i64> {
    let r = name.strip_prefix("@GMT-")?;
    let b = r.as_bytes();
    if b.len() != 19
        || b[4] != b'.'
        || b[7] != b'.'
        || b[10] != b'-'
        || b[13] != b'.'
        || b[16] != b'.'
    {
        return None;
    }
    let n = |a: usize, z: usize| -> Option<i64> {
        let s = &r[a..z];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d, h, mi, s) = (
        n(0, 4)?,
        n(5, 7)?,
        n(8, 10)?,
        n(11, 13)?,
        n(14, 16)?,
        n(17, 19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    (gmt_name(t) == name).then_some(t)
}

/// (year, month, day, hour, minute, second) of unix time `t` (UTC), after
/// Howard Hinnant's civil-from-days.
pub fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (y, mo, d, secs / 3600, secs / 60 % 60, secs % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn row_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotInfo> {
    let created: i64 = r.get(1)?;
    Ok(SnapshotInfo {
        id: r.get(0)?,
        created,
        label: r.get(2)?,
        name: gmt_name(created),
        files: r.get::<_, i64>(3)? as u64,
        bytes: r.get::<_, i64>(4)? as u64,
        meta_bytes: r.get::<_, i64>(5)? as u64,
        exclusive_bytes: r.get::<_, i64>(6)? as u64,
        gen: r.get::<_, i64>(7)? as u64,
    })
}

// What an object costs snapshots: all of it once the live filesystem has
// dropped it, else its dead part (a pinned pack is never rewritten).
const INFO_SQL: &str = "
SELECT s.id, s.created, s.label, s.files, s.bytes, s.meta_bytes,
  (SELECT coalesce(sum(p.size - coalesce(o.live_bytes, 0)), 0)
     FROM snapshot_objects p LEFT JOIN objects o ON o.id = p.object
     WHERE p.snap = s.id
       AND NOT EXISTS (SELECT 1 FROM snapshot_objects q WHERE q.object = p.object AND q.snap != s.id)),
  s.gen
FROM snapshots s";

/// Every snapshot, oldest first.
pub fn list(meta: &Meta) -> Result<Vec<SnapshotInfo>, MetaError> {
    let c = meta.lock();
    let mut st = c.prepare(&format!("{INFO_SQL} ORDER BY s.created"))?;
    let rows = st.query_map([], row_info)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One snapshot by its id.
pub fn get(meta: &Meta, id: i64) -> Result<Option<SnapshotInfo>, MetaError> {
    let c = meta.lock();
    let r = c
        .prepare(&format!("{INFO_SQL} WHERE s.id = ?1"))?
        .query_row([id], row_info)
        .optional()?;
    Ok(r)
}

/// (id, created) of every snapshot, oldest first: cheap, for listings.
pub fn names(meta: &Meta) -> Result<Vec<(i64, i64)>, MetaError> {
    let c = meta.lock();
    let mut st = c.prepare_cached("SELECT id, created FROM snapshots ORDER BY created")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn cost(meta: &Meta) -> Result<SnapshotCost, MetaError> {
    let c = meta.lock();
    let (n, meta_bytes): (i64, i64) = c.query_row(
        "SELECT count(*), coalesce(sum(meta_bytes), 0) FROM snapshots",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let held: i64 = c.query_row(
        "SELECT coalesce(sum(p.size - coalesce(o.live_bytes, 0)), 0)
         FROM (SELECT object, max(size) AS size FROM snapshot_objects GROUP BY object) p
         LEFT JOIN objects o ON o.id = p.object",
        [],
        |r| r.get(0),
    )?;
    Ok(SnapshotCost {
        snapshots: n as u64,
        held_bytes: held as u64,
        meta_bytes: meta_bytes as u64,
    })
}

/// Whether a kept snapshot reads object `id` (it must stay as it is).
pub fn is_pinned(c: &Connection, id: i64) -> Result<bool, MetaError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM snapshot_objects WHERE object=?1 LIMIT 1")?
            .query_row([id], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}

/// Every object some snapshot reads.
pub fn pinned_objects(meta: &Meta) -> Result<Vec<i64>, MetaError> {
    let c = meta.lock();
    let mut st = c.prepare("SELECT DISTINCT object FROM snapshot_objects")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl Shipper {
    /// Take a snapshot of what the database holds now, named by `created`
    /// (unix seconds). The caller has uploaded the data it should hold:
    /// blocks still only in the cache are not in the database yet.
    ///
    /// Cost: one consistent copy of the database (`VACUUM INTO`, about a
    /// second per million files), one scan of its block map for the pins,
    /// and one upload of the copy, streamed in 32 MiB parts (no size
    /// ceiling, memory of one part). No block is copied.
    pub fn snapshot(&self, created: i64, label: &str) -> Result<SnapshotInfo, SnapshotError> {
        let _g = self.lock.lock();
        let taken = {
            let c = self.meta.lock();
            let r = c
                .prepare_cached("SELECT 1 FROM snapshots WHERE created=?1")
                .map_err(MetaError::from)?
                .query_row([created], |_| Ok(()))
                .optional()
                .map_err(MetaError::from)?;
            r.is_some()
        };
        if taken {
            return Err(SnapshotError::SameSecond(gmt_name(created)));
        }
        self.meta.commit()?;
        let tmp = self.meta.path().with_extension("fssnap");
        let result = (|| {
            copy_db(self.meta.path(), &tmp)?;
            let (pins, files, bytes) = {
                let c = Connection::open(&tmp).map_err(MetaError::from)?;
                // The copy's own pins and snapshot list are not its business.
                c.execute_batch("DELETE FROM snapshot_objects; DELETE FROM snapshots;")
                    .map_err(MetaError::from)?;
                let mut st = c
                    .prepare(
                        "SELECT o.id, o.size FROM objects o
                         WHERE EXISTS (SELECT 1 FROM blocks b WHERE b.object = o.id)",
                    )
                    .map_err(MetaError::from)?;
                let pins: Vec<(i64, i64)> = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(MetaError::from)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(MetaError::from)?;
                let (files, bytes): (i64, i64) = c
                    .query_row(
                        &format!(
                            "SELECT count(*), coalesce(sum(size), 0) FROM inodes WHERE (mode & {}) = {}",
                            libc::S_IFMT,
                            libc::S_IFREG
                        ),
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(MetaError::from)?;
                (pins, files, bytes)
            };
            // Pins first: from here on nothing the copy reads is deleted.
            let id = self.meta.with_tx(|tx| {
                tx.execute(
                    "INSERT INTO snapshots(created, label, files, bytes, meta_bytes, gen) VALUES(?1, ?2, ?3, ?4, 0, ?5)",
                    params![created, label, files, bytes, self.next_gen() as i64],
                )?;
                let id = tx.last_insert_rowid();
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO snapshot_objects(object, snap, size) VALUES(?1, ?2, ?3)",
                )?;
                for (o, size) in &pins {
                    st.execute(params![o, id, size])?;
                }
                Ok(id)
            })?;
            let key = store_key(id);
            // Streamed in parts (memory: one part, whatever the size).
            let uploaded = chain::put_db(&self.store, &self.codec, &key, id as u64, &tmp, false)
                .map(|(_, n)| n)
                .map_err(SnapshotError::from);
            match uploaded {
                Ok(n) => {
                    self.meta.with_tx(|tx| {
                        tx.execute(
                            "UPDATE snapshots SET meta_bytes=?2 WHERE id=?1",
                            params![id, n as i64],
                        )?;
                        Ok(())
                    })?;
                    Ok(id)
                }
                Err(e) => {
                    self.meta.with_tx(|tx| {
                        drop_rows(tx, id)?;
                        Ok(())
                    })?;
                    // The parts stored before the failure (best effort: the
                    // id is free again and a later snapshot overwrites them).
                    if let Err(de) = chain::delete_db(&self.store, &key) {
                        tracing::warn!(%key, error = %de, "a failed snapshot's parts were left in the store");
                    }
                    Err(e)
                }
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        let id = result?;
        self.meta.commit()?;
        tracing::info!(id, name = %gmt_name(created), label, "snapshot taken");
        get(&self.meta, id)?.ok_or_else(|| SnapshotError::NotFound(gmt_name(created)))
    }

    /// Forget a snapshot: its pins go at once; objects only it held are
    /// deleted after two more metadata generations (like any dead object),
    /// its database once the caller has shipped metadata without it
    /// ([`Shipper::drop_snapshot_db`]).
    pub fn delete_snapshot(&self, id: i64) -> Result<SnapshotInfo, SnapshotError> {
        let _g = self.lock.lock();
        let info = get(&self.meta, id)?.ok_or_else(|| SnapshotError::NotFound(id.to_string()))?;
        let next = self.next_gen();
        self.meta.with_tx(|tx| {
            // Dead objects it pinned wait two generations from now, so
            // falling back one generation (which still pins them) is safe.
            tx.execute(
                "UPDATE dead_objects SET after_gen = max(after_gen, ?2)
                 WHERE id IN (SELECT object FROM snapshot_objects WHERE snap=?1)",
                params![id, next as i64],
            )?;
            drop_rows(tx, id)
        })?;
        self.meta.commit()?;
        tracing::info!(id, name = %info.name, "snapshot deleted");
        Ok(info)
    }

    /// Delete a dropped snapshot's database from the store (after the
    /// metadata without it has been shipped).
    pub fn drop_snapshot_db(&self, id: i64) -> Result<(), StoreError> {
        chain::delete_db(&self.store, &store_key(id))
    }
}

fn drop_rows(tx: &Connection, id: i64) -> Result<(), MetaError> {
    tx.execute("DELETE FROM snapshot_objects WHERE snap=?1", [id])?;
    tx.execute("DELETE FROM snapshots WHERE id=?1", [id])?;
    Ok(())
}

impl Shipper {
    /// Download snapshot `info`'s database to `dest` (0600, replaced
    /// whole; memory: one part).
    pub fn fetch_snapshot_db(&self, info: &SnapshotInfo, dest: &Path) -> Result<(), SnapshotError> {
        let skey = store_key(info.id);
        let tmp = dest.with_extension("part");
        let got = chain::get_db(&self.store, &self.codec, &skey, info.id as u64, &tmp);
        let damaged = |reason: String| SnapshotError::Damaged {
            name: info.name.clone(),
            reason,
        };
        match got {
            Ok(_) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    chain::LinkError::Missing => damaged(format!("{skey} is missing")),
                    chain::LinkError::Damaged(r) => damaged(r),
                    chain::LinkError::Store(e) => e.into(),
                });
            }
        }
        std::fs::rename(&tmp, dest).map_err(|cause| SnapshotError::Io {
            path: tmp.clone(),
            cause,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmt_names_round_trip() {
        assert_eq!(gmt_name(0), "@GMT-1970.01.01-00.00.00");
        assert_eq!(gmt_name(1_796_051_045), "@GMT-2026.11.30-15.04.05");
        assert_eq!(gmt_name(951_782_400), "@GMT-2000.02.29-00.00.00");
        for t in [
            0,
            59,
            951_782_399,
            951_782_400,
            1_796_051_045,
            4_102_444_800,
        ] {
            assert_eq!(parse_gmt_name(&gmt_name(t)), Some(t), "{t}");
        }
        for bad in [
            "@GMT-2026.13.01-00.00.00",
            "@GMT-2026.02.30-00.00.00",
            "@GMT-2026.11.30-15.04.5",
            "GMT-2026.11.30-15.04.05",
            "@GMT-2026.11.30-15.04.05x",
            "@GMT-+026.11.30-15.04.05",
        ] {
            assert_eq!(parse_gmt_name(bad), None, "{bad}");
        }
    }
}
