//! Real servers for tests, each on a free loopback port in a temporary directory, stopped by its
//! own PID when the test is done: distributed mode's backends are tested against the real thing.

pub mod nats;
pub mod postgres;
pub mod seaweed;

pub use nats::NatsServer;
pub use postgres::{PgServer, TestDatabase};
