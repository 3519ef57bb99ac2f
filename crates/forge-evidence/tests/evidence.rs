//! Integration tests of forge-evidence: bundles, keys, verification (local and over HTTP), the
//! evidence store conformance suite (on a local directory, and on S3 with object lock against a
//! SeaweedFS server the tests start), the audit log and its HTTP routes. The
//! `forge keys|bundle|audit` commands are tested in forge-cli.

#[path = "evidence/common.rs"]
mod common;

#[path = "evidence/audit.rs"]
mod audit;
#[path = "evidence/bundle.rs"]
mod bundle;
#[path = "evidence/http.rs"]
mod http;
#[path = "evidence/keys.rs"]
mod keys;
#[path = "evidence/props.rs"]
mod props;
#[path = "evidence/s3.rs"]
mod s3;
#[path = "evidence/store.rs"]
mod store;
