//! What a stored idempotency key means for a new request: the one decision every backend makes
//! the same way, so replays, mismatches and lease takeovers behave identically whatever the
//! database.

use crate::{Began, StoreError};

/// One stored key, as far as [`crate::Store::begin`] needs it. Times are milliseconds since the
/// Unix epoch, the precision both backends store.
pub(crate) struct StoredKey {
    pub request_hash: String,
    pub done: bool,
    pub status: Option<i64>,
    pub body: Option<Vec<u8>>,
    pub locked_until: i64,
    pub expires_at: i64,
}

impl StoredKey {
    /// What this key means for a request with `hash` at `now`; `None`: the caller may claim it.
    ///
    /// PostgreSQL's claim (`postgres::keys::CLAIM`) spells the `None` cases in SQL; the two must
    /// change together.
    pub fn classify(&self, hash: &str, now: i64) -> Result<Option<Began>, StoreError> {
        if self.expires_at <= now {
            return Ok(None);
        }
        if self.request_hash != hash {
            return Ok(Some(Began::Mismatch));
        }
        if self.done {
            let status = self
                .status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| StoreError::Corrupt("done idempotency key without status".into()))?;
            return Ok(Some(Began::Done {
                status,
                body: self.body.clone().unwrap_or_default(),
            }));
        }
        if self.locked_until > now {
            return Ok(Some(Began::InFlight));
        }
        // In flight past its lease: the owner died; the same request may take it over.
        Ok(None)
    }
}
