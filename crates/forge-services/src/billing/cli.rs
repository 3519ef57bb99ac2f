//! `forge billing report`: usage per tenant and period from the billing ledger.
//!
//! ```text
//! forge billing report [--from 2026-01-01] [--to 2026-02-01] [--tenant acme] \
//!                      [--period day|month|total] [--format text|json]
//! ```
//! `--from` is inclusive, `--to` exclusive; each takes a date (UTC midnight) or an RFC 3339 time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use forge_store::{Charge, LedgerQuery, SqliteStore, Store};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Period {
    Day,
    #[default]
    Month,
    /// One row per tenant over the whole range.
    Total,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `forge billing ...`
#[derive(Debug, Clone, Subcommand)]
pub enum BillingCommand {
    /// Sum charged spawns per tenant and period from the billing ledger
    Report {
        /// Start (inclusive): YYYY-MM-DD or RFC 3339
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// End (exclusive): YYYY-MM-DD or RFC 3339
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// Only this tenant
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        period: Period,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Directory holding the platform's state (forge.db)
        #[arg(long, env = "FORGE_DATA_DIR", default_value_os_t = forge_auth::default_data_dir())]
        data_dir: PathBuf,
    },
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub tenant_id: String,
    /// `2026-01-11`, `2026-01` or `total`.
    pub period: String,
    pub spawns: u64,
    pub amount_cents: i64,
    pub currency: String,
    /// Spawns per track.
    pub by_track: BTreeMap<String, u64>,
}

/// Accepts `YYYY-MM-DD` (UTC midnight) or an RFC 3339 timestamp.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{s}` is neither YYYY-MM-DD nor an RFC 3339 time"))
}

/// Groups ledger rows per tenant, period and currency; sorted by tenant then period.
pub fn summarize(charges: &[Charge], period: Period) -> Vec<UsageRow> {
    let mut rows: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
    for c in charges {
        let p = match period {
            Period::Day => c.created_at.format("%Y-%m-%d").to_string(),
            Period::Month => c.created_at.format("%Y-%m").to_string(),
            Period::Total => "total".to_owned(),
        };
        let key = (c.tenant_id.clone(), p.clone(), c.currency.clone());
        let row = rows.entry(key).or_insert_with(|| UsageRow {
            tenant_id: c.tenant_id.clone(),
            period: p,
            spawns: 0,
            amount_cents: 0,
            currency: c.currency.clone(),
            by_track: BTreeMap::new(),
        });
        row.spawns += 1;
        row.amount_cents += c.amount_cents;
        *row.by_track.entry(c.track.as_str().to_owned()).or_default() += 1;
    }
    rows.into_values().collect()
}

/// Writes the report for `cmd` to `out`; returns the exit code.
pub async fn run_to(cmd: BillingCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    let BillingCommand::Report {
        from,
        to,
        tenant,
        period,
        format,
        data_dir,
    } = cmd;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        bail!("--from ({f}) must be before --to ({t})");
    }
    let db = data_dir.join(forge_store::sqlite::FILE_NAME);
    if !db.exists() {
        bail!(
            "no forge database at {}; has the spawn service run with this data dir?",
            db.display()
        );
    }
    let store = SqliteStore::open(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let charges = store
        .ledger(&LedgerQuery {
            tenant_id: tenant,
            from,
            to,
        })
        .await?;
    store.close().await;
    let rows = summarize(&charges, period);
    match format {
        Format::Json => {
            let doc = serde_json::json!({ "from": from, "to": to, "rows": rows });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Text => {
            writeln!(
                out,
                "{:<24} {:<10} {:>8} {:>14}",
                "TENANT", "PERIOD", "SPAWNS", "AMOUNT"
            )?;
            for r in &rows {
                let amount = format!(
                    "{}.{:02} {}",
                    r.amount_cents / 100,
                    r.amount_cents % 100,
                    r.currency
                );
                writeln!(
                    out,
                    "{:<24} {:<10} {:>8} {:>14}",
                    r.tenant_id, r.period, r.spawns, amount
                )?;
            }
            if rows.is_empty() {
                writeln!(out, "(no charged spawns in this range)")?;
            }
        }
    }
    Ok(0)
}

/// `run_to` on stdout, on a runtime of its own (for the synchronous `forge` main).
pub fn run(cmd: BillingCommand) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_to(cmd, &mut std::io::stdout()))
}
