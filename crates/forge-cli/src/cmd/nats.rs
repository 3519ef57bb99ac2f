//! `forge nats setup`: the runbook's `setup_nats_streams.sh`. Creates the bus's JetStream
//! stream, or brings an existing one to this release's configuration (subjects, dedup window,
//! limits), and prints what is there. Idempotent: every service does the same on connect, so
//! this is for checking a server before the services start.

use anyhow::Context;
use clap::{Args, Subcommand};
use forge_bus::{NatsBus, NatsBusConfig};

/// The NATS server of distributed mode, for the operator commands.
#[derive(Args, Debug, Clone)]
pub struct NatsUrlArg {
    /// NATS with JetStream (`nats://host:4222`)
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    pub nats_url: String,
}

impl NatsUrlArg {
    /// Connects with the services' configuration (which sets the stream up).
    pub async fn connect(&self) -> anyhow::Result<NatsBus> {
        let url = &self.nats_url;
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            anyhow::bail!("NATS_URL (--nats-url) `{url}` is not a nats:// or tls:// url");
        }
        NatsBus::connect(url, NatsBusConfig::default())
            .await
            .with_context(|| format!("cannot use the NATS server at NATS_URL (--nats-url) `{url}`"))
    }
}

/// `forge nats …`
#[derive(Debug, Clone, Subcommand)]
pub enum NatsCommand {
    /// Create or update the bus stream (idempotent) and show it
    Setup {
        #[command(flatten)]
        nats: NatsUrlArg,
    },
}

pub async fn run(cmd: NatsCommand) -> anyhow::Result<u8> {
    let NatsCommand::Setup { nats } = cmd;
    let bus = nats.connect().await?;
    let summary = bus
        .setup()
        .await
        .with_context(|| format!("cannot set up the bus stream at {}", nats.nats_url))?;
    println!("stream    {}", summary.name);
    println!("subjects  {}", summary.subjects.join(" "));
    println!("messages  {}", summary.messages);
    Ok(0)
}
