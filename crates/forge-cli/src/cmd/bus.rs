//! `forge bus dead-letters`: the messages consumers gave up on, parked on
//! `deadletter.<subject>` as [`DeadLetter`] envelopes, listed and optionally replayed.
//!
//! Listing reads the stream by sequence ([`NatsBus::stored`]), not through a durable consumer:
//! the stream keeps messages by limits, not by acks, so a consumer's ack would only hide a letter
//! from that one consumer, and a listing through one would either lose letters for the next
//! operator (acking) or hold them for the ack wait (not acking). Reading by sequence moves
//! nothing, so a listing can be repeated and run by several operators at once.
//!
//! `--replay` republishes each letter's original payload on its original subject under the
//! message id `replay:<msg_id>:<sequence of the letter>` (new, so JetStream's dedup does not
//! drop it as the original; stable, so a replay retried within the dedup window after a
//! failure half-way is not delivered twice), and then settles the letter by deleting it from
//! the stream ([`NatsBus::remove_stored`]), so the next listing no longer shows it.

use anyhow::Context;
use clap::Subcommand;
use forge_bus::nats::StoredMessage;
use forge_bus::{Bus, DeadLetter, NatsBus, subjects};
use serde::Serialize;

use super::nats::NatsUrlArg;

/// `forge bus …`
#[derive(Debug, Clone, Subcommand)]
pub enum BusCommand {
    /// List (and with --replay, republish) the dead letters of the bus
    DeadLetters {
        #[command(flatten)]
        nats: NatsUrlArg,
        /// Only the dead letters of this subject (e.g. `scenario.execute`) [default: every
        /// subject of the bus]
        #[arg(long, value_name = "SUBJECT")]
        subject: Option<String>,
        /// Republish each letter's payload on its original subject, then remove the letter
        #[arg(long)]
        replay: bool,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// One dead letter as printed.
#[derive(Debug, Serialize)]
struct Row {
    /// Position of the letter in the stream.
    sequence: u64,
    subject: String,
    msg_id: String,
    delivered: u32,
    reason: String,
    payload_b64: String,
    /// The message id the payload was republished under (`--replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed_as: Option<String>,
}

pub async fn run(cmd: BusCommand) -> anyhow::Result<u8> {
    let BusCommand::DeadLetters {
        nats,
        subject,
        replay,
        json,
    } = cmd;
    let wanted: Vec<String> = match subject {
        Some(s) => {
            if !subjects::ALL.contains(&s.as_str()) {
                anyhow::bail!(
                    "subject `{s}` is not a subject of the bus (one of: {})",
                    subjects::ALL.join(", ")
                );
            }
            vec![s]
        }
        None => subjects::ALL.iter().map(|s| (*s).to_owned()).collect(),
    };
    let bus = nats.connect().await?;
    let mut rows = Vec::new();
    let mut unreadable = 0;
    for subject in &wanted {
        let parked = subjects::dead_letter(subject);
        let stored = bus
            .stored(&parked)
            .await
            .with_context(|| format!("cannot read the dead letters of `{subject}`"))?;
        for message in stored {
            match letter(&message) {
                Ok(letter) => rows.push((message.sequence, letter)),
                Err(e) => {
                    unreadable += 1;
                    eprintln!(
                        "warning: message {} on `{parked}` is not a dead-letter envelope: {e}",
                        message.sequence
                    );
                }
            }
        }
    }

    let mut failed = 0;
    let mut printed = Vec::with_capacity(rows.len());
    for (sequence, letter) in rows {
        let mut row = Row {
            sequence,
            subject: letter.subject.clone(),
            msg_id: letter.msg_id.clone(),
            delivered: letter.delivered,
            reason: letter.reason.clone(),
            payload_b64: letter.payload_b64.clone(),
            replayed_as: None,
        };
        if replay {
            match replay_one(&bus, sequence, &letter).await {
                Ok(id) => row.replayed_as = Some(id),
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "error: cannot replay {} on `{}`: {e:#}",
                        letter.msg_id, letter.subject
                    );
                }
            }
        }
        printed.push(row);
    }
    print_rows(&printed, json, replay)?;
    Ok(u8::from(failed > 0 || unreadable > 0))
}

/// The envelope in `message`, checked against the subject it is parked on.
fn letter(message: &StoredMessage) -> anyhow::Result<DeadLetter> {
    let letter: DeadLetter = serde_json::from_slice(&message.payload)?;
    if subjects::dead_letter(&letter.subject) != message.subject {
        anyhow::bail!(
            "it names subject `{}` but is parked on `{}`",
            letter.subject,
            message.subject
        );
    }
    Ok(letter)
}

/// Republishes `letter`'s payload on its subject, then removes the letter; the message id used.
async fn replay_one(bus: &NatsBus, sequence: u64, letter: &DeadLetter) -> anyhow::Result<String> {
    let payload = letter
        .payload()
        .context("the letter's payload is not base64")?;
    let msg_id = format!("replay:{}:{sequence}", letter.msg_id);
    bus.publish(&letter.subject, &msg_id, payload)
        .await
        .context("republishing")?;
    bus.remove_stored(sequence)
        .await
        .context("republished, but cannot remove the letter")?;
    Ok(msg_id)
}

fn print_rows(rows: &[Row], json: bool, replay: bool) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let width =
        |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let subject_w = width(|r| r.subject.len(), "SUBJECT");
    let id_w = width(|r| r.msg_id.len(), "MSG ID");
    let mut header = format!(
        "{:<subject_w$}  {:<id_w$}  {:>10}  REASON",
        "SUBJECT", "MSG ID", "DELIVERIES"
    );
    if replay {
        header.push_str("  (REPLAYED AS)");
    }
    println!("{header}");
    for r in rows {
        let mut line = format!(
            "{:<subject_w$}  {:<id_w$}  {:>10}  {}",
            r.subject, r.msg_id, r.delivered, r.reason
        );
        if let Some(id) = &r.replayed_as {
            line.push_str(&format!("  ({id})"));
        }
        println!("{line}");
    }
    Ok(())
}
