//! The `cldpd` command line: clap definitions, global options, and the
//! dispatch to one module per subcommand (`commands/`).
//!
//! The CLI is a thin layer over the library's public API ([`Dispatcher`],
//! [`cldpd::Session`], [`cldpd::pod`], [`cldpd::log`]); it adds only
//! argument parsing, rendering ([`output`], [`render`]) and signal handling
//! ([`signals`], [`drive`]).

use std::cell::OnceCell;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use cldpd::{Dispatcher, Settings};

mod attach;
mod colour;
mod commands;
mod detach;
mod drive;
mod error;
mod output;
mod prompt;
mod render;
mod signals;

use error::EXIT_FAILURE;
use output::Ui;

const AFTER_HELP: &str = "\
Exit status:
  0        success (start/resume: the agent exited 0)
  1        cldpd itself failed: bad input (unknown or invalid pod, bad pod.json,
           missing mount source, bad issue URL, empty prompt), Docker
           unreachable, image build failed, agent not runnable, ...
  2        usage error: unknown command, flag or missing argument
  124      a limit of cldpd ended the run: timeoutSecs, idleTimeoutSecs, or
           the restart limit when the last attempt did not exit by itself
  141      stdout's reader went away (broken pipe, e.g. `| head`); the run was
           stopped (any other stdout write error, e.g. a full disk: 1)
  other    start/resume: the container's exit code (143 after SIGTERM, 137
           after SIGKILL; after the restart limit: the last attempt's);
           129/130/143 when SIGHUP/Ctrl-C/SIGTERM stopped the run while no
           container ran (before the first, or during a restart back-off)

Environment:
  CLDPD_PODS_DIR   pods directory (default ~/.cldpd/pods), like --pods-dir
  CLDPD_STATE_DIR  state directory, session logs in <dir>/sessions (default ~/.cldpd)
  CLDPD_RUNTIME    Docker backend: engine (the Engine API, default) or cli
  DOCKER_HOST      engine of the Engine API backend: unix://, tcp://, ssh://
                   (default unix:///var/run/docker.sock)
  CLDPD_DOCKER     docker-compatible binary of the cli backend (default:
                   docker on PATH); setting it selects the cli backend
  RUST_LOG         tracing filter for logs on stderr (wins over -v)";

/// Dispatch Claude Code agents into Docker containers and stream what they
/// do.
#[derive(Debug, Parser)]
#[command(name = "cldpd", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: commands::Command,
}

/// Options every subcommand accepts, before or after it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    // CLDPD_PODS_DIR / CLDPD_STATE_DIR are read by `Settings::from_env`,
    // not by clap: a clap `env` counts as given, and usage lines would then
    // show `--pods-dir <DIR>` as if the user had typed it.
    /// Directory holding one sub-directory per pod [default:
    /// $CLDPD_PODS_DIR, else ~/.cldpd/pods]
    #[arg(long, global = true, value_name = "DIR")]
    pods_dir: Option<PathBuf>,

    /// cldpd's state directory; session logs go to <DIR>/sessions
    /// [default: $CLDPD_STATE_DIR, else ~/.cldpd]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// More output on stderr: build output, and debug logs of cldpd (-vv:
    /// trace). RUST_LOG, when set, decides the logs instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// What every command gets: the settings and, on first use, a dispatcher
/// over the `docker` CLI.
pub struct Ctx {
    settings: Settings,
    verbose: bool,
    dispatcher: OnceCell<Dispatcher>,
}

impl Ctx {
    fn new(global: &Global) -> Ctx {
        let mut settings = Settings::from_env().workers(1);
        if let Some(dir) = &global.pods_dir {
            settings = settings.pods_dir(dir);
        }
        if let Some(dir) = &global.state_dir {
            settings.state_dir = dir.clone();
        }
        Ctx {
            settings,
            verbose: global.verbose > 0,
            dispatcher: OnceCell::new(),
        }
    }

    /// The settings (pods and state directories, defaults).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A terminal handle for this command.
    pub fn ui(&self, json: bool) -> Ui {
        Ui::new(json, self.verbose)
    }

    /// Stop every live run of the dispatcher, if one was started (each with
    /// its own grace). Called after every command, also after an error.
    async fn shutdown(&self) {
        if let Some(d) = self.dispatcher.get() {
            if let Err(e) = d.shutdown(None).await {
                tracing::warn!(error = %e, "could not shut the dispatcher down");
            }
        }
    }

    /// The dispatcher (started in the current actix system on first use).
    pub fn dispatcher(&self) -> &Dispatcher {
        self.dispatcher
            .get_or_init(|| Dispatcher::docker(self.settings.clone()))
    }
}

/// Parse a grace period in seconds (`10`, `2.5`, `0`).
fn parse_grace(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{text}` is not a number of seconds >= 0"))
}

/// Parse a duration as humans write it (`30s`, `10m`, `1h 30m`, `7d`; a
/// bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{text}` is not a duration >= 0"));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("`{text}` is not a duration: write it like 30s, 10m, 1h or 7d"))
}

/// Run the command line of this process; returns the exit code.
pub fn main() -> i32 {
    // An empty variable means "not set" (as in Settings::from_env), not an
    // empty path clap would refuse. Nothing else runs yet: no threads.
    for name in ["CLDPD_PODS_DIR", "CLDPD_STATE_DIR"] {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
    // Usage errors exit 2 here, --help and --version 0.
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let mut ctx = Ctx::new(&cli.global);
    match cldpd::runtime::Backend::from_env() {
        Ok(backend) => ctx.settings.runtime = Some(backend),
        Err(e) => {
            ctx.ui(false).error(&e.into());
            return EXIT_FAILURE;
        }
    }
    let system = actix::System::new();
    let code = system.block_on(async {
        let result = commands::run(cli.command, &ctx).await;
        // Whatever the command did, success or error: nothing it started
        // outlives it.
        ctx.shutdown().await;
        result
    });
    let code = match code {
        Ok(code) => code,
        Err(e) => {
            ctx.ui(false).error(&e);
            EXIT_FAILURE
        }
    };
    // A stdout that could not be written decides the exit code (said on
    // stderr when it happened).
    match output::stdout_failure() {
        Some(failure) => failure.exit_code(),
        None => code,
    }
}

/// Tracing to stderr: `RUST_LOG` when set, else warnings, `-v` debug for
/// cldpd, `-vv` trace.
fn init_tracing(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(match verbose {
            0 => "cldpd=warn",
            1 => "cldpd=debug",
            _ => "cldpd=trace",
        }),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) is harmless: keep the first.
    let _ = if verbose == 0 {
        builder.without_time().with_target(false).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn grace_accepts_seconds_with_or_without_unit() {
        assert_eq!(parse_grace("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_grace("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert!(parse_grace("-1").is_err());
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }
}
