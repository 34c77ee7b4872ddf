//! The async facade, for code that is not an actor: `Dispatcher::start`
//! returns a `Session` whose `events()` is a `Stream` of every event from
//! the first, and whose `wait()` gives the agent's exit code.
//!
//! Runs against the demo pod in `config/pods/hello` (run `./demo.sh` once
//! first: it puts a static busybox into the pod directory), or against the
//! pod `hello` of `CLDPD_PODS_DIR` when that is set:
//!
//! ```text
//! cargo run --example facade
//! cargo run --example facade -- https://github.com/cldpd/demo/issues/2
//! ```

use cldpd::{Dispatcher, EventKind, OutputStream, Settings, StartRequest, StreamExt};

#[actix::main]
async fn main() {
    let issue = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://github.com/cldpd/demo/issues/1".to_string());
    let demo_pods = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pods");
    let dispatcher = Dispatcher::docker(settings(demo_pods));

    let session = match dispatcher.start(StartRequest::issue("hello", issue)).await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("cannot start: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            std::process::exit(1);
        }
    };
    println!(
        "started session {} (log: {})",
        session.id(),
        session.log_path().display()
    );

    let mut events = session.events();
    while let Some(event) = events.next().await {
        match &event.kind {
            EventKind::Output {
                stream: OutputStream::Stdout,
                line,
                ..
            } => println!("{line}"),
            EventKind::Output {
                stream: OutputStream::Stderr,
                line,
                ..
            } => eprintln!("{line}"),
            EventKind::BuildOutput { .. } => {}
            other => println!("-- {}", other.name()),
        }
    }

    match session.wait().await {
        Ok(code) => {
            println!("the agent exited with {code}");
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("the run failed: {e}");
            std::process::exit(1);
        }
    }
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
