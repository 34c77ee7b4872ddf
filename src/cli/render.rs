//! How one event is shown, live (`start`, `resume`) or read back (`logs`).
//!
//! Human mode: `Output` lines go to stdout or stderr unchanged (a `partial`
//! piece without its newline, so the pieces join up again); lifecycle
//! events become `cldpd: ...` status lines on stderr; build output is shown
//! only with `-v` (a failed build's tail is part of its error). On a
//! terminal, a live build shows a progress line instead. `--json`: every
//! event as one NDJSON object on stdout, nothing else.

use std::time::SystemTime;

use cldpd::{Event, EventKind, OutputStream};

use super::output::{short_duration, Ui};

/// Renders the events of one session in order.
pub struct Renderer {
    /// A run happening now (progress line allowed, `Error` events left to
    /// the caller, which also knows the error's hint).
    live: bool,
    /// For a resume: the session whose container it runs in.
    resume_of: Option<String>,
    build_started: Option<SystemTime>,
}

impl Renderer {
    /// For a run happening now.
    pub fn live(resume_of: Option<String>) -> Self {
        Renderer {
            live: true,
            resume_of,
            build_started: None,
        }
    }

    /// For a session log read back.
    pub fn replay() -> Self {
        Renderer {
            live: false,
            resume_of: None,
            build_started: None,
        }
    }

    /// Show one event.
    pub fn event(&mut self, ui: &mut Ui, ev: &Event) {
        if ui.json {
            ui.json_line(ev);
            return;
        }
        match &ev.kind {
            EventKind::Output {
                stream,
                line,
                partial,
            } => match stream {
                OutputStream::Stdout => ui.stdout_line(line, !partial),
                OutputStream::Stderr => ui.stderr_line(line, !partial),
            },
            EventKind::Queued { position } => ui.status(format_args!(
                "{} is queued (position {position})",
                ev.session
            )),
            EventKind::BuildStarted { image } => {
                self.build_started = Some(ev.time);
                if self.live && ui.is_tty() {
                    ui.spin_begin(format!("building {image}"));
                } else {
                    ui.status(format_args!("building {image}…"));
                }
            }
            EventKind::BuildOutput { line } => {
                if is_build_step(line) {
                    ui.spin_step(line);
                }
                if ui.verbose {
                    ui.stderr_line(line, true);
                }
            }
            EventKind::BuildComplete { image, cached } => {
                ui.spin_end();
                let took = self
                    .build_started
                    .and_then(|t| ev.time.duration_since(t).ok())
                    .map(short_duration);
                match (cached, took) {
                    (true, _) => ui.status(format_args!("image {image} is up to date")),
                    (false, Some(took)) => ui.status(format_args!("built {image} in {took}")),
                    (false, None) => ui.status(format_args!("built {image}")),
                }
            }
            EventKind::ContainerStarted { attempt, .. } => {
                ui.spin_end();
                match (&self.resume_of, attempt) {
                    (Some(of), _) => {
                        ui.status(format_args!("started {} (resuming {of})", ev.session))
                    }
                    (None, 0) => ui.status(format_args!("started {}", ev.session)),
                    (None, n) => {
                        ui.status(format_args!("started {} again (restart {n})", ev.session))
                    }
                }
            }
            EventKind::Restarting {
                attempt,
                delay_ms,
                reason,
            } => ui.status(format_args!(
                "restarting {} in {} (restart {attempt}): {reason}",
                ev.session,
                short_duration(std::time::Duration::from_millis(*delay_ms))
            )),
            EventKind::ContainerExited { code } => {
                use crate::cli::colour::{on_stderr, paint, Colour};
                ui.spin_end();
                let colour = if *code == 0 {
                    Colour::Green
                } else {
                    Colour::Red
                };
                ui.status(paint(on_stderr(), colour, &format!("exited {code}")));
            }
            EventKind::Error { message, .. } => {
                ui.spin_end();
                if !self.live {
                    ui.status(format_args!("failed: {message}"));
                }
            }
            // A kind added to the library later: say so rather than hide it.
            other => ui.status(format_args!("{}", other.name())),
        }
    }
}

/// True for a line that names a build step: `Step 2/4 : RUN ...` (legacy
/// builder) or `#5 [2/4] RUN ...` (BuildKit).
fn is_build_step(line: &str) -> bool {
    if line.starts_with("Step ") {
        return true;
    }
    let Some(rest) = line.strip_prefix('#') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(" [")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_steps_of_both_builders_are_recognised() {
        assert!(is_build_step("Step 2/4 : RUN [\"/bin/busybox\"]"));
        assert!(is_build_step("#5 [2/4] RUN npm install"));
        assert!(!is_build_step(" ---> Running in 0a1b2c"));
        assert!(!is_build_step("#5 sha256:..."));
        assert!(!is_build_step("#"));
    }
}
