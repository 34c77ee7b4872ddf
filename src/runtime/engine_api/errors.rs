//! bollard's errors as cldpd's [`Error`]s: typed by what the engine
//! answered (its HTTP status), never by matching message text, except
//! where the Engine API gives nothing else (an OCI error of an exec or
//! start, which says whether the agent binary is missing).

use bollard::errors::Error as BollardError;

use crate::error::Error;

/// How a failed request ended.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The engine could not be reached (connection refused, socket gone,
    /// connection broken): [`Error::DockerUnavailable`].
    Unreachable(String),
    /// The engine answered with this HTTP status and message.
    Status(u16, String),
    /// Anything else (bad JSON, timeout, ...).
    Other(String),
}

/// Classify a bollard error.
pub(crate) fn failure(e: &BollardError) -> Failure {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Failure::Status(*status_code, message.clone()),
        BollardError::SocketNotFoundError(_)
        | BollardError::HyperLegacyError { .. }
        | BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. } => Failure::Unreachable(with_causes(e)),
        _ => Failure::Other(e.to_string()),
    }
}

/// `e` and the causes under it (`client error (Connect): Connection
/// refused (os error 111)`): hyper's own text alone ("Error in the hyper
/// legacy client: client error (Connect)") does not say what failed.
fn with_causes(e: &BollardError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The usual mapping: unreachable is [`Error::DockerUnavailable`],
/// anything else [`Error::RuntimeFailed`] naming the call.
pub(crate) fn runtime(what: &str, e: &BollardError) -> Error {
    match failure(e) {
        Failure::Unreachable(m) => unavailable(m),
        Failure::Status(status, m) => Error::RuntimeFailed {
            message: format!("{what}: the engine answered {status}: {m}"),
        },
        Failure::Other(m) => Error::RuntimeFailed {
            message: format!("{what}: {m}"),
        },
    }
}

pub(crate) fn unavailable(message: String) -> Error {
    Error::DockerUnavailable { message }
}

/// True when the engine said the container does not exist (404) or is
/// not running (409), i.e. a signal has nothing to reach.
pub(crate) fn gone(e: &BollardError) -> bool {
    matches!(failure(e), Failure::Status(404 | 409, _))
}

/// A stop/kill/remove failure: gone is fine, unreachable is
/// `DockerUnavailable`, anything else `StopFailed`.
pub(crate) fn stop_result(result: Result<(), BollardError>, container: &str) -> Result<(), Error> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(match failure(&e) {
            Failure::Unreachable(m) => unavailable(m),
            Failure::Status(_, m) | Failure::Other(m) => Error::StopFailed {
                container: container.to_string(),
                message: m,
            },
        }),
    }
}

/// An OCI runtime message that says the command is missing (127) or not
/// executable (126); `None` for anything else.
pub(crate) fn not_runnable_code(message: &str) -> Option<i32> {
    let lower = message.to_ascii_lowercase();
    if lower.contains("executable file not found") || lower.contains("no such file or directory") {
        Some(127)
    } else if lower.contains("permission denied") {
        Some(126)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code: code,
            message: message.into(),
        }
    }

    #[test]
    fn gone_is_404_or_409() {
        assert!(gone(&status(404, "No such container: c")));
        assert!(gone(&status(409, "Container c is not running")));
        assert!(!gone(&status(500, "boom")));
        assert!(stop_result(Err(status(404, "x")), "c").is_ok());
        assert!(matches!(
            stop_result(Err(status(500, "boom")), "c"),
            Err(Error::StopFailed { .. })
        ));
        assert!(matches!(
            stop_result(Err(BollardError::SocketNotFoundError("/x".into())), "c"),
            Err(Error::DockerUnavailable { .. })
        ));
    }

    #[test]
    fn an_unreachable_engine_is_described_down_to_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = BollardError::IOError { err: io };
        match failure(&e) {
            Failure::Unreachable(m) => assert!(m.contains("Connection refused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oci_messages() {
        assert_eq!(
            not_runnable_code("exec: \"nope\": executable file not found in $PATH"),
            Some(127)
        );
        assert_eq!(
            not_runnable_code("[FATAL tini (7)] exec /x failed: No such file or directory"),
            Some(127)
        );
        assert_eq!(
            not_runnable_code("exec /etc failed: Permission denied"),
            Some(126)
        );
        assert_eq!(not_runnable_code("something else"), None);
    }
}
