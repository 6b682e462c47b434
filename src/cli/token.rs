//! `swiftgate token create|list|revoke`: API tokens for the console's
//! JSON API and `/metrics` (only their hashes are stored).

use anyhow::Result;
use clap::Subcommand;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once, only its hash is kept.
    Create { name: String },
    /// The tokens' names and creation times (never the tokens).
    List,
    /// Revoke a token: it stops working at once.
    Revoke { name: String },
}

pub fn run(cmd: TokenCmd, config: &Path) -> Result<i32> {
    let cfg = crate::gateway::GatewayConfig::load(config)?;
    let tokens = crate::web::tokens::Tokens::new(&cfg.console.tokens_file);
    match cmd {
        TokenCmd::Create { name } => {
            let t = tokens.create(&name)?;
            eprintln!(
                "API token {name:?} created; it is shown only now (send it as `Authorization: Bearer TOKEN`):"
            );
            println!("{t}");
        }
        TokenCmd::List => {
            let list = tokens.list()?;
            if list.is_empty() {
                println!("no API tokens (create one with `swiftgate token create NAME`)");
            }
            for t in list {
                println!(
                    "{:<24} created {}",
                    t.name,
                    crate::web::fmt::time(t.created_unix)
                );
            }
        }
        TokenCmd::Revoke { name } => {
            tokens.revoke(&name)?;
            println!("API token {name:?} revoked");
        }
    }
    Ok(0)
}
