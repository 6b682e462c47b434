//! An engine over a fresh local store in a temp dir, for in-process tests
//! of the filesystem layer (no FUSE, no background uploads).

use crate::fs::engine::{mkfs, Engine, MkfsOptions, OpenOptions};
use crate::fs::{Durability, Fs};
use crate::store::DynStore;
use std::sync::Arc;
use std::time::Duration;

pub struct TestEngine {
    pub engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

impl TestEngine {
    pub fn new() -> TestEngine {
        Self::with(64 << 10, |s| s)
    }

    /// Blocks of `block_size`, over a local store as `wrap` returns it
    /// (a fault-injecting or counting store around it).
    pub fn with(block_size: u32, wrap: impl FnOnce(DynStore) -> DynStore) -> TestEngine {
        let dir = tempfile::tempdir().unwrap();
        let store = wrap(
            crate::store::open(&format!("local://{}", dir.path().join("s").display())).unwrap(),
        );
        mkfs(
            &store,
            &MkfsOptions {
                block_size,
                compression: crate::data::Compression::None,
                passphrase: None,
                force: false,
                root_owner: None,
            },
        )
        .unwrap();
        let engine = Engine::open(
            store,
            &OpenOptions {
                cache_dir: dir.path().join("c"),
                cache_size: 256 << 20,
                dirty_limit: 128 << 20,
                upload_workers: 1,
                upload_pool: None,
                upload_delay: Duration::from_secs(3600),
                durability: Durability::Local,
                metadata_interval: Duration::from_secs(3600),
                lease_ttl: Duration::from_secs(60),
                takeover: false,
                passphrase: None,
                accept_rollback: false,
                nospace_wait: Duration::from_secs(1),
            },
        )
        .unwrap();
        TestEngine { engine, _dir: dir }
    }

    pub fn fs(&self) -> &Fs {
        &self.engine.fs
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        let _ = self.engine.close();
    }
}
