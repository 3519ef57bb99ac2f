//! forge_spawn_service over HTTP.

mod auth;
mod billing;
mod idempotency;
mod input;
mod outcomes;
mod pools;
mod rate;
mod training;

use serde_json::{Value, json};

/// A minimal valid body.
pub fn body(track: &str, request_id: &str) -> Value {
    json!({ "track": track, "request_id": request_id })
}
