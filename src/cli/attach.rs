//! `cldpd start -i`: follow-ups typed on cldpd's stdin, one prompt per
//! line (empty lines skipped), sent to the run's long-lived agent with
//! [`Session::send`] in the order typed; at the end of the input (Ctrl-D)
//! [`Session::end`] ends the conversation once the agent has answered.
//!
//! Stdin is read on a thread of its own (a blocking read that nothing
//! waits for when cldpd exits); the lines go to one task that sends them
//! one after the other, so they reach the agent in order, and that waits
//! before each send while the run has no agent to take it (being built,
//! queued, or in a restart back-off) instead of having it refused. What
//! the task has to say comes back to [`super::drive`] as [`Report`]s; the
//! agent's answers are in the run's own events, rendered as usual.

use std::io::BufRead;

use cldpd::{Session, SessionState};
use tokio::sync::mpsc;

use super::error::CliError;

/// What the sending task reports.
#[derive(Debug)]
pub enum Report {
    /// A follow-up could not be sent (the run is ending, ...).
    Refused(cldpd::Error),
    /// Stdin could not be read: taken as its end.
    Unreadable(std::io::Error),
    /// The input ended: the conversation ends once the agent has answered.
    Ending,
}

/// The follow-ups of one run, read from stdin. See the [module docs](self).
pub struct Attach {
    reports: mpsc::UnboundedReceiver<Report>,
}

impl Attach {
    /// Read follow-ups for `session` from stdin from now on. Needs a
    /// running actix system.
    pub fn start(session: &Session) -> Result<Attach, CliError> {
        let (line_tx, line_rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("cldpd-stdin".into())
            .spawn(move || read_lines(std::io::stdin().lock(), line_tx))
            .map_err(|e| CliError::new(format!("cannot read follow-ups from stdin: {e}")))?;
        let (tx, reports) = mpsc::unbounded_channel();
        actix::spawn(send_lines(session.clone(), line_rx, tx));
        Ok(Attach { reports })
    }

    /// The next report; `None` once the task is done.
    pub async fn next(&mut self) -> Option<Report> {
        self.reports.recv().await
    }
}

/// One prompt per line, until the end of the input or an error (sent as
/// the last item). Invalid UTF-8 is decoded lossily.
fn read_lines(mut input: impl BufRead, lines: mpsc::UnboundedSender<std::io::Result<String>>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).into_owned();
                if lines.send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = lines.send(Err(e));
                return;
            }
        }
    }
}

/// The prompt a typed line stands for: without its line end; `None` for a
/// blank line.
fn prompt_of(line: &str) -> Option<&str> {
    let prompt = line.trim_end_matches(['\n', '\r']);
    (!prompt.trim().is_empty()).then_some(prompt)
}

/// True when a follow-up sent now would reach an agent or be refused for
/// good (the run is ending or ended): not while it is queued, built or
/// between restarts.
fn can_take_follow_up(state: &SessionState) -> bool {
    matches!(
        state,
        SessionState::Starting { .. }
            | SessionState::Running { .. }
            | SessionState::Idle { .. }
            | SessionState::Stopping
    ) || state.is_terminal()
}

async fn send_lines(
    session: Session,
    mut lines: mpsc::UnboundedReceiver<std::io::Result<String>>,
    reports: mpsc::UnboundedSender<Report>,
) {
    while let Some(line) = lines.recv().await {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                let _ = reports.send(Report::Unreadable(e));
                break;
            }
        };
        let Some(prompt) = prompt_of(&line) else {
            continue;
        };
        let mut state = session.info().state.clone();
        let _ = state.wait_for(can_take_follow_up).await;
        if let Err(e) = session.send(prompt).await {
            let _ = reports.send(Report::Refused(e));
        }
    }
    let _ = reports.send(Report::Ending);
    // The outcome is the run's, which `drive` gets from `wait`.
    let _ = session.end().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_a_prompt_without_its_line_end_and_blank_lines_are_none() {
        assert_eq!(prompt_of("Add a test\n"), Some("Add a test"));
        assert_eq!(prompt_of("Add a test\r\n"), Some("Add a test"));
        assert_eq!(prompt_of("  indented  \n"), Some("  indented  "));
        assert_eq!(
            prompt_of("last line without end"),
            Some("last line without end")
        );
        assert_eq!(prompt_of("\n"), None);
        assert_eq!(prompt_of("   \t\r\n"), None);
    }

    #[test]
    fn lines_are_read_until_the_end_of_the_input() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        read_lines(&b"one\n\ntwo \xff\nthree"[..], tx);
        let mut got = Vec::new();
        while let Ok(line) = rx.try_recv() {
            got.push(line.unwrap());
        }
        assert_eq!(got, ["one\n", "\n", "two \u{fffd}\n", "three"]);
    }

    #[test]
    fn follow_ups_wait_while_the_run_has_no_agent_to_take_them() {
        assert!(!can_take_follow_up(&SessionState::Building));
        assert!(!can_take_follow_up(&SessionState::Queued { position: 1 }));
        assert!(!can_take_follow_up(&SessionState::Restarting {
            attempt: 1
        }));
        assert!(can_take_follow_up(&SessionState::Starting {
            container: "c".into(),
            attempt: 0
        }));
        assert!(can_take_follow_up(&SessionState::Idle {
            container: "c".into(),
            turns: 1
        }));
        assert!(can_take_follow_up(&SessionState::Exited { code: 0 }));
    }
}
