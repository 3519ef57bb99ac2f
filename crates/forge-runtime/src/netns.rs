//! Named network namespaces, made the way `ip netns add` makes them (so `ip netns list` and
//! `ip netns exec` see ours), and netlink connections inside any namespace.
//!
//! Why a dedicated OS thread: `unshare(CLONE_NEWNET)` and `setns` change the namespace of the
//! calling *thread*. Doing that on a tokio worker or blocking-pool thread would leave a pooled
//! thread in a foreign namespace. A fresh `std::thread` enters the namespace, opens a netlink
//! socket (which stays bound to that namespace for its whole life), and exits; the socket is
//! then driven asynchronously from any thread.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::Handle;
use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};

use crate::error::RuntimeError;

/// Where named namespaces live (iproute2's convention).
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of every lab fabric namespace.
pub const FABRIC_PREFIX: &str = "forge_scn_";

fn ns_err(name: &str, message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Namespace {
        name: name.to_owned(),
        message: message.to_string(),
    }
}

pub fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `f` on a fresh OS thread and awaits its result without blocking the runtime.
async fn on_fresh_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("forge-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot spawn namespace thread: {e}"))?;
    rx.await.map_err(|_| "namespace thread panicked".to_owned())
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so namespace bind mounts
/// propagate to other mount namespaces (the daemon's, `ip netns exec`'s). Once per process.
fn prepare_dir() -> Result<(), String> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| format!("cannot create {NETNS_DIR}: {e}"))?;
    let shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_err() {
        // Not a mount point yet: bind it onto itself, then share it.
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind-mount {NETNS_DIR}: {e}"))?;
        shared().map_err(|e| format!("cannot make {NETNS_DIR} shared: {e}"))?;
    }
    *done = true;
    Ok(())
}

/// Creates the named namespace `name` and returns a netlink socket inside it.
pub async fn create(name: &str) -> Result<Socket, RuntimeError> {
    let owned = name.to_owned();
    on_fresh_thread(move || create_blocking(&owned))
        .await
        .map_err(|e| ns_err(name, e))?
}

fn create_blocking(name: &str) -> Result<Socket, RuntimeError> {
    prepare_dir().map_err(|e| ns_err(name, e))?;
    let path = ns_path(name);
    // O_EXCL: two launches of the same scenario id must not share a fabric.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::LabExists {
                scenario: name.to_owned(),
            });
        }
        Err(e) => {
            return Err(ns_err(
                name,
                format!("cannot create {}: {e}", path.display()),
            ));
        }
    }
    let result = (|| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
        // thread-self, not self: /proc/self/ns/net is the main thread's namespace.
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind-mount the namespace on {}: {e}", path.display()))?;
        Socket::new(NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))
    })();
    if result.is_err() {
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&path);
    }
    result.map_err(|e| ns_err(name, e))
}

/// A netlink socket inside the namespace at `path` (`/run/netns/<name>` or `/proc/<pid>/ns/net`).
pub async fn socket_in(path: PathBuf) -> Result<Socket, RuntimeError> {
    let label = path.display().to_string();
    on_fresh_thread(move || -> Result<Socket, String> {
        let f = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        Socket::new(NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))
    })
    .await
    .and_then(|r| r)
    .map_err(|e| ns_err(&label, e))
}

/// Writes `/proc/sys/<key>` = value for each entry, inside the namespace at `path` (a thread
/// sees the sysctls of the network namespace it is in).
pub async fn write_sysctls(
    path: PathBuf,
    entries: Vec<(String, String)>,
) -> Result<(), RuntimeError> {
    let label = path.display().to_string();
    on_fresh_thread(move || -> Result<(), String> {
        let f = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        for (key, value) in &entries {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .map_err(|e| format!("cannot set {key}: {e}"))?;
        }
        Ok(())
    })
    .await
    .and_then(|r| r)
    .map_err(|e| ns_err(&label, e))
}

/// Drives `socket` with an rtnetlink connection on the current tokio runtime. The connection
/// task ends when the last clone of the handle is dropped.
pub fn handle(socket: Socket) -> Result<Handle, RuntimeError> {
    socket
        .set_non_blocking(true)
        .map_err(|e| ns_err("netlink", e))?;
    // SAFETY: the fd comes straight from an owned, open netlink socket we give up here.
    let tokio_socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
    let (conn, handle, messages) = rtnetlink::from_socket(tokio_socket);
    drop(messages);
    tokio::spawn(conn);
    Ok(handle)
}

/// Removes a named namespace (unmount + unlink). Absent is fine; the kernel frees the
/// namespace, and every bridge and veth in it, once nothing holds it.
pub async fn delete(name: &str) -> Result<bool, RuntimeError> {
    let path = ns_path(name);
    let owned = name.to_owned();
    tokio::task::spawn_blocking(move || {
        if !path.exists() {
            return Ok(false);
        }
        // EINVAL means not mounted (half-created); the file still has to go.
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(ns_err(&owned, format!("cannot unmount: {e}"))),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ns_err(
                &owned,
                format!("cannot remove {}: {e}", path.display()),
            )),
        }
    })
    .await
    .map_err(|e| ns_err(name, e))?
}

/// Names of all fabric namespaces on this host.
pub fn list_namespaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(FABRIC_PREFIX))
        .collect();
    names.sort();
    names
}

/// Whether the named namespace exists.
pub fn namespace_exists(name: &str) -> bool {
    ns_path(name).exists()
}
