//! The runtime's one error type. Messages are lowercase, name the object that is wrong and,
//! where the operator can fix it, say how (`run forge images build`, `apt-get install ...`).

use std::time::Duration;

/// Everything that can go wrong in the lab runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to the docker engine: {0}")]
    Connect(String),
    #[error("docker engine error during {op}: {message}")]
    Docker { op: String, message: String },
    #[error("image `{image}` is missing; run `forge images build`")]
    ImageMissing { image: String },
    #[error("image `{image}` is not in the image catalog at {dir}")]
    ImageUnknown { image: String, dir: String },
    #[error("image catalog: {0}")]
    ImageCatalog(#[from] crate::images::CatalogError),
    #[error("building image `{image}` failed: {message}")]
    ImageBuild { image: String, message: String },
    #[error("building image `{image}` did not finish within {after:?}")]
    ImageBuildTimeout { image: String, after: Duration },
    #[error("debootstrap not found; install it with `apt-get install debootstrap`")]
    DebootstrapMissing,
    #[error(
        "no debian mirror in {apt_dir}/sources.list.d/*.sources or {apt_dir}/sources.list; \
         name one with --debian-mirror (FORGE_DEBIAN_MIRROR)"
    )]
    MirrorUnknown { apt_dir: String },
    #[error("{path} not found; install it with `apt-get install busybox-static`")]
    BusyboxMissing { path: String },
    #[error("{path} is not a statically linked busybox; install `busybox-static`")]
    BusyboxNotStatic { path: String },
    #[error("container {container}: capability `{capability}` is not allowed (allowed: {allowed})")]
    CapabilityNotAllowed {
        container: String,
        capability: String,
        allowed: String,
    },
    #[error("container {container}: sysctl `{sysctl}` from its image is not allowed")]
    SysctlNotAllowed { container: String, sysctl: String },
    #[error(
        "container {container}: tmpfs `{path}` from its image's forge.tmpfs label is not \
         allowed (allowed: {allowed} and directories below them, at most {max})"
    )]
    TmpfsNotAllowed {
        container: String,
        path: String,
        allowed: String,
        max: usize,
    },
    #[error("template cannot be planned: {0}")]
    Plan(String),
    #[error("template has no containers")]
    EmptyTemplate,
    #[error("lab {scenario} already exists (namespace or containers present)")]
    LabExists { scenario: String },
    #[error("lab {scenario} has no container `{container}`")]
    NoSuchContainer { scenario: String, container: String },
    #[error("container {container} is not running")]
    NotRunning { container: String },
    #[error("file {path} not found in container {container}")]
    FileNotFound { container: String, path: String },
    #[error("{path} in container {container} is not a regular file")]
    NotAFile { container: String, path: String },
    #[error("network namespace {name}: {message}")]
    Namespace { name: String, message: String },
    #[error("netlink {op} in {namespace}: {message}")]
    Netlink {
        namespace: String,
        op: String,
        message: String,
    },
    #[error("setup of container {container} failed: `{command}` exited with {exit_code}: {output}")]
    Setup {
        container: String,
        command: String,
        exit_code: i64,
        output: String,
    },
    #[error(
        "container {container} did not become healthy within {waited:?}: its probe `{probe}` last exited with {exit_code}: {output}"
    )]
    Unhealthy {
        container: String,
        probe: String,
        waited: std::time::Duration,
        exit_code: i64,
        output: String,
    },
    #[error("exec in {container}: {message}")]
    Exec { container: String, message: String },
    #[error("exec in {container} timed out after {timeout:?}")]
    ExecTimeout {
        container: String,
        timeout: Duration,
    },
    #[error(
        "egress allowlist profile `{profile}` is not configured on this lab host (configured: \
         {configured}); define it in the FORGE_EGRESS_PROFILES file"
    )]
    EgressProfileUnknown { profile: String, configured: String },
    #[error("egress profile `{profile}`: {message}")]
    EgressProfile { profile: String, message: String },
    #[error("nftables in {namespace}: {message}")]
    Nft { namespace: String, message: String },
    #[error("nft not found; install it with `apt-get install nftables`")]
    NftMissing,
    #[error("egress uplink: {0}")]
    Uplink(String),
    #[error("container {container}: cannot write its /etc/hosts: {message}")]
    HostsFile { container: String, message: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine would run labs whose root is host root, and the configuration forbids it.
    #[error(
        "the docker engine does not remap user namespaces, so a lab's root would be host root: \
         start dockerd with --userns-remap=default (or set FORGE_ALLOW_HOST_ROOT_LABS=true to \
         accept the risk)"
    )]
    HostRootLabs,
    /// A failure of a backend without an engine of its own to blame (the fake runtime's
    /// injected failures).
    #[error("lab runtime: {0}")]
    Backend(String),
}

impl RuntimeError {
    /// Wraps a Docker API error with the operation it broke.
    pub(crate) fn docker(op: impl Into<String>, e: bollard::errors::Error) -> Self {
        Self::Docker {
            op: op.into(),
            message: docker_message(&e),
        }
    }

    /// Wraps a netlink error with where it happened.
    pub(crate) fn netlink(namespace: &str, op: &str, e: impl std::fmt::Display) -> Self {
        Self::Netlink {
            namespace: namespace.to_owned(),
            op: op.to_owned(),
            message: e.to_string(),
        }
    }
}

/// The daemon's own message when there is one (bollard's Display adds noise around it).
fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("{message} (http {status_code})")
        }
        other => other.to_string(),
    }
}

/// HTTP status of a Docker API error, when the daemon answered.
pub(crate) fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
