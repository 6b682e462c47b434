//! `swiftgate recovery init|show-key|backup|status|restore`: the gateway's
//! state in the store, and a new gateway rebuilt from it.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};

use crate::gateway::recovery::{self, RecoveryKey};

#[derive(Debug, Subcommand)]
pub enum RecoveryCmd {
    /// Create the recovery key and print it (once: write it down, keep it
    /// off this machine). The daemon backs up the state with it.
    Init,
    /// Print the recovery key again (root only).
    ShowKey,
    /// Back up the gateway state now (the daemon does it after every
    /// change and every hour by itself).
    Backup,
    /// Where the state is backed up, when last, the last error.
    Status,
    /// On a new machine: download the state from STORE, decrypt it with the
    /// recovery key (asked for on the terminal, or one line on stdin) and
    /// write it back: config, user map, shares, tokens, Unix accounts,
    /// Samba passwords. Then start the daemon.
    Restore {
        /// The recovery store: `swift://swiftgate-state` or `local:///...`
        /// (Swift credentials from the OS_* environment or clouds.yaml).
        #[arg(long = "from")]
        from: String,
        #[command(flatten)]
        swift: Box<super::SwiftArgs>,
    },
}

fn need_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (the recovery key is root-only)");
    }
    Ok(())
}

/// The recovery key from the terminal (no echo) or one line of stdin;
/// never from argv.
fn read_key() -> Result<RecoveryKey> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let mut line = zeroize::Zeroizing::new(String::new());
    if stdin.is_terminal() {
        use nix::sys::termios;
        let old = termios::tcgetattr(&stdin)?;
        let mut quiet = old.clone();
        quiet.local_flags.remove(termios::LocalFlags::ECHO);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet)?;
        eprint!("Recovery key: ");
        std::io::stderr().flush()?;
        let r = stdin.lock().read_line(&mut line);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &old)?;
        eprintln!();
        r?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    if line.trim().is_empty() {
        bail!("no recovery key given: type it at the prompt, or give it as one line on stdin");
    }
    Ok(RecoveryKey::parse(&line)?)
}

pub fn run(cmd: RecoveryCmd, config: &Path) -> Result<i32> {
    match cmd {
        RecoveryCmd::Init => {
            need_root("recovery init")?;
            let cfg = crate::gateway::GatewayConfig::load(config)?;
            let k = recovery::init_key(&cfg)?;
            eprintln!(
                "Recovery key (shown only now; write it down and keep it off this machine; `swiftgate recovery show-key` prints it again):"
            );
            println!("{}", k.display().as_str());
            // A first backup now, when the daemon runs (else it makes one at start).
            if let Ok(c) = super::gateway::client(config, std::time::Duration::from_secs(120)) {
                use crate::gateway::api::GatewayApiExt;
                match c.done(crate::gateway::api::Request::StateBackup) {
                    Ok(m) => eprintln!("{m}"),
                    Err(e) if e.kind == crate::gateway::api::ErrorKind::NotRunning => {}
                    Err(e) => eprintln!("swiftgate: first backup failed: {e}"),
                }
            }
        }
        RecoveryCmd::ShowKey => {
            need_root("recovery show-key")?;
            let cfg = crate::gateway::GatewayConfig::load(config)?;
            let k = RecoveryKey::load(&cfg.recovery.key_file)?;
            println!("{}", k.display().as_str());
        }
        RecoveryCmd::Backup => {
            let c = super::gateway::client(config, std::time::Duration::from_secs(600))?;
            return super::gateway::run_change(&c, crate::gateway::api::Request::StateBackup);
        }
        RecoveryCmd::Status => {
            use crate::gateway::api::GatewayApiExt;
            let c = super::gateway::client(config, std::time::Duration::from_secs(10))?;
            let s = c.state_status()?;
            println!("store:       {}", s.url);
            match s.last_backup_unix {
                Some(t) => println!(
                    "last backup: {} ({} bytes)",
                    crate::web::fmt::time(t),
                    s.last_size.unwrap_or(0)
                ),
                None => println!("last backup: none yet"),
            }
            if let Some(e) = &s.last_error {
                println!("last error:  {e}");
                return Ok(1);
            }
        }
        RecoveryCmd::Restore { from, swift } => {
            need_root("recovery restore")?;
            restore(&from, &swift, config)?;
            println!(
                "start the daemon: systemctl restart swiftgate (or `swiftgate serve --config {}`); `swiftgate setup --restore` does this and smb.conf in one step",
                config.display()
            );
        }
    }
    Ok(0)
}

/// Restore; the report goes to stdout. Shared with `setup --restore`.
pub fn restore(from: &str, swift: &super::SwiftArgs, config: &Path) -> Result<()> {
    let key = read_key()?;
    let opts = swift.open_options();
    let bundle = recovery::fetch(from, &opts.swift, &key)?;
    let config: PathBuf = config.to_path_buf();
    let report = recovery::restore(&bundle, &key, &config)?;
    println!(
        "restored the gateway state of {} (backed up {}) from {from}:",
        bundle.host,
        crate::web::fmt::time(bundle.created_unix)
    );
    for l in report {
        println!("  {l}");
    }
    println!(
        "homes and team shares come back as they are mounted (a lease the old gateway held is taken over once it expires)"
    );
    Ok(())
}
