//! Crash recovery at start: re-register the dirty blocks a previous run
//! left (they go back to the upload queue) and the clean copies of blocks
//! that still exist.

use super::{io_err, Cache, Dirty, Result, State};
use std::collections::HashSet;
use std::fs;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Cache {
    /// Re-register what a previous run left on disk.
    pub(super) fn recover(&self) -> Result<()> {
        let tmp = self.dir("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut st = self.st.lock();
        let dirty_dir = self.dir("dirty");
        let mut requeued = 0;
        for e in fs::read_dir(&dirty_dir)
            .map_err(io_err(&dirty_dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let parsed = name
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            let Some((ino, idx)) = parsed else {
                let _ = fs::remove_file(e.path());
                continue;
            };
            let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
            if self.recovered(&mut st, (ino, idx), bytes, false) {
                requeued += 1;
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
        for (ino, idx, bytes) in self.small.list_dirty()? {
            if st.dirty.contains_key(&(ino, idx)) {
                // A crash mid-conversion to a file: the file is complete
                // (the row is deleted only after it was written).
                self.small.del_dirty(ino, idx)?;
                continue;
            }
            if self.recovered(&mut st, (ino, idx), bytes, true) {
                requeued += 1;
            } else {
                self.small.del_dirty(ino, idx)?;
            }
        }
        if requeued > 0 {
            tracing::info!(
                blocks = requeued,
                "re-queued dirty blocks left by the previous run"
            );
        }
        let blocks_dir = self.dir("blocks");
        let known: HashSet<i64> = self.meta.block_ids()?;
        for e in fs::read_dir(&blocks_dir)
            .map_err(io_err(&blocks_dir))?
            .flatten()
        {
            let id = e.file_name().to_string_lossy().parse::<i64>().ok();
            match id {
                Some(id) if known.contains(&id) => {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    st.tick += 1;
                    let t = st.tick;
                    st.clean.insert(id, (size, t, false));
                    st.lru.insert(t, id);
                    st.clean_bytes += size;
                }
                _ => {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for (id, size) in self.small.list_clean()? {
            if known.contains(&id) {
                st.tick += 1;
                let t = st.tick;
                st.clean.insert(id, (size, t, true));
                st.lru.insert(t, id);
                st.clean_bytes += size;
            } else {
                self.small.del_clean(id)?;
            }
        }
        Ok(())
    }

    /// Register a dirty block found at start; false if its file is gone
    /// or now shorter, so the data is unreachable and may be dropped.
    pub(super) fn recovered(
        &self,
        st: &mut State,
        key: (u64, u64),
        bytes: u64,
        small: bool,
    ) -> bool {
        match self.meta.getattr(key.0) {
            Ok(a) if key.1 * self.cfg.block_size < a.size.max(1) => {
                st.dirty_bytes += bytes;
                st.dirty.insert(
                    key,
                    Dirty {
                        incarnation: self.next_incarnation.fetch_add(1, Ordering::Relaxed),
                        version: 0,
                        bytes,
                        modified: Instant::now(),
                        uploading: false,
                        needs_sync: false,
                        small,
                        cover: vec![(0, u64::MAX)],
                    },
                );
                self.requeue(st, key);
                true
            }
            _ => false,
        }
    }
}
