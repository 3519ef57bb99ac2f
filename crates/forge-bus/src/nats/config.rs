//! The NATS bus's configuration and its checks.

use std::time::Duration;

use crate::BusError;
use crate::messages::subjects;

/// Where and how the bus lives on the NATS server; the defaults are JetStream's where it has
/// one, and the in-process bus's otherwise.
#[derive(Debug, Clone)]
pub struct NatsBusConfig {
    /// The JetStream stream holding every subject of the bus.
    pub stream: String,
    /// The stream's subjects (NATS wildcards allowed); publishing or subscribing elsewhere is
    /// refused.
    pub subjects: Vec<String>,
    /// How long a message id is remembered for dedup (the stream's `duplicate_window`).
    pub dedup_window: Duration,
    /// How long a delivered message may stay un-acked before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries after which the server gives an un-acked message up (`None`: never).
    pub max_deliver: Option<u32>,
    /// Messages kept per subject; the oldest are discarded beyond it.
    pub max_messages_per_subject: i64,
    /// How long one pull request waits at the server before it is sent again.
    pub pull_expiry: Duration,
    /// Bound on every request to the server: stream and consumer set-up, publish.
    pub request_timeout: Duration,
    /// Bound on one ack, nak or publish attempt. Short: a request sent just before the server
    /// died is never answered, and waiting longer only holds a handler's slot (an unanswered
    /// ack is redelivered after `ack_wait`, an unanswered publish is sent again, and both are
    /// idempotent).
    pub ack_timeout: Duration,
}

impl Default for NatsBusConfig {
    fn default() -> Self {
        Self {
            stream: "FORGE".to_owned(),
            subjects: Self::default_subjects(),
            dedup_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_messages_per_subject: 100_000,
            pull_expiry: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(2),
        }
    }
}

impl NatsBusConfig {
    /// The spec's subjects and every dead-letter subject.
    pub fn default_subjects() -> Vec<String> {
        subjects::ALL
            .iter()
            .chain([&subjects::DEAD_LETTERS])
            .map(|s| (*s).to_owned())
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), BusError> {
        let bad = |why: String| Err(BusError::InvalidConfig(why));
        // The stream name is a subject token and a directory name on the server.
        let name_ok = !self.stream.is_empty()
            && !self
                .stream
                .contains(|c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
        if !name_ok {
            return bad(format!("stream name `{}` is not a valid name", self.stream));
        }
        if self.subjects.is_empty() {
            return bad("the stream needs at least one subject".to_owned());
        }
        for s in &self.subjects {
            let tokens: Vec<&str> = s.split('.').collect();
            let ok = tokens.iter().enumerate().all(|(i, t)| {
                !t.is_empty()
                    && !t.contains(|c: char| c.is_whitespace() || c.is_control())
                    && (!t.contains(['*', '>'])
                        || *t == "*"
                        || (*t == ">" && i == tokens.len() - 1))
            });
            if !ok {
                return bad(format!("stream subject `{s}` is not a valid subject"));
            }
        }
        if self.pull_expiry.is_zero()
            || self.request_timeout.is_zero()
            || self.ack_timeout.is_zero()
        {
            return bad("pull expiry, request timeout and ack timeout must be positive".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(NatsBusConfig::default().validate().is_ok());
        for (stream, subjects) in [
            ("A.B", vec!["x"]),
            ("", vec!["x"]),
            ("OK", vec![]),
            ("OK", vec!["a.>.b"]),
            ("OK", vec!["a b"]),
        ] {
            let config = NatsBusConfig {
                stream: stream.to_owned(),
                subjects: subjects.into_iter().map(str::to_owned).collect(),
                ..NatsBusConfig::default()
            };
            assert!(
                matches!(config.validate(), Err(BusError::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }
}
