//! `forge token mint`: a clap piece and its run function for the `forge` binary.
//!
//! ```text
//! forge token mint --tenant demo --roles forge.spawn,forge.score.read [--sub alice] [--ttl 1h]
//! ```
//! prints only the token on stdout, so `TOKEN=$(forge token mint ...)` works.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, LocalIssuer, parse_ttl};

/// `forge token ...`
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
        /// Subject (`sub` claim); defaults to `<tenant>-cli`
        #[arg(long)]
        sub: Option<String>,
        /// Lifetime: a number with s, m, h or d (30m, 1h, 7d)
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// Directory holding keys and local state
        #[arg(long, env = "FORGE_DATA_DIR", default_value_os_t = crate::default_data_dir())]
        data_dir: PathBuf,
        /// Issuer (`iss`); must match the verifying service's FORGE_JWT_ISSUER
        #[arg(long, env = "FORGE_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
        issuer: String,
        /// Audience (`aud`); must match the verifying service's FORGE_JWT_AUDIENCE
        #[arg(long, env = "FORGE_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
        audience: String,
    },
}

/// The token `cmd` asks for (what [`run`] prints).
pub fn mint_token(cmd: &TokenCommand) -> anyhow::Result<String> {
    match cmd {
        TokenCommand::Mint {
            tenant,
            roles,
            sub,
            ttl,
            data_dir,
            issuer,
            audience,
        } => {
            let roles: Vec<String> = roles
                .iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect();
            if roles.is_empty() {
                anyhow::bail!("--roles must name at least one role, e.g. forge.spawn");
            }
            let sub = sub.clone().unwrap_or_else(|| format!("{tenant}-cli"));
            let issuer = LocalIssuer::load_or_create(data_dir, issuer, audience)?;
            Ok(issuer.mint(tenant, &roles, &sub, *ttl)?)
        }
    }
}

/// Runs `cmd`, printing only the token on stdout; returns the exit code.
pub fn run(cmd: TokenCommand) -> anyhow::Result<i32> {
    let token = mint_token(&cmd)?;
    println!("{token}");
    Ok(0)
}
