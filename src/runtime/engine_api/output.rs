//! Reading an attach (or exec) stream: Docker's multiplexed frames,
//! demultiplexed by bollard into stdout/stderr chunks, reassembled into
//! lines with [`LineDecoder`] and sent as `Output` batches (one batch per
//! burst of frames that are ready together, not one per line).
//!
//! When an attach connection breaks, the run reads the container's log
//! from its start instead ([`Pump::rewind`]): the pump counts the bytes of
//! each pipe it has taken, skips them in the new reading and goes on with
//! the line it was in the middle of, so that nothing is lost or repeated
//! (as far as the log holds the same bytes: the `json-file` driver stores
//! invalid UTF-8 lossily).

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
    /// Bytes of stdout and stderr taken into the decoders so far.
    taken: [u64; 2],
    /// Where the current reading is in each pipe (0 after a rewind).
    at: [u64; 2],
    /// Last lines of both pipes (for 126/127 messages).
    pub(crate) tail: VecDeque<String>,
}

impl Pump {
    pub(crate) fn new(line_cap: usize) -> Self {
        Pump {
            out: LineDecoder::new(OutputStream::Stdout, line_cap),
            err: LineDecoder::new(OutputStream::Stderr, line_cap),
            taken: [0; 2],
            at: [0; 2],
            tail: VecDeque::with_capacity(TAIL),
        }
    }

    /// The next reading starts at the beginning of the output again (the
    /// container's log): what was taken already is skipped.
    pub(crate) fn rewind(&mut self) {
        self.at = [0; 2];
    }

    fn push(&mut self, frame: LogOutput, lines: &mut Vec<OutputLine>) {
        let (pipe, message) = match frame {
            LogOutput::StdErr { message } => (1, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (0, message),
            LogOutput::StdIn { .. } => return,
        };
        let start = self.at[pipe];
        self.at[pipe] += message.len() as u64;
        if self.at[pipe] <= self.taken[pipe] {
            return; // all of it taken before the rewind
        }
        // Part of it may have been taken before the rewind.
        let skip = self.taken[pipe].saturating_sub(start) as usize;
        self.taken[pipe] = self.at[pipe];
        let decoder = if pipe == 0 {
            &mut self.out
        } else {
            &mut self.err
        };
        decoder.push(&message[skip..], lines);
    }

    /// Read `frames` to their end, sending batches to `tx`. A line left
    /// unfinished by a broken connection stays in the decoder (the next
    /// reading may finish it); call [`Pump::flush`] when there is none.
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
            if matches!(end, Some(End::Closed)) {
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

    /// Send what the decoders still hold (an unfinished last line).
    pub(crate) async fn flush(&mut self, tx: &Sender<ProcessEvent>) {
        let mut lines = Vec::new();
        self.out.finish(&mut lines);
        self.err.finish(&mut lines);
        if !lines.is_empty() {
            self.keep_tail(&lines);
            let _ = tx.send(ProcessEvent::Output(lines)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn out(s: &str) -> Result<LogOutput, bollard::errors::Error> {
        Ok(LogOutput::StdOut {
            message: Bytes::copy_from_slice(s.as_bytes()),
        })
    }

    fn err(s: &str) -> Result<LogOutput, bollard::errors::Error> {
        Ok(LogOutput::StdErr {
            message: Bytes::copy_from_slice(s.as_bytes()),
        })
    }

    fn broken() -> Result<LogOutput, bollard::errors::Error> {
        Err(bollard::errors::Error::IOError {
            err: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut"),
        })
    }

    fn texts(events: Vec<ProcessEvent>) -> Vec<(OutputStream, String)> {
        events
            .into_iter()
            .flat_map(|e| match e {
                ProcessEvent::Output(lines) => lines,
                _ => Vec::new(),
            })
            .map(|l| (l.stream, l.text))
            .collect()
    }

    /// A reading cut in the middle of a line, then the log read from its
    /// start in frames split elsewhere: every line once, the cut one whole.
    #[tokio::test]
    async fn a_rewound_reading_skips_what_was_taken_and_finishes_the_cut_line() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut pump = Pump::new(1024);
        let mut first: Frames = Box::pin(futures_util::stream::iter(vec![
            out("one\ntw"),
            err("e1\n"),
            broken(),
        ]));
        assert!(matches!(pump.run(&mut first, &tx).await, End::Broken(_)));
        pump.rewind();
        let mut log: Frames = Box::pin(futures_util::stream::iter(vec![
            out("on"),
            err("e1\ne2"),
            out("e\ntwo\nthree\n"),
            err("\n"),
        ]));
        assert!(matches!(pump.run(&mut log, &tx).await, End::Closed));
        drop(tx);
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        let got = texts(events);
        let of = |s: OutputStream| -> Vec<&str> {
            got.iter()
                .filter(|(st, _)| *st == s)
                .map(|(_, t)| t.as_str())
                .collect()
        };
        assert_eq!(of(OutputStream::Stdout), ["one", "two", "three"]);
        assert_eq!(of(OutputStream::Stderr), ["e1", "e2"]);
    }

    /// With no second reading, the unfinished line goes out as it is.
    #[tokio::test]
    async fn flush_sends_the_unfinished_line() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut pump = Pump::new(1024);
        let mut first: Frames =
            Box::pin(futures_util::stream::iter(vec![out("a\nhalf"), broken()]));
        assert!(matches!(pump.run(&mut first, &tx).await, End::Broken(_)));
        pump.flush(&tx).await;
        drop(tx);
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        let got: Vec<String> = texts(events).into_iter().map(|(_, t)| t).collect();
        assert_eq!(got, ["a", "half"]);
    }
}
