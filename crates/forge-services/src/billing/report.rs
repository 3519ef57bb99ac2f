//! Usage reports from the billing ledger: charged spawns summed per tenant, period and currency,
//! net of refunds (`forge billing report` prints them).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use forge_store::{Charge, LedgerQuery, Store, StoreError};
use serde::Serialize;

/// How ledger rows are grouped in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Period {
    Day,
    #[default]
    Month,
    /// One row per tenant over the whole range.
    Total,
}

/// Which charges a report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    pub period: Period,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub tenant_id: String,
    /// `2026-01-11`, `2026-01` or `total`.
    pub period: String,
    /// Charged spawns.
    pub spawns: u64,
    /// Refunded spawns (labs that failed before they ran), in the period of their refund.
    pub refunds: u64,
    /// Charges minus refunds.
    pub amount_cents: i64,
    pub currency: String,
    /// Charged spawns per track.
    pub by_track: BTreeMap<String, u64>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the range start {from} is not before its end {to}")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("reading the billing ledger: {0}")]
    Store(#[from] StoreError),
}

/// The charges of `store` that `query` selects, summed per tenant, period and currency; sorted
/// by tenant then period.
pub async fn usage_report(
    store: &dyn Store,
    query: &UsageQuery,
) -> Result<Vec<UsageRow>, ReportError> {
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        return Err(ReportError::EmptyRange { from, to });
    }
    let charges = store
        .ledger(&LedgerQuery {
            tenant_id: query.tenant_id.clone(),
            from: query.from,
            to: query.to,
        })
        .await?;
    Ok(summarize(&charges, query.period))
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
            refunds: 0,
            amount_cents: 0,
            currency: c.currency.clone(),
            by_track: BTreeMap::new(),
        });
        row.amount_cents += c.amount_cents;
        if c.is_refund() {
            row.refunds += 1;
        } else {
            row.spawns += 1;
            *row.by_track.entry(c.track.as_str().to_owned()).or_default() += 1;
        }
    }
    rows.into_values().collect()
}
