//! An actix application that embeds cldpd: it sends the `Start` message to
//! a `DispatcherActor` and receives the run's events as messages to one of
//! its own actors.
//!
//! Runs against the demo pod in `config/pods/hello` (run `./demo.sh` once
//! first: it puts a static busybox into the pod directory), or against the
//! pod `hello` of `CLDPD_PODS_DIR` when that is set:
//!
//! ```text
//! cargo run --example actor
//! cargo run --example actor -- https://github.com/cldpd/demo/issues/2
//! ```

use std::sync::Arc;

use actix::prelude::*;
use cldpd::messages::dispatcher::{Start, StartRequest};
use cldpd::runtime::DockerCli;
use cldpd::{DispatcherActor, Event, EventKind, OutputStream, Settings};

/// Receives every event of the run, in order, and ends the program with
/// the agent's exit code after the terminal one.
struct Printer;

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<Event> for Printer {
    type Result = ();

    fn handle(&mut self, ev: Event, _ctx: &mut Context<Self>) {
        match &ev.kind {
            EventKind::Output { stream, line, .. } => {
                let pipe = match stream {
                    OutputStream::Stdout => "out",
                    OutputStream::Stderr => "err",
                };
                println!("{:>4} {pipe} | {line}", ev.seq);
            }
            EventKind::BuildOutput { .. } => {} // quiet: the build's own chatter
            EventKind::ContainerExited { code } => {
                println!("{:>4} the agent exited with {code}", ev.seq);
                System::current().stop_with_code(*code);
            }
            EventKind::Error { message, .. } => {
                eprintln!("{:>4} the run failed: {message}", ev.seq);
                System::current().stop_with_code(1);
            }
            other => println!("{:>4} {}", ev.seq, other.name()),
        }
    }
}

fn main() -> std::io::Result<()> {
    let issue = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://github.com/cldpd/demo/issues/1".to_string());
    let demo_pods = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pods");

    let system = System::new();
    system.block_on(async move {
        let settings = settings(demo_pods);
        let dispatcher = DispatcherActor::new(settings, Arc::new(DockerCli::new())).start();
        let printer = Printer.start();
        // The subscriber is given at start, so it sees every event from the first.
        let request = StartRequest::issue("hello", issue).subscribe(printer.recipient());
        match dispatcher.send(Start(request)).await {
            Ok(Ok(info)) => println!("started session {}", info.id),
            Ok(Err(e)) => {
                eprintln!("cannot start: {e}");
                if let Some(hint) = e.hint() {
                    eprintln!("hint: {hint}");
                }
                System::current().stop_with_code(1);
            }
            Err(_) => System::current().stop_with_code(1),
        }
    });
    let code = system.run_with_code()?;
    std::process::exit(code);
}

/// The settings from the environment; the pods directory is
/// `CLDPD_PODS_DIR` when set, else the demo pods of this repository.
fn settings(demo_pods: &str) -> Settings {
    let settings = Settings::from_env();
    match std::env::var_os("CLDPD_PODS_DIR") {
        Some(dir) if !dir.is_empty() => settings,
        _ => settings.pods_dir(demo_pods),
    }
}
