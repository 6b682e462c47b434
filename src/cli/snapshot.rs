//! `swiftgate snapshot`: take, list, delete and restore snapshots of a
//! gateway home or share (through the daemon's API) or of a standalone
//! mount (through its control socket).

use super::stat;
use crate::fs::commands::MountCommand;
use crate::gateway::api::{FsTarget, GatewayApiExt, Request, SnapshotList};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct Which {
    /// A user's home on this gateway.
    #[arg(long, conflicts_with_all = ["share", "mountpoint"])]
    pub user: Option<String>,
    /// A team share on this gateway.
    #[arg(long, conflicts_with = "mountpoint")]
    pub share: Option<String>,
    /// A mounted filesystem (standalone `swiftgate mount`, or a home).
    #[arg(long)]
    pub mountpoint: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshots, oldest first, with what they hold and cost.
    List {
        #[command(flatten)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
    /// Take a snapshot now (no data is copied).
    Create {
        #[command(flatten)]
        which: Which,
    },
    /// Delete a snapshot; what only it held is freed.
    Delete {
        /// Its @GMT-YYYY.MM.DD-HH.MM.SS name (or id).
        name: String,
        #[command(flatten)]
        which: Which,
    },
    /// Copy a file or folder back from a snapshot over the live one
    /// (files created since are kept).
    Restore {
        name: String,
        /// From the home's or share's root; "/" restores everything.
        path: String,
        #[command(flatten)]
        which: Which,
    },
}

enum Place {
    Gateway(FsTarget),
    Mount(PathBuf),
}

fn place(w: Which) -> Result<Place> {
    Ok(match (w.user, w.share, w.mountpoint) {
        (Some(u), _, _) => Place::Gateway(FsTarget::User(u)),
        (_, Some(s), _) => Place::Gateway(FsTarget::Share(s)),
        (_, _, Some(m)) => Place::Mount(m),
        _ => bail!("say which filesystem: --user NAME, --share NAME or --mountpoint DIR"),
    })
}

pub fn run(cmd: SnapshotCmd, config: &Path) -> Result<i32> {
    match cmd {
        SnapshotCmd::List { which, json } => {
            let list: SnapshotList = match place(which)? {
                Place::Gateway(t) => super::gateway::api(config)?.snapshots(t)?,
                Place::Mount(m) => serde_json::from_value(stat::mount_command(
                    &m,
                    MountCommand::Snapshots,
                    config,
                )?)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            print_list(&list);
            Ok(0)
        }
        SnapshotCmd::Create { which } => {
            let t0 = std::time::Instant::now();
            let s = match place(which)? {
                Place::Gateway(t) => super::gateway::api(config)?.snapshot_create(t)?,
                Place::Mount(m) => serde_json::from_value(stat::mount_command(
                    &m,
                    MountCommand::SnapshotCreate {
                        label: "manual".into(),
                    },
                    config,
                )?)?,
            };
            println!(
                "snapshot {} taken in {:.1} s: {} files, {} ({} of metadata in the store)",
                s.name,
                t0.elapsed().as_secs_f64(),
                s.files,
                super::human(s.bytes),
                super::human(s.meta_bytes)
            );
            Ok(0)
        }
        SnapshotCmd::Delete { name, which } => {
            let s = match place(which)? {
                Place::Gateway(t) => super::gateway::api(config)?.snapshot_delete(t, &name)?,
                Place::Mount(m) => serde_json::from_value(stat::mount_command(
                    &m,
                    MountCommand::SnapshotDelete { name },
                    config,
                )?)?,
            };
            println!(
                "snapshot {} deleted; {} it alone held is freed after the next two metadata generations",
                s.name,
                super::human(s.exclusive_bytes)
            );
            Ok(0)
        }
        SnapshotCmd::Restore { name, path, which } => match place(which)? {
            Place::Gateway(target) => {
                let msg = super::gateway::api(config)?.done(Request::SnapshotRestore {
                    target,
                    name,
                    path,
                })?;
                println!("{msg}");
                Ok(0)
            }
            Place::Mount(m) => bail!(
                "a standalone mount restores by copying: cp -a {}/.snapshots/{name}/{} ...",
                m.display(),
                path.trim_start_matches('/')
            ),
        },
    }
}

fn print_list(l: &SnapshotList) {
    if l.snapshots.is_empty() {
        println!("no snapshots");
        return;
    }
    println!(
        "{:<26} {:<8} {:>10} {:>10} {:>10} {:>10}",
        "NAME", "LABEL", "FILES", "DATA", "ONLY IT", "METADATA"
    );
    for s in &l.snapshots {
        println!(
            "{:<26} {:<8} {:>10} {:>10} {:>10} {:>10}",
            s.name,
            s.label,
            s.files,
            super::human(s.bytes),
            super::human(s.exclusive_bytes),
            super::human(s.meta_bytes)
        );
    }
    println!(
        "{} snapshots hold {} the live files no longer use, plus {} of metadata",
        l.cost.snapshots,
        super::human(l.cost.held_bytes),
        super::human(l.cost.meta_bytes)
    );
}
