//! How a command ends: the [`Outcome`] of one that worked, or the exit code and the one-line
//! message for a person on stderr of one that did not. Every error reaches [`describe`] as an
//! `anyhow::Error`; the gRPC status or transport error inside it decides the exit code, so
//! commands just use `?`.
use std::fmt;

use sluice::api;

/// Exit code: success (for a batch's outcome: it SUCCEEDED).
pub(crate) const EXIT_SUCCESS: u8 = 0;
/// Exit code: any error not listed below.
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit code: the batch FAILED.
pub(crate) const EXIT_BATCH_FAILED: u8 = 3;
/// Exit code: the batch was CANCELLED.
pub(crate) const EXIT_BATCH_CANCELLED: u8 = 4;
/// Exit code: the server is unreachable or UNAVAILABLE.
pub(crate) const EXIT_UNREACHABLE: u8 = 5;

/// What a command that worked tells the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It did what it was asked.
    Done,
    /// It followed a batch to this terminal state.
    Finished(api::BatchState),
}

impl Outcome {
    /// The exit code: 0, or 3 for a FAILED batch, 4 for a CANCELLED one.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Outcome::Finished(api::BatchState::Failed) => EXIT_BATCH_FAILED,
            Outcome::Finished(api::BatchState::Cancelled) => EXIT_BATCH_CANCELLED,
            Outcome::Done | Outcome::Finished(_) => EXIT_SUCCESS,
        }
    }
}

/// The server could not be reached at all (refused, timed out, bad address).
#[derive(Debug)]
pub(crate) struct Unreachable {
    /// The address tried.
    pub(crate) server: String,
    /// Why, in a few words.
    pub(crate) cause: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the Sluice server at {} ({}). Start one with dev/stack up and \
             sluice-server, or set SLUICE_SERVER.",
            self.server, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// The innermost cause of an error, which is the one that says what happened
/// ("Connection refused (os error 111)") rather than where ("transport error").
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// A failed command's exit code, and what to tell the person running it (nothing when the
/// reader of standard output went away, as in `sluice results ID | head`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The exit code.
    pub(crate) code: u8,
    /// The message for stderr, without the `sluice: ` prefix.
    pub(crate) message: Option<String>,
}

fn failure(code: u8, message: String) -> Failure {
    Failure {
        code,
        message: Some(message),
    }
}

/// Whether retrying may help: the server, or the way to it, is down for now. That is
/// UNAVAILABLE from the server, or a call that broke in transit (a server killed mid-stream
/// leaves an UNKNOWN status made on this side, with the transport error as its source; a
/// status the server sent has none).
pub(crate) fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<Unreachable>()
            || cause
                .downcast_ref::<tonic::Status>()
                .is_some_and(|status| match status.code() {
                    tonic::Code::Unavailable => true,
                    tonic::Code::Unknown => std::error::Error::source(status).is_some(),
                    _ => false,
                })
    })
}

/// A few words on what went wrong, for a notice that the CLI is retrying.
pub(crate) fn brief(error: &anyhow::Error) -> String {
    for cause in error.chain() {
        if let Some(unreachable) = cause.downcast_ref::<Unreachable>() {
            return unreachable.cause.clone();
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            return match std::error::Error::source(status) {
                Some(source) => root_cause(source),
                None => status.message().to_owned(),
            };
        }
    }
    format!("{error:#}")
}

/// How `error` ends the CLI when talking to `server`.
pub(crate) fn describe(error: &anyhow::Error, server: &str) -> Failure {
    for cause in error.chain() {
        if let Some(unreachable) = cause.downcast_ref::<Unreachable>() {
            return failure(EXIT_UNREACHABLE, unreachable.to_string());
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            return describe_status(status, server);
        }
        if let Some(io_error) = cause.downcast_ref::<std::io::Error>() {
            if io_error.kind() == std::io::ErrorKind::BrokenPipe {
                return Failure {
                    code: EXIT_SUCCESS,
                    message: None,
                };
            }
        }
    }
    failure(EXIT_ERROR, format!("{error:#}"))
}

fn describe_status(status: &tonic::Status, server: &str) -> Failure {
    use tonic::Code;
    let message = status.message();
    match status.code() {
        Code::InvalidArgument => failure(EXIT_ERROR, format!("invalid request: {message}")),
        Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists => {
            failure(EXIT_ERROR, message.to_owned())
        }
        // A status the client made up from a connection failure carries that failure.
        Code::Unavailable => match std::error::Error::source(status) {
            Some(source) => failure(
                EXIT_UNREACHABLE,
                Unreachable {
                    server: server.to_owned(),
                    cause: root_cause(source),
                }
                .to_string(),
            ),
            None => failure(
                EXIT_UNREACHABLE,
                format!("the Sluice server at {server} is unavailable: {message}"),
            ),
        },
        code => failure(
            EXIT_ERROR,
            format!("the server failed the request ({code:?}): {message}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "http://127.0.0.1:50051";

    fn described(error: impl Into<anyhow::Error>) -> Failure {
        describe(&error.into(), SERVER)
    }

    #[test]
    fn batch_outcomes_have_their_own_codes() {
        assert_eq!(Outcome::Done.exit_code(), 0);
        assert_eq!(Outcome::Finished(api::BatchState::Succeeded).exit_code(), 0);
        assert_eq!(Outcome::Finished(api::BatchState::Failed).exit_code(), 3);
        assert_eq!(Outcome::Finished(api::BatchState::Cancelled).exit_code(), 4);
    }

    #[test]
    fn statuses_speak_to_a_person() {
        let invalid = described(tonic::Status::invalid_argument("chunk_size: 0 is below 1"));
        assert_eq!(
            invalid,
            failure(1, "invalid request: chunk_size: 0 is below 1".into())
        );
        let missing = described(tonic::Status::not_found("batch x not found"));
        assert_eq!(missing, failure(1, "batch x not found".into()));
        let down = described(tonic::Status::unavailable(
            "the queue is unavailable; retry later",
        ));
        assert_eq!(down.code, 5);
        assert_eq!(
            down.message.as_deref(),
            Some("the Sluice server at http://127.0.0.1:50051 is unavailable: the queue is unavailable; retry later")
        );
        assert_eq!(described(tonic::Status::internal("internal error")).code, 1);
    }

    #[test]
    fn an_unreachable_server_gets_advice() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let unreachable = Unreachable {
            server: SERVER.into(),
            cause: root_cause(&refused),
        };
        let described = described(unreachable);
        assert_eq!(described.code, 5);
        let message = described.message.unwrap_or_default();
        assert!(
            message.starts_with("cannot reach the Sluice server at http://127.0.0.1:50051 ("),
            "{message}"
        );
        assert!(message
            .ends_with("Start one with dev/stack up and sluice-server, or set SLUICE_SERVER."));
    }

    #[test]
    fn other_errors_keep_their_context_and_broken_pipes_are_quiet() {
        let error = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("cannot open items.jsonl");
        assert_eq!(
            described(error),
            failure(1, "cannot open items.jsonl: entity not found".into())
        );
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(
            described(pipe),
            Failure {
                code: 0,
                message: None
            }
        );
    }

    #[test]
    fn only_outages_are_transient() {
        assert!(is_transient(&tonic::Status::unavailable("down").into()));
        assert!(!is_transient(&tonic::Status::not_found("gone").into()));
        let broken_in_transit = tonic::Status::from_error(Box::new(std::io::Error::other("reset")));
        assert!(is_transient(&broken_in_transit.into()));
        assert!(!is_transient(
            &tonic::Status::unknown("sent by the server").into()
        ));
        assert!(!is_transient(&anyhow::anyhow!("other")));
    }
}
