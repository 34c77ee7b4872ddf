//! How one event is shown, live (`start`, `resume`) or read back (`logs`).
//!
//! Human mode: `Output` lines go to stdout or stderr unchanged (a `partial`
//! piece without its newline, so the pieces join up again); lifecycle
//! events become `cldpd: ...` status lines on stderr; build output is shown
//! only with `-v` (a failed build's tail is part of its error). On a
//! terminal, a live build shows a progress line instead. `--json`: every
//! event as one NDJSON object on stdout, nothing else.
//!
//! Claude Code agents (stream-json): the raw JSON lines are not shown;
//! their typed events are — the agent's text on stdout, each tool call as
//! `cldpd: ▸ Bash: <short input>` and its result's first line on stderr,
//! and the end as `cldpd: success in 4 turns, $0.0123, 45 s`. A stdout line
//! that starts with `{` is held until the next event: an agent event after
//! it means it was a stream-json line (dropped), anything else prints it.
//!
//! Long-lived agents (`agentInput: "stream-json"`): each prompt that
//! reaches the agent is `cldpd: prompt: <its first line>`, waiting for a
//! follow-up is `cldpd: idle after 2 turns; waiting 10m for a follow-up
//! (…)`, turns themselves show nothing more. The work's branch (pod.json
//! `repo`) is the last line: `cldpd: work is on branch cldpd/<id> (3
//! commits)`, after the exit line (live: after the error too, see
//! [`Renderer::finish`]).

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
    /// A stdout line starting with `{`, held until the next event says
    /// whether it was a stream-json line.
    held: Option<String>,
    /// Pieces of a split `{` line of an agent run, dropped.
    skipping: bool,
    /// An agent (stream-json) run: seen `agent_init`.
    agent: bool,
    /// `start -i`: follow-ups come from this terminal.
    attached: bool,
    /// The `branch` line, shown last.
    branch: Option<String>,
}

impl Renderer {
    /// For a run happening now.
    pub fn live(resume_of: Option<String>) -> Self {
        Renderer {
            live: true,
            resume_of,
            build_started: None,
            held: None,
            skipping: false,
            agent: false,
            attached: false,
            branch: None,
        }
    }

    /// For a session log read back.
    pub fn replay() -> Self {
        Renderer {
            live: false,
            resume_of: None,
            build_started: None,
            held: None,
            skipping: false,
            agent: false,
            attached: false,
            branch: None,
        }
    }

    /// Follow-ups come from this terminal (`start -i`): the idle line says
    /// so.
    pub fn attached(mut self, attached: bool) -> Self {
        self.attached = attached;
        self
    }

    /// Show what is still held back once the run has ended: the `branch`
    /// line (live, it comes after the outcome, which the caller shows).
    pub fn finish(&mut self, ui: &mut Ui) {
        if let Some(line) = self.branch.take() {
            ui.status(line);
        }
    }

    /// Show one event.
    pub fn event(&mut self, ui: &mut Ui, ev: &Event) {
        if ui.json {
            ui.json_line(ev);
            return;
        }
        if let Some(held) = self.held.take() {
            if !ev.kind.is_agent() {
                ui.stdout_line(&held, true);
            }
        }
        match &ev.kind {
            EventKind::Output {
                stream: OutputStream::Stdout,
                line,
                partial,
            } => {
                if self.skipping {
                    self.skipping = *partial;
                } else if *partial && self.agent && line.starts_with('{') {
                    self.skipping = true;
                } else if !partial && line.starts_with('{') {
                    self.held = Some(line.clone());
                } else {
                    ui.stdout_line(line, !partial);
                }
            }
            EventKind::Output {
                stream: OutputStream::Stderr,
                line,
                partial,
            } => ui.stderr_line(line, !partial),
            EventKind::AgentInit(boxed) => {
                let cldpd::AgentInit { model, version, .. } = &**boxed;
                self.agent = true;
                ui.status(format_args!("agent: Claude Code {version}, model {model}"));
            }
            EventKind::AgentText { text } => {
                for line in text.lines() {
                    ui.stdout_line(line, true);
                }
            }
            EventKind::ToolUse(boxed) => {
                let cldpd::ToolUse { tool, input, .. } = &**boxed;
                ui.status(format_args!("▸ {tool}: {}", short_input(input)))
            }
            EventKind::ToolResult {
                is_error,
                first_line,
                size,
                ..
            } => {
                let more = if *size as usize > first_line.len() {
                    " …"
                } else {
                    ""
                };
                if *is_error {
                    ui.status(format_args!("  ✗ {first_line}{more}"));
                } else if !first_line.is_empty() {
                    ui.status(format_args!("  ↳ {first_line}{more}"));
                }
            }
            EventKind::AgentResult(_) => ui.status(result_line(&ev.kind)),
            EventKind::AgentApiError(_) => ui.status(api_error_line(&ev.kind)),
            EventKind::AgentUnknown { .. } | EventKind::AgentTurn { .. } => {}
            EventKind::AgentPrompt { text, .. } => {
                ui.status(format_args!("prompt: {}", prompt_line(text)))
            }
            EventKind::Idle {
                turns,
                keep_alive_ms,
            } => {
                if *keep_alive_ms > 0 {
                    ui.status(idle_line(
                        &ev.session,
                        *turns,
                        *keep_alive_ms,
                        self.attached,
                    ));
                }
            }
            EventKind::Branch { name, commits, .. } => {
                self.branch = Some(branch_line(name, *commits));
            }
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
                if !self.live {
                    self.finish(ui);
                }
            }
            EventKind::Error { message, .. } => {
                ui.spin_end();
                if !self.live {
                    ui.status(format_args!("failed: {message}"));
                    self.finish(ui);
                }
            }
            // A kind added to the library later: say so rather than hide it.
            other => ui.status(format_args!("{}", other.name())),
        }
    }
}

/// Characters of a prompt shown in its `prompt:` line.
const PROMPT_SHOWN: usize = 72;

/// A prompt in one line: its first non-blank line, cut, `…` when there
/// is more.
pub fn prompt_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let mut line = super::output::truncate_chars(first, PROMPT_SHOWN);
    if lines.next().is_some() && !line.ends_with('…') {
        line.push_str(" …");
    }
    line
}

/// `idle after 2 turns; waiting 10m for a follow-up (cldpd resume <id>
/// --prompt …)`; attached (`start -i`), the follow-up is typed here.
pub fn idle_line(session: &str, turns: u32, keep_alive_ms: u64, attached: bool) -> String {
    let plural = if turns == 1 { "" } else { "s" };
    let wait = keep_alive_text(std::time::Duration::from_millis(keep_alive_ms));
    let how = if attached {
        "type it here, one line; Ctrl-D ends".to_string()
    } else {
        format!("cldpd resume {session} --prompt …")
    };
    format!("idle after {turns} turn{plural}; waiting {wait} for a follow-up ({how})")
}

/// A duration as a user would write it: `30s`, `10m`, `1h 30m`, `7d`,
/// `1.5s`.
pub fn keep_alive_text(d: std::time::Duration) -> String {
    if d.subsec_millis() != 0 && d.as_secs() < 60 {
        return super::output::grace_text(d);
    }
    let mut left = d.as_secs();
    let mut parts = Vec::new();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= secs {
            parts.push(format!("{}{unit}", left / secs));
            left %= secs;
        }
    }
    if parts.is_empty() {
        return "0s".into();
    }
    parts.join(" ")
}

/// `work is on branch cldpd/<id> (3 commits)`.
pub fn branch_line(name: &str, commits: usize) -> String {
    let plural = if commits == 1 { "" } else { "s" };
    format!("work is on branch {name} ({commits} commit{plural})")
}

/// `rate limited (HTTP 429): the agent retries in 1.0 s (attempt 1)` for
/// an `agent_api_error`.
pub fn api_error_line(kind: &EventKind) -> String {
    let EventKind::AgentApiError(boxed) = kind else {
        return String::new();
    };
    let cldpd::AgentApiError {
        code,
        status,
        message,
        retry_in_ms,
        attempt,
    } = &**boxed;
    let what = match code.as_str() {
        "rate_limited" => "rate limited",
        _ => "API error",
    };
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    let first = message.lines().next().unwrap_or_default();
    let mut line = format!("! {what}{status}: {first}");
    if let Some(ms) = retry_in_ms {
        line.push_str(&format!(
            "; the agent retries in {}",
            short_duration(std::time::Duration::from_millis(*ms))
        ));
        if let Some(n) = attempt {
            line.push_str(&format!(" (attempt {n})"));
        }
    }
    line
}

/// A tool's input in one short line: the command, path or pattern it
/// names, else its JSON; at most 100 characters.
pub fn short_input(input: &serde_json::Value) -> String {
    let main = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "description",
    ]
    .iter()
    .find_map(|k| input[*k].as_str())
    .map(str::to_string)
    .unwrap_or_else(|| input.to_string());
    let one_line = main.lines().next().unwrap_or_default();
    let mut out: String = one_line.chars().take(100).collect();
    if out.len() < main.len() {
        out.push('…');
    }
    out
}

/// `success in 4 turns, $0.0123, 45 s` for an `agent_result`.
pub fn result_line(kind: &EventKind) -> String {
    let EventKind::AgentResult(boxed) = kind else {
        return String::new();
    };
    let cldpd::AgentResult {
        subtype,
        is_error,
        turns,
        cost_usd,
        duration_ms,
        api_error_status,
        ..
    } = &**boxed;
    let what = match (is_error, subtype.as_str(), api_error_status) {
        (false, s, _) => s.to_string(),
        (true, "success", Some(status)) => format!("API error {status}"),
        (true, "success", None) => "error".to_string(),
        (true, s, _) => s.to_string(),
    };
    let plural = if *turns == 1 { "" } else { "s" };
    format!(
        "{what} in {turns} turn{plural}, ${:.4}, {}",
        cost_usd.0,
        short_duration(std::time::Duration::from_millis(*duration_ms))
    )
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
    use cldpd::AgentResult;

    #[test]
    fn agent_results_and_inputs_read_in_one_line() {
        let ok = EventKind::AgentResult(Box::new(AgentResult {
            subtype: "success".into(),
            is_error: false,
            turns: 4,
            cost_usd: cldpd::event::Usd(0.0123),
            duration_ms: 45_000,
            usage: Default::default(),
            result: None,
            terminal_reason: None,
            api_error_status: None,
        }));
        assert_eq!(result_line(&ok), "success in 4 turns, $0.0123, 45.0s");
        let failed = EventKind::AgentResult(Box::new(AgentResult {
            subtype: "success".into(),
            is_error: true,
            turns: 1,
            cost_usd: cldpd::event::Usd(0.0),
            duration_ms: 100,
            usage: Default::default(),
            result: None,
            terminal_reason: None,
            api_error_status: Some(529),
        }));
        assert!(result_line(&failed).starts_with("API error 529 in 1 turn, "));
        assert_eq!(
            short_input(&serde_json::json!({"command": "ls -la\nrm x", "description": "d"})),
            "ls -la…"
        );
        assert_eq!(short_input(&serde_json::json!({"x": 1})), "{\"x\":1}");
    }

    #[test]
    fn session_lines_read_as_the_readme_shows_them() {
        assert_eq!(prompt_line("Add a test"), "Add a test");
        assert_eq!(prompt_line("\n  Fix it\nthen more"), "Fix it …");
        let long = "x".repeat(100);
        assert_eq!(prompt_line(&long).chars().count(), PROMPT_SHOWN);
        assert!(prompt_line(&long).ends_with('…'));
        assert_eq!(
            idle_line("web-0a1b2c3d", 2, 600_000, false),
            "idle after 2 turns; waiting 10m for a follow-up (cldpd resume web-0a1b2c3d --prompt …)"
        );
        assert_eq!(
            idle_line("web-0a1b2c3d", 1, 3_600_000, true),
            "idle after 1 turn; waiting 1h for a follow-up (type it here, one line; Ctrl-D ends)"
        );
        assert_eq!(
            keep_alive_text(std::time::Duration::from_millis(1500)),
            "1.5s"
        );
        assert_eq!(
            keep_alive_text(std::time::Duration::from_secs(5400)),
            "1h 30m"
        );
        assert_eq!(
            keep_alive_text(std::time::Duration::from_secs(7 * 86_400)),
            "7d"
        );
        assert_eq!(
            keep_alive_text(std::time::Duration::from_secs(90_061)),
            "1d 1h 1m 1s"
        );
        assert_eq!(keep_alive_text(std::time::Duration::ZERO), "0s");
        assert_eq!(
            branch_line("cldpd/web-0a1b2c3d", 1),
            "work is on branch cldpd/web-0a1b2c3d (1 commit)"
        );
        assert_eq!(
            branch_line("cldpd/x", 3),
            "work is on branch cldpd/x (3 commits)"
        );
    }

    #[test]
    fn build_steps_of_both_builders_are_recognised() {
        assert!(is_build_step("Step 2/4 : RUN [\"/bin/busybox\"]"));
        assert!(is_build_step("#5 [2/4] RUN npm install"));
        assert!(!is_build_step(" ---> Running in 0a1b2c"));
        assert!(!is_build_step("#5 sha256:..."));
        assert!(!is_build_step("#"));
    }
}
