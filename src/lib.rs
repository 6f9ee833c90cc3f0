//! Sluice's shared library: the generated gRPC API and what the server, the workers and the CLI
//! share — the batch model, its MongoDB storage, the Redis stream and channel names, the task
//! registry and the connection settings.
//!
//! Data flow: the server validates a batch, writes its chunks and then the batch itself to
//! MongoDB ([`store`]), and adds one message per chunk to a Redis stream ([`broker`]). Workers
//! read chunks through a consumer group, run the named [`tasks`] task, store the results,
//! update the batch's counters and publish a progress event on Redis Pub/Sub, which the server
//! fans out to every watcher.
pub mod api;
pub mod broker;
pub mod config;
pub mod convert;
pub mod error;
pub mod keys;
pub mod lock;
pub mod model;
pub mod progress;
pub mod store;
pub mod tasks;
pub mod telemetry;

pub use error::{Error, Result};
