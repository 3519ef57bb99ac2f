//! `forge billing report`: usage per tenant and period from the billing ledger in the data dir.
//!
//! ```text
//! forge billing report [--from 2026-01-01] [--to 2026-02-01] [--tenant acme] \
//!                      [--period day|month|total] [--format text|json]
//! ```
//! `--from` is inclusive, `--to` exclusive; each takes a date (UTC midnight) or an RFC 3339 time.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use forge_services::billing::report::{Period, UsageQuery, usage_report};
use forge_store::SqliteStore;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PeriodArg {
    Day,
    #[default]
    Month,
    /// One row per tenant over the whole range
    Total,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `forge billing …`
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
        period: PeriodArg,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// Accepts `YYYY-MM-DD` (UTC midnight) or an RFC 3339 timestamp.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{s}` is neither YYYY-MM-DD nor an RFC 3339 time"))
}

pub async fn run(data_dir: &Path, cmd: BillingCommand) -> anyhow::Result<u8> {
    let BillingCommand::Report {
        from,
        to,
        tenant,
        period,
        format,
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
        .with_context(|| format!("cannot open {}", db.display()))?;
    let query = UsageQuery {
        tenant_id: tenant,
        from,
        to,
        period: match period {
            PeriodArg::Day => Period::Day,
            PeriodArg::Month => Period::Month,
            PeriodArg::Total => Period::Total,
        },
    };
    let rows = usage_report(&store, &query).await;
    store.close().await;
    let rows = rows?;
    match format {
        Format::Json => {
            let doc = serde_json::json!({ "from": from, "to": to, "rows": rows });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            println!(
                "{:<24} {:<10} {:>8} {:>14}",
                "TENANT", "PERIOD", "SPAWNS", "AMOUNT"
            );
            for r in &rows {
                let amount = format!(
                    "{}.{:02} {}",
                    r.amount_cents / 100,
                    r.amount_cents % 100,
                    r.currency
                );
                println!(
                    "{:<24} {:<10} {:>8} {:>14}",
                    r.tenant_id, r.period, r.spawns, amount
                );
            }
            if rows.is_empty() {
                println!("(no charged spawns in this range)");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_dates_or_rfc3339() {
        assert_eq!(
            parse_time("2026-01-11").unwrap().to_rfc3339(),
            "2026-01-11T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-01-11T13:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-11T11:00:00+00:00"
        );
        assert!(parse_time("yesterday").unwrap_err().contains("`yesterday`"));
    }
}
