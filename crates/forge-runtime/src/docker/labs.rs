//! Finding labs on the host (containers by label, namespaces by name) and removing them:
//! teardown, reconcile after a crash, age-based cleanup.
//!
//! Teardown order is containers first (force, in parallel), then the namespace: deleting the
//! namespace frees its bridges and the fabric ends of every veth; the container ends go with
//! the containers. Every step tolerates absence, so teardown is idempotent and finishes
//! half-built labs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use chrono::{DateTime, Utc};
use futures::future::join_all;

use super::DockerRuntime;
use crate::error::{RuntimeError, status_of};
use crate::fabric::Fabric;
use crate::{
    ContainerState, LabContainer, LabSummary, ReconcileReport, TeardownReport, labels, netns,
    scenario_of_namespace,
};

/// Containers in any state (a dead one still belongs to its lab) matching the engine-side
/// `filters`; `what` names the listing in the error.
pub(super) async fn list_containers(
    rt: &DockerRuntime,
    filters: HashMap<String, Vec<String>>,
    what: &str,
) -> Result<Vec<ContainerSummary>, RuntimeError> {
    let opts = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    rt.docker()
        .list_containers(Some(opts))
        .await
        .map_err(|e| RuntimeError::docker(what, e))
}

/// Containers whose labels pass `label_filter` (`key` or `key=value`).
pub(super) async fn lab_containers(
    rt: &DockerRuntime,
    label_filter: String,
) -> Result<Vec<ContainerSummary>, RuntimeError> {
    let filters = HashMap::from([("label".to_owned(), vec![label_filter])]);
    list_containers(rt, filters, "list containers").await
}

pub(super) async fn teardown(
    rt: &DockerRuntime,
    scenario: &str,
    ns: &str,
) -> Result<TeardownReport, RuntimeError> {
    rt.mark_teardown(scenario);
    let found = lab_containers(rt, format!("{}={scenario}", labels::SCENARIO_ID)).await?;
    let removals = found
        .iter()
        .filter_map(|c| c.id.as_deref())
        .map(|id| async move {
            let opts = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match rt.docker().remove_container(id, Some(opts)).await {
                Ok(()) => Ok(true),
                // Already gone, or another teardown is removing it right now.
                Err(e) if matches!(status_of(&e), Some(404) | Some(409)) => Ok(false),
                Err(e) => Err(RuntimeError::docker(format!("remove container {id}"), e)),
            }
        });
    let results = join_all(removals).await;
    let mut removed = 0;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // The uplink first, explicitly: its peer lives outside the fabric, and the kernel frees a
    // deleted namespace (and so the pair) only asynchronously.
    if let Err(e) = crate::egress::remove(ns).await {
        tracing::warn!(scenario, error = %e, "removing the lab's egress uplink");
        first_err.get_or_insert(e);
    }
    // The namespace goes even when a container refused to die: a lab without its fabric is
    // disconnected, which is the safe failure.
    let ns_removed = netns::delete(ns).await?;
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(TeardownReport {
        containers_removed: removed,
        namespace_removed: ns_removed,
    })
}

pub(super) async fn list(rt: &DockerRuntime) -> Result<Vec<LabSummary>, RuntimeError> {
    let found = lab_containers(rt, labels::SCENARIO_ID.to_owned()).await?;
    let mut labs: BTreeMap<String, LabSummary> = BTreeMap::new();
    for c in found {
        let lbl = c.labels.clone().unwrap_or_default();
        let Some(scenario) = lbl.get(labels::SCENARIO_ID).cloned() else {
            continue;
        };
        let network_id = scenario
            .strip_prefix("scn-")
            .map(|h| format!("forge_scn_{h}"))
            .unwrap_or_default();
        let lab = labs.entry(scenario.clone()).or_insert_with(|| LabSummary {
            scenario_id: scenario.clone(),
            namespace_exists: netns::namespace_exists(&network_id),
            network_id,
            tenant_id: lbl.get(labels::TENANT_ID).cloned(),
            template: lbl.get(labels::TEMPLATE).cloned(),
            created_at: lbl
                .get(labels::CREATED_AT)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc)),
            containers: Vec::new(),
            // Labels every container shares (the caller's extra ones included), minus the
            // per-container ones.
            labels: lbl
                .iter()
                .filter(|(k, _)| {
                    ![
                        labels::CONTAINER,
                        labels::LINKS,
                        labels::SETUP,
                        labels::INDEX,
                        labels::GATEWAY,
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        lab.containers.push(LabContainer {
            name: lbl.get(labels::CONTAINER).cloned().unwrap_or_default(),
            docker_name: c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            id: c.id.clone().unwrap_or_default(),
            state: c
                .state
                .map(|s| ContainerState::from_engine(s.as_ref()))
                .unwrap_or(ContainerState::Unknown),
        });
    }
    // Namespaces whose containers are all gone (a crash between the two teardown steps, or
    // during a launch).
    for ns in netns::list_namespaces() {
        let Some(scenario) = scenario_of_namespace(&ns) else {
            continue;
        };
        labs.entry(scenario.clone()).or_insert_with(|| LabSummary {
            scenario_id: scenario,
            network_id: ns,
            tenant_id: None,
            template: None,
            created_at: None,
            containers: Vec::new(),
            namespace_exists: true,
            labels: BTreeMap::new(),
        });
    }
    for lab in labs.values_mut() {
        lab.containers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(labs.into_values().collect())
}

async fn remove_all(
    rt: &DockerRuntime,
    doomed: Vec<LabSummary>,
    mut report: ReconcileReport,
) -> ReconcileReport {
    let jobs = doomed
        .iter()
        .map(|lab| teardown(rt, &lab.scenario_id, &lab.network_id));
    for (lab, r) in doomed.iter().zip(join_all(jobs).await) {
        match r {
            Ok(_) => report.removed.push(lab.scenario_id.clone()),
            Err(e) => report.errors.push(format!("{}: {e}", lab.scenario_id)),
        }
    }
    report
}

pub(super) async fn reconcile(
    rt: &DockerRuntime,
    alive: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
) -> Result<ReconcileReport, RuntimeError> {
    let mut report = ReconcileReport::default();
    let mut doomed = Vec::new();
    for lab in list(rt).await? {
        if alive(&lab.scenario_id) {
            report.kept.push(lab.scenario_id);
        } else {
            doomed.push(lab);
        }
    }
    let report = remove_all(rt, doomed, report).await;
    metrics::counter!("forge_labs_reconciled_total", "service" => "forge_runtime")
        .increment(report.removed.len() as u64);
    Ok(report)
}

pub(super) async fn cleanup_older_than(
    rt: &DockerRuntime,
    age: Duration,
) -> Result<ReconcileReport, RuntimeError> {
    let cutoff = Utc::now()
        - chrono::Duration::from_std(age).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    let mut report = ReconcileReport::default();
    let mut doomed = Vec::new();
    for mut lab in list(rt).await? {
        if lab.created_at.is_none() && lab.namespace_exists {
            lab.created_at = fabric_created_at(&lab.network_id).await;
        }
        // A lab with no creation record at all is debris of a crash: nothing can vouch for it.
        if lab.created_at.is_none_or(|t| t < cutoff) {
            doomed.push(lab);
        } else {
            report.kept.push(lab.scenario_id);
        }
    }
    Ok(remove_all(rt, doomed, report).await)
}

async fn fabric_created_at(ns: &str) -> Option<DateTime<Utc>> {
    let fabric = Fabric::open(ns).await.ok()?;
    let s = fabric.created_at().await?;
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}
