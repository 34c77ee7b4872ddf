//! Support for actor tests over the FaultRuntime: pods directories, a
//! checking subscriber actor, and the event grammar of invariant 1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use cldpd::{Event, EventBatch, EventKind, Settings};
use tokio::sync::oneshot;

/// A temporary pods directory and state directory.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    /// Pods with the given names, each with a Dockerfile and optional pod.json.
    pub fn new(pods: &[(&str, Option<&str>)]) -> Dirs {
        let root = tempfile::tempdir().expect("tempdir");
        for (name, json) in pods {
            let dir = root.path().join("pods").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
            if let Some(json) = json {
                std::fs::write(dir.join("pod.json"), json).unwrap();
            }
        }
        std::fs::create_dir_all(root.path().join("pods")).unwrap();
        Dirs { root }
    }

    pub fn pods(&self) -> PathBuf {
        self.root.path().join("pods")
    }

    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn settings(&self) -> Settings {
        Settings::new(self.pods(), self.state())
            .workers(2)
            .kill_timeout(Duration::from_secs(5))
    }

    pub fn add_pod(&self, name: &str, json: Option<&str>) -> PathBuf {
        let dir = self.pods().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        if let Some(json) = json {
            std::fs::write(dir.join("pod.json"), json).unwrap();
        }
        dir
    }
}

/// What a [`Checker`] saw of one session.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Every kind name in order, with runs of output/build_output collapsed.
    pub flow: Vec<&'static str>,
    /// Output lines seen of the current container, per stream.
    pub stdout: u64,
    pub stderr: u64,
    /// Events seen.
    pub events: u64,
    /// Problems: seq gaps, out-of-order numbered lines, events after the end.
    pub problems: Vec<String>,
    /// The terminal event.
    pub terminal: Option<Event>,
    /// All events, when kept.
    pub all: Vec<Event>,
    /// `EventBatch` messages received (a batch subscriber).
    pub batches: u64,
}

/// A subscriber actor that checks seq continuity and the numbering of
/// `out <i>` / `err <i>` lines, and reports once the terminal event came.
pub struct Checker {
    seen: Seen,
    next_seq: u64,
    keep: bool,
    capacity: usize,
    done: Option<oneshot::Sender<Seen>>,
}

impl Checker {
    /// Start a checker; `keep` stores every event; `capacity` is the
    /// mailbox size.
    pub fn start(keep: bool, capacity: usize) -> (Addr<Checker>, oneshot::Receiver<Seen>) {
        let (tx, rx) = oneshot::channel();
        let addr = Checker {
            seen: Seen::default(),
            next_seq: 1,
            keep,
            capacity,
            done: Some(tx),
        }
        .start();
        (addr, rx)
    }
}

impl Actor for Checker {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.capacity);
    }

    /// Every sender is gone and no terminal event came: say so (with what
    /// was seen) rather than leave the waiter with a bare `RecvError`.
    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(tx) = self.done.take() {
            let mut seen = std::mem::take(&mut self.seen);
            seen.problems.push(format!(
                "the subscriber was dropped without a terminal event, after {} events (next seq due {})",
                seen.events, self.next_seq
            ));
            let _ = tx.send(seen);
        }
    }
}

/// The same checks, one batch message at a time (registered as
/// `Subscriber::Batches`).
impl Handler<EventBatch> for Checker {
    type Result = ();
    fn handle(&mut self, batch: EventBatch, ctx: &mut Context<Self>) {
        if batch.0.is_empty() {
            self.seen.problems.push("an empty batch".into());
        }
        self.seen.batches += 1;
        for ev in batch.0 {
            <Self as Handler<Event>>::handle(self, ev, ctx);
        }
    }
}

impl Handler<Event> for Checker {
    type Result = ();
    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        record(&mut self.seen, &mut self.next_seq, &ev);
        if self.keep {
            self.seen.all.push(ev.clone());
        }
        if ev.is_terminal() {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(std::mem::take(&mut self.seen));
            }
        }
    }
}

/// Check one event into `seen`.
pub fn record(seen: &mut Seen, next_seq: &mut u64, ev: &Event) {
    if seen.terminal.is_some() {
        seen.problems
            .push(format!("event after the terminal one: {ev:?}"));
    }
    if ev.seq != *next_seq {
        seen.problems
            .push(format!("seq {} where {} was due", ev.seq, next_seq));
    }
    *next_seq = ev.seq + 1;
    seen.events += 1;
    let name = ev.kind.name();
    if name == "container_started" {
        // Each container (restart attempt) numbers its lines from 1.
        seen.stdout = 0;
        seen.stderr = 0;
    }
    if seen.flow.last() != Some(&name) || !matches!(name, "output" | "build_output") {
        seen.flow.push(name);
    }
    if let EventKind::Output {
        stream,
        line,
        partial,
    } = &ev.kind
    {
        let counter = match stream {
            cldpd::OutputStream::Stdout => &mut seen.stdout,
            cldpd::OutputStream::Stderr => &mut seen.stderr,
        };
        if !partial {
            *counter += 1;
        }
        // Numbered lines from the fault runtime: "out 7...." / "err 7...."
        if let Some(n) = line
            .split_once(' ')
            .and_then(|(_, rest)| rest.trim_end_matches('.').parse::<u64>().ok())
        {
            if (line.starts_with("out ") || line.starts_with("err ")) && n != *counter {
                seen.problems.push(format!(
                    "line `{line}` arrived as line {counter} of its stream"
                ));
            }
        }
    }
    if ev.is_terminal() {
        seen.terminal = Some(ev.clone());
    }
}

/// Assert `flow` matches `pattern`: tokens, each optionally suffixed with
/// `?` (0 or 1) or `*` (0 or more, the flow collapses runs to one).
pub fn assert_flow(flow: &[&str], pattern: &[&str]) {
    fn m(flow: &[&str], pat: &[&str]) -> bool {
        match pat.split_first() {
            None => flow.is_empty(),
            Some((p, rest)) => {
                let (name, optional) = match p.strip_suffix('?').or_else(|| p.strip_suffix('*')) {
                    Some(n) => (n, true),
                    None => (*p, false),
                };
                let here = flow.first() == Some(&name) && m(&flow[1..], rest);
                here || (optional && m(flow, rest))
            }
        }
    }
    assert!(
        m(flow, pattern),
        "event flow {flow:?} does not match {pattern:?}"
    );
}

/// The pattern of a successful start.
pub const START: &[&str] = &[
    "queued?",
    "build_started",
    "build_output*",
    "build_complete",
    "container_started",
    "output*",
    "container_exited",
];

/// Wait for a oneshot with a deadline.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// A file path inside the state dir's sessions directory.
pub fn log_of(dirs: &Dirs, session: &str) -> PathBuf {
    dirs.state()
        .join("sessions")
        .join(format!("{session}.ndjson"))
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Every event of a session, checked, with all events kept.
pub async fn collect(s: &cldpd::Session) -> Seen {
    use futures_util::StreamExt;
    let mut seen = Seen::default();
    let mut next = 1;
    let mut events = s.events();
    while let Some(ev) = events.next().await {
        record(&mut seen, &mut next, &ev);
        seen.all.push(ev);
    }
    seen
}

/// Wait (bounded) until the session's state satisfies `pred`.
pub async fn wait_state(
    s: &cldpd::Session,
    secs: u64,
    what: &str,
    pred: impl FnMut(&cldpd::SessionState) -> bool,
) {
    let mut st = s.info().state.clone();
    within(secs, what, st.wait_for(pred))
        .await
        .expect("the session's state");
}

/// Wait (bounded) until the session's container has reported its start
/// (its `container_started` event), or the run ended.
pub async fn wait_running(s: &cldpd::Session) {
    use futures_util::StreamExt;
    let mut events = s.events();
    let started = async {
        while let Some(ev) = events.next().await {
            if matches!(ev.kind, EventKind::ContainerStarted { .. }) || ev.is_terminal() {
                return;
            }
        }
    };
    within(20, "container_started", started).await;
}
