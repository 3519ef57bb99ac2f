//! Reading the stream itself, for operators (`forge bus dead-letters`): the messages stored on a
//! subject, fetched one by one by sequence (`STREAM.MSG.GET` with `next_by_subj`), and the
//! removal of one of them.
//!
//! No consumer is involved, so reading moves no durable's position and acks nothing: two
//! operators listing the dead letters at once both see all of them, and a service consuming the
//! subject is not disturbed. The stream keeps messages by limits, not by acks, so the only way
//! to take a message out of it is [`NatsBus::remove_stored`].

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::{DeleteMessageErrorKind, LastRawMessageErrorKind, Stream};

use super::NatsBus;
use crate::{BusError, validate_subject};

/// One message as the stream holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub subject: String,
    /// The bus message id (the `Nats-Msg-Id` without its subject prefix); empty when the
    /// message was published without one (not through the bus).
    pub msg_id: String,
    /// Position in the stream; what [`NatsBus::remove_stored`] takes.
    pub sequence: u64,
    pub payload: Vec<u8>,
}

impl NatsBus {
    /// The messages stored on `subject` (a subject of the stream, no wildcards), oldest first.
    /// Reads without a consumer: nothing is acked and nobody's position moves.
    pub async fn stored(&self, subject: &str) -> Result<Vec<StoredMessage>, BusError> {
        validate_subject(subject)?;
        self.check_in_stream(subject)?;
        let stream = self.stream().await?;
        let prefix = format!("{subject} ");
        let mut found = Vec::new();
        let mut next = 1;
        loop {
            let got = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject)
                .send()
                .await;
            let message = match got {
                Ok(m) => m,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => {
                    return Err(BusError::Unavailable(format!(
                        "cannot read `{subject}` from stream {}: {e}",
                        self.inner.config.stream
                    )));
                }
            };
            let msg_id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| {
                    let v = v.as_str();
                    v.strip_prefix(&prefix).unwrap_or(v).to_owned()
                })
                .unwrap_or_default();
            next = message.sequence + 1;
            found.push(StoredMessage {
                subject: message.subject.to_string(),
                msg_id,
                sequence: message.sequence,
                payload: message.payload.to_vec(),
            });
        }
        Ok(found)
    }

    /// Deletes the message at `sequence` from the stream, for every consumer. `false` when
    /// there was none (already removed, or discarded by the stream's limits).
    pub async fn remove_stored(&self, sequence: u64) -> Result<bool, BusError> {
        let stream = self.stream().await?;
        match stream.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            // The server answers an absent message with an error.
            Err(e)
                if matches!(e.kind(), DeleteMessageErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::NO_MESSAGE_FOUND) =>
            {
                Ok(false)
            }
            Err(e) => Err(BusError::Unavailable(format!(
                "cannot delete message {sequence} from stream {}: {e}",
                self.inner.config.stream
            ))),
        }
    }

    pub(super) async fn stream(&self) -> Result<Stream<()>, BusError> {
        let name = &self.inner.config.stream;
        self.inner
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot open stream {name}: {e}")))
    }
}
