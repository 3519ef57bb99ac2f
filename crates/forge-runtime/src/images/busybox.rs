//! BusyBox images: `FROM scratch` + the host's static busybox with every applet symlinked +
//! `/etc/passwd`, `/etc/group` + `images/base/rootfs` + the image's own `rootfs/`, with a
//! Dockerfile generated from its `image.toml` (`cmd`, `healthcheck`; `sysctls` become the
//! `forge.sysctls` label at build time). A few MiB each: for tiny labs and fast tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::context::{self, Entry, Tree};
use super::{BusyboxSpec, HEALTH_INTERVAL, ImageDef};
use crate::error::RuntimeError;

/// `busybox --list-full` of `path` (cached per path): `usr/bin/wget`, `sbin/ip`, …
fn applets(path: &Path) -> Result<Vec<String>, RuntimeError> {
    static LISTS: OnceLock<Mutex<HashMap<PathBuf, Vec<String>>>> = OnceLock::new();
    let lists = LISTS.get_or_init(Default::default);
    if let Some(l) = lists.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        return Ok(l.clone());
    }
    let missing = || RuntimeError::BusyboxMissing {
        path: path.display().to_string(),
    };
    if !path.is_file() {
        return Err(missing());
    }
    let head = std::fs::read(path).map_err(|_| missing())?;
    // A dynamically linked busybox would not run in a `FROM scratch` image.
    if head
        .windows(b"/lib64/ld-linux".len())
        .any(|w| w == b"/lib64/ld-linux")
    {
        return Err(RuntimeError::BusyboxNotStatic {
            path: path.display().to_string(),
        });
    }
    let out = std::process::Command::new(path)
        .arg("--list-full")
        .output()
        .map_err(|_| missing())?;
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(RuntimeError::BusyboxNotStatic {
            path: path.display().to_string(),
        });
    }
    lists
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), list.clone());
    Ok(list)
}

/// The build context (tar bytes) of a busybox image and its digest.
pub(super) fn build_context(
    def: &ImageDef,
    spec: &BusyboxSpec,
    busybox: &Path,
) -> Result<(Vec<u8>, String), RuntimeError> {
    let fail = |m: String| RuntimeError::ImageBuild {
        image: def.reference.clone(),
        message: m,
    };
    let mut tree = Tree::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "run", "var", "home",
    ] {
        tree.insert(format!("rootfs/{d}"), Entry::Dir(0o755));
    }
    tree.insert("rootfs/tmp".into(), Entry::Dir(0o1777));
    tree.insert("rootfs/var/run".into(), Entry::Link("../run".into()));
    let bb = std::fs::read(busybox).map_err(|_| RuntimeError::BusyboxMissing {
        path: busybox.display().to_string(),
    })?;
    tree.insert("rootfs/bin/busybox".into(), Entry::File(bb, 0o755));
    for full in &applets(busybox)? {
        let name = full.rsplit('/').next().unwrap_or(full);
        if name != "busybox" {
            tree.insert(format!("rootfs/bin/{name}"), Entry::Link("busybox".into()));
            if !full.starts_with("bin/") {
                tree.insert(format!("rootfs/{full}"), Entry::Link("/bin/busybox".into()));
            }
        }
    }
    tree.insert(
        "rootfs/etc/passwd".into(),
        Entry::File(
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        ),
    );
    tree.insert(
        "rootfs/etc/group".into(),
        Entry::File(b"root:x:0:\nnobody:x:65534:\n".to_vec(), 0o644),
    );
    // `images/base/rootfs` goes into every busybox image, then the image's own overlay on top.
    let base = def.dir.parent().map(|p| p.join("base").join("rootfs"));
    for overlay in base.into_iter().chain([def.dir.join("rootfs")]) {
        if overlay.is_dir() {
            context::add_dir(&mut tree, "rootfs", &overlay, &[])
                .map_err(|e| fail(format!("reading {}: {e}", overlay.display())))?;
        }
    }
    tree.insert(
        "Dockerfile".into(),
        Entry::File(dockerfile(spec).into_bytes(), 0o644),
    );
    context::tar(&tree).map_err(fail)
}

fn dockerfile(spec: &BusyboxSpec) -> String {
    let cmd = serde_json::to_string(&spec.cmd).unwrap_or_else(|_| "[\"/bin/sh\"]".into());
    let mut file = format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD {cmd}\n"
    );
    if !spec.healthcheck.is_empty() {
        let probe = serde_json::to_string(&spec.healthcheck).unwrap_or_default();
        file.push_str(&format!(
            "HEALTHCHECK --interval={HEALTH_INTERVAL} --timeout=5s --start-period=10s --retries=3 CMD {probe}\n"
        ));
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageKind;

    #[test]
    fn healthcheck_becomes_the_image_healthcheck() {
        let spec = BusyboxSpec {
            cmd: vec!["/bin/httpd".into(), "-f".into()],
            sysctls: vec![],
            healthcheck: vec![],
        };
        assert!(!dockerfile(&spec).contains("HEALTHCHECK"));
        let spec = BusyboxSpec {
            healthcheck: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            ..spec
        };
        assert!(
            dockerfile(&spec).contains("HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD [\"/bin/sh\",\"-c\",\"true\"]\n"),
            "{}",
            dockerfile(&spec)
        );
    }

    #[test]
    fn missing_busybox_says_how_to_install_it() {
        let spec = BusyboxSpec {
            cmd: vec![],
            sysctls: vec![],
            healthcheck: vec![],
        };
        let def = ImageDef {
            reference: "forge/x:1".into(),
            description: String::new(),
            dir: "/nonexistent".into(),
            aliases: vec![],
            kind: ImageKind::Busybox(spec.clone()),
        };
        let err = build_context(&def, &spec, Path::new("/nonexistent/busybox"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("apt-get install busybox-static"),
            "{err}"
        );
    }
}
