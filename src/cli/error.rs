//! What the CLI reports when it fails, and its exit codes.

use std::fmt;

/// Exit code when cldpd itself failed (bad input, Docker unreachable, build
/// failed, agent not runnable, ...).
pub const EXIT_FAILURE: i32 = 1;

// A usage error (bad flag or argument) exits 2: clap's own exit code.

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
