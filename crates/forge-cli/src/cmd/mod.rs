//! One module per command group.

pub mod scenarios;
pub mod serve;
pub mod template;
