//! The one configuration of the `forge` binary: every setting is a flag with an environment
//! variable and a default, declared once here (README.md, Configuration, is its table), and
//! turned into the libraries' plain config types. No library reads the environment.
//!
//! - [`GlobalArgs`]: the data dir and log filter, for every command;
//! - [`PlatformArgs`]: what `forge up` runs the platform with ([`PlatformArgs::platform_config`]);
//! - [`TemplateDirArg`], [`PolicyDirArg`], [`ClaimArgs`]: pieces shared by several commands.
//!
//! An empty variable counts as unset, and a bad value that came from a variable is reported
//! with the variable's name ([`parse`]).

mod auth;
mod egress;
mod llm;
mod pools;
mod s3;
mod spawn;
mod topology;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Command, Parser};
use forge_http::Service;
use forge_lifecycle::platform::PlatformConfig;
use forge_services::tenants::TenantDirectory;

pub use auth::{AuthArgs, ClaimArgs};
pub use spawn::SpawnArgs;
pub use topology::{TopologyArgs, hostname};

/// `$HOME/.local/share/forge`, or `.forge-data` in the working directory when there is no home.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/forge"),
        _ => PathBuf::from(".forge-data"),
    }
}

/// Settings of every command.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// State, keys, the audit log and evidence
    #[arg(
        long,
        env = "FORGE_DATA_DIR",
        default_value_os_t = default_data_dir(),
        global = true,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Log filter for stderr: a level (error, warn, info, debug, trace) or per-module
    /// directives (`info,forge_runtime=debug`)
    #[arg(
        long,
        env = "LOG_LEVEL",
        default_value = "info",
        global = true,
        value_name = "FILTER"
    )]
    pub log_level: String,
    /// Log format on stderr: `text`, `json` (one JSON object a line), or `auto` (JSON for
    /// `forge up` and `forge serve` when stderr is not a terminal)
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value_t = crate::logging::LogFormat::Auto,
        global = true,
        value_name = "FORMAT"
    )]
    pub log_format: crate::logging::LogFormat,
}

impl GlobalArgs {
    /// The tracing filter `--log-level` names.
    pub fn log_filter(&self) -> anyhow::Result<tracing_subscriber::EnvFilter> {
        tracing_subscriber::EnvFilter::try_new(&self.log_level).with_context(|| {
            format!(
                "LOG_LEVEL (--log-level) `{}` is not a log filter",
                self.log_level
            )
        })
    }
}

/// Operator templates added to the bundled catalog.
#[derive(Args, Debug, Clone)]
pub struct TemplateDirArg {
    /// Operator templates added to (or replacing by name) the bundled catalog
    #[arg(long, env = "TEMPLATE_DIR", value_name = "DIR")]
    pub template_dir: Option<PathBuf>,
}

/// Operator policies loaded on top of the bundled gates.
#[derive(Args, Debug, Clone)]
pub struct PolicyDirArg {
    /// Operator policies loaded on top of the bundled gates (a module with a gate's package
    /// replaces the bundled one)
    #[arg(long, env = "POLICY_DIR", value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
}

/// Everything the platform runs with.
#[derive(Args, Debug, Clone)]
pub struct PlatformArgs {
    /// Address the services bind to
    #[arg(
        long,
        env = "FORGE_BIND",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub bind: IpAddr,
    /// Host name learners reach this machine by (in access URLs)
    #[arg(
        long,
        env = "FORGE_PUBLIC_HOST",
        default_value = "localhost",
        value_name = "HOST"
    )]
    pub public_host: String,
    #[command(flatten)]
    pub templates: TemplateDirArg,
    #[command(flatten)]
    pub policies: PolicyDirArg,
    /// A remote OPA (or `forge serve opa`) instead of the embedded engine
    #[arg(long, env = "OPA_URL", value_name = "URL")]
    pub opa_url: Option<String>,
    /// Bearer token sent to the remote OPA [default: tokens the platform mints itself with the
    /// data dir's secret, when it accepts local tokens]
    #[arg(long, env = "OPA_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub opa_token: Option<String>,
    /// NATS with JetStream (`nats://host:4222`) instead of the in-process bus
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,
    /// PostgreSQL (`postgres://user:password@host/db`) instead of SQLite in the data dir
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Tenants and plans [default: the bundled deploy/tenants.example.toml, tenant `demo`]
    #[arg(long = "tenants", env = "FORGE_TENANTS_FILE", value_name = "FILE")]
    pub tenants_file: Option<PathBuf>,
    /// Warm labs kept per template on this lab host: `default` (one of each track's default
    /// template), `off`, or `TEMPLATE=N,...` (`default=N` for every track's default)
    #[arg(
        long,
        env = "FORGE_POOLS",
        default_value = "default",
        value_name = "POOLS"
    )]
    pub pools: String,
    #[command(flatten)]
    pub images: crate::cmd::images::CatalogArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub spawn: SpawnArgs,
    #[command(flatten)]
    pub s3: s3::S3Args,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub egress: egress::EgressArgs,
    #[command(flatten)]
    pub llm: llm::LlmArgs,
}

impl PlatformArgs {
    /// The platform's configuration in `data_dir`, validated; errors name the variable at
    /// fault and its flag.
    pub fn platform_config(&self, data_dir: PathBuf) -> anyhow::Result<PlatformConfig> {
        if self.public_host.trim().is_empty() || self.public_host.contains(['/', ' ']) {
            bail!(
                "FORGE_PUBLIC_HOST (--public-host) `{}` is not a host name",
                self.public_host
            );
        }
        if let Some(url) = &self.opa_url {
            require_http_url("OPA_URL (--opa-url)", url)?;
        }
        if let Some(url) = &self.nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            bail!("NATS_URL (--nats-url) `{url}` is not a nats:// or tls:// url");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            // Never echo it: a database URL usually carries a password.
            bail!("DATABASE_URL (--database-url) is not a postgres:// or postgresql:// url");
        }
        for (name, dir) in [
            (
                "TEMPLATE_DIR (--template-dir)",
                &self.templates.template_dir,
            ),
            ("POLICY_DIR (--policy-dir)", &self.policies.policy_dir),
        ] {
            if let Some(dir) = dir
                && !dir.is_dir()
            {
                bail!("{name} {} is not a directory", dir.display());
            }
        }
        if let Some(file) = &self.tenants_file {
            // The platform loads it again; this names the setting when it is wrong.
            TenantDirectory::load(file).context("FORGE_TENANTS_FILE (--tenants)")?;
        }
        let mut cfg = PlatformConfig::new(data_dir);
        self.topology.apply(&mut cfg)?;
        let spawn_url = format!(
            "http://{}:{}",
            self.public_host,
            cfg.ports.get(Service::Spawn)
        );
        cfg.bind = self.bind;
        cfg.public_host = self.public_host.clone();
        cfg.template_dir = self.templates.template_dir.clone();
        // The platform loads the catalog again; this resolves and checks the pool names now.
        let catalog = forge_catalog::Catalog::load(cfg.template_dir.as_deref())
            .context("TEMPLATE_DIR (--template-dir)")?;
        cfg.orchestrator.pools = pools::parse(&self.pools, &catalog)?;
        cfg.policy_dir = self.policies.policy_dir.clone();
        cfg.opa_url = self.opa_url.clone();
        cfg.opa_token = self.opa_token.clone();
        cfg.nats_url = self.nats_url.clone();
        cfg.database_url = self.database_url.clone();
        cfg.s3 = self.s3.s3_config()?;
        cfg.tenants_file = self.tenants_file.clone();
        let images = crate::cmd::images::catalog(&self.images)?;
        cfg.images_dir = Some(images.dir);
        cfg.busybox = images.busybox;
        cfg.debian_mirror = images.mirror;
        cfg.auth = self.auth.settings()?;
        cfg.spawn = self.spawn.spawn_config(&spawn_url)?;
        // Production labs run in remapped user namespaces unless the operator accepts the risk.
        cfg.require_user_namespaces = self.spawn.environment.eq_ignore_ascii_case("production")
            && !self.topology.allow_host_root_labs;
        cfg.egress = self.egress.egress_config()?;
        cfg.llm = self.llm.llm_config()?;
        Ok(cfg)
    }
}

/// Fails unless `url` is an http:// or https:// URL; `name` says which setting it is.
fn require_http_url(name: &str, url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => bail!("{name} `{url}` is not an http:// or https:// url"),
    }
}

/// Parses the command line into `T`. Unlike `T::parse()`, an empty environment variable
/// counts as unset (`OPA_URL=` in an env file turns it off), and when a bad value came from a
/// variable, the error names the variable as well as the flag.
pub fn parse<T: Parser>() -> T {
    let declared = T::command();
    let mut cmd = without_empty_env(declared.clone());
    let result = cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| T::from_arg_matches(&m));
    match result {
        Ok(parsed) => parsed,
        Err(e) => with_env_source(e, &declared).format(&mut cmd).exit(),
    }
}

/// `cmd` and its subcommands with the environment values of empty variables dropped.
fn without_empty_env(cmd: Command) -> Command {
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut cmd = cmd.mut_args(|arg| {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| v.is_empty());
        if empty {
            arg.env(None::<&'static str>)
        } else {
            arg
        }
    });
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, without_empty_env);
    }
    cmd
}

/// Adds "the value comes from VAR" to an invalid-value error whose value is that of the
/// flag's environment variable.
fn with_env_source(mut e: clap::Error, declared: &Command) -> clap::Error {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e;
    }
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    let long = flag
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("--");
    let Some(var) = env_of(declared, long) else {
        return e;
    };
    if std::env::var_os(&var).is_some_and(|v| v.to_string_lossy() == value.as_str()) {
        let tip = format!("the value comes from the environment variable {var}");
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    e
}

/// The environment variable of the argument `--long` anywhere in `cmd`.
fn env_of(cmd: &Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| cmd.get_subcommands().find_map(|s| env_of(s, long)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use forge_auth::JwksSource;
    use forge_services::billing::BillingMode;

    use super::*;

    #[derive(Parser)]
    struct Up {
        #[command(flatten)]
        platform: PlatformArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<PlatformConfig> {
        let up = Up::try_parse_from(std::iter::once("up").chain(args.iter().copied()))?;
        up.platform.platform_config(PathBuf::from("/var/lib/forge"))
    }

    #[test]
    fn defaults_are_the_embedded_platform() {
        let c = config(&[]).unwrap();
        assert_eq!(c.data_dir, std::path::Path::new("/var/lib/forge"));
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.public_host, "localhost");
        assert_eq!(c.spawn.base_url, "http://localhost:8082");
        assert_eq!(c.spawn.request_id_header, "x-request-id");
        assert_eq!(c.spawn.idempotency_retention, Duration::from_secs(86_400));
        assert_eq!(c.spawn.body_limit, forge_http::DEFAULT_BODY_LIMIT);
        assert_eq!(c.spawn.billing.mode, BillingMode::Stub);
        assert_eq!(c.auth, forge_auth::AuthSettings::default());
        assert!(c.auth.accepts_local_tokens());
        assert!(c.images_dir.is_some_and(|d| d.join("base").is_dir()));
    }

    #[test]
    fn flags_fill_the_library_configs() {
        let c = config(&[
            "--public-host",
            "labs.example",
            "--request-id-header",
            "Idempotency-Key",
            "--idempotency-retention",
            "2h",
            "--billing-mode",
            "gateway",
            "--billing-gateway-url",
            "http://127.0.0.1:9/charge",
            "--jwks-url",
            "https://idp.example/jwks",
            "--jwks-ttl-secs",
            "60",
            "--issuer",
            "https://idp.example/",
        ])
        .unwrap();
        assert_eq!(c.spawn.base_url, "http://labs.example:8082");
        assert_eq!(c.spawn.request_id_header, "idempotency-key");
        assert_eq!(c.spawn.idempotency_retention, Duration::from_secs(7200));
        assert_eq!(c.spawn.billing.mode, BillingMode::Gateway);
        assert_eq!(
            c.spawn.billing.gateway_url.as_deref(),
            Some("http://127.0.0.1:9/charge")
        );
        let jwks = c.auth.jwks.as_ref().unwrap();
        assert_eq!(
            jwks.source,
            JwksSource::Url("https://idp.example/jwks".into())
        );
        assert_eq!(jwks.ttl, Duration::from_secs(60));
        assert_eq!(c.auth.issuer, "https://idp.example/");
        assert!(
            !c.auth.accepts_local_tokens(),
            "a JWKS turns local tokens off"
        );

        let c = config(&["--spawn-base-url", "https://labs.example/"]).unwrap();
        assert_eq!(c.spawn.base_url, "https://labs.example");
        let c = config(&["--jwks-file", "/etc/jwks.json", "--auth-local-hs256", "yes"]).unwrap();
        assert!(c.auth.accepts_local_tokens());
    }

    #[test]
    fn http_urls_only() {
        for ok in ["http://opa:8181", "https://x.example/v1"] {
            require_http_url("X", ok).unwrap();
        }
        for bad in ["opa:8181", "http://", "https:///path", "ftp://x"] {
            let e = require_http_url("OPA_URL (--opa-url)", bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("OPA_URL (--opa-url) `{bad}` is not an http:// or https:// url")
            );
        }
    }
}
