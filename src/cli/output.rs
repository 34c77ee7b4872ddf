//! Where the CLI's output goes: the container's stdout lines to stdout, its
//! stderr lines and cldpd's own status (`cldpd: ...`) to stderr, or NDJSON
//! on stdout with `--json`; plus the live build-progress line (a spinner)
//! shown on a terminal.
//!
//! Both pipes are buffered and flushed when the caller runs out of work
//! ([`Ui::flush`]) and whenever output switches from one pipe to the other,
//! so that lines written to one terminal keep their order.
//!
//! A stdout that cannot be written is an error, not a silent loss: a closed
//! pipe (`cldpd ... | head -3`) or a full disk (`> /dev/full`). The first
//! failure is said once on stderr and recorded for the whole process
//! ([`stdout_failure`]); the commands that run something then stop it the
//! normal way (SIGTERM, grace, SIGKILL), and the process exits with
//! [`StdoutFailure::exit_code`]: 141 for a broken pipe (128 + SIGPIPE, what
//! a shell reports for a program killed by it, so `set -o pipefail` scripts
//! see the usual code), 1 for any other write error.

use std::fmt::Display;
use std::io::{BufWriter, IsTerminal, Stderr, Stdout, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::CliError;

/// Why stdout could not be written (the first failure of this process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdoutFailure {
    /// The reader of the pipe has gone (`EPIPE`).
    pub broken_pipe: bool,
    /// The error, for the message.
    pub message: String,
}

impl StdoutFailure {
    /// Exit code: 141 (128 + SIGPIPE) for a broken pipe, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.broken_pipe {
            EXIT_BROKEN_PIPE
        } else {
            super::error::EXIT_FAILURE
        }
    }
}

/// Exit code when stdout's reader went away: 128 + SIGPIPE (13).
pub const EXIT_BROKEN_PIPE: i32 = 141;

static STDOUT_FAILURE: std::sync::Mutex<Option<StdoutFailure>> = std::sync::Mutex::new(None);

/// The first stdout write failure of this process, if any.
pub fn stdout_failure() -> Option<StdoutFailure> {
    STDOUT_FAILURE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// How often the spinner redraws.
pub const SPINNER_INTERVAL: Duration = Duration::from_millis(100);

const SPINNER_FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pipe {
    Out,
    Err,
}

struct Spinner {
    label: String,
    step: Option<String>,
    frame: usize,
    drawn: bool,
}

/// The terminal (or pipes) the CLI writes to. See the [module docs](self).
pub struct Ui {
    out: BufWriter<Stdout>,
    err: BufWriter<Stderr>,
    last: Pipe,
    out_closed: bool,
    /// `--json`: events and rows as NDJSON on stdout, no status lines.
    pub json: bool,
    /// `-v`: show build output.
    pub verbose: bool,
    /// stderr is a terminal: animate.
    tty: bool,
    spinner: Option<Spinner>,
}

impl Ui {
    /// Output to this process's stdout and stderr.
    pub fn new(json: bool, verbose: bool) -> Ui {
        Ui {
            out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            err: BufWriter::with_capacity(16 * 1024, std::io::stderr()),
            last: Pipe::Out,
            out_closed: false,
            json,
            verbose,
            tty: std::io::stderr().is_terminal(),
            spinner: None,
        }
    }

    /// True when stderr is a terminal (progress is animated).
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    fn switch_to(&mut self, pipe: Pipe) {
        self.clear_spinner();
        if self.last != pipe {
            match self.last {
                Pipe::Out => self.flush_out(),
                Pipe::Err => {
                    let _ = self.err.flush();
                }
            }
            self.last = pipe;
        }
    }

    fn flush_out(&mut self) {
        if !self.out_closed {
            if let Err(e) = self.out.flush() {
                self.out_failed(e);
            }
        }
    }

    fn write_out(&mut self, bytes: &[u8]) {
        self.switch_to(Pipe::Out);
        if !self.out_closed {
            if let Err(e) = self.out.write_all(bytes) {
                self.out_failed(e);
            }
        }
    }

    /// Stdout failed: say it once, record it for the exit code, write no
    /// more there.
    fn out_failed(&mut self, e: std::io::Error) {
        self.out_closed = true;
        let failure = StdoutFailure {
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
            message: e.to_string(),
        };
        let text = if failure.broken_pipe {
            "cldpd: stdout was closed (its reader has gone); stopping\n".to_string()
        } else {
            format!(
                "cldpd: cannot write to stdout: {}; stopping\n",
                failure.message
            )
        };
        let mut first = STDOUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(failure);
            drop(first);
            self.clear_spinner();
            let _ = self.err.write_all(text.as_bytes());
            let _ = self.err.flush();
        }
    }

    /// True once stdout could not be written: the caller stops what it
    /// runs and exits (see [`stdout_failure`]).
    pub fn out_failed_now(&self) -> bool {
        self.out_closed
    }

    fn write_err(&mut self, bytes: &[u8]) {
        self.switch_to(Pipe::Err);
        let _ = self.err.write_all(bytes);
    }

    /// One line (or, with `newline == false`, the first piece of an
    /// over-long line) of the container's stdout, unchanged.
    pub fn stdout_line(&mut self, text: &str, newline: bool) {
        self.write_out(text.as_bytes());
        if newline {
            self.write_out(b"\n");
        }
    }

    /// One line of the container's stderr, unchanged.
    pub fn stderr_line(&mut self, text: &str, newline: bool) {
        self.write_err(text.as_bytes());
        if newline {
            self.write_err(b"\n");
        }
    }

    /// One NDJSON object on stdout.
    pub fn json_line<T: Serialize + ?Sized>(&mut self, value: &T) {
        // Serialising our own types into a Vec cannot fail.
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.write_out(&line);
    }

    /// Bytes for stdout as they are (a patch).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.write_out(bytes);
    }

    /// Text for stdout as it is (tables, ids, completions).
    pub fn print(&mut self, text: impl Display) {
        self.write_out(text.to_string().as_bytes());
    }

    /// A status line `cldpd: <msg>` on stderr; not shown with `--json`.
    pub fn status(&mut self, msg: impl Display) {
        if !self.json {
            self.notice(msg);
        }
    }

    /// A status line `cldpd: <msg>` on stderr, also shown with `--json`
    /// (for what the user must know: stopping, killing).
    pub fn notice(&mut self, msg: impl Display) {
        self.write_err(format!("cldpd: {msg}\n").as_bytes());
        let _ = self.err.flush();
    }

    /// `cldpd: <message>` and `hint: <hint>` on stderr.
    pub fn error(&mut self, e: &CliError) {
        use super::colour::{on_stderr, paint, Colour};
        let mut text = format!(
            "{} {}\n",
            paint(on_stderr(), Colour::Red, "cldpd:"),
            e.message
        );
        if let Some(hint) = &e.hint {
            text.push_str(&format!("hint: {hint}\n"));
        }
        self.write_err(text.as_bytes());
        self.flush();
    }

    /// Write out everything buffered.
    pub fn flush(&mut self) {
        self.flush_out();
        let _ = self.err.flush();
    }

    // ----- the build-progress line ------------------------------------------

    /// Begin a progress line (on a terminal only; off a terminal the caller
    /// prints a plain status line instead).
    pub fn spin_begin(&mut self, label: impl Into<String>) {
        if self.tty && !self.json {
            self.spinner = Some(Spinner {
                label: label.into(),
                step: None,
                frame: 0,
                drawn: false,
            });
            self.spin_tick();
        }
    }

    /// The current step shown after the label.
    pub fn spin_step(&mut self, step: &str) {
        if let Some(s) = &mut self.spinner {
            s.step = Some(step.trim().to_string());
        }
    }

    /// True while a progress line is shown.
    pub fn spinning(&self) -> bool {
        self.spinner.is_some()
    }

    /// Redraw the progress line with the next frame.
    pub fn spin_tick(&mut self) {
        let Some(s) = &mut self.spinner else {
            return;
        };
        let frame = SPINNER_FRAMES[s.frame % SPINNER_FRAMES.len()];
        s.frame += 1;
        let mut line = format!("{frame} {}", s.label);
        if let Some(step) = &s.step {
            line.push_str(": ");
            line.push_str(step);
        }
        let line = truncate_chars(&line, terminal_width().saturating_sub(1));
        s.drawn = true;
        // Flush stdout first so the line is not drawn over pending output.
        self.flush_out();
        let _ = write!(self.err, "\r\x1b[2K{line}");
        let _ = self.err.flush();
        self.last = Pipe::Err;
    }

    /// Remove the progress line for good.
    pub fn spin_end(&mut self) {
        self.clear_spinner();
        self.spinner = None;
    }

    fn clear_spinner(&mut self) {
        if let Some(s) = &mut self.spinner {
            if s.drawn {
                s.drawn = false;
                let _ = self.err.write_all(b"\r\x1b[2K");
                let _ = self.err.flush();
            }
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.spin_end();
        self.flush();
    }
}

/// The terminal width from `COLUMNS`, else 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(80)
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(since: Duration) -> String {
    let s = since.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A duration for status lines: `0.4s`, `12.0s`, `3m 05s`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

/// A grace period as the user would type it: `10s`, `2.5s`, `0s`.
pub fn grace_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s}s")
    }
}

/// Render rows as a left-aligned table with a header, columns separated by
/// three spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            l.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Time since `start`, for progress messages.
pub fn elapsed(start: Instant) -> String {
    short_duration(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let t = table(
            &["SESSION", "POD", "STATE"],
            &[
                vec!["hello-1a2b3c4d".into(), "hello".into(), "running".into()],
                vec!["x-00000000".into(), "x".into(), "exited".into()],
            ],
        );
        assert_eq!(
            t,
            "SESSION          POD     STATE\n\
             hello-1a2b3c4d   hello   running\n\
             x-00000000       x       exited\n"
        );
    }

    #[test]
    fn durations_read_like_a_human_wrote_them() {
        assert_eq!(age(Duration::from_secs(5)), "5s");
        assert_eq!(age(Duration::from_secs(125)), "2m");
        assert_eq!(age(Duration::from_secs(7300)), "2h");
        assert_eq!(age(Duration::from_secs(200_000)), "2d");
        assert_eq!(short_duration(Duration::from_millis(430)), "0.4s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(grace_text(Duration::from_secs(10)), "10s");
        assert_eq!(grace_text(Duration::from_millis(2500)), "2.5s");
        assert_eq!(grace_text(Duration::ZERO), "0s");
    }

    #[test]
    fn long_progress_lines_are_cut() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
    }
}
