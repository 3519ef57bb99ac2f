//! Launching a lab fast, and reviving one container of it.
//!
//! Order of work (phases overlap; `LaunchTimings` records when each finished):
//! 1. validate everything that can be checked without side effects (plan, names, capabilities);
//! 2. concurrently: build the fabric namespace + bridges | inspect images, then create and
//!    start every container in parallel (containers start with only `lo`; images' services
//!    bind wildcard addresses, so they come up before their links);
//! 3. plumb every container in parallel; 4. run setup steps (containers in parallel, steps in
//!    order); any failure tears down whatever was built.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateContainerOptions;
use chrono::{SecondsFormat, Utc};
use forge_core::ScenarioId;
use forge_core::template::{Attachment, hosts_file, plan_lab};
use futures::future::{join_all, try_join_all};

use super::{DockerRuntime, hosts, labs};
use crate::egress;
use crate::error::{RuntimeError, status_of};
use crate::fabric::{Fabric, Plumbing, default_gateway};
use crate::hardening::{self, ContainerParams};
use crate::images::ImageRuntimeConfig;
use crate::{ExecRequest, LabHandle, LabSpec, LaunchTimings, container_name, exec, labels, netns};

/// Time one setup command may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

struct Started {
    id: String,
    pid: u32,
    created: Duration,
    started: Duration,
}

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
    if netns::namespace_exists(&ns) || has_containers(rt, scenario).await? {
        return Err(RuntimeError::LabExists {
            scenario: scenario.to_owned(),
        });
    }
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
    // The hosts file the runtime writes into each container, when the engine's storage driver
    // lets it (known after the first launch); otherwise Docker writes `extra_hosts`.
    let hosts_file = rt.skips_network_sandbox().await.then(|| hosts_file(&hosts));

    let mut timings = LaunchTimings::default();
    let fabric = async {
        let f = match (Fabric::create(&ns, &plan, &created_at).await, &egress) {
            (Ok(f), Some(e)) => egress::attach(&f, &plan, e, &egress_cfg).await.map(|()| f),
            (f, _) => f,
        };
        (f, t0.elapsed())
    };
    let boot = async {
        let image_cfg = image_config(rt, containers.iter().map(|c| c.image.as_str())).await?;
        let images_checked = t0.elapsed();
        let jobs = containers.iter().enumerate().map(|(i, c)| {
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
                own_hosts: hosts_file.is_some(),
                image_sysctls: image_cfg.get(&c.image).map_or(&[], |i| &i.sysctls[..]),
                image_tmpfs: image_cfg.get(&c.image).map_or(&[], |i| &i.tmpfs[..]),
                extra_labels: &spec.labels,
                created_at: &created_at,
            };
            create_and_start(rt, params, hosts_file.as_deref(), t0)
        });
        // join_all, not try_join_all: every create must settle before a failed launch tears
        // down, or a container created after the teardown would leak.
        let started: Result<Vec<Started>, RuntimeError> =
            join_all(jobs).await.into_iter().collect();
        started.map(|s| (s, images_checked, image_cfg))
    };
    let ((fabric, fabric_ready), booted) = futures::join!(fabric, boot);
    timings.fabric_ready = fabric_ready;

    let result = async {
        let fabric = fabric?;
        let (started, images_checked, image_cfg_ref) = booted?;
        timings.images_checked = images_checked;
        timings.containers_created = started.iter().map(|s| s.created).max().unwrap_or_default();
        timings.containers_started = started.iter().map(|s| s.started).max().unwrap_or_default();

        let plumbing = started.iter().enumerate().map(|(i, s)| Plumbing {
            index: i,
            pid: s.pid,
            links: links[i],
            gateway: default_gateway(links[i], &gateways),
        });
        let plumbing: Vec<Plumbing<'_>> = plumbing.collect();
        try_join_all(plumbing.iter().map(|p| fabric.plumb(p))).await?;
        timings.links_plumbed = t0.elapsed();

        let targets: Vec<String> = containers
            .iter()
            .map(|c| container_name(&spec.scenario_id, &c.name))
            .collect();
        let setups = containers
            .iter()
            .zip(&targets)
            .map(|(c, target)| run_setup(rt, target, &c.name, scenario, &c.setup));
        try_join_all(setups).await?;
        timings.setup_done = t0.elapsed();

        // Running means usable: each container's own health probe passes before the lab is
        // handed out (the engine's first probe would come only after its interval).
        let probes = containers.iter().zip(&targets).filter_map(|(c, target)| {
            let test = image_cfg_ref.get(&c.image).map(|i| i.health.as_slice())?;
            let probe = health_probe(test)?;
            Some(wait_healthy(rt, target, &c.name, scenario, probe))
        });
        try_join_all(probes).await?;
        timings.healthy = t0.elapsed();
        Ok(started)
    }
    .await;

    match result {
        Ok(started) => {
            timings.total = t0.elapsed();
            let ids = containers
                .iter()
                .zip(started)
                .map(|(c, s)| (c.name.clone(), s.id))
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

/// How long a lab container may take to pass its health probe at launch.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Time one probe may take (the images' HEALTHCHECK says 5 s too).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine's HEALTHCHECK test as a command to exec; `None` when the image has none.
fn health_probe(test: &[String]) -> Option<ExecRequest> {
    let req = match test.split_first()? {
        (kind, argv) if kind == "CMD" && !argv.is_empty() => ExecRequest::argv(argv.to_vec()),
        (kind, [cmd]) if kind == "CMD-SHELL" => ExecRequest::shell(cmd.clone()),
        _ => return None,
    };
    Some(req.timeout(PROBE_TIMEOUT).max_output(4 * 1024))
}

/// Runs `probe` until it passes, backing off from 20 ms to 500 ms, for at most
/// [`HEALTH_TIMEOUT`]; the error names the container, the probe and its last output.
async fn wait_healthy(
    rt: &DockerRuntime,
    target: &str,
    display: &str,
    scenario: &str,
    probe: ExecRequest,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let r = exec::run(rt.docker(), target, display, scenario, probe.clone()).await?;
        if !r.timed_out && r.exit_code == 0 {
            return Ok(());
        }
        if started.elapsed() + pause > HEALTH_TIMEOUT {
            return Err(RuntimeError::Unhealthy {
                container: display.to_owned(),
                probe: match &probe.command {
                    crate::ExecCommand::Argv(v) => v.join(" "),
                    crate::ExecCommand::Shell(s) => s.clone(),
                },
                waited: started.elapsed(),
                exit_code: r.exit_code,
                output: format!("{}{}", r.stdout, r.stderr)
                    .trim()
                    .chars()
                    .take(400)
                    .collect(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
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

/// Creates one container, writes its `/etc/hosts` when the runtime provides it (`hosts_file`),
/// and starts it.
async fn create_and_start(
    rt: &DockerRuntime,
    p: ContainerParams<'_>,
    hosts_file: Option<&str>,
    t0: Instant,
) -> Result<Started, RuntimeError> {
    let name = container_name(p.scenario, &p.container.name);
    let body = hardening::container_config(&p)?;
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
    if let Some(text) = hosts_file {
        write_hosts(rt, &created.id, &p.container.name, text).await?;
    }
    let pid = start_and_pid(rt, &created.id, &name).await?;
    Ok(Started {
        id: created.id,
        pid,
        created: created_off,
        started: t0.elapsed(),
    })
}

/// Writes `text` as `/etc/hosts` into the writable layer of the created, never started
/// container `id` (see `docker/hosts.rs`).
async fn write_hosts(
    rt: &DockerRuntime,
    id: &str,
    display: &str,
    text: &str,
) -> Result<(), RuntimeError> {
    let info = rt
        .docker()
        .inspect_container(id, None)
        .await
        .map_err(|e| RuntimeError::docker(format!("inspect {display}"), e))?;
    let upper = info
        .graph_driver
        .filter(|g| g.name == "overlay2")
        .and_then(|g| g.data.get("UpperDir").cloned())
        .ok_or_else(|| RuntimeError::HostsFile {
            container: display.to_owned(),
            message: "the engine reports no overlay2 UpperDir for its writable layer".into(),
        })?;
    hosts::write_into_layer(display, std::path::Path::new(&upper), text)
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

/// Runs a container's setup commands in order; a non-zero exit fails the launch.
async fn run_setup(
    rt: &DockerRuntime,
    target: &str,
    display: &str,
    scenario: &str,
    steps: &[String],
) -> Result<(), RuntimeError> {
    for cmd in steps {
        let req = ExecRequest::shell(cmd.clone())
            .timeout(SETUP_TIMEOUT)
            .max_output(16 * 1024);
        let r = exec::run(rt.docker(), target, display, scenario, req).await?;
        if r.timed_out || r.exit_code != 0 {
            let output = format!("{}{}", r.stdout, r.stderr)
                .trim()
                .chars()
                .take(400)
                .collect();
            return Err(RuntimeError::Setup {
                container: display.to_owned(),
                command: cmd.clone(),
                exit_code: r.exit_code,
                output,
            });
        }
    }
    Ok(())
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
    run_setup(rt, &name, container, scenario.as_str(), &setup).await
}
