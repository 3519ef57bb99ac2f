//! The Docker create request of a lab container, with every hardening invariant of docs/design.md §6
//! applied in one place (and unit-tested here, asserted from `docker inspect` in the
//! integration tests).
//!
//! Defence in depth: the training gate already allowlists capabilities per track; the runtime
//! refuses anything outside [`ALLOWED_CAPABILITIES`] again, whatever the template says, and
//! forces a read-only root even if a template asks otherwise.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use forge_core::ScenarioId;
use forge_core::template::{Attachment, Container, Limits};

use crate::error::RuntimeError;
use crate::labels;

/// The only capabilities a lab container may get back after `cap_drop: ALL`.
pub const ALLOWED_CAPABILITIES: [&str; 3] = ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"];

/// Sysctls an image may ask for (all network-namespaced, so they only affect the lab).
pub const ALLOWED_SYSCTLS: [&str; 4] = [
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.icmp_echo_ignore_all",
];

/// Size-capped writable scratch space; the root filesystem is read-only.
pub const TMP_OPTIONS: &str = "rw,nosuid,nodev,size=64m";
pub const RUN_OPTIONS: &str = "rw,nosuid,nodev,noexec,size=8m";

/// Where an image may ask for a tmpfs (its `forge.tmpfs` label): the directories below which
/// daemons keep logs and state (`/var/log`, `/var/lib/<daemon>`…), never system directories.
/// Each mount is [`IMAGE_TMPFS_OPTIONS`]; it starts empty, with the mode of the image's
/// directory (so a non-root daemon's directory is writable when the image makes it so).
pub const IMAGE_TMPFS_ROOTS: [&str; 5] = [
    "/var/log",
    "/var/lib",
    "/var/cache",
    "/var/spool",
    "/var/www",
];
/// At most this many image tmpfs mounts per container.
pub const MAX_IMAGE_TMPFS: usize = 4;
/// Like `/run`: no executables, and its pages count against the container's memory limit.
pub const IMAGE_TMPFS_OPTIONS: &str = "rw,nosuid,nodev,noexec,size=16m";

/// Everything needed to build one container's create request.
#[derive(Debug, Clone)]
pub struct ContainerParams<'a> {
    pub scenario: &'a ScenarioId,
    pub tenant_id: &'a str,
    pub template_name: &'a str,
    pub container: &'a Container,
    /// Position in the template.
    pub index: usize,
    /// Number of containers in the lab (limits are split evenly).
    pub count: usize,
    pub limits: &'a Limits,
    pub links: &'a [Attachment],
    pub gateway: Option<Ipv4Addr>,
    pub hosts: &'a [(Ipv4Addr, Vec<String>)],
    /// The runtime writes `/etc/hosts` itself (`docker::hosts`): the container is created with
    /// Docker's networking disabled, so the engine builds no network sandbox for it, and
    /// without `extra_hosts`. Otherwise Docker writes `hosts` as `extra_hosts`.
    pub own_hosts: bool,
    /// `key=value` sysctls the image's `forge.sysctls` label asks for.
    pub image_sysctls: &'a [String],
    /// Directories the image's `forge.tmpfs` label asks a tmpfs for.
    pub image_tmpfs: &'a [String],
    pub extra_labels: &'a BTreeMap<String, String>,
    pub created_at: &'a str,
}

/// Upper-cases, strips `CAP_`, dedups, and refuses anything outside the allowlist.
pub fn capabilities(container: &Container) -> Result<Vec<String>, RuntimeError> {
    let mut out: Vec<String> = Vec::new();
    for raw in &container.capabilities {
        let up = raw.trim().to_ascii_uppercase();
        let cap = up.strip_prefix("CAP_").unwrap_or(&up).to_owned();
        if !ALLOWED_CAPABILITIES.contains(&cap.as_str()) {
            return Err(RuntimeError::CapabilityNotAllowed {
                container: container.name.clone(),
                capability: raw.clone(),
                allowed: ALLOWED_CAPABILITIES.join(", "),
            });
        }
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    Ok(out)
}

/// Sysctls for the container: unprivileged low ports (so services bind :80 without
/// NET_BIND_SERVICE) and forwarding off (a new namespace inherits the host's `ip_forward=1`,
/// which would make every lab host a router), then the image's allowlisted ones on top.
pub fn sysctls(container: &str, image: &[String]) -> Result<HashMap<String, String>, RuntimeError> {
    sysctls_for(container, image, false)
}

/// [`sysctls`], and with `ipv6` (the container has a dual-stack link) IPv6 on: the engine
/// disables it in every container it does not give an IPv6 network itself. Duplicate address
/// detection is off (the plan makes addresses unique; link-local ones answer at once too) and
/// IPv6 forwarding off, as IPv4's.
pub fn sysctls_for(
    container: &str,
    image: &[String],
    ipv6: bool,
) -> Result<HashMap<String, String>, RuntimeError> {
    let mut out = HashMap::from([
        (
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "0".to_owned(),
        ),
        ("net.ipv4.ip_forward".to_owned(), "0".to_owned()),
    ]);
    if ipv6 {
        for (k, v) in [
            ("net.ipv6.conf.all.disable_ipv6", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.forwarding", "0"),
        ] {
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    for kv in image {
        let (k, v) = kv
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .unwrap_or((kv, ""));
        if !ALLOWED_SYSCTLS.contains(&k) || v.is_empty() {
            return Err(RuntimeError::SysctlNotAllowed {
                container: container.to_owned(),
                sysctl: kv.clone(),
            });
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// The runtime's tmpfs mounts (`/tmp`, `/run`) plus the image's, each checked against
/// [`IMAGE_TMPFS_ROOTS`]: absolute, normalised (no `.`, `..` or `//`), at or below a root.
pub fn tmpfs(container: &str, image: &[String]) -> Result<HashMap<String, String>, RuntimeError> {
    let mut out = HashMap::from([
        ("/tmp".to_owned(), TMP_OPTIONS.to_owned()),
        ("/run".to_owned(), RUN_OPTIONS.to_owned()),
    ]);
    let refuse = |path: &str| RuntimeError::TmpfsNotAllowed {
        container: container.to_owned(),
        path: path.to_owned(),
        allowed: IMAGE_TMPFS_ROOTS.join(", "),
        max: MAX_IMAGE_TMPFS,
    };
    if image.len() > MAX_IMAGE_TMPFS {
        return Err(refuse(&image.join(",")));
    }
    for path in image {
        let normal = path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        let under_root = IMAGE_TMPFS_ROOTS.iter().any(|r| {
            path == r
                || path
                    .strip_prefix(r)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        if !normal || !under_root {
            return Err(refuse(path));
        }
        out.insert(path.clone(), IMAGE_TMPFS_OPTIONS.to_owned());
    }
    Ok(out)
}

/// Docker accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]*` in names; template names must fit.
pub fn check_name(name: &str) -> Result<(), RuntimeError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 48;
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "container name `{name}` must be 1-48 characters of [a-zA-Z0-9_.-] starting with a letter or digit"
        )))
    }
}

/// The full create request.
pub fn container_config(p: &ContainerParams<'_>) -> Result<ContainerCreateBody, RuntimeError> {
    let c = p.container;
    check_name(&c.name)?;
    let caps = capabilities(c)?;
    let n = p.count.max(1) as u64;
    let memory = (p.limits.memory_mb.saturating_mul(1024 * 1024) / n) as i64;
    let nano_cpus = (p.limits.cpu * 1e9 / n as f64) as i64;
    let pids = p.limits.pids.unwrap_or(Limits::DEFAULT_PIDS) as i64;

    // Caller's labels first so the runtime's own always win.
    let mut lbl: HashMap<String, String> = p
        .extra_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    lbl.extend([
        (labels::SCENARIO_ID.to_owned(), p.scenario.to_string()),
        (labels::TENANT_ID.to_owned(), p.tenant_id.to_owned()),
        (labels::CONTAINER.to_owned(), c.name.clone()),
        (labels::CREATED_AT.to_owned(), p.created_at.to_owned()),
        (labels::TEMPLATE.to_owned(), p.template_name.to_owned()),
        (labels::LINKS.to_owned(), to_json(&p.links)),
        (labels::SETUP.to_owned(), to_json(&c.setup)),
        (labels::INDEX.to_owned(), p.index.to_string()),
    ]);
    if let Some(gw) = p.gateway {
        lbl.insert(labels::GATEWAY.to_owned(), gw.to_string());
    }

    let extra_hosts: Vec<String> = p
        .hosts
        .iter()
        .filter(|_| !p.own_hosts)
        .flat_map(|(addr, names)| names.iter().map(move |n| format!("{n}:{addr}")))
        .collect();

    let host_config = HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: (!caps.is_empty()).then_some(caps),
        // Docker's default seccomp profile stays on: never `seccomp=unconfined`.
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        privileged: Some(false),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs(&c.name, p.image_tmpfs)?),
        memory: (memory > 0).then_some(memory),
        // No swap beyond the memory limit (CIS 5.11): a lab cannot page the host to death.
        memory_swap: (memory > 0).then_some(memory),
        nano_cpus: (nano_cpus > 0).then_some(nano_cpus),
        pids_limit: Some(pids),
        network_mode: Some("none".into()),
        ipc_mode: Some("private".into()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        sysctls: Some(sysctls_for(
            &c.name,
            p.image_sysctls,
            // A link on a dual-stack subnet, addressed or left to the learner.
            p.links.iter().any(|a| a.prefix6 != 0),
        )?),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        // A chatty lab must not fill the host's disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), "1m".to_owned()),
                ("max-file".to_owned(), "1".to_owned()),
            ])),
        }),
        binds: None,
        mounts: None,
        init: Some(false),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(c.image.clone()),
        hostname: Some(c.name.clone()),
        env: Some(
            c.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(lbl),
        // Still in a network namespace of its own (runc makes an empty one, `lo` up), which
        // the runtime plumbs; Docker just builds no sandbox around it.
        network_disabled: p.own_hosts.then_some(true),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// Label values are compact JSON; serialising plain data cannot fail.
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_core::template::NetworkAttachment;

    fn container(caps: &[&str]) -> Container {
        Container {
            name: "learner".into(),
            image: "forge/learner:1".into(),
            read_only: false,
            environment: [("MODE".to_owned(), "x".to_owned())].into(),
            networks: vec![NetworkAttachment::Name("net".into())],
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            setup: vec!["true".into()],
            learner: true,
            console: None,
        }
    }

    #[test]
    fn refuses_capabilities_outside_the_allowlist() {
        assert!(capabilities(&container(&["SYS_ADMIN"])).is_err());
        let err = capabilities(&container(&["net_raw", "CAP_SYS_PTRACE"])).unwrap_err();
        assert!(err.to_string().contains("CAP_SYS_PTRACE"), "{err}");
        assert_eq!(
            capabilities(&container(&["cap_net_raw", "NET_RAW"])).unwrap(),
            ["NET_RAW"]
        );
    }

    #[test]
    fn ipv6_is_on_only_for_dual_stack_containers() {
        let v4 = sysctls_for("r", &[], false).unwrap();
        assert!(!v4.keys().any(|k| k.starts_with("net.ipv6")));
        let v6 = sysctls_for("r", &[], true).unwrap();
        assert_eq!(v6["net.ipv6.conf.all.disable_ipv6"], "0");
        assert_eq!(v6["net.ipv6.conf.default.accept_dad"], "0");
        assert_eq!(v6["net.ipv6.conf.all.forwarding"], "0");
    }

    #[test]
    fn sysctls_are_allowlisted() {
        assert!(sysctls("r", &["kernel.shmmax=1".into()]).is_err());
        let s = sysctls("r", &["net.ipv4.ip_forward=1".into()]).unwrap();
        assert_eq!(s["net.ipv4.ip_forward"], "1");
        assert_eq!(s["net.ipv4.ip_unprivileged_port_start"], "0");
    }

    #[test]
    fn image_tmpfs_is_allowlisted() {
        let ok = tmpfs("web", &["/var/log".into(), "/var/lib/sshd".into()]).unwrap();
        assert_eq!(ok.len(), 4);
        assert_eq!(ok["/var/lib/sshd"], IMAGE_TMPFS_OPTIONS);
        for bad in [
            "/etc",
            "/var",
            "/var/lib/../../etc",
            "var/log",
            "/var/logs",
            "/var/log/",
            "/tmp",
        ] {
            let err = tmpfs("web", &[bad.to_owned()]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("tmpfs `{bad}`")),
                "{bad}: {err}"
            );
        }
        let many: Vec<String> = (0..5).map(|i| format!("/var/lib/d{i}")).collect();
        assert!(tmpfs("web", &many).is_err());
    }

    #[test]
    fn config_is_hardened_and_split() {
        let c = container(&["NET_RAW"]);
        let limits = Limits {
            cpu: 2.0,
            memory_mb: 1536,
            attacker_max_exploits: 0,
            timeout_minutes: 30,
            pids: None,
        };
        let id: ScenarioId = "scn-0123456789ab".parse().unwrap();
        let extra: BTreeMap<String, String> = [
            ("forge.scenario_id".to_owned(), "spoof".to_owned()),
            ("x".to_owned(), "y".to_owned()),
        ]
        .into();
        let p = ContainerParams {
            scenario: &id,
            tenant_id: "t1",
            template_name: "tpl",
            container: &c,
            index: 0,
            count: 3,
            limits: &limits,
            links: &[],
            gateway: None,
            hosts: &[(Ipv4Addr::new(10, 0, 0, 10), vec!["learner".into()])],
            own_hosts: false,
            image_sysctls: &[],
            image_tmpfs: &["/var/log".to_owned()],
            extra_labels: &extra,
            created_at: "2026-01-01T00:00:00Z",
        };
        // Hosts written by the runtime: no sandbox, no extra_hosts, the same isolation.
        let own = container_config(&ContainerParams {
            own_hosts: true,
            ..p.clone()
        })
        .unwrap();
        assert_eq!(own.network_disabled, Some(true));
        let oh = own.host_config.unwrap();
        assert_eq!(oh.extra_hosts, None);
        assert_eq!(oh.network_mode.as_deref(), Some("none"));
        assert_eq!((oh.binds, oh.mounts), (None, None), "never a host mount");
        let b = container_config(&p).unwrap();
        let h = b.host_config.unwrap();
        assert_eq!(h.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(h.cap_add.unwrap(), ["NET_RAW"]);
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.memory, Some(512 * 1024 * 1024));
        assert_eq!(h.memory_swap, h.memory, "no swap beyond the memory limit");
        assert_eq!(h.nano_cpus, Some(666_666_666));
        assert_eq!(h.pids_limit, Some(128));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        let tmpfs = h.tmpfs.unwrap();
        assert_eq!(tmpfs["/tmp"], TMP_OPTIONS);
        assert_eq!(tmpfs["/var/log"], IMAGE_TMPFS_OPTIONS);
        assert_eq!(h.extra_hosts.unwrap(), ["learner:10.0.0.10"]);
        assert_eq!(b.network_disabled, None);
        let l = b.labels.unwrap();
        assert_eq!(l["forge.scenario_id"], "scn-0123456789ab");
        assert_eq!(l["x"], "y");
        assert_eq!(b.env.unwrap(), ["MODE=x"]);
    }
}
