//! The shared library's error type: what can go wrong talking to MongoDB or Redis, and what
//! is wrong with a request. Binaries map it to `tonic::Status` or exit codes in one place each.
use thiserror::Error;

/// Convenient alias for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the shared library can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// A request field breaks a rule; nothing was written.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, as named in the proto (`items[3]`, `chunk_size`, ...).
        field: String,
        /// What is wrong and, where there is one, the limit.
        message: String,
    },
    /// No batch has this id.
    #[error("batch {0} not found")]
    NotFound(String),
    /// The request cannot apply to the batch in its current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request may succeed if retried later (the message says why).
    #[error("{0}")]
    Unavailable(String),
    /// MongoDB failed or is unreachable.
    #[error("mongodb: {0}")]
    Store(#[from] mongodb::error::Error),
    /// Redis failed or is unreachable.
    #[error("redis: {0}")]
    Broker(#[from] fred::error::Error),
    /// A stored document or message does not have the shape this version writes.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl Error {
    /// Builds an [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether retrying the same operation later may succeed (an outage, not a bad request).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Store(_) | Error::Broker(_) | Error::Unavailable(_)
        )
    }

    /// Whether MongoDB or Redis could not be reached at all (as opposed to answering with an
    /// error). A worker waits out an outage holding its chunk, without spending an attempt.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Store(error) => {
                use mongodb::error::{ErrorKind, RETRYABLE_WRITE_ERROR};
                matches!(
                    error.kind.as_ref(),
                    ErrorKind::Io(_)
                        | ErrorKind::ServerSelection { .. }
                        | ErrorKind::ConnectionPoolCleared { .. }
                        | ErrorKind::DnsResolve { .. }
                ) || error.contains_label(RETRYABLE_WRITE_ERROR)
            }
            Error::Broker(error) => {
                use fred::error::ErrorKind;
                matches!(
                    error.kind(),
                    ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Routing
                )
            }
            _ => false,
        }
    }
}

/// The one place errors become gRPC statuses. Request errors carry their field (also as a
/// `google.rpc.BadRequest` detail); store and broker failures become UNAVAILABLE with a generic
/// message (the cause is logged here, not sent to clients); corrupt records are INTERNAL.
impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        use tonic_types::{ErrorDetails, StatusExt};
        match error {
            Error::Invalid { field, message } => {
                let details =
                    ErrorDetails::with_bad_request_violation(field.clone(), message.clone());
                tonic::Status::with_error_details(
                    tonic::Code::InvalidArgument,
                    format!("{field}: {message}"),
                    details,
                )
            }
            Error::NotFound(id) => tonic::Status::not_found(format!("batch {id} not found")),
            Error::FailedPrecondition(message) => tonic::Status::failed_precondition(message),
            Error::Unavailable(message) => tonic::Status::unavailable(message),
            Error::Store(cause) => {
                tracing::warn!(error = %cause, "mongodb operation failed");
                tonic::Status::unavailable("the batch store is unavailable; retry later")
            }
            Error::Broker(cause) => {
                tracing::warn!(error = %cause, "redis operation failed");
                tonic::Status::unavailable("the queue is unavailable; retry later")
            }
            Error::Corrupt { what, detail } => {
                tracing::error!(what, detail, "corrupt record");
                tonic::Status::internal("internal error")
            }
        }
    }
}
