//! `forge serve <service>`: one service per process (distributed mode). The policy endpoint
//! needs nothing else; the other services join over NATS and PostgreSQL, which come with
//! distributed mode. `forge up` runs them all in one process today.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use forge_http::Service;

use crate::config::PolicyDirArg;

#[derive(Subcommand)]
pub enum ServeCommand {
    /// The OPA-compatible policy endpoint (OPA's Data API over the embedded engine)
    Opa {
        /// Address to listen on
        #[arg(
            long,
            env = "FORGE_OPA_ADDR",
            default_value_t = SocketAddr::from((Ipv4Addr::LOCALHOST, Service::Opa.default_port())),
            value_name = "ADDR"
        )]
        listen: SocketAddr,
        #[command(flatten)]
        policies: PolicyDirArg,
    },
}

pub async fn run(cmd: ServeCommand) -> anyhow::Result<u8> {
    match cmd {
        ServeCommand::Opa { listen, policies } => {
            let mut b = forge_policy::EmbeddedEngine::builder();
            if let Some(d) = policies.policy_dir {
                b = b.operator_dir(d);
            }
            let engine = Arc::new(b.build().context("loading policies")?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "{} listening on http://{}",
                Service::Opa.name(),
                listener.local_addr()?
            );
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
