//! One module per command group.

pub mod client;
pub mod playbook;
pub mod scenarios;
pub mod serve;
pub mod shell;
pub mod template;
pub mod up;
