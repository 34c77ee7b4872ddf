//! A follow-up to a long-lived agent (`agentInput: "stream-json"`) sent
//! by a resume: the prompt written to the live agent's stdin, and its
//! answer read back from the run's session log.
//!
//! The run's own session (in this process or another) reads the agent's
//! output and logs it; Claude Code reports each prompt's turn by the id
//! cldpd gave it (`command_lifecycle` → [`EventKind::AgentTurn`]). The
//! follow-up therefore needs no second agent process and no second reader
//! of the container's output: it notes where the run's log ends, writes
//! the prompt ([`Runtime::write_input`]), and replays from the log the
//! output lines of its own turn — from the turn's `started` to its
//! `completed` — as a process stream, ending with exit 0 once the turn is
//! complete. The resume session parses those lines as it would an exec's,
//! so its events (agent text, tool calls, the turn's `agent_result`) and
//! its outcome (an error result fails it) come out the same.
//!
//! The log is found through the run's `cldpd.state` label: following works
//! where that state directory is readable (the same machine, or a shared
//! directory). Elsewhere the prompt is still delivered and the follow-up
//! says where its answer is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::{mpsc, Notify};

use crate::error::Error;
use crate::event::{EventKind, OutputStream};
use crate::log::LogReader;
use crate::runtime::{OutputLine, ProcessEvent, Runtime, Stdin};

/// How often the run's log is read for new events.
const POLL: Duration = Duration::from_millis(50);

/// What a follow-up sends, and where its answer will be.
#[derive(Debug, Clone)]
pub struct FollowUpSpec {
    /// The run's container.
    pub container: String,
    /// The run's session id (for messages).
    pub run: String,
    /// The prompt's id (its stream-json `uuid`).
    pub command: String,
    /// The stream-json user message.
    pub bytes: Stdin,
    /// The run's session log.
    pub log: PathBuf,
}

/// The follow-up as a process stream: `Started` once the prompt is
/// written, the turn's output lines, `Exited { code: 0 }` once the turn is
/// complete; `Failed` when the prompt cannot be written or the run ends
/// first. `cancel` ends it early with exit 143 (the run goes on).
pub(crate) fn follow(
    runtime: Arc<dyn Runtime>,
    spec: FollowUpSpec,
    cancel: Arc<Notify>,
) -> BoxStream<'static, ProcessEvent> {
    let (tx, rx) = mpsc::channel(4);
    actix::spawn(async move {
        let cancelled = cancel.notified();
        tokio::pin!(cancelled);
        tokio::select! {
            () = produce(runtime, spec, &tx) => {}
            () = &mut cancelled => {
                let _ = tx.send(ProcessEvent::Exited { code: 143 }).await;
            }
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
    )
    .boxed()
}

async fn produce(runtime: Arc<dyn Runtime>, spec: FollowUpSpec, tx: &mpsc::Sender<ProcessEvent>) {
    // Where the log ends before the prompt exists: its turn comes after.
    let log = spec.log.clone();
    let start = tokio::task::spawn_blocking(move || line_boundary(&log))
        .await
        .ok()
        .flatten();
    if let Err(e) = runtime
        .write_input(&spec.container, spec.bytes.clone())
        .await
    {
        let _ = tx.send(ProcessEvent::Failed(e)).await;
        return;
    }
    let started = ProcessEvent::Started {
        container: spec.container.clone(),
    };
    if tx.send(started).await.is_err() {
        return;
    }
    let Some(offset) = start else {
        let note = OutputLine {
            stream: OutputStream::Stderr,
            text: format!(
                "cldpd: the prompt reached the agent of {}; its answer is in that run's log ({}), which cannot be read from here",
                spec.run,
                spec.log.display()
            ),
            partial: false,
        };
        let _ = tx.send(ProcessEvent::Output(vec![note])).await;
        let _ = tx.send(ProcessEvent::Exited { code: 0 }).await;
        return;
    };
    let mut reader = match LogReader::open_at(&spec.log, offset) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(ProcessEvent::Failed(e)).await;
            return;
        }
    };
    let mut in_turn = false;
    loop {
        let mut batch = Vec::new();
        loop {
            let ev = match reader.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(ProcessEvent::Failed(e)).await;
                    return;
                }
            };
            match &ev.kind {
                EventKind::AgentTurn { command, state } if *command == spec.command => {
                    match state.as_str() {
                        "started" => in_turn = true,
                        "completed" => {
                            if !batch.is_empty() {
                                let _ = tx.send(ProcessEvent::Output(batch)).await;
                            }
                            let _ = tx.send(ProcessEvent::Exited { code: 0 }).await;
                            return;
                        }
                        _ => {}
                    }
                }
                EventKind::Output {
                    stream,
                    line,
                    partial,
                } if in_turn => batch.push(OutputLine {
                    stream: *stream,
                    text: line.clone(),
                    partial: *partial,
                }),
                kind if kind.is_terminal() => {
                    if !batch.is_empty() {
                        let _ = tx.send(ProcessEvent::Output(batch)).await;
                    }
                    let _ = tx
                        .send(ProcessEvent::Failed(Error::InputUnavailable {
                            target: spec.run.clone(),
                            message: "the run ended before the agent answered this prompt".into(),
                        }))
                        .await;
                    return;
                }
                _ => {}
            }
        }
        if !batch.is_empty() && tx.send(ProcessEvent::Output(batch)).await.is_err() {
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The log's length now, moved back to the start of a line (the writer
/// may be in the middle of one: that line is read once complete); `None`
/// when the log cannot be read.
fn line_boundary(path: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let mut end = file.metadata().ok()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let from = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - from) as usize];
        file.seek(SeekFrom::Start(from)).ok()?;
        file.read_exact(chunk).ok()?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Some(from + i as u64 + 1);
        }
        end = from;
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_is_the_start_of_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(line_boundary(&p), Some(0));
        std::fs::write(&p, b"{\"a\":1}\n").unwrap();
        assert_eq!(line_boundary(&p), Some(8));
        std::fs::write(&p, b"{\"a\":1}\n{\"b\"").unwrap();
        assert_eq!(line_boundary(&p), Some(8));
        std::fs::write(&p, b"{\"b\"").unwrap();
        assert_eq!(line_boundary(&p), Some(0));
        assert_eq!(line_boundary(&dir.path().join("missing")), None);
    }
}
