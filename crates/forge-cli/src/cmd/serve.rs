//! `forge serve <service>`: one service per process (distributed mode). The policy endpoint
//! needs nothing else; the other services join over NATS and PostgreSQL, which come with
//! distributed mode. `forge up` runs them all in one process today.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ServeCommand {
    /// The OPA-compatible policy endpoint (OPA's Data API over the embedded engine), :8181
    Opa {
        #[arg(long, env = "FORGE_OPA_ADDR", default_value = "127.0.0.1:8181")]
        listen: SocketAddr,
        /// Operator policies added to the bundled gates
        #[arg(long, env = "POLICY_DIR")]
        policy_dir: Option<PathBuf>,
    },
}

pub async fn run(cmd: ServeCommand) -> anyhow::Result<u8> {
    match cmd {
        ServeCommand::Opa { listen, policy_dir } => {
            let mut b = forge_policy::EmbeddedEngine::builder();
            if let Some(d) = policy_dir {
                b = b.operator_dir(d);
            }
            let engine = Arc::new(b.build().context("loading policies")?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!("forge_opa listening on http://{}", listener.local_addr()?);
            forge_policy::server::serve(listener, engine, shutdown_signal()).await?;
            Ok(0)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
