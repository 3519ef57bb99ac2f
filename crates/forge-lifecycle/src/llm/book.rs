//! The proposals of this worker's labs, in memory (like terminal tickets): a restart forgets
//! them, and a pending one is then never run. Bounded per lab and in labs, oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use forge_core::ScenarioId;

use super::{Proposal, ProposalStatus};

/// Proposals kept per lab; past it the oldest that is not pending goes.
const MAX_PER_LAB: usize = 200;
/// Labs kept; past it the lab whose proposals were first recorded goes.
const MAX_LABS: usize = 4096;

#[derive(Default)]
pub struct Book {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    labs: HashMap<ScenarioId, Vec<Proposal>>,
    order: VecDeque<ScenarioId>,
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new proposal; returns the lab that was dropped to make room, if any.
    pub fn insert(&self, scenario: &ScenarioId, p: Proposal) -> Option<ScenarioId> {
        let mut g = self.lock();
        let mut dropped = None;
        if !g.labs.contains_key(scenario) {
            if g.order.len() >= MAX_LABS
                && let Some(old) = g.order.pop_front()
            {
                g.labs.remove(&old);
                dropped = Some(old);
            }
            g.order.push_back(scenario.clone());
        }
        let list = g.labs.entry(scenario.clone()).or_default();
        if list.len() >= MAX_PER_LAB {
            let old = list
                .iter()
                .position(|p| p.status != ProposalStatus::PendingApproval)
                .unwrap_or(0);
            list.remove(old);
        }
        list.push(p);
        dropped
    }

    /// The lab's proposals, oldest first.
    pub fn list(&self, scenario: &ScenarioId) -> Vec<Proposal> {
        self.lock().labs.get(scenario).cloned().unwrap_or_default()
    }

    /// Applies `f` to proposal `id` of the lab and returns its result, or `None` when the lab
    /// has no such proposal.
    pub fn update<R>(
        &self,
        scenario: &ScenarioId,
        id: &str,
        f: impl FnOnce(&mut Proposal) -> R,
    ) -> Option<R> {
        let mut g = self.lock();
        let p = g
            .labs
            .get_mut(scenario)?
            .iter_mut()
            .find(|p| p.proposal_id == id)?;
        Some(f(p))
    }
}
