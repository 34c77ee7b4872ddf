//! `cldpd resume <session-or-pod> --prompt <text>`: a follow-up prompt into
//! a running agent's conversation (`claude -p --resume <uuid>` via
//! `docker exec`), streamed like `start`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::cli::drive::drive;
use crate::cli::error::CliError;
use crate::cli::prompt::read_prompt;
use crate::cli::signals::Signals;
use crate::cli::{parse_grace, Ctx};

/// Arguments of `cldpd resume`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("text").required(true).args(["prompt", "prompt_file"])))]
#[command(after_help = "\
Examples:
  cldpd resume hello-1a2b3c4d --prompt 'Also add a test'
  cldpd resume hello --prompt 'Summarise what you did'   (one live run of hello)

The run may have been started by another cldpd process: it is found through
its Docker labels. cldpd exits with the agent's exit code.")]
pub struct ResumeArgs {
    /// A session id, or a pod name when exactly one run of it is live
    pub target: String,

    /// The follow-up prompt (`-`: read it from stdin; it may start with
    /// `-`)
    #[arg(
        long,
        value_name = "TEXT",
        allow_hyphen_values = true,
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,

    /// Read the follow-up prompt from this file (`-`: stdin)
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,

    /// Seconds between SIGTERM and SIGKILL when the follow-up is stopped
    /// [default: the pod's stopGraceSecs, else 10]
    #[arg(long, value_name = "SECS", value_parser = parse_grace)]
    pub grace: Option<Duration>,

    /// Print every event as one JSON object per line on stdout, and nothing
    /// else there
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd resume`.
pub async fn run(args: ResumeArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut signals = Signals::install()?;
    let mut ui = ctx.ui(args.json);
    let given = read_prompt(args.prompt.as_deref(), args.prompt_file.as_deref())?;
    let missing = given.is_none();
    let prompt = given.unwrap_or_default();
    let session = ctx
        .dispatcher()
        .resume(&args.target, prompt)
        .await
        .map_err(|e| match e {
            cldpd::Error::EmptyPrompt if missing => {
                CliError::new("no follow-up prompt given: pass --prompt <text>").hint(format!(
                    "for example: cldpd resume {} --prompt 'Also add a test'",
                    args.target
                ))
            }
            e => e.into(),
        })?;
    let grace = args
        .grace
        .unwrap_or_else(|| super::pod_grace(ctx, session.pod()));
    let resume_of = session.info().resume_of.clone();
    Ok(drive(&mut ui, &session, &mut signals, grace, resume_of).await)
}
