//! `forge doctor`: whether this machine can run labs safely, checked one by one with what to do
//! about each failure: the Docker Engine and its API version, user-namespace remapping (a lab's
//! root is host root without it; production refuses), the static busybox the lab images are
//! built from, the `ip` and `nft` tools the fabric uses, and the lab images. Exit code 1 when
//! something labs cannot work without is missing; a missing remap is a warning outside
//! production.

use std::path::Path;

use clap::Args;
use forge_runtime::DockerRuntime;

use super::images::CatalogArgs;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Judge as production would (user-namespace remapping required)
    #[arg(long, env = "FORGE_ENV", default_value = "dev", value_name = "ENV")]
    environment: String,
}

enum Verdict {
    Ok(String),
    Warn(String),
    Fail(String),
}

fn report(name: &str, v: &Verdict) {
    let (mark, text) = match v {
        Verdict::Ok(t) => ("ok  ", t),
        Verdict::Warn(t) => ("warn", t),
        Verdict::Fail(t) => ("FAIL", t),
    };
    println!("{mark}  {name:<16} {text}");
}

fn tool(path: &str, package: &str) -> Verdict {
    if Path::new(path).exists() {
        Verdict::Ok(path.to_owned())
    } else {
        Verdict::Fail(format!("{path} missing: apt-get install {package}"))
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<u8> {
    let production = args.environment.eq_ignore_ascii_case("production");
    let mut checks: Vec<(&str, Verdict)> = Vec::new();
    let engine = DockerRuntime::connect().await;
    match &engine {
        Ok(rt) => {
            let version = rt.docker().version().await;
            let text = match version {
                Ok(v) => format!(
                    "docker {} (API {})",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default()
                ),
                Err(e) => format!("reachable, version unknown: {e}"),
            };
            checks.push(("engine", Verdict::Ok(text)));
            let userns = match rt.user_namespaces_remapped().await {
                Ok(true) => {
                    Verdict::Ok("remapped: a lab's root is an unprivileged host uid".into())
                }
                Ok(false) if production => Verdict::Fail(
                    "not remapped, and FORGE_ENV=production refuses labs whose root is host \
                     root: start dockerd with --userns-remap=default"
                        .into(),
                ),
                Ok(false) => Verdict::Warn(
                    "not remapped: a lab's root is host root (start dockerd with \
                     --userns-remap=default; production refuses this)"
                        .into(),
                ),
                Err(e) => Verdict::Fail(format!("cannot ask the engine: {e}")),
            };
            checks.push(("user namespaces", userns));
            let starts = if rt.skips_network_sandbox().await {
                Verdict::Ok(
                    "overlay2: labs start without docker's network sandbox (the runtime \
                     writes /etc/hosts)"
                        .into(),
                )
            } else {
                Verdict::Warn(
                    "the storage driver is not overlay2: every lab container gets docker's \
                     network sandbox, which about doubles its start"
                        .into(),
                )
            };
            checks.push(("lab starts", starts));
        }
        Err(e) => checks.push((
            "engine",
            Verdict::Fail(format!(
                "{e}: install docker.io and start dockerd (scripts/bootstrap.sh does both)"
            )),
        )),
    }
    checks.push(("iproute2", tool("/usr/sbin/ip", "iproute2")));
    checks.push(("nftables", tool("/usr/sbin/nft", "nftables")));
    let busybox = &args.catalog.busybox;
    let static_busybox = match std::process::Command::new("ldd").arg(busybox).output() {
        _ if !busybox.exists() => Verdict::Fail(format!(
            "{} missing: apt-get install busybox-static",
            busybox.display()
        )),
        // ldd fails on a static binary: that is what lab images need.
        Ok(out) if !out.status.success() => Verdict::Ok(format!("{} (static)", busybox.display())),
        _ => Verdict::Fail(format!(
            "{} is dynamically linked: apt-get install busybox-static",
            busybox.display()
        )),
    };
    checks.push(("busybox", static_busybox));
    // Only the Debian base needs it, and only when it is missing or stale.
    let debootstrap = std::path::Path::new("/usr/sbin/debootstrap");
    checks.push((
        "debootstrap",
        if debootstrap.exists() {
            Verdict::Ok(debootstrap.display().to_string())
        } else {
            Verdict::Warn(
                "missing: apt-get install debootstrap (builds the Debian lab images' base)".into(),
            )
        },
    ));
    match (super::images::catalog(&args.catalog), &engine) {
        (Ok(catalog), Ok(rt)) => {
            use forge_runtime::images::ImageState;
            let statuses = rt.image_status(&catalog).await.unwrap_or_default();
            let named = |want: fn(&ImageState) -> bool| -> Vec<String> {
                statuses
                    .iter()
                    .filter(|s| want(&s.state))
                    .map(|s| s.reference.clone())
                    .collect()
            };
            let missing = named(|s| matches!(s, ImageState::Missing));
            let stale = named(|s| matches!(s, ImageState::Stale | ImageState::Unknown(_)));
            checks.push((
                "lab images",
                if missing.is_empty() && stale.is_empty() {
                    Verdict::Ok(format!("{} built", catalog.images.len()))
                } else {
                    Verdict::Warn(format!(
                        "not built: [{}], stale: [{}] (forge images build; forge up builds the \
                         ones its templates use at start)",
                        missing.join(", "),
                        stale.join(", ")
                    ))
                },
            ));
        }
        (Err(e), _) => checks.push(("lab images", Verdict::Fail(format!("{e:#}")))),
        (_, Err(_)) => {}
    }
    for (name, v) in &checks {
        report(name, v);
    }
    let failed = checks.iter().any(|(_, v)| matches!(v, Verdict::Fail(_)));
    Ok(u8::from(failed))
}
