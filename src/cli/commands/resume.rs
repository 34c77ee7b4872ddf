//! `cldpd resume <session-or-pod> --prompt <text>`: a follow-up prompt into
//! an agent's conversation, streamed like `start`: written to the live
//! agent's stdin (a pod with `agentInput: "stream-json"`; only that turn is
//! shown), a new run on an ended session's storage (`--resume`), or for
//! other pods `claude -p --resume <uuid>` via `docker exec`.

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
  cldpd resume web-1a2b3c4d --prompt 'Now rebase it'     (ended: resumed on its storage)

The run may have been started by another cldpd process: it is found through
its Docker labels. A long-lived agent (\"agentInput\": \"stream-json\") gets the
prompt on its stdin and answers it as its next turn; a session of one whose
run has ended (see `cldpd ps -a`) is continued in a new container with the
same workspace and conversation. cldpd exits with the agent's exit code.")]
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
    // A live run names the session it runs in; an ended session's new
    // run continues the one named.
    let resume_of = session
        .info()
        .resume_of
        .clone()
        .or_else(|| (args.target != session.id()).then(|| args.target.clone()));
    Ok(drive(&mut ui, &session, &mut signals, grace, resume_of, None).await)
}
