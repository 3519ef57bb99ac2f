//! Launching a lab fast, and reviving one container of it.
//!
//! Order of work (phases overlap; `LaunchTimings` records when each finished):
//! 1. validate everything that can be checked without side effects (plan, names, capabilities),
//!    then the read-only pre-flight in one round trip: isolation, "does the lab exist", the
//!    images' runtime config (sysctls, tmpfs, health probe);
//! 2. concurrently: build the fabric namespace + bridges | create and start every container in
//!    parallel (containers start with only `lo`; images' services bind wildcard addresses, so
//!    they come up before their links);
//! 3. each container on its own as soon as it and the fabric are up: plumb it; once every
//!    container is plumbed, its setup steps, then its health probe (a container without setup
//!    steps is probed from the moment it runs, see `steps`). Any failure stops the rest and
//!    tears down whatever was built.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateContainerOptions;
use chrono::{SecondsFormat, Utc};
use forge_core::ScenarioId;
use forge_core::template::{Attachment, plan_lab};
use futures::future::{join_all, try_join_all};

use super::steps::{self, Gate};
use super::{DockerRuntime, labs};
use crate::egress;
use crate::error::{RuntimeError, status_of};
use crate::fabric::{Fabric, Plumbing, default_gateway};
use crate::hardening::{self, ContainerParams};
use crate::images::ImageRuntimeConfig;
use crate::{ExecRequest, LabHandle, LabSpec, LaunchTimings, container_name, exec, labels, netns};

struct Started {
    id: String,
    pid: u32,
    created: Duration,
    started: Duration,
}

/// One container brought up: its id and when each of its phases finished.
struct Up {
    id: String,
    created: Duration,
    started: Duration,
    plumbed: Duration,
    setup_done: Duration,
    healthy: Duration,
}

/// Why a container's bring-up stopped: its own error, or `None` when it gave up because
/// something else in the launch failed (that error is the one reported).
type Stop = Option<RuntimeError>;

pub(super) async fn launch(rt: &DockerRuntime, spec: LabSpec) -> Result<LabHandle, RuntimeError> {
    let t0 = Instant::now();
    let tpl = &spec.template;
    let containers = &tpl.spec.assets.containers;
    if containers.is_empty() {
        return Err(RuntimeError::EmptyTemplate);
    }
    let plan = plan_lab(tpl).map_err(|e| RuntimeError::Plan(e.to_string()))?;
    for c in containers {
        hardening::check_name(&c.name)?;
        hardening::capabilities(c)?;
    }
    let scenario = spec.scenario_id.as_str();
    let ns = spec.scenario_id.network_id();
    // Reads only, so all at once: each is an engine round trip, and one after another they
    // were a tenth of a launch. Their errors keep their old precedence.
    let (isolation, found, image_cfg) = futures::join!(
        rt.check_isolation(),
        has_containers(rt, scenario),
        image_config(rt, containers.iter().map(|c| c.image.as_str())),
    );
    isolation?;
    if netns::namespace_exists(&ns) || found? {
        return Err(RuntimeError::LabExists {
            scenario: scenario.to_owned(),
        });
    }
    let image_cfg = image_cfg?;
    let mut timings = LaunchTimings {
        images_checked: t0.elapsed(),
        ..Default::default()
    };
    // Before anything is built: an unknown profile or an unresolvable host fails the launch
    // with nothing to clean up.
    let egress_cfg = rt.egress();
    let egress = egress::prepare(&egress_cfg, tpl, &plan).await?;
    let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut gateways: HashMap<String, Ipv4Addr> = tpl
        .spec
        .network
        .subnets
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.gateway?)))
        .collect();
    let mut hosts = plan.hosts.clone();
    if let Some(e) = &egress {
        // The fabric routes the subnets that have no router of their own.
        gateways.extend(e.gateways.iter().map(|g| (g.subnet.clone(), g.address)));
        hosts.extend(e.profile.hosts.iter().cloned());
    }
    let links: Vec<&[Attachment]> = containers
        .iter()
        .map(|c| {
            plan.container(&c.name)
                .map(|p| p.attachments.as_slice())
                .unwrap_or(&[])
        })
        .collect();

    let gate = Gate::new(containers.len());
    let fabric_cell: OnceLock<Fabric> = OnceLock::new();
    let fabric = async {
        let f = match (Fabric::create(&ns, &plan, &created_at).await, &egress) {
            (Ok(f), Some(e)) => egress::attach(&f, &plan, e, &egress_cfg).await.map(|()| f),
            (f, _) => f,
        };
        let at = t0.elapsed();
        gate.fabric_done(f.is_ok());
        f.map(|f| {
            let _ = fabric_cell.set(f);
            at
        })
    };
    let jobs = containers.iter().enumerate().map(|(i, c)| {
        let cfg = image_cfg.get(&c.image);
        let params = ContainerParams {
            scenario: &spec.scenario_id,
            tenant_id: &spec.tenant_id,
            template_name: &tpl.metadata.name,
            container: c,
            index: i,
            count: containers.len(),
            limits: &tpl.spec.limits,
            links: links[i],
            gateway: default_gateway(links[i], &gateways),
            hosts: &hosts,
            image_sysctls: cfg.map_or(&[], |i| &i.sysctls[..]),
            image_tmpfs: cfg.map_or(&[], |i| &i.tmpfs[..]),
            extra_labels: &spec.labels,
            created_at: &created_at,
        };
        let probe = cfg.and_then(|i| steps::health_probe(&i.health));
        bring_up(rt, params, probe, &gate, &fabric_cell, t0)
    });
    // join_all, not try_join_all: every create must settle before a failed launch tears
    // down, or a container created after the teardown would leak. A failure makes the other
    // containers stop at their next step (the gate), so this does not wait for their probes.
    let (fabric, ups) = futures::join!(fabric, join_all(jobs));

    let result = settle(fabric, ups, &mut timings);

    match result {
        Ok(done) => {
            timings.total = t0.elapsed();
            let ids = containers
                .iter()
                .zip(done)
                .map(|(c, u)| (c.name.clone(), u.id))
                .collect();
            // The engine's share of a launch; the orchestrator records the whole launch per
            // track as `forge_lab_launch_seconds`.
            metrics::histogram!("forge_runtime_launch_seconds").record(timings.total.as_secs_f64());
            Ok(LabHandle {
                scenario_id: spec.scenario_id.clone(),
                network_id: ns,
                containers: ids,
                plan,
                timings,
            })
        }
        Err(e) => {
            // Not our lab to remove when it already existed.
            if !matches!(e, RuntimeError::LabExists { .. })
                && let Err(t) = labs::teardown(rt, scenario, &ns).await
            {
                tracing::warn!(scenario, error = %t, "cleanup after failed launch");
            }
            Err(e)
        }
    }
}

/// The launch's outcome from the fabric's and every container's: the containers in template
/// order and their phases in `timings`, or the error that stopped it (the fabric's first, then
/// the first container's own).
fn settle(
    fabric: Result<Duration, RuntimeError>,
    ups: Vec<Result<Up, Stop>>,
    timings: &mut LaunchTimings,
) -> Result<Vec<Up>, RuntimeError> {
    timings.fabric_ready = fabric?;
    let count = ups.len();
    let mut done = Vec::with_capacity(count);
    let mut first: Option<RuntimeError> = None;
    for up in ups {
        match up {
            Ok(u) => done.push(u),
            Err(e) => first = first.or(e),
        }
    }
    if done.len() < count {
        return Err(first
            .unwrap_or_else(|| RuntimeError::Invalid("launch stopped without an error".into())));
    }
    let max = |f: fn(&Up) -> Duration| done.iter().map(f).max().unwrap_or_default();
    timings.containers_created = max(|u| u.created);
    timings.containers_started = max(|u| u.started);
    timings.links_plumbed = max(|u| u.plumbed);
    timings.setup_done = max(|u| u.setup_done);
    timings.healthy = max(|u| u.healthy);
    Ok(done)
}

/// One container from nothing to healthy (see the module docs for the order); tells the gate
/// when it fails so the others stop.
async fn bring_up(
    rt: &DockerRuntime,
    p: ContainerParams<'_>,
    probe: Option<ExecRequest>,
    gate: &Gate,
    fabric: &OnceLock<Fabric>,
    t0: Instant,
) -> Result<Up, Stop> {
    let r = bring_up_steps(rt, &p, probe, gate, fabric, t0).await;
    if matches!(r, Err(Some(_))) {
        gate.fail();
    }
    r
}

async fn bring_up_steps(
    rt: &DockerRuntime,
    p: &ContainerParams<'_>,
    probe: Option<ExecRequest>,
    gate: &Gate,
    fabric: &OnceLock<Fabric>,
    t0: Instant,
) -> Result<Up, Stop> {
    let c = p.container;
    let (display, scenario) = (c.name.as_str(), p.scenario.as_str());
    let target = container_name(p.scenario, display);
    // Not abandoned when another container fails: the create must settle (see `launch`).
    let s = create_and_start(rt, p, t0).await.map_err(Some)?;
    let plumbing = Plumbing {
        index: p.index,
        pid: s.pid,
        links: p.links,
        gateway: p.gateway,
    };
    let probe_early = c.setup.is_empty();
    let chain = async {
        if !gate.fabric_ready().await {
            return Err(None);
        }
        let fabric = fabric.get().ok_or(None)?;
        fabric.plumb(&plumbing).await.map_err(Some)?;
        let plumbed = t0.elapsed();
        gate.plumbed();
        // Setup may reach other containers of the lab: it waits for every link.
        if !gate.all_plumbed().await {
            return Err(None);
        }
        steps::run_setup(rt, &target, display, scenario, &c.setup)
            .await
            .map_err(Some)?;
        let setup_done = t0.elapsed();
        // Setup can change what the probe sees, so it is probed after it.
        if let Some(probe) = probe.as_ref().filter(|_| !probe_early) {
            steps::wait_healthy(rt, &target, display, scenario, probe)
                .await
                .map_err(Some)?;
        }
        Ok((plumbed, setup_done, t0.elapsed()))
    };
    let early = async {
        if let Some(probe) = probe.as_ref().filter(|_| probe_early) {
            steps::wait_healthy(rt, &target, display, scenario, probe)
                .await
                .map_err(Some)?;
        }
        Ok(t0.elapsed())
    };
    let ((plumbed, setup_done, late), early) = tokio::select! {
        r = futures::future::try_join(chain, early) => r?,
        () = gate.failed() => return Err(None),
    };
    Ok(Up {
        id: s.id,
        created: s.created,
        started: s.started,
        plumbed,
        setup_done,
        healthy: late.max(early),
    })
}

async fn has_containers(rt: &DockerRuntime, scenario: &str) -> Result<bool, RuntimeError> {
    let found = labs::lab_containers(rt, format!("{}={scenario}", labels::SCENARIO_ID)).await?;
    Ok(!found.is_empty())
}

/// Inspects each distinct image once: absent → "run forge images build"; present → the
/// sysctls and tmpfs mounts its labels ask for.
async fn image_config<'a>(
    rt: &DockerRuntime,
    images: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, ImageRuntimeConfig>, RuntimeError> {
    let mut distinct: Vec<&str> = images.collect();
    distinct.sort_unstable();
    distinct.dedup();
    let checks = distinct.into_iter().map(|image| async move {
        match rt.docker().inspect_image(image).await {
            Ok(info) => {
                let config = info.config.unwrap_or_default();
                let labels = config.labels.unwrap_or_default();
                let mut cfg = ImageRuntimeConfig::from_labels(&labels);
                cfg.health = config.healthcheck.and_then(|h| h.test).unwrap_or_default();
                Ok((image.to_owned(), cfg))
            }
            Err(e) if status_of(&e) == Some(404) => Err(RuntimeError::ImageMissing {
                image: image.to_owned(),
            }),
            Err(e) => Err(RuntimeError::docker(format!("inspect image {image}"), e)),
        }
    });
    Ok(try_join_all(checks).await?.into_iter().collect())
}

async fn create_and_start(
    rt: &DockerRuntime,
    p: &ContainerParams<'_>,
    t0: Instant,
) -> Result<Started, RuntimeError> {
    let name = container_name(p.scenario, &p.container.name);
    let body = hardening::container_config(p)?;
    let opts = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    let created = rt
        .docker()
        .create_container(Some(opts), body)
        .await
        .map_err(|e| match status_of(&e) {
            Some(404) => RuntimeError::ImageMissing {
                image: p.container.image.clone(),
            },
            Some(409) => RuntimeError::LabExists {
                scenario: p.scenario.to_string(),
            },
            _ => RuntimeError::docker(format!("create {name}"), e),
        })?;
    let created_off = t0.elapsed();
    let pid = start_and_pid(rt, &created.id, &name).await?;
    Ok(Started {
        id: created.id,
        pid,
        created: created_off,
        started: t0.elapsed(),
    })
}

/// Starts a container and returns its init's host PID (whose netns we plumb).
async fn start_and_pid(rt: &DockerRuntime, id: &str, name: &str) -> Result<u32, RuntimeError> {
    rt.docker()
        .start_container(id, None)
        .await
        .map_err(|e| RuntimeError::docker(format!("start {name}"), e))?;
    let info = rt
        .docker()
        .inspect_container(id, None)
        .await
        .map_err(|e| RuntimeError::docker(format!("inspect {name}"), e))?;
    let state = info.state.unwrap_or_default();
    match state.pid {
        Some(pid) if pid > 0 && state.running == Some(true) => Ok(pid as u32),
        _ => Err(RuntimeError::NotRunning {
            container: name.to_owned(),
        }),
    }
}

/// Starts a stopped lab container again and rebuilds its links, default route and setup from
/// its labels (works from Docker state alone, e.g. after our own restart).
pub(super) async fn revive(
    rt: &DockerRuntime,
    scenario: &ScenarioId,
    container: &str,
) -> Result<(), RuntimeError> {
    let name = container_name(scenario, container);
    let info = exec::inspect(rt.docker(), &name, container, scenario.as_str()).await?;
    let lbl = info.config.and_then(|c| c.labels).unwrap_or_default();
    let bad = |what: &str| {
        RuntimeError::Invalid(format!("container {name}: label {what} missing or invalid"))
    };
    if lbl.get(labels::SCENARIO_ID).map(String::as_str) != Some(scenario.as_str()) {
        return Err(bad(labels::SCENARIO_ID));
    }
    let index: usize = lbl
        .get(labels::INDEX)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(labels::INDEX))?;
    let links: Vec<Attachment> = lbl
        .get(labels::LINKS)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad(labels::LINKS))?;
    let setup: Vec<String> = lbl
        .get(labels::SETUP)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let gateway: Option<Ipv4Addr> = lbl.get(labels::GATEWAY).and_then(|s| s.parse().ok());

    // Fabric first: a lab whose namespace is gone is being (or was) torn down, and starting
    // its container would resurrect it.
    let fabric = Fabric::open(&scenario.network_id()).await?;
    let pid = start_and_pid(rt, &name, &name).await?;
    fabric
        .plumb(&Plumbing {
            index,
            pid,
            links: &links,
            gateway,
        })
        .await?;
    steps::run_setup(rt, &name, container, scenario.as_str(), &setup).await
}
