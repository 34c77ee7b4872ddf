//! `cldpd start <pod> --issue <url>`: build, run, stream, exit with the
//! container's code.

use std::time::Duration;

use clap::Args;
use cldpd::StartRequest;

use crate::cli::drive::drive;
use crate::cli::error::CliError;
use crate::cli::signals::Signals;
use crate::cli::{parse_grace, Ctx};

/// Arguments of `cldpd start`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cldpd start hello --issue https://github.com/cldpd/demo/issues/1
  cldpd start web --prompt 'Update the changelog' --json > events.ndjson

Ctrl-C (or SIGTERM) stops the run: SIGTERM into the container, then SIGKILL
after the grace period; a second Ctrl-C kills it at once. cldpd exits with
the container's exit code.")]
pub struct StartArgs {
    /// The pod to run: a directory in the pods directory
    pub pod: String,

    /// The GitHub issue for the agent to work on
    #[arg(long, value_name = "URL", conflicts_with = "prompt")]
    pub issue: Option<String>,

    /// A free-form task instead of an issue
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// Seconds between SIGTERM and SIGKILL when the run is stopped
    /// [default: the pod's stopGraceSecs, else 10]
    #[arg(long, value_name = "SECS", value_parser = parse_grace)]
    pub grace: Option<Duration>,

    /// Print every event as one JSON object per line on stdout, and nothing
    /// else there
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd start`.
pub async fn run(args: StartArgs, ctx: &Ctx) -> Result<i32, CliError> {
    // Before the run exists, so that a Ctrl-C at any point stops it.
    let mut signals = Signals::install()?;
    let mut ui = ctx.ui(args.json);
    let mut request = match (&args.issue, &args.prompt) {
        (Some(url), _) => StartRequest::issue(&args.pod, url),
        (None, Some(prompt)) => StartRequest::prompt(&args.pod, prompt),
        // The library checks the pod first, then says the URL is missing.
        (None, None) => StartRequest::issue(&args.pod, ""),
    };
    if let Some(grace) = args.grace {
        request = request.grace(grace);
    }
    let session = ctx
        .dispatcher()
        .start(request)
        .await
        .map_err(|e| explain_missing_task(e, &args))?;
    let grace = args
        .grace
        .unwrap_or_else(|| super::pod_grace(ctx, session.pod()));
    Ok(drive(&mut ui, &session, &mut signals, grace, None).await)
}

/// "invalid issue URL ``" when no `--issue` was given reads better as
/// "no issue given".
fn explain_missing_task(e: cldpd::Error, args: &StartArgs) -> CliError {
    match e {
        cldpd::Error::InvalidIssueUrl { .. } if args.issue.is_none() => {
            CliError::new("no task given: pass --issue <url> (or --prompt <text>)").hint(format!(
                "for example: cldpd start {} --issue https://github.com/owner/repo/issues/42",
                args.pod
            ))
        }
        e => e.into(),
    }
}
