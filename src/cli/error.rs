//! What the CLI reports when it fails, and its exit codes.

use std::fmt;

/// Exit code when cldpd itself failed (bad input, Docker unreachable, build
/// failed, agent not runnable, ...).
pub const EXIT_FAILURE: i32 = 1;

// A usage error (bad flag or argument) exits 2: clap's own exit code.

/// Exit code when one of cldpd's own limits ended a run: `timeoutSecs`,
/// `idleTimeoutSecs`, or the restart limit when the last attempt did not
/// exit with a code of its own (as `timeout(1)` exits 124).
pub const EXIT_LIMIT: i32 = 124;

/// The process exit code for a run that ended with `e`: the agent's last
/// exit code when the restart limit ended it, [`EXIT_LIMIT`] for cldpd's
/// own timeouts and limits, else [`EXIT_FAILURE`].
pub fn exit_code_for_error(e: &cldpd::Error) -> i32 {
    match e {
        cldpd::Error::RestartLimit {
            exit_code: Some(code),
            ..
        } => exit_code_for(*code),
        cldpd::Error::RestartLimit { .. } | cldpd::Error::Timeout { .. } => EXIT_LIMIT,
        _ => EXIT_FAILURE,
    }
}

/// A failure of the CLI: one line saying what went wrong, and what to do
/// about it when that is known. Printed as `cldpd: <message>` and
/// `hint: <hint>` on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl CliError {
    /// An error without a hint.
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    /// Add a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<cldpd::Error> for CliError {
    fn from(e: cldpd::Error) -> Self {
        CliError {
            message: e.to_string(),
            hint: e.hint(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The process exit code for a container's exit code: itself when it fits
/// in an exit status (0..=255), else [`EXIT_FAILURE`].
pub fn exit_code_for(container_code: i32) -> i32 {
    if (0..=255).contains(&container_code) {
        container_code
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_codes_pass_through_and_odd_ones_become_failure() {
        assert_eq!(exit_code_for(0), 0);
        assert_eq!(exit_code_for(7), 7);
        assert_eq!(exit_code_for(143), 143);
        assert_eq!(exit_code_for(-1), EXIT_FAILURE);
        assert_eq!(exit_code_for(256), EXIT_FAILURE);
    }

    #[test]
    fn limits_exit_124_and_the_restart_limit_keeps_the_agent_code() {
        let limit = |exit_code| cldpd::Error::RestartLimit {
            restarts: 2,
            within: std::time::Duration::from_secs(60),
            last: "exited with code 3".into(),
            exit_code,
        };
        assert_eq!(exit_code_for_error(&limit(Some(3))), 3);
        assert_eq!(exit_code_for_error(&limit(None)), EXIT_LIMIT);
        let timeout = cldpd::Error::Timeout {
            kind: cldpd::TimeoutKind::Idle,
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(exit_code_for_error(&timeout), EXIT_LIMIT);
        assert_eq!(exit_code_for_error(&cldpd::Error::Stopped), EXIT_FAILURE);
    }

    #[test]
    fn library_errors_keep_their_hint() {
        let e: CliError = cldpd::Error::PodNotFound {
            name: "web".into(),
            pods_dir: "/p".into(),
            available: vec!["api".into(), "hello".into()],
        }
        .into();
        assert!(e.message.contains("`web`"), "{}", e.message);
        assert_eq!(e.hint.as_deref(), Some("pods that exist: api, hello"));
    }
}
