//! The subcommands, one module per concern: each takes a connected client, its own arguments
//! and the [`crate::output::Printer`], and returns the [`crate::failure::Outcome`] or an error
//! for [`crate::failure::describe`].
pub(crate) mod batches;
pub(crate) mod health;
pub(crate) mod results;
pub(crate) mod submit;
pub(crate) mod watch;
