//! What the exit of a `docker run` / `docker exec` client means.
//!
//! The docker client exits with the container's code, except for three
//! codes it reserves (and which an agent should therefore not use):
//!
//! | code | meaning | becomes |
//! |---|---|---|
//! | 125 | docker itself failed (bad option, missing mount source, name in use, daemon down) | [`Error::DockerFailed`] (or [`Error::DockerUnavailable`]) |
//! | 126 | the command cannot be executed | [`Error::AgentNotRunnable`] |
//! | 127 | the command was not found | [`Error::AgentNotRunnable`] |
//!
//! `docker exec` additionally exits 1 with "No such container" / "is not
//! running" when its target is gone, which becomes
//! [`Error::SessionNotFound`]; and this engine (20.10) reports a missing
//! exec binary as 126 with "executable file not found", which is
//! classified as 127 (not found) like `docker run` does.
//!
//! [`Error::DockerFailed`]: crate::Error::DockerFailed
//! [`Error::DockerUnavailable`]: crate::Error::DockerUnavailable
//! [`Error::AgentNotRunnable`]: crate::Error::AgentNotRunnable
//! [`Error::SessionNotFound`]: crate::Error::SessionNotFound

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Longest stderr line kept for an error message (in bytes, roughly).
const TAIL_LINE_MAX: usize = 2000;

/// True when docker's output says the daemon cannot be reached.
pub(crate) fn daemon_down(text: &str) -> bool {
    text.contains("Cannot connect to the Docker daemon")
        || text.contains("Is the docker daemon running")
        // The client could not set up its connection (for example
        // DOCKER_TLS_VERIFY with certificates missing from DOCKER_CERT_PATH).
        || text.contains("unable to resolve docker endpoint")
        // Plain HTTP sent to an engine's TLS port (DOCKER_TLS_VERIFY unset).
        || text.contains("Client sent an HTTP request to an HTTPS server")
}

/// True when docker's output says its connection to the daemon broke in
/// the middle of a request: the daemon died or restarted while a container
/// ran or an image was built. The messages, as seen from client 28 against
/// engine 20.10 when the daemon was killed:
///
/// - `docker run`, mid-run (exit 125): `time="…" level=error msg="error
///   waiting for container: unexpected EOF"`;
/// - `docker build`, mid-step (exit 1): a last line `unexpected EOF`;
/// - a request the daemon dropped: `error during connect: Post "…": EOF`;
/// - over TCP: `… connection reset by peer`;
/// - `docker build` whose upload of the context was cut (the engine
///   answered and closed, e.g. plain HTTP sent to a TLS port): `Can't add
///   file … to tar: io: read/write on closed pipe`, or, when the
///   engine's close came first, `read tcp A->B: use of closed network
///   connection` (seen once in CI: the same plain-HTTP-to-TLS build).
///
/// A bare `unexpected EOF` line may also be a build step's own output, so
/// callers confirm with the daemon before calling it lost.
pub(crate) fn connection_lost(text: &str) -> bool {
    text.contains("error waiting for container")
        || text.contains("error during connect")
        || text.contains("connection reset by peer")
        || text.contains("read/write on closed pipe")
        || text.contains("use of closed network connection")
        || text.lines().any(|l| {
            let l = l.trim();
            l == "unexpected EOF" || l == "EOF" || l.ends_with(": EOF")
        })
}

/// True when docker's output says the container does not exist or is not
/// running (so a signal or an exec has nothing to reach).
pub(crate) fn container_gone(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("no such container")
        || lower.contains("is not running")
        // `--rm` already removing it after its exit (seen after `docker stop`).
        || lower.contains("is already in progress")
}

/// True for a stderr line that the docker client itself writes when a
/// request fails (as opposed to output of the process in the container).
pub(crate) fn looks_like_docker_error(line: &str) -> bool {
    let line = line.strip_prefix("docker: ").unwrap_or(line);
    line.starts_with("Error response from daemon:")
        || line.starts_with("Error: ")
        || daemon_down(line)
        || logrus_message(line).is_some()
        || connection_lost(line)
}

/// True for a stderr line in a shape `docker run` itself writes when it
/// fails: `docker: …` (client 28 prefixes its errors so), `Error response
/// from daemon: …`, a logrus error line, or a daemon that cannot be reached
/// or went away. Narrower than [`looks_like_docker_error`]: a plain
/// `Error: …` is more likely the agent's own.
pub(crate) fn looks_like_docker_run_error(line: &str) -> bool {
    line.starts_with("docker: ")
        || line.starts_with("Error response from daemon:")
        || daemon_down(line)
        || logrus_message(line).is_some()
        || connection_lost(line)
}

/// True for the lines docker prints around its own error message: a blank
/// line and the `Run 'docker run --help'` footer.
pub(crate) fn docker_error_filler(line: &str) -> bool {
    let line = line.trim();
    line.is_empty()
        || ((line.starts_with("Run '") || line.starts_with("See '")) && line.contains("--help"))
}

/// The message of a line the docker client logged with logrus at error
/// level or worse (`time="…" level=error msg="…"`), unquoted.
fn logrus_message(line: &str) -> Option<String> {
    if !line.starts_with("time=\"") {
        return None;
    }
    let level = ["level=error ", "level=fatal ", "level=panic "]
        .iter()
        .any(|l| line.contains(l));
    let (_, msg) = line.split_once(" msg=")?;
    if !level {
        return None;
    }
    let msg = msg.trim();
    // A Go-quoted string (possibly followed by fields): unquote it.
    match msg.strip_prefix('"') {
        Some(rest) => {
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(other) => out.push(other),
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            Some(out)
        }
        None => Some(msg.split_whitespace().next().unwrap_or("").to_string()),
    }
}

/// The exit code of a process, `128 + n` when signal `n` killed it.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// Which client produced the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `docker run`.
    Run,
    /// `docker exec`.
    Exec,
}

/// The meaning of an exit; turned into a `ProcessEvent` by the caller, which
/// knows the image and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A normal exit of the process in the container.
    Exited(i32),
    /// Docker failed (125) with this message.
    DockerFailed(String),
    /// The daemon could not be reached.
    DockerUnavailable(String),
    /// The connection to the daemon broke while the container ran (see
    /// [`connection_lost`]): the container's fate is unknown.
    DockerLost(String),
    /// The command is missing (127) or not executable (126).
    AgentNotRunnable {
        /// 126 or 127.
        code: i32,
        /// Docker's stderr.
        message: String,
    },
    /// The exec target is not running.
    SessionNotFound,
}

/// Classify an exit.
///
/// `tail` holds the last stderr lines of the client (of both pipes for an
/// exec, whose OCI errors go to stdout), already sent as output. `held` is `Some` for an exec whose only output so far is
/// docker-client error lines, which were held back; those are what decide
/// "no such container".
pub(crate) fn classify(kind: Kind, code: i32, tail: &[String], held: Option<&[String]>) -> Outcome {
    if kind == Kind::Exec && code != 0 {
        if let Some(held) = held.filter(|h| !h.is_empty()) {
            let text = held.join("\n");
            if daemon_down(&text) {
                return Outcome::DockerUnavailable(docker_message(held));
            }
            if container_gone(&text) {
                return Outcome::SessionNotFound;
            }
        }
    }
    match code {
        125 => {
            let message = docker_message(tail);
            if daemon_down(&message) {
                Outcome::DockerUnavailable(message)
            } else if connection_lost(&message) {
                Outcome::DockerLost(message)
            } else {
                Outcome::DockerFailed(message)
            }
        }
        126 | 127 => {
            let message = docker_message(tail);
            let lower = message.to_ascii_lowercase();
            let not_found = lower.contains("executable file not found")
                || lower.contains("no such file or directory");
            Outcome::AgentNotRunnable {
                code: if not_found { 127 } else { code },
                message,
            }
        }
        _ => Outcome::Exited(code),
    }
}

/// Docker's message from its stderr lines: blank lines and the "Run
/// 'docker run --help'" footer dropped, the `docker: ` prefix removed, a
/// logrus line (`time="…" level=error msg="…"`) reduced to its message.
pub(crate) fn docker_message(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !docker_error_filler(l))
        .map(|l| l.strip_prefix("docker: ").unwrap_or(l))
        .map(|l| logrus_message(l).unwrap_or_else(|| l.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of `line` short enough for an error message.
pub(crate) fn clip(line: &str) -> String {
    if line.len() <= TAIL_LINE_MAX {
        return line.to_string();
    }
    let mut cut = TAIL_LINE_MAX;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ordinary_codes_are_exits() {
        for code in [0, 1, 3, 124, 128, 137, 143] {
            assert_eq!(
                classify(Kind::Run, code, &v(&["oops"]), None),
                Outcome::Exited(code)
            );
        }
    }

    #[test]
    fn code_125_is_dockers_own_failure_with_its_message() {
        let tail = v(&[
            "docker: Error response from daemon: invalid mount config for type \"bind\": bind source path does not exist: /nope",
            "",
            "Run 'docker run --help' for more information",
        ]);
        assert_eq!(
            classify(Kind::Run, 125, &tail, None),
            Outcome::DockerFailed(
                "Error response from daemon: invalid mount config for type \"bind\": bind source path does not exist: /nope"
                    .into()
            )
        );
    }

    #[test]
    fn code_125_with_daemon_down_is_unavailable() {
        let tail = v(&["docker: Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"]);
        assert!(
            matches!(classify(Kind::Run, 125, &tail, None), Outcome::DockerUnavailable(m) if m.starts_with("Cannot connect"))
        );
    }

    /// The messages seen when the daemon (engine 20.10, client 28) was
    /// killed mid-run and mid-build.
    #[test]
    fn a_daemon_lost_mid_run_is_lost_not_dockers_own_failure() {
        let tail = v(&[
            "line 9",
            "time=\"2026-11-30T20:52:17Z\" level=error msg=\"error waiting for container: unexpected EOF\"",
        ]);
        assert_eq!(
            classify(Kind::Run, 125, &tail[1..], None),
            Outcome::DockerLost("error waiting for container: unexpected EOF".into())
        );
        assert!(looks_like_docker_error(&tail[1]));
        assert!(!looks_like_docker_error(&tail[0]));
        assert!(connection_lost("unexpected EOF"));
        assert!(connection_lost(
            "error during connect: Post \"http://%2Ftmp%2Fd%2Fdocker.sock/v1.41/build?q=1\": EOF"
        ));
        assert!(connection_lost(
            "read tcp 10.0.0.1:50000->10.0.0.2:2376: read: connection reset by peer"
        ));
        assert!(!connection_lost(
            "sh: syntax error: unexpected EOF while looking for `\"'"
        ));
        assert!(connection_lost(
            "time=\"2026-12-01T05:21:06Z\" level=error msg=\"Can't add file /p/busybox to tar: io: read/write on closed pipe\""
        ));
        assert!(connection_lost(
            "read tcp 127.0.0.1:58996->127.0.0.1:2376: use of closed network connection"
        ));
        assert!(!connection_lost("invalid mount config for type \"bind\""));
        // Info-level logrus lines are not errors.
        assert!(!looks_like_docker_error(
            "time=\"2026-11-30T20:52:17Z\" level=info msg=\"hello\""
        ));
        assert!(docker_error_filler(""));
        assert!(docker_error_filler(
            "Run 'docker run --help' for more information"
        ));
    }

    #[test]
    fn codes_126_and_127_are_agent_not_runnable() {
        let tail = v(&["[FATAL tini (7)] exec nope failed: No such file or directory"]);
        assert_eq!(
            classify(Kind::Run, 127, &tail, None),
            Outcome::AgentNotRunnable {
                code: 127,
                message: tail[0].clone()
            }
        );
        let tail = v(&["[FATAL tini (6)] exec /etc failed: Permission denied"]);
        assert!(matches!(
            classify(Kind::Run, 126, &tail, None),
            Outcome::AgentNotRunnable { code: 126, .. }
        ));
        // docker exec on 20.10 reports a missing binary as 126.
        let tail = v(&["OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown"]);
        assert!(matches!(
            classify(Kind::Exec, 126, &tail, None),
            Outcome::AgentNotRunnable { code: 127, .. }
        ));
    }

    #[test]
    fn exec_into_a_gone_container_is_session_not_found() {
        let held = v(&["Error response from daemon: No such container: c1"]);
        assert_eq!(
            classify(Kind::Exec, 1, &held, Some(&held)),
            Outcome::SessionNotFound
        );
        let held = v(&["Error response from daemon: Container 52033 is not running"]);
        assert_eq!(
            classify(Kind::Exec, 1, &held, Some(&held)),
            Outcome::SessionNotFound
        );
        // Once the process produced output, exit 1 is its own.
        assert_eq!(classify(Kind::Exec, 1, &held, None), Outcome::Exited(1));
        // docker run never maps to SessionNotFound.
        assert_eq!(
            classify(Kind::Run, 1, &held, Some(&held)),
            Outcome::Exited(1)
        );
        let held = v(&[
            "Cannot connect to the Docker daemon at unix:///x. Is the docker daemon running?",
        ]);
        assert!(matches!(
            classify(Kind::Exec, 1, &held, Some(&held)),
            Outcome::DockerUnavailable(_)
        ));
    }

    #[test]
    fn signals_become_128_plus_n() {
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    }

    #[test]
    fn markers() {
        assert!(container_gone(
            "Error response from daemon: Cannot kill container: c: No such container: c"
        ));
        assert!(container_gone(
            "Error response from daemon: Container abc is not running"
        ));
        assert!(container_gone(
            "Error response from daemon: removal of container c is already in progress"
        ));
        assert!(!container_gone(
            "Error response from daemon: Invalid signal: BOGUS"
        ));
        assert!(daemon_down("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"));
        assert!(daemon_down("Failed to initialize: unable to resolve docker endpoint: open /c/ca.pem: no such file or directory"));
        assert!(looks_like_docker_error(
            "Error response from daemon: No such container: x"
        ));
        assert!(!looks_like_docker_error("warning: something in the agent"));
        let long = "é".repeat(3000);
        assert!(clip(&long).len() <= TAIL_LINE_MAX + 3);
    }
}
