//! Reading an attach (or exec) stream: Docker's multiplexed frames,
//! demultiplexed by bollard into stdout/stderr chunks, reassembled into
//! lines with [`LineDecoder`] and sent as `Output` batches (one batch per
//! burst of frames that are ready together, not one per line).

use std::collections::VecDeque;
use std::pin::Pin;

use bollard::container::LogOutput;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc::Sender;

use crate::event::OutputStream;
use crate::runtime::{LineDecoder, OutputLine, ProcessEvent};

/// Frames read before a batch is sent even if more are ready.
const FRAMES_PER_BATCH: usize = 256;
/// Lines kept for the message of a failed start (126/127).
const TAIL: usize = 20;

/// bollard's output stream of an attach or exec.
pub(crate) type Frames =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// How reading ended.
pub(crate) enum End {
    /// The engine closed the stream (the process exited, or the engine
    /// ended the stream).
    Closed,
    /// The connection broke: losing it is not an exit.
    Broken(bollard::errors::Error),
    /// Nobody reads the events any more.
    Dropped,
}

/// Decodes both pipes and remembers the last lines.
pub(crate) struct Pump {
    out: LineDecoder,
    err: LineDecoder,
    /// Last lines of both pipes (for 126/127 messages).
    pub(crate) tail: VecDeque<String>,
}

impl Pump {
    pub(crate) fn new(line_cap: usize) -> Self {
        Pump {
            out: LineDecoder::new(OutputStream::Stdout, line_cap),
            err: LineDecoder::new(OutputStream::Stderr, line_cap),
            tail: VecDeque::with_capacity(TAIL),
        }
    }

    fn push(&mut self, frame: LogOutput, lines: &mut Vec<OutputLine>) {
        match frame {
            LogOutput::StdErr { message } => self.err.push(&message, lines),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                self.out.push(&message, lines)
            }
            LogOutput::StdIn { .. } => {}
        }
    }

    /// Read `frames` to their end, sending batches to `tx`.
    pub(crate) async fn run(&mut self, frames: &mut Frames, tx: &Sender<ProcessEvent>) -> End {
        loop {
            let mut lines = Vec::new();
            let end = match frames.next().await {
                None => Some(End::Closed),
                Some(Err(e)) => Some(End::Broken(e)),
                Some(Ok(frame)) => {
                    self.push(frame, &mut lines);
                    let mut end = None;
                    for _ in 0..FRAMES_PER_BATCH {
                        match frames.next().now_or_never() {
                            Some(Some(Ok(frame))) => self.push(frame, &mut lines),
                            Some(Some(Err(e))) => {
                                end = Some(End::Broken(e));
                                break;
                            }
                            Some(None) => {
                                end = Some(End::Closed);
                                break;
                            }
                            None => break,
                        }
                    }
                    end
                }
            };
            if end.is_some() {
                self.out.finish(&mut lines);
                self.err.finish(&mut lines);
            }
            if !lines.is_empty() {
                self.keep_tail(&lines);
                if tx.send(ProcessEvent::Output(lines)).await.is_err() {
                    return End::Dropped;
                }
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    fn keep_tail(&mut self, lines: &[OutputLine]) {
        for l in &lines[lines.len().saturating_sub(TAIL)..] {
            if self.tail.len() == TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(clip(&l.text));
        }
    }

    /// The remembered lines, as one message.
    pub(crate) fn message(&self) -> String {
        self.tail
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A copy of `line` short enough for an error message (2000 bytes).
fn clip(line: &str) -> String {
    let mut cut = line.len().min(2000);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line[..cut].to_string()
}
