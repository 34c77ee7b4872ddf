//! `cldpd start <pod> --issue <url>`: build, run, stream, exit with the
//! container's code. `--keep-alive`: a long-lived agent waits that long for
//! follow-ups after each answer; `-i`: the follow-ups are typed here, one a
//! line, and Ctrl-D ends the conversation ([`crate::cli::attach`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};
use cldpd::StartRequest;

use crate::cli::attach::Attach;
use crate::cli::drive::drive;
use crate::cli::error::CliError;
use crate::cli::prompt::read_prompt;
use crate::cli::signals::Signals;
use crate::cli::{parse_duration, parse_grace, Ctx};

/// The keep-alive of `start -i` without `--keep-alive`: long enough for a
/// person to read an answer and type the next prompt.
const ATTACHED_KEEP_ALIVE: Duration = Duration::from_secs(3600);

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

A pod with \"agentInput\": \"stream-json\" (one long-lived agent per run):
  cldpd start web -i --prompt 'Read the README'   (then type follow-ups; Ctrl-D ends)
  cldpd start web --issue '#42' --keep-alive 10m  (then: cldpd resume <id> --prompt ...)
  printf 'Add a test\\nRun it\\n' | cldpd start web -i --prompt 'Fix the bug'

Ctrl-C (or SIGTERM) stops the run: SIGTERM into the container, then SIGKILL
after the grace period; a second Ctrl-C kills it at once. cldpd exits with
the container's exit code; a long-lived agent's run, with its last result's
(0 for a success) when its keep-alive runs out or -i's input ends.")]
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

    /// After each answer, wait this long for a follow-up (`cldpd resume`)
    /// before ending the run: `30s`, `10m`, `1h` [default: the pod's
    /// keepAliveSecs, else 0; with -i: 1h]. Needs a pod with
    /// "agentInput": "stream-json"
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_alive: Option<Duration>,

    /// Attach: read follow-up prompts from stdin, one a line (empty lines
    /// skipped), into the live agent's conversation; Ctrl-D (end of input)
    /// ends the run once the agent has answered. Needs a pod with
    /// "agentInput": "stream-json"
    #[arg(short = 'i', long, conflicts_with = "detach")]
    pub attach: bool,

    /// Bring the work back into the pod's repository after every answer
    /// too, not only when the run ends (pod.json "checkpoint"). Needs a pod
    /// with a "repo"
    #[arg(long)]
    pub checkpoint: bool,
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
    let stdin = Some(std::path::Path::new("-"));
    if args.attach && (args.prompt.as_deref() == Some("-") || args.prompt_file.as_deref() == stdin)
    {
        return Err(CliError::new(
            "-i reads follow-ups from stdin: the first prompt cannot come from it too",
        )
        .hint("pass the first prompt with --prompt <text> or --prompt-file <file>"));
    }
    let keep_alive = session_options(&args, ctx)?;
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
    if let Some(keep_alive) = keep_alive {
        request.overrides.keep_alive_secs = Some(keep_alive.as_secs_f64());
    }
    if args.checkpoint {
        // A pod without `repo` is refused by the start (pod.json check).
        request.overrides.checkpoint = Some(true);
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
    let attach = if args.attach {
        Some(Attach::start(&session)?)
    } else {
        None
    };
    Ok(drive(&mut ui, &session, &mut signals, grace, None, attach).await)
}

/// The keep-alive to ask for: `--keep-alive`, else with `-i` the pod's
/// keepAliveSecs or an hour, whichever is longer. Both need a long-lived
/// agent: refused up front for a pod without one (nothing is built).
fn session_options(args: &StartArgs, ctx: &Ctx) -> Result<Option<Duration>, CliError> {
    if !args.attach && args.keep_alive.is_none() {
        return Ok(None);
    }
    // A pod that cannot be read is refused by the start itself, with its
    // own error.
    let Ok(pod) = cldpd::pod::Pod::discover(&ctx.settings().pods_dir, &args.pod) else {
        return Ok(args.keep_alive);
    };
    if pod.config.agent_input() != cldpd::agent::AgentInput::StreamJson {
        let flag = if args.attach { "-i" } else { "--keep-alive" };
        return Err(CliError::new(format!(
            "{flag} needs a long-lived agent, and pod `{}` runs one agent per prompt",
            pod.name
        ))
        .hint(format!(
            "add \"agentInput\": \"stream-json\" to {} (Claude Code then takes follow-ups on its stdin), or run without {flag}",
            pod.dir.join("pod.json").display()
        )));
    }
    Ok(match args.keep_alive {
        Some(k) => Some(k),
        None => Some(pod.config.keep_alive().max(ATTACHED_KEEP_ALIVE)),
    })
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
