//! Reads for snapshot views: blocks a snapshot pins, served without
//! disturbing the live filesystem's cache (no insertion, no recency bump),
//! so browsing Previous Versions never evicts what users are working on.

use super::{Cache, Result};
use crate::meta::BlockRef;

impl Cache {
    /// The plaintext of `b`: the cached copy if the live filesystem has
    /// one (block ids never change content), else straight from the store.
    pub fn read_uncached(&self, b: &BlockRef) -> Result<Vec<u8>> {
        let cached = self.st.lock().clean.get(&b.id).map(|e| e.2);
        match cached {
            Some(true) => {
                if let Some(d) = self.small.get_clean(b.id)? {
                    return Ok(d);
                }
            }
            Some(false) => {
                // Evicted meanwhile: read from the store below.
                if let Ok(d) = std::fs::read(self.dir("blocks").join(b.id.to_string())) {
                    if d.len() as u64 == b.plain_len {
                        return Ok(d);
                    }
                }
            }
            None => {}
        }
        self.fetch_plain(b)
    }
}
