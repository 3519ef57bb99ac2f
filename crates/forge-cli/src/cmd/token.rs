//! `forge token mint`: a local HS256 bearer token signed with the data dir's secret.
//!
//! ```text
//! forge token mint --tenant demo --roles forge.spawn,forge.score.read [--sub alice] [--ttl 1h]
//! ```
//! prints only the token on stdout, so `TOKEN=$(forge token mint ...)` works.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use forge_auth::LocalIssuer;

use crate::config::ClaimArgs;

/// `forge token …`
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Mint a local HS256 bearer token (signed with the data dir's secret)
    Mint {
        /// Tenant the token is bound to (`tenant_id` claim)
        #[arg(long)]
        tenant: String,
        /// Comma-separated roles, e.g. forge.spawn,forge.score.read
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Subject (`sub` claim) [default: <tenant>-cli]
        #[arg(long)]
        sub: Option<String>,
        /// Lifetime: a number with s, m, h or d (30m, 1h, 7d)
        #[arg(long, default_value = "1h", value_parser = forge_auth::parse_ttl)]
        ttl: Duration,
        #[command(flatten)]
        claims: ClaimArgs,
    },
}

pub fn run(data_dir: &Path, cmd: TokenCommand) -> anyhow::Result<u8> {
    let TokenCommand::Mint {
        tenant,
        roles,
        sub,
        ttl,
        claims,
    } = cmd;
    let roles: Vec<String> = roles
        .iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if roles.is_empty() {
        bail!("--roles must name at least one role, e.g. forge.spawn");
    }
    let sub = sub.unwrap_or_else(|| format!("{tenant}-cli"));
    let issuer = LocalIssuer::load_or_create(data_dir, &claims.issuer, &claims.audience)
        .with_context(|| format!("cannot load the signing secret in {}", data_dir.display()))?;
    let token = issuer.mint(&tenant, &roles, &sub, ttl)?;
    println!("{token}");
    Ok(0)
}
