//! Offline check and repair of a filesystem in its store: namespace
//! (dangling entries, unreachable inodes -> lost+found, link counts), block
//! map and refcounts, packs and objects (orphans, missing, corrupt).

use super::lease::{Lease, LeaseError};
use super::ship::{self, meta_codec, ShipError, Shipper};
use super::{object_key, Meta, MetaError, ROOT_INO, S_IFDIR};
use crate::data::{BlockCodec, MasterKey, Params};
use crate::store::{DynStore, StoreError};
use rusqlite::params;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("metadata: {0}")]
    Meta(MetaError),
    #[error("metadata: {0}")]
    Ship(ShipError),
    #[error("temporary directory: {0}")]
    Io(std::io::Error),
}

cause_from!(MetaError => FsckError::Meta, ShipError => FsckError::Ship, std::io::Error => FsckError::Io);

#[derive(Debug, Clone, Default)]
pub struct FsckOptions {
    pub verify_data: bool,
    pub dry_run: bool,
    /// Go on with an older generation when the newest are damaged.
    pub accept_rollback: bool,
    /// Delete the objects quarantined after a rollback.
    pub release_quarantine: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Repaired,
    Unrepairable,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<String>,
    pub repaired: usize,
    pub lost: usize,
    pub inodes: u64,
    pub blocks: u64,
    /// Nothing was changed: repairs are what would be done.
    pub dry_run: bool,
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        if self.lost > 0 {
            Outcome::Unrepairable
        } else if self.repaired > 0 {
            Outcome::Repaired
        } else {
            Outcome::Clean
        }
    }
    fn fix(&mut self, s: String) {
        let word = if self.dry_run {
            "would repair"
        } else {
            "repaired"
        };
        self.findings.push(format!("{word}: {s}"));
        self.repaired += 1;
    }
    fn loss(&mut self, s: String) {
        self.findings.push(format!("DATA LOST: {s}"));
        self.lost += 1;
    }
}

fn q_ids(c: &rusqlite::Connection, sql: &str) -> Result<Vec<i64>, MetaError> {
    let mut st = c.prepare(sql)?;
    let r = st.query_map([], |r| r.get::<_, i64>(0))?;
    Ok(r.collect::<rusqlite::Result<_>>()?)
}

pub fn run(
    store: &DynStore,
    params: &Params,
    key: Option<&MasterKey>,
    o: &FsckOptions,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<Report, FsckError> {
    let lease = Lease::acquire(store.clone(), Duration::from_secs(600), false)?;
    let res = run_locked(store, params, key, o, progress);
    lease.release()?;
    res
}

fn run_locked(
    store: &DynStore,
    params: &Params,
    key: Option<&MasterKey>,
    o: &FsckOptions,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<Report, FsckError> {
    let tmp = std::env::temp_dir().join(format!(
        "swiftgate-fsck-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    crate::secure::private_dir(&tmp)?;
    let _cleanup = scopeguard(tmp.clone());
    let mcodec = meta_codec(key);
    let db = tmp.join("meta.db");
    let restored = ship::restore(store, &mcodec, &db)?;
    let gen = restored.gen;
    let meta = Arc::new(Meta::open(&db)?);
    let mut rep = Report {
        dry_run: o.dry_run,
        ..Report::default()
    };
    if restored.is_rollback() {
        rep.loss(restored.describe());
        if !o.accept_rollback || o.dry_run {
            // Checking the old generation against the store would call the
            // newer data "orphans": stop before judging anything.
            rep.findings.push(
                "nothing was checked or changed; run again with --accept-rollback to repair from that generation (the damaged snapshots are kept, and objects only newer generations referenced are quarantined, not deleted)".into(),
            );
            return Ok(rep);
        }
        let note = ship::accept_rollback(store, &meta, &restored)?;
        rep.findings.push(format!("accepted: {note}"));
    }
    let quarantine = meta.kv_get(ship::KV_ROLLBACK)?;
    let codec = BlockCodec::new(key, params.compression);

    // ---- namespace
    progress("namespace", 0, 1);
    let dead_gen = gen + 1;
    meta.with_tx(|tx| {
        let dangling = q_ids(tx, "SELECT id FROM dentries WHERE ino NOT IN (SELECT ino FROM inodes)")?;
        for id in dangling {
            let (parent, name): (i64, Vec<u8>) = tx.query_row(
                "SELECT parent, name FROM dentries WHERE id=?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let dir = super::path_of(tx, parent as u64)?;
            tx.execute("DELETE FROM dentries WHERE id=?1", [id])?;
            rep.fix(format!(
                "removed {}/{} (its file was missing)",
                dir.trim_end_matches('/'),
                String::from_utf8_lossy(&name)
            ));
        }
        // Entries whose parent is gone or not a directory: re-home them.
        let homeless = q_ids(
            tx,
            &format!("SELECT d.id FROM dentries d LEFT JOIN inodes p ON p.ino=d.parent
                      WHERE p.ino IS NULL OR (p.mode & {}) != {}", libc::S_IFMT, S_IFDIR),
        )?;
        let unreachable = q_ids(
            tx,
            &format!("SELECT ino FROM inodes WHERE ino != {ROOT_INO} AND nlink > 0
                      AND ino NOT IN (SELECT ino FROM dentries)"),
        )?;
        if !homeless.is_empty() || !unreachable.is_empty() {
            let lf = lost_found(tx)?;
            for id in homeless {
                let name: Vec<u8> =
                    tx.query_row("SELECT name FROM dentries WHERE id=?1", [id], |r| r.get(0))?;
                tx.execute(
                    "UPDATE dentries SET parent=?2, name=CAST(('#entry' || id) AS BLOB) WHERE id=?1",
                    params![id, lf as i64],
                )?;
                rep.fix(format!(
                    "{:?} had no parent directory: moved to /lost+found/#entry{id}",
                    String::from_utf8_lossy(&name)
                ));
            }
            for ino in unreachable {
                tx.execute(
                    "INSERT INTO dentries(parent, name, ino) VALUES(?1, CAST(('#' || ?2) AS BLOB), ?2)",
                    params![lf as i64, ino],
                )?;
                rep.fix(format!("inode {ino} was unreachable: linked into /lost+found as #{ino}"));
            }
        }
        let orphans = q_ids(tx, "SELECT ino FROM inodes WHERE nlink=0 AND ino NOT IN (SELECT ino FROM dentries)")?;
        for ino in orphans {
            super::unmap_all(tx, ino as u64, dead_gen)?;
            tx.execute("DELETE FROM xattrs WHERE ino=?1", [ino])?;
            tx.execute("DELETE FROM symlinks WHERE ino=?1", [ino])?;
            tx.execute("DELETE FROM inodes WHERE ino=?1", [ino])?;
            rep.fix(format!("removed orphan inode {ino} (deleted while open)"));
        }
        // Link counts from the entries that exist. Only the wrong ones
        // leave SQLite: memory follows the damage, not the inode count
        // (all rows took 460 MiB at ten million files).
        let mut st = tx.prepare(&format!(
            "SELECT ino, nlink, want FROM (
               SELECT i.ino, i.nlink, CASE WHEN (i.mode & {fmt}) = {dir}
                 THEN 2 + (SELECT count(*) FROM dentries d JOIN inodes c ON c.ino=d.ino
                           WHERE d.parent=i.ino AND (c.mode & {fmt}) = {dir})
                 ELSE (SELECT count(*) FROM dentries d WHERE d.ino=i.ino) END AS want
               FROM inodes i)
             WHERE nlink != want",
            fmt = libc::S_IFMT,
            dir = S_IFDIR
        ))?;
        let rows: Vec<(i64, i64, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(st);
        for (ino, nlink, want) in rows {
            tx.execute("UPDATE inodes SET nlink=?2 WHERE ino=?1", params![ino, want])?;
            rep.fix(format!(
                "{}: link count {nlink} -> {want}",
                super::path_of(tx, ino as u64)?
            ));
        }
        Ok(())
    })?;

    // ---- block map and refcounts
    progress("blocks", 0, 1);
    meta.with_tx(|tx| {
        let bad = tx
            .prepare("SELECT ino, idx FROM file_blocks WHERE block NOT IN (SELECT id FROM blocks)")?
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (ino, idx) in bad {
            let lost = super::new_lost_block(tx)?;
            tx.execute("UPDATE file_blocks SET block=?3 WHERE ino=?1 AND idx=?2", params![ino, idx, lost])?;
            rep.loss(format!(
                "{} block {idx} referenced a missing block: reading that range fails (EIO)",
                super::path_of(tx, ino as u64)?
            ));
        }
        tx.execute("DELETE FROM file_blocks WHERE ino NOT IN (SELECT ino FROM inodes)", [])
            .map(|n| if n > 0 { rep.fix(format!("removed {n} block mappings of missing inodes")) })?;
        let rc = tx
            .prepare(
                "SELECT id, refcount, want FROM (
                   SELECT b.id, b.refcount,
                     (SELECT count(*) FROM file_blocks f WHERE f.block=b.id) AS want
                   FROM blocks b)
                 WHERE refcount != want",
            )?
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, have, want) in rc {
            if have != want {
                tx.execute("UPDATE blocks SET refcount=?2 WHERE id=?1", params![id, want])?;
                rep.fix(format!("block {id}: refcount {have} -> {want}"));
            }
        }
        let n = tx.execute("DELETE FROM blocks WHERE refcount=0", [])?;
        if n > 0 {
            rep.fix(format!("removed {n} unreferenced blocks"));
        }
        // Ranges lost in an earlier repair: still unreadable, still lost.
        let damaged = tx
            .prepare("SELECT f.ino, f.idx FROM file_blocks f JOIN blocks b ON b.id=f.block WHERE b.object=?1")?
            .query_map([super::LOST_OBJECT], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (ino, idx) in damaged {
            rep.loss(format!(
                "{} block {idx} was lost in an earlier repair: reading it fails (EIO) until the file is rewritten or deleted",
                super::path_of(tx, ino as u64)?
            ));
        }
        Ok(())
    })?;

    // ---- objects: what the metadata expects vs what the store has
    progress("objects", 0, 1);
    let listed: HashMap<String, u64> = store
        .list_all("data/")?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let objects: Vec<(i64, i64)> = {
        let c = meta.lock();
        let mut st = c
            .prepare("SELECT id, size FROM objects")
            .map_err(MetaError::from)?;
        let r = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(MetaError::from)?;
        r.collect::<rusqlite::Result<_>>()
            .map_err(MetaError::from)?
    };
    let dead: HashSet<String> = {
        let c = meta.lock();
        q_ids(&c, "SELECT id FROM dead_objects")?
            .into_iter()
            .map(object_key)
            .collect()
    };
    let mut missing = Vec::new();
    for (id, _size) in &objects {
        let k = object_key(*id);
        // A LIST may lag behind on Swift: confirm absence with HEAD.
        if !listed.contains_key(&k) && store.head(&k)?.is_none() {
            missing.push(*id);
        }
    }
    // Objects kept snapshots read: not orphans, and they must be there.
    let pinned = super::snapshots::pinned_objects(&meta)?;
    let live_ids: HashSet<i64> = objects.iter().map(|(id, _)| *id).collect();
    for id in pinned.iter().filter(|id| !live_ids.contains(id)) {
        let k = object_key(*id);
        if !listed.contains_key(&k) && store.head(&k)?.is_none() {
            rep.loss(format!(
                "object {k}, which snapshots still read, is missing from the store: reading those snapshots' files that used it fails (EIO)"
            ));
        }
    }
    for snap in super::snapshots::list(&meta)? {
        if store.head(&super::snapshots::store_key(snap.id))?.is_none() {
            rep.loss(format!(
                "snapshot {} has lost its database ({}): it cannot be read; `swiftgate snapshot delete {}` removes it",
                snap.name,
                super::snapshots::store_key(snap.id),
                snap.name
            ));
        }
    }
    let mut known: HashSet<String> = objects.iter().map(|(id, _)| object_key(*id)).collect();
    known.extend(pinned.iter().map(|id| object_key(*id)));
    let orphans: Vec<String> = listed
        .keys()
        .filter(|k| !known.contains(*k) && !dead.contains(*k))
        .cloned()
        .collect();
    if !orphans.is_empty() {
        match &quarantine {
            // After a rollback, objects nobody knows may be the only copy of
            // what the lost generations held: kept until released.
            Some(note) if !o.release_quarantine => {
                let mut keys = orphans.clone();
                keys.sort();
                rep.loss(format!(
                    "{} objects no generation refers to are quarantined (kept) since the rollback ({}); they may hold data written after it: {}. `swiftgate fsck --release-quarantine` deletes them",
                    keys.len(),
                    String::from_utf8_lossy(note),
                    keys.join(" ")
                ));
            }
            _ => {
                if !o.dry_run {
                    store.delete_many(&orphans)?;
                }
                rep.fix(format!(
                    "deleted {} objects no metadata refers to",
                    orphans.len()
                ));
            }
        }
    }
    if quarantine.is_some() && o.release_quarantine && !o.dry_run {
        meta.kv_delete(ship::KV_ROLLBACK)?;
        rep.fix("quarantine released".into());
    }
    let mut lost_blocks: Vec<(i64, String)> = Vec::new();
    for id in &missing {
        let c = meta.lock();
        for b in q_ids(&c, &format!("SELECT id FROM blocks WHERE object={id}"))? {
            lost_blocks.push((
                b,
                format!("object {} is missing from the store", object_key(*id)),
            ));
        }
    }
    if o.verify_data {
        let all: Vec<super::BlockRef> = {
            let c = meta.lock();
            let mut st = c
                .prepare("SELECT id, hash, object, offset, length, plain_len FROM blocks WHERE object != 0")
                .map_err(MetaError::from)?;
            let r = st
                .query_map([], super::row_block)
                .map_err(MetaError::from)?;
            r.collect::<rusqlite::Result<_>>()
                .map_err(MetaError::from)?
        };
        let total = all.len() as u64;
        for (i, b) in all.iter().enumerate() {
            progress("verifying data", i as u64, total);
            if missing.contains(&b.object) {
                continue;
            }
            let key = object_key(b.object);
            let ok = match store.get_range(&key, b.offset, b.length) {
                Ok(rec) => codec
                    .decode_block_vec(&b.hash, rec)
                    .map_err(|e| e.to_string()),
                Err(e) if e.is_not_found() => Err("object missing".into()),
                Err(e) => return Err(e.into()),
            };
            if let Err(why) = ok {
                lost_blocks.push((b.id, format!("{key} at {}: {why}", b.offset)));
            }
        }
    }
    meta.with_tx(|tx| {
        for (b, why) in &lost_blocks {
            let files = tx
                .prepare("SELECT ino, idx FROM file_blocks WHERE block=?1")?
                .query_map([b], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // Kept mapped, marked lost: reads of the range fail loudly.
            super::mark_block_lost(tx, *b)?;
            for (ino, idx) in files {
                rep.loss(format!(
                    "{} block {idx}: {why}; reading that range fails (EIO)",
                    super::path_of(tx, ino as u64)?
                ));
            }
        }
        for id in &missing {
            tx.execute("DELETE FROM objects WHERE id=?1", [id])?;
        }
        // Live figures of each object from the blocks that remain.
        let objs = q_ids(tx, "SELECT id FROM objects")?;
        for id in objs {
            let (bytes, n): (i64, i64) = tx.query_row(
                "SELECT coalesce(sum(length),0), count(*) FROM blocks WHERE object=?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if n == 0 {
                tx.execute("DELETE FROM objects WHERE id=?1", [id])?;
                tx.execute(
                    "INSERT OR REPLACE INTO dead_objects(id, after_gen) VALUES(?1, ?2)",
                    params![id, dead_gen as i64],
                )?;
                rep.fix(format!("object {} holds no live block: scheduled for deletion", object_key(id)));
            } else {
                tx.execute(
                    "UPDATE objects SET live_bytes=?2, live_blocks=?3 WHERE id=?1 AND (live_bytes!=?2 OR live_blocks!=?3)",
                    params![id, bytes, n],
                )
                .map(|c| if c > 0 { rep.fix(format!("object {id}: live figures corrected")) })?;
            }
        }
        Ok(())
    })?;
    // ---- running totals (statfs, quotas and the console read these)
    meta.with_tx(|tx| {
        if super::tally::correct(tx)? {
            rep.fix("the running totals of files, bytes, blocks or objects differed from the tables: recounted".into());
        }
        Ok(())
    })?;
    let counts = meta.counts()?;
    rep.inodes = counts.inodes;
    rep.blocks = counts.blocks;
    if (rep.repaired > 0 || rep.lost > 0) && !o.dry_run {
        // Numbered above every generation in the store, readable or not.
        let shipper = Shipper::new(
            store.clone(),
            mcodec,
            meta.clone(),
            gen.max(restored.latest),
        );
        let g = shipper.ship(true)?;
        rep.findings
            .push(format!("repaired metadata stored as generation {g}"));
    }
    Ok(rep)
}

fn lost_found(tx: &rusqlite::Connection) -> Result<u64, MetaError> {
    if let Some((_, ino)) = super::lookup_tx(tx, ROOT_INO, b"lost+found")? {
        return Ok(ino);
    }
    let t = super::now_ns();
    tx.execute(
        "INSERT INTO inodes(mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, crtime)
         VALUES (?1, 0, 0, 0, 2, 0, ?2, ?2, ?2, ?2)",
        params![S_IFDIR | 0o700, t],
    )?;
    let ino = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO dentries(parent, name, ino) VALUES(?1, ?2, ?3)",
        params![ROOT_INO as i64, &b"lost+found"[..], ino],
    )?;
    tx.execute(
        "UPDATE inodes SET nlink=nlink+1 WHERE ino=?1",
        [ROOT_INO as i64],
    )?;
    Ok(ino as u64)
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn scopeguard(p: std::path::PathBuf) -> Cleanup {
    Cleanup(p)
}
