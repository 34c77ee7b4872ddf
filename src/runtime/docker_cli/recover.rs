//! A lost `docker run` client is not the container's exit.
//!
//! The `docker run` client of a run can end while its container goes on:
//! killed by a signal (an OOM killer's SIGKILL; a client that exits by
//! itself on SIGTERM/SIGINT never does — it forwards those to the
//! container), or cut off from the daemon (exit 125 with "error waiting
//! for container: unexpected EOF" when dockerd dies or restarts). Its exit
//! status then says nothing about the container. Taking it for the
//! container's exit reported a made-up code (137) while the container ran
//! on, unowned — and a restart policy started a second container of the
//! same session beside it.
//!
//! So when the run's client is lost, the stream goes on in two parts:
//!
//! 1. **The real exit**: `docker wait <container>` is started at once (so
//!    that it is registered before the container can end and be removed by
//!    `--rm`) and its answer is the exit code reported. If the container is
//!    already gone, the daemon's `die` event (`docker events --since <run
//!    start> --filter container=<name> --filter event=die`) still carries
//!    its code (the daemon keeps its last 256 events). If neither answers,
//!    or the daemon cannot be reached, the run fails with
//!    [`Error::DockerLost`](crate::Error::DockerLost) — never with a code
//!    that was not the container's.
//!
//! 2. **The rest of the output**: `docker logs --follow <container>`
//!    replays the container's log from its start and follows it to the
//!    container's end. What was already delivered is skipped exactly, per
//!    stream: the replay is cut at the same number of newlines
//!    ([`Position::lines`]) plus the bytes of the unfinished line the lost
//!    client had already passed on ([`Position::tail`]); the line decoder
//!    keeps its state across the switch, so a line cut by the loss is
//!    completed, not split or repeated. Nothing is lost or duplicated as
//!    long as the daemon's log driver can be read back (the default
//!    `json-file` and `local` can) and holds the whole output. Stated
//!    limits: with a log driver that cannot be read (`none`, `syslog`, ...)
//!    or a log rotated past what was delivered, the lines after the loss
//!    are missing (a warning is logged) but the exit code is still the
//!    real one; `json-file` stores invalid UTF-8 as U+FFFD, so the byte
//!    count of an unfinished line holding invalid UTF-8 may be off by a few
//!    bytes (whole lines always line up again at the next newline); the
//!    replay reads the whole log once, which costs time for a very long
//!    one.
//!
//! A replay client that is itself lost is replaced (at most
//! [`MAX_REPLAYS`] times). An exec's client is not recovered (the CLI has
//! no way to re-attach to an exec process); its loss stays `128 + n`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::process::{Child, Command};

use super::admin::run_admin;
use super::{exit, DockerCli};
use crate::error::Error;
use crate::runtime::ProcessEvent;

/// How many replay clients one run may use.
pub(crate) const MAX_REPLAYS: u32 = 3;

/// How long the `die` event look-up may take.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(10);

/// How far one pipe has got in the container's output, in that output's
/// own coordinates: complete lines (newlines) passed to the decoder, and
/// bytes of the current, unfinished line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) lines: u64,
    pub(crate) tail: usize,
}

impl Position {
    /// Account for `data`, about to be decoded.
    pub(crate) fn advance(&mut self, data: &[u8]) {
        match memchr::memrchr(b'\n', data) {
            None => self.tail += data.len(),
            Some(last) => {
                self.lines += memchr::memchr_iter(b'\n', data).count() as u64;
                self.tail = data.len() - last - 1;
            }
        }
    }
}

/// What a replay of the output skips: what was delivered already.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    lines: u64,
    bytes: usize,
}

impl Skip {
    /// Skip up to `pos`.
    pub(crate) fn to(pos: Position) -> Self {
        Skip {
            lines: pos.lines,
            bytes: pos.tail,
        }
    }

    /// The part of `data` not delivered yet.
    pub(crate) fn apply<'a>(&mut self, mut data: &'a [u8]) -> &'a [u8] {
        while self.lines > 0 {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    data = &data[i + 1..];
                    self.lines -= 1;
                }
                None => return &[],
            }
        }
        if self.bytes > 0 {
            let line_end = memchr::memchr(b'\n', data);
            let n = self.bytes.min(line_end.unwrap_or(data.len()));
            data = &data[n..];
            self.bytes -= n;
            if line_end.is_some() {
                // The replayed line is no longer than what was delivered
                // (an invalid UTF-8 byte was stored as U+FFFD, ...): the
                // rest starts at its end, whole lines line up again.
                self.bytes = 0;
            }
        }
        data
    }
}

/// Why the run's client was lost, for messages.
pub(crate) fn lost_reason(signal: Option<i32>, lost_message: Option<&str>) -> String {
    match (signal, lost_message) {
        (Some(sig), _) => format!("the `docker run` client was killed by signal {sig}"),
        (None, Some(message)) => {
            format!("the connection to the Docker daemon broke ({message})")
        }
        (None, None) => "the `docker run` client ended unexpectedly".to_string(),
    }
}

/// `docker wait <container>`, spawned now: it answers with the exit code
/// once the container ends. Killed if dropped.
pub(crate) fn spawn_wait(docker: &DockerCli, container: &str) -> Option<Child> {
    let args = ["wait", container].map(Into::into);
    let mut cmd = docker.command(&args, &[]);
    cmd.kill_on_drop(true);
    cmd.spawn()
        .map_err(|e| tracing::warn!(container, error = %e, "cannot start `docker wait`"))
        .ok()
}

/// `docker logs --follow <container>`: the container's whole output again,
/// followed to its end. Killed if dropped.
pub(crate) fn logs_command(docker: &DockerCli, container: &str) -> Command {
    let args = ["logs", "--follow", container].map(Into::into);
    let mut cmd = docker.command(&args, &[]);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// The container's real end, after its client was lost: the answer of
/// `wait` (see [`spawn_wait`]), else its `die` event, else
/// [`Error::DockerLost`] with `reason`.
pub(crate) async fn real_exit(
    binary: &Path,
    container: &str,
    wait: Option<Child>,
    since: SystemTime,
    reason: &str,
) -> ProcessEvent {
    let lost = |message: String| {
        ProcessEvent::Failed(Error::DockerLost {
            container: container.to_string(),
            message,
        })
    };
    if let Some(wait) = wait {
        match wait.wait_with_output().await {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if let (true, Ok(code)) = (out.status.success(), stdout.trim().parse::<i32>()) {
                    tracing::info!(
                        container,
                        code,
                        "{reason}; the container's own exit code is {code}"
                    );
                    return ProcessEvent::Exited { code };
                }
                let stderr = stderr.trim();
                if exit::daemon_down(stderr) || exit::connection_lost(stderr) {
                    return lost(format!(
                        "{reason}, and the Docker daemon cannot be reached: {}",
                        exit::docker_message(&[stderr.to_string()])
                    ));
                }
                tracing::debug!(
                    container,
                    stderr,
                    "`docker wait` did not answer; looking for the die event"
                );
            }
            Err(e) => tracing::warn!(container, error = %e, "`docker wait` failed"),
        }
    }
    if let Some(code) = die_event_code(binary, container, since).await {
        tracing::info!(
            container,
            code,
            "{reason}; the container's exit code (from its die event) is {code}"
        );
        return ProcessEvent::Exited { code };
    }
    lost(format!(
        "{reason}, and the container ended and was removed before its exit code could be read"
    ))
}

/// The exit code in the daemon's last `die` event of `container` since
/// `since`, if the daemon still has it.
async fn die_event_code(binary: &Path, container: &str, since: SystemTime) -> Option<i32> {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let since = secs(since).saturating_sub(1).to_string();
    let until = (secs(SystemTime::now()) + 1).to_string();
    let filter = format!("container={container}");
    let args = [
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &filter,
        "--filter",
        "event=die",
        "--format",
        "{{index .Actor.Attributes \"exitCode\"}}",
    ]
    .map(Into::into);
    let cmd = DockerCli::with_binary(binary).admin_command(&args);
    let out = run_admin(cmd, binary, EVENTS_TIMEOUT).await.ok()?;
    out.stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<i32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `chunks` through a position, then replay `replay` in
    /// `replay_chunks`-sized pieces through the matching skip.
    fn resumed(delivered: &[&[u8]], replay: &[u8], piece: usize) -> Vec<u8> {
        let mut pos = Position::default();
        for c in delivered {
            pos.advance(c);
        }
        let mut skip = Skip::to(pos);
        let mut rest = Vec::new();
        for c in replay.chunks(piece) {
            rest.extend_from_slice(skip.apply(c));
        }
        rest
    }

    #[test]
    fn a_position_counts_lines_and_the_unfinished_tail() {
        let mut p = Position::default();
        p.advance(b"ab");
        assert_eq!(p, Position { lines: 0, tail: 2 });
        p.advance(b"c\nde\nf");
        assert_eq!(p, Position { lines: 2, tail: 1 });
        p.advance(b"\n");
        assert_eq!(p, Position { lines: 3, tail: 0 });
    }

    #[test]
    fn a_replay_resumes_exactly_after_what_was_delivered() {
        let all = b"one\ntwo\nthree is long\nfour\n";
        for piece in [1, 2, 3, 5, 100] {
            // Cut at a line end, in the middle of a line, at the start.
            assert_eq!(
                resumed(&[b"one\ntwo\n"], all, piece),
                b"three is long\nfour\n"
            );
            assert_eq!(
                resumed(&[b"one\ntw", b"o\nthr"], all, piece),
                b"ee is long\nfour\n"
            );
            assert_eq!(resumed(&[], all, piece), all);
            assert_eq!(resumed(&[all], all, piece), b"");
        }
    }

    #[test]
    fn a_shorter_replayed_line_realigns_at_its_end() {
        // Delivered 5 bytes of a line the log holds as 3 (invalid UTF-8
        // stored differently): the rest starts at the next line.
        assert_eq!(
            resumed(&[b"a\n\xff\xfe\xfdxy"], b"a\nXYZ\nnext\n", 2),
            b"\nnext\n"
        );
    }
}
