//! Token budgets: per lab (for the lab's life on its host) and per tenant (per UTC day), both
//! counted in the worker's memory.
//!
//! A call is made only after it reserved its completion's `max_tokens` from both budgets, so
//! concurrent calls cannot all spend the last tokens; when the answer comes back the reservation
//! is replaced by the `usage.total_tokens` the endpoint reports (or, without one, the
//! reservation plus an estimate of the prompt). A budget can therefore be overrun by at most
//! the prompt of the call that reached it, never by a call made after it ran out. The counts
//! are per host and per process: a restarted worker, or another host's worker, starts from
//! zero (documented in docs/design.md).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{NaiveDate, Utc};
use forge_core::ScenarioId;

/// A call needs at least this many tokens left in both budgets: fewer cannot hold an answer.
pub const MIN_CALL_TOKENS: u64 = 64;

/// Tokens held for one call until it is settled.
#[derive(Debug)]
pub struct Reservation {
    scenario: ScenarioId,
    tenant: String,
    day: NaiveDate,
    pub granted: u64,
}

#[derive(Default)]
struct Counts {
    labs: HashMap<ScenarioId, u64>,
    tenants: HashMap<String, (NaiveDate, u64)>,
}

/// Both budgets of every lab and tenant this worker has served.
pub struct Budgets {
    per_lab: u64,
    per_tenant: u64,
    counts: Mutex<Counts>,
}

impl Budgets {
    pub fn new(per_lab: u64, per_tenant: u64) -> Self {
        Self {
            per_lab,
            per_tenant,
            counts: Mutex::default(),
        }
    }

    /// Reserves up to `want` tokens for a call about `scenario` of `tenant`, or says which
    /// budget is spent.
    pub fn reserve(
        &self,
        scenario: &ScenarioId,
        tenant: &str,
        want: u64,
    ) -> Result<Reservation, String> {
        let day = Utc::now().date_naive();
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let lab_used = c.labs.get(scenario).copied().unwrap_or(0);
        let tenant_used = match c.tenants.get(tenant) {
            Some((d, used)) if *d == day => *used,
            _ => 0,
        };
        let lab_left = self.per_lab.saturating_sub(lab_used);
        let tenant_left = self.per_tenant.saturating_sub(tenant_used);
        if lab_left < MIN_CALL_TOKENS {
            return Err(format!(
                "the lab's token budget is spent ({lab_used} of {} tokens used)",
                self.per_lab
            ));
        }
        if tenant_left < MIN_CALL_TOKENS {
            return Err(format!(
                "the tenant's token budget for today (UTC) is spent ({tenant_used} of {} tokens used)",
                self.per_tenant
            ));
        }
        let granted = want.min(lab_left).min(tenant_left);
        c.labs.insert(scenario.clone(), lab_used + granted);
        c.tenants
            .insert(tenant.to_owned(), (day, tenant_used + granted));
        Ok(Reservation {
            scenario: scenario.clone(),
            tenant: tenant.to_owned(),
            day,
            granted,
        })
    }

    /// Replaces the reservation by what the call cost (`spent`; 0 when it never reached the
    /// model).
    pub fn settle(&self, r: Reservation, spent: u64) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let adjust = |used: u64| used.saturating_sub(r.granted).saturating_add(spent);
        if let Some(used) = c.labs.get_mut(&r.scenario) {
            *used = adjust(*used);
        }
        if let Some((day, used)) = c.tenants.get_mut(&r.tenant)
            && *day == r.day
        {
            *used = adjust(*used);
        }
    }

    /// Tokens used by the lab and, today, by its tenant.
    pub fn used(&self, scenario: &ScenarioId, tenant: &str) -> (u64, u64) {
        let day = Utc::now().date_naive();
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let lab = c.labs.get(scenario).copied().unwrap_or(0);
        let tenant = match c.tenants.get(tenant) {
            Some((d, used)) if *d == day => *used,
            _ => 0,
        };
        (lab, tenant)
    }

    /// Forgets a lab (its proposals were dropped); the tenant's day keeps what it spent.
    pub fn forget_lab(&self, scenario: &ScenarioId) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.labs.remove(scenario);
    }

    pub fn limits(&self) -> (u64, u64) {
        (self.per_lab, self.per_tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_hold_and_settle() {
        let b = Budgets::new(1000, 1500);
        let a: ScenarioId = "scn-000000000001".parse().unwrap();
        let other: ScenarioId = "scn-000000000002".parse().unwrap();
        let r = b.reserve(&a, "t", 512).unwrap();
        assert_eq!(r.granted, 512);
        let r2 = b.reserve(&a, "t", 512).unwrap();
        assert_eq!(r2.granted, 488);
        assert!(
            b.reserve(&a, "t", 512)
                .unwrap_err()
                .contains("lab's token budget")
        );
        b.settle(r, 100);
        b.settle(r2, 0);
        assert_eq!(b.used(&a, "t"), (100, 100));
        b.settle(b.reserve(&other, "t", 512).unwrap(), 1390);
        let why = b.reserve(&a, "t", 512).unwrap_err();
        assert!(why.contains("tenant's token budget"), "{why}");
    }
}
