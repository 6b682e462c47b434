//! Directory listings kept in memory for plain readdir: Samba rescans a
//! whole directory for every new name (to rule out a case variant), so a
//! directory of n files costs n^2 entries read; from memory that is cheap,
//! from SQLite it was most of the time of small-file copies.
//!
//! Kept exact by the metadata layer: it inserts created entries and drops
//! the listing of any directory that changes otherwise, always under the
//! database lock, and forgets everything when an operation fails.

use std::collections::{BTreeMap, HashMap};

/// Most entries kept over all directories (about 80 bytes each).
const MAX_ENTRIES: usize = 256 * 1024;
/// Bigger directories are read page by page.
pub const MAX_DIR: usize = MAX_ENTRIES / 2;

/// (dentry id, inode, mode, name)
pub type NameEntry = (i64, u64, u32, Vec<u8>);

#[derive(Default)]
pub struct DirCache {
    dirs: HashMap<u64, Listing>,
    /// Directories found too big to keep: read page by page from then on
    /// (not reloaded after every change).
    too_big: std::collections::HashSet<u64>,
    entries: usize,
    tick: u64,
}

struct Listing {
    by_id: BTreeMap<i64, (u64, u32, Vec<u8>)>,
    used: u64,
}

impl DirCache {
    /// Calls `f` on the entries after `after` until it returns true;
    /// false if `dir` is not cached (nothing was called).
    pub fn visit(
        &mut self,
        dir: u64,
        after: i64,
        f: &mut impl FnMut(i64, u64, u32, &[u8]) -> bool,
    ) -> bool {
        self.tick += 1;
        let Some(l) = self.dirs.get_mut(&dir) else {
            return false;
        };
        l.used = self.tick;
        for (id, (ino, mode, name)) in l.by_id.range(after + 1..) {
            if f(*id, *ino, *mode, name) {
                break;
            }
        }
        true
    }

    pub fn too_big(&self, dir: u64) -> bool {
        self.too_big.contains(&dir)
    }

    /// Keep a whole listing just read from the database.
    pub fn store(&mut self, dir: u64, all: Vec<NameEntry>) {
        if all.len() > MAX_DIR {
            self.too_big.insert(dir);
            return;
        }
        self.forget(dir);
        while self.entries + all.len() > MAX_ENTRIES {
            let Some((&old, _)) = self.dirs.iter().min_by_key(|(_, l)| l.used) else {
                break;
            };
            self.forget(old);
        }
        self.tick += 1;
        self.entries += all.len();
        let by_id = all
            .into_iter()
            .map(|(id, ino, mode, name)| (id, (ino, mode, name)))
            .collect();
        self.dirs.insert(
            dir,
            Listing {
                by_id,
                used: self.tick,
            },
        );
    }

    pub fn insert(&mut self, dir: u64, id: i64, ino: u64, mode: u32, name: &[u8]) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            if l.by_id.insert(id, (ino, mode, name.to_vec())).is_none() {
                self.entries += 1;
            }
        }
    }

    pub fn forget(&mut self, dir: u64) {
        if let Some(l) = self.dirs.remove(&dir) {
            self.entries -= l.by_id.len();
        }
    }

    pub fn clear(&mut self) {
        self.dirs.clear();
        self.too_big.clear();
        self.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl DirCache {
        /// Up to `limit` entry ids after `after`, if `dir` is cached.
        fn page(&mut self, dir: u64, after: i64, limit: usize) -> Option<Vec<i64>> {
            let mut ids = Vec::new();
            let hit = self.visit(dir, after, &mut |id, _, _, _| {
                ids.push(id);
                ids.len() == limit
            });
            hit.then_some(ids)
        }
    }

    #[test]
    fn pages_inserts_and_eviction() {
        let mut c = DirCache::default();
        assert!(c.page(1, 0, 10).is_none());
        c.store(
            1,
            vec![
                (1, 10, 0o100644, b"a".to_vec()),
                (3, 11, 0o40755, b"b".to_vec()),
            ],
        );
        c.insert(1, 5, 12, 0o100644, b"c");
        c.insert(2, 6, 13, 0o100644, b"x"); // not cached: ignored
        let p = c.page(1, 1, 10).unwrap();
        assert_eq!(p, vec![3, 5]);
        assert_eq!(c.page(1, 0, 2).unwrap(), vec![1, 3], "stops when full");
        assert!(c.page(2, 0, 10).is_none());
        c.forget(1);
        assert!(c.page(1, 0, 10).is_none());
        assert_eq!(c.entries, 0);
        // Over the budget, the least recently used listing goes.
        let big = |base: i64| -> Vec<NameEntry> {
            (0..MAX_DIR as i64)
                .map(|i| (base + i, 1, 0, Vec::new()))
                .collect()
        };
        c.store(7, big(0));
        c.store(8, big(0));
        c.page(7, 0, 1);
        c.store(9, big(0));
        assert!(c.page(8, 0, 1).is_none());
        assert!(c.page(7, 0, 1).is_some());
        assert!(c.entries <= MAX_ENTRIES);
        // Too big to keep: remembered, so it is not reloaded after changes.
        let mut huge = big(0);
        huge.push((MAX_DIR as i64, 1, 0, Vec::new()));
        c.store(10, huge);
        assert!(c.page(10, 0, 1).is_none());
        assert!(c.too_big(10));
        c.forget(10);
        assert!(c.too_big(10));
    }
}
