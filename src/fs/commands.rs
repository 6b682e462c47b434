//! What an operator asks of a mounted filesystem (`swiftgate stat`, `ctl`),
//! answered the same way by a standalone mount process and by the gateway
//! daemon for the homes it mounted.

use super::engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One command, as the control sockets carry it (`"stat"`, `"flush"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountCommand {
    /// Figures: files, bytes, cache use, metadata generation.
    Stat,
    /// Upload everything now.
    Flush,
    /// Upload data, then store a metadata generation now.
    BackupMetadata,
    /// Empty the clean part of the cache.
    DropCache,
    /// Rewrite packs that are mostly dead now.
    Gc,
    /// The snapshots, with what they cost.
    Snapshots,
    /// Take a snapshot now.
    SnapshotCreate {
        #[serde(default = "manual")]
        label: String,
    },
    /// Drop a snapshot (by `@GMT-...` name or id).
    SnapshotDelete { name: String },
}

fn manual() -> String {
    "manual".into()
}

impl MountCommand {
    /// The name on the command line and on the wire.
    pub fn parse(s: &str) -> Option<MountCommand> {
        serde_json::from_value(Value::String(s.to_string()))
            .or_else(|_| serde_json::from_str(s))
            .ok()
    }

    /// The text [`MountCommand::parse`] reads back.
    pub fn wire(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(s)) => s,
            Ok(v) => v.to_string(),
            Err(_) => String::new(),
        }
    }
}

/// Run `cmd` on a mounted engine; `progress` sees the blocks still to
/// upload while flushing.
pub fn run(engine: &Engine, cmd: MountCommand, progress: &dyn Fn(usize)) -> Result<Value, String> {
    let fs = &engine.fs;
    match cmd {
        MountCommand::Stat => {
            // Figures of live data only.
            if let Err(e) = fs.cache().drop_dead_clean() {
                tracing::warn!("dropping cached copies of deleted blocks failed: {e}");
            }
            let counts = fs.counts().map_err(|e| e.to_string())?;
            Ok(json!({
                "uuid": engine.params.uuid,
                "pid": std::process::id(),
                "store": engine.store.url(),
                "block_size": engine.params.block_size,
                "counts": counts,
                "cache": fs.cache().stats(),
                "metadata_generation": fs.shipper().shipped_gen(),
                "metadata_shipping": fs.shipper().stats(),
                // Another mount took the filesystem over: read-only.
                "superseded": fs.superseded(),
                "quota": fs.quota(),
                "quota_use": fs.usage().ok(),
                "snapshots": fs.snapshot_cost().map_err(|e| e.to_string())?,
            }))
        }
        MountCommand::Flush => {
            engine.flush(progress).map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }
        MountCommand::BackupMetadata => {
            // Data first: a generation whose blocks are all stored is one a
            // new host can use without reading zeros.
            fs.cache().flush(None).map_err(|e| e.to_string())?;
            // A full snapshot: a backup stands on its own, and it is what
            // lets objects deleted before it go from the store.
            let gen = fs.shipper().ship_full_now().map_err(|e| e.to_string())?;
            Ok(json!({ "generation": gen }))
        }
        MountCommand::Gc => {
            let s = fs.cache().gc_packs(1000).map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(s).unwrap_or_default())
        }
        MountCommand::DropCache => {
            fs.cache().drop_clean();
            Ok(Value::Null)
        }
        MountCommand::Snapshots => {
            let list = fs.snapshot_list().map_err(|e| e.to_string())?;
            let cost = fs.snapshot_cost().map_err(|e| e.to_string())?;
            Ok(json!({ "snapshots": list, "cost": cost }))
        }
        MountCommand::SnapshotCreate { label } => {
            let s = fs.snapshot_create(&label).map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(s).unwrap_or_default())
        }
        MountCommand::SnapshotDelete { name } => {
            let found = fs.snapshot_find(&name).map_err(|_| {
                format!("no snapshot {name:?}: `swiftgate snapshot list` shows them")
            })?;
            let s = fs.snapshot_delete(found.id).map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(s).unwrap_or_default())
        }
    }
}
