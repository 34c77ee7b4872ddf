//! `cldpd start <pod> --issue <url>`: build, run, stream, exit with the
//! container's code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};
use cldpd::StartRequest;

use crate::cli::drive::drive;
use crate::cli::error::CliError;
use crate::cli::prompt::read_prompt;
use crate::cli::signals::Signals;
use crate::cli::{parse_grace, Ctx};

/// Arguments of `cldpd start`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("task").required(true).args(["issue", "prompt", "prompt_file"])))]
#[command(after_help = "\
Examples:
  cldpd start hello --issue https://github.com/cldpd/demo/issues/1
  cldpd start web --issue acme/web#42
  cldpd start web --issue '#42'        (pod.json: \"repository\": \"acme/web\")
  cldpd start web --prompt 'Update the changelog' --json > events.ndjson
  cldpd start web --prompt-file task.md
  git diff | cldpd start web --prompt -
  cldpd start -d web --issue https://github.com/acme/web/issues/7   (prints the id, returns)

Ctrl-C (or SIGTERM) stops the run: SIGTERM into the container, then SIGKILL
after the grace period; a second Ctrl-C kills it at once. cldpd exits with
the container's exit code.")]
pub struct StartArgs {
    /// The pod to run: a directory in the pods directory
    pub pod: String,

    /// The GitHub issue for the agent to work on: its URL, `owner/repo#42`,
    /// or `#42` when the pod's pod.json names its `repository`
    #[arg(long, value_name = "URL", conflicts_with_all = ["prompt", "prompt_file"])]
    pub issue: Option<String>,

    /// A free-form task instead of an issue (`-`: read it from stdin; it
    /// may start with `-`, e.g. a markdown list)
    #[arg(
        long,
        value_name = "TEXT",
        allow_hyphen_values = true,
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,

    /// Read the task from this file (`-`: stdin)
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,

    /// Seconds between SIGTERM and SIGKILL when the run is stopped
    /// [default: the pod's stopGraceSecs, else 10]
    #[arg(long, value_name = "SECS", value_parser = parse_grace)]
    pub grace: Option<Duration>,

    /// Print every event as one JSON object per line on stdout, and nothing
    /// else there
    #[arg(long)]
    pub json: bool,

    /// Print the session id and return; the run goes on in a background
    /// cldpd process that outlives the terminal (see it with ps, logs -f,
    /// stop it with stop)
    #[arg(short, long, conflicts_with = "json")]
    pub detach: bool,
}

/// Run `cldpd start`.
pub async fn run(args: StartArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let handoff = crate::cli::detach::handoff_file();
    if args.detach && handoff.is_none() {
        let stdin = Some(std::path::Path::new("-"));
        if args.prompt.as_deref() == Some("-") || args.prompt_file.as_deref() == stdin {
            return Err(CliError::new("--detach cannot read the prompt from stdin")
                .hint("write it to a file and pass --prompt-file <file>"));
        }
        return crate::cli::detach::detach(&mut ctx.ui(false)).await;
    }
    // Before the run exists, so that a Ctrl-C at any point stops it.
    let mut signals = Signals::install()?;
    let mut ui = ctx.ui(args.json);
    let prompt = read_prompt(args.prompt.as_deref(), args.prompt_file.as_deref())?;
    let mut request = match (&args.issue, &prompt) {
        (Some(url), _) => StartRequest::issue(&args.pod, url),
        (None, Some(prompt)) => StartRequest::prompt(&args.pod, prompt),
        // clap requires one of --issue, --prompt, --prompt-file.
        (None, None) => unreachable!("the `task` group is required"),
    };
    if let Some(grace) = args.grace {
        request = request.grace(grace);
    }
    let session = ctx
        .dispatcher()
        .start(request)
        .await
        .map_err(CliError::from)?;
    warn_unset_inherit_env(&mut ui, ctx, session.pod());
    if let Some(handoff) = &handoff {
        crate::cli::detach::hand_off(handoff, session.id());
    }
    let grace = args
        .grace
        .unwrap_or_else(|| super::pod_grace(ctx, session.pod()));
    Ok(drive(&mut ui, &session, &mut signals, grace, None).await)
}

/// A warning for each `inheritEnv` variable that is not set here: the
/// agent runs without it (often a missing API key).
fn warn_unset_inherit_env(ui: &mut crate::cli::output::Ui, ctx: &Ctx, pod: &str) {
    let Ok(pod) = cldpd::pod::Pod::discover(&ctx.settings().pods_dir, pod) else {
        return;
    };
    for name in &pod.config.inherit_env {
        if std::env::var_os(name).is_none_or(|v| v.is_empty()) {
            ui.status(format_args!(
                "warning: {name} (inheritEnv of pod {}) is not set: the agent runs without it",
                pod.name
            ));
        }
    }
}
