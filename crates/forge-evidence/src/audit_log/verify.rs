//! Reading and verifying an audit log: the shared chain scanner (used by the writer on open) and
//! [`verify_log`], which adds signature checks and the head comparison.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Checkpoint, GENESIS_HASH, Record, RecordKind, head_path_for, signing_bytes};
use crate::keyring::{KeySource, verify_b64};
use crate::util::sha256_hex;

/// Points at one record of the log, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// 1-based line number in the file.
    pub line: u64,
    /// The seq the record claims, if it parsed.
    pub seq: Option<u64>,
    /// The audit event's id, for event records.
    pub event_id: Option<String>,
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.seq, &self.event_id) {
            (Some(seq), Some(id)) => {
                write!(f, "event seq {seq} (event_id {id}, line {})", self.line)
            }
            (Some(seq), None) => write!(f, "checkpoint seq {seq} (line {})", self.line),
            _ => write!(f, "line {}", self.line),
        }
    }
}

/// What is wrong with an audit log; always the first problem in file order.
#[derive(Debug, thiserror::Error)]
pub enum AuditVerifyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: malformed record: {reason}")]
    Malformed { at: RecordRef, reason: String },
    #[error("line {line}: partial record at the end of the log (no trailing newline)")]
    PartialRecord { line: u64 },
    #[error("{at}: expected seq {expected}: records were deleted or reordered")]
    SeqGap { at: RecordRef, expected: u64 },
    #[error(
        "{at}: prev_hash does not match the previous record: a record was edited, deleted or reordered"
    )]
    BrokenLink { at: RecordRef },
    #[error("{at}: signature does not verify with key `{key_id}`: the record was edited")]
    BadSignature { at: RecordRef, key_id: String },
    #[error("{at}: {reason}")]
    Key { at: RecordRef, reason: String },
    #[error("{at}: checkpoint does not match the log: {reason}")]
    CheckpointMismatch { at: RecordRef, reason: String },
    #[error("{path}: head checkpoint is missing but the log has records")]
    HeadMissing { path: PathBuf },
    #[error("{path}: head checkpoint is invalid: {reason}")]
    HeadInvalid { path: PathBuf, reason: String },
    #[error("head checkpoint mismatch: {reason} (the log was truncated or rolled back)")]
    HeadMismatch { reason: String },
}

/// Summary of a log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    pub records: u64,
    pub events: u64,
    pub checkpoints: u64,
    /// Seq of the last record (0 for an empty log).
    pub last_seq: u64,
    /// SHA-256 of the last line (the genesis hash for an empty log).
    pub head_hash: String,
    /// Records after the head checkpoint (normally 0; see [`AuditVerifyError::HeadMismatch`]
    /// for why a few are accepted).
    pub past_head: u64,
    /// Every key that signed something in the log.
    pub key_ids: BTreeSet<String>,
}

/// One parsed line, handed to the scanner's visitor after the chain checks passed.
pub(crate) struct Scanned {
    pub at: RecordRef,
    pub record: Record,
    /// The line as a JSON value: signatures are checked over this, never a re-serialisation.
    pub raw: Value,
    /// SHA-256 of this line (without the newline).
    pub hash: String,
    /// Events seen so far, this record included.
    pub events: u64,
}

/// Where a scan ended.
#[derive(Debug, Clone)]
pub(crate) struct ScanEnd {
    pub records: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub last_seq: u64,
    pub last_hash: String,
    /// Bytes up to and including the last complete line.
    pub valid_len: u64,
    /// Line number of a trailing line without a newline, if any.
    pub partial_line: Option<u64>,
}

/// Reads the log line by line and checks parse, seq continuity and the prev_hash chain, calling
/// `visit` for every record that passed. A missing file is an empty log.
pub(crate) fn scan(
    path: &Path,
    mut visit: impl FnMut(&Scanned) -> Result<(), AuditVerifyError>,
) -> Result<ScanEnd, AuditVerifyError> {
    let io = |source| AuditVerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut end = ScanEnd {
        records: 0,
        events: 0,
        checkpoints: 0,
        last_seq: 0,
        last_hash: GENESIS_HASH.to_owned(),
        valid_len: 0,
        partial_line: None,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(end),
        Err(e) => return Err(io(e)),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    for line_no in 1u64.. {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') {
            end.partial_line = Some(line_no);
            break;
        }
        let line = &buf[..buf.len() - 1];
        let mut at = RecordRef {
            line: line_no,
            seq: None,
            event_id: None,
        };
        let malformed = |at: &RecordRef, reason: String| AuditVerifyError::Malformed {
            at: at.clone(),
            reason,
        };
        let raw: Value = serde_json::from_slice(line).map_err(|e| malformed(&at, e.to_string()))?;
        let record: Record =
            serde_json::from_value(raw.clone()).map_err(|e| malformed(&at, e.to_string()))?;
        at.seq = Some(record.seq);
        at.event_id = record.event.as_ref().map(|e| e.event_id.clone());
        record
            .check_shape()
            .map_err(|reason| malformed(&at, reason))?;
        let expected = end.last_seq + 1;
        if record.seq != expected {
            return Err(AuditVerifyError::SeqGap { at, expected });
        }
        if record.prev_hash != end.last_hash {
            return Err(AuditVerifyError::BrokenLink { at });
        }
        match record.kind {
            RecordKind::Event => end.events += 1,
            RecordKind::Checkpoint => end.checkpoints += 1,
        }
        let scanned = Scanned {
            at,
            record,
            raw,
            hash: sha256_hex(line),
            events: end.events,
        };
        visit(&scanned)?;
        end.records += 1;
        end.last_seq = scanned.record.seq;
        end.last_hash = scanned.hash;
        end.valid_len += buf.len() as u64;
    }
    Ok(end)
}

/// Checks one record's signature (event or checkpoint) and a checkpoint's claims.
pub(crate) fn check_record(
    s: &Scanned,
    keys: &KeySource,
    now: DateTime<Utc>,
) -> Result<String, AuditVerifyError> {
    let at = &s.at;
    let (key_id, signed, signature) = match s.record.kind {
        RecordKind::Event => {
            let event = s.raw.get("event").cloned().unwrap_or(Value::Null);
            let signature = event
                .get("signature")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (
                s.record.key_id.clone().unwrap_or_default(),
                event,
                signature,
            )
        }
        RecordKind::Checkpoint => {
            let cp = s
                .record
                .checkpoint
                .as_ref()
                .expect("checkpoint records carry a checkpoint");
            let expected = (s.record.seq - 1, s.record.prev_hash.as_str(), s.events);
            if (cp.head_seq, cp.head_hash.as_str(), cp.events) != expected {
                return Err(AuditVerifyError::CheckpointMismatch {
                    at: at.clone(),
                    reason: format!(
                        "it claims seq {} hash {} after {} events, the log has seq {} hash {} after {} events",
                        cp.head_seq, cp.head_hash, cp.events, expected.0, expected.1, expected.2
                    ),
                });
            }
            let raw = s.raw.get("checkpoint").cloned().unwrap_or(Value::Null);
            (cp.key_id.clone(), raw, cp.signature.clone())
        }
    };
    let signature = signature.ok_or_else(|| AuditVerifyError::Malformed {
        at: at.clone(),
        reason: "no signature".into(),
    })?;
    let (key, _) = keys
        .resolve(&key_id, now)
        .map_err(|e| AuditVerifyError::Key {
            at: at.clone(),
            reason: e.to_string(),
        })?;
    let bytes = signing_bytes(signed).map_err(|reason| AuditVerifyError::Malformed {
        at: at.clone(),
        reason,
    })?;
    verify_b64(&key, &bytes, &signature).map_err(|_| AuditVerifyError::BadSignature {
        at: at.clone(),
        key_id: key_id.clone(),
    })?;
    Ok(key_id)
}

/// Reads and checks the signed head file against where the log ends.
pub(crate) fn read_head(path: &Path) -> Result<Option<(Checkpoint, Value)>, AuditVerifyError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditVerifyError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    // Created but never written (a crash right at creation) is the same as absent.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let invalid = |reason: String| AuditVerifyError::HeadInvalid {
        path: path.to_owned(),
        reason,
    };
    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let head: Checkpoint =
        serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))?;
    Ok(Some((head, raw)))
}

pub(crate) fn check_head_signature(
    path: &Path,
    head: &Checkpoint,
    raw: Value,
    keys: &KeySource,
    now: DateTime<Utc>,
) -> Result<(), AuditVerifyError> {
    let invalid = |reason: String| AuditVerifyError::HeadInvalid {
        path: path.to_owned(),
        reason,
    };
    let (key, _) = keys
        .resolve(&head.key_id, now)
        .map_err(|e| invalid(e.to_string()))?;
    let bytes = signing_bytes(raw).map_err(invalid)?;
    let sig = head
        .signature
        .as_deref()
        .ok_or_else(|| invalid("no signature".into()))?;
    verify_b64(&key, &bytes, sig).map_err(|_| {
        invalid(format!(
            "signature does not verify with key `{}`",
            head.key_id
        ))
    })
}

/// What the log holds at the head's seq: the line's hash and the events up to it.
pub(crate) type AtHead = (String, u64);

/// The log must reach the head's record unchanged. Records after it are accepted (each is signed
/// and chained on its own): they appear after a crash between the log write and the head write,
/// or when a live log is read between the two. A log that stops short of the head, or differs at
/// the head's seq, was truncated or rolled back.
pub(crate) fn check_head(
    head: &Checkpoint,
    at_head: &AtHead,
    end: &ScanEnd,
) -> Result<(), AuditVerifyError> {
    let reason = if end.last_seq < head.head_seq {
        format!(
            "head says the log reaches seq {} after {} events, but it ends at seq {} after {} events",
            head.head_seq, head.events, end.last_seq, end.events
        )
    } else if (at_head.0.as_str(), at_head.1) != (head.head_hash.as_str(), head.events) {
        format!(
            "head says seq {} hashes to {} after {} events, the log's seq {} hashes to {} after {} events",
            head.head_seq, head.head_hash, head.events, head.head_seq, at_head.0, at_head.1
        )
    } else {
        return Ok(());
    };
    Err(AuditVerifyError::HeadMismatch { reason })
}

/// Verifies the whole log at `path` and its head file with `keys` now.
pub fn verify_log(path: &Path, keys: &KeySource) -> Result<LogReport, AuditVerifyError> {
    verify_log_at(path, keys, Utc::now())
}

/// Verifies the whole log at `path` and its head file with `keys` as of `now`.
pub fn verify_log_at(
    path: &Path,
    keys: &KeySource,
    now: DateTime<Utc>,
) -> Result<LogReport, AuditVerifyError> {
    let head_path = head_path_for(path);
    let head = read_head(&head_path)?;
    let head_seq = head.as_ref().map_or(0, |(h, _)| h.head_seq);
    let mut at_head: AtHead = (GENESIS_HASH.to_owned(), 0);
    let mut key_ids = BTreeSet::new();
    let end = scan(path, |s| {
        key_ids.insert(check_record(s, keys, now)?);
        if s.record.seq == head_seq {
            at_head = (s.hash.clone(), s.events);
        }
        Ok(())
    })?;
    if let Some(line) = end.partial_line {
        return Err(AuditVerifyError::PartialRecord { line });
    }
    match head {
        None if end.records == 0 => {}
        None => return Err(AuditVerifyError::HeadMissing { path: head_path }),
        Some((head, raw)) => {
            check_head_signature(&head_path, &head, raw, keys, now)?;
            check_head(&head, &at_head, &end)?;
        }
    }
    Ok(LogReport {
        records: end.records,
        events: end.events,
        checkpoints: end.checkpoints,
        last_seq: end.last_seq,
        head_hash: end.last_hash,
        past_head: end.last_seq - head_seq,
        key_ids,
    })
}
