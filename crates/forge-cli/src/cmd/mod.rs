//! One module per command group. Every command returns its exit code (`anyhow::Result<u8>`)
//! and prints its own output to stdout; errors go to stderr from `main`.

pub mod audit;
pub mod billing;
pub mod bundle;
pub mod bus;
pub mod client;
pub mod doctor;
pub mod images;
pub mod keys;
pub mod nats;
pub mod playbook;
pub mod policy;
pub mod report;
pub mod scenarios;
pub mod serve;
pub mod shell;
pub mod template;
pub mod token;
pub mod up;
