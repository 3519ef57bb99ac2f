//! Evidence of FrostGate Forge: what the scoreboard publishes and what anyone can check offline.
//!
//! - [`bundle`]: `score.json`, a deterministic `evidence.tar.zst`, a canonical (RFC 8785)
//!   `manifest.json` of their SHA-256 hashes plus scenario metadata, and `verdict.sig`, an Ed25519
//!   signature over the exact manifest bytes.
//! - [`keyring`]: Ed25519 keys per purpose (`verdict`, `audit`) on disk (files 0600, directories
//!   0700, private keys open to others refused), with rotation (due ones at start-up),
//!   revocation, a retention window for retired keys and an exportable public keyset.
//! - [`verify`]: offline verification of a bundle from a directory, bytes or an HTTP(S) base URL
//!   ([`BundleLocation`] tells which a command-line target is).
//! - [`store`]: a write-once evidence store trait, its local-directory and S3 (object lock)
//!   backends and the conformance suite every backend must pass.
//! - [`audit_log`]: the signed, hash-chained, append-only audit log behind
//!   [`forge_core::audit::AuditSink`], and its verifier.
//! - [`http`]: the `/audit/...` key and signature endpoints.
//!
//! The `forge keys|bundle|audit` commands (forge-cli) are thin over these.

pub mod audit_log;
pub mod bundle;
pub mod http;
pub mod keyring;
pub mod store;
pub mod verify;

mod util;

pub use audit_log::{
    AuditLog, AuditLogConfig, AuditLogError, AuditVerifyError, EventSignature, LogReport,
    verify_log,
};
pub use bundle::{ArtifactInput, Bundle, BundleError, BundleInput, BundleMeta, Manifest};
pub use http::{AuditHttpState, audit_router};
pub use keyring::{
    KeyError, KeyPurpose, KeyRecord, KeySet, KeySource, KeyStatus, Keyring, ROTATION_CADENCE,
    Signer, rotate_due_keys,
};
pub use store::{
    EvidenceStore, LocalStore, ObjectKey, PublishedBundle, RetentionMode, S3Config, S3Store,
    StoreError, fetch_bundle, publish_bundle,
};
pub use verify::{
    BundleFiles, BundleLocation, NotABundle, VerifiedBundle, VerifyError, verify_bundle,
    verify_bundle_url,
};
