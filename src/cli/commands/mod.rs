//! One module per subcommand: its clap arguments and its `run`.

use clap::Subcommand;

use super::error::CliError;
use super::Ctx;

mod batch;
mod completions;
mod diff;
mod doctor;
mod init;
mod logs;
mod model_server;
mod new;
mod pods;
mod prune;
mod ps;
mod resume;
mod rm;
mod scaffold;
mod start;
mod stop;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a pod's image, run its agent on an issue, stream the output,
    /// exit with the agent's exit code
    Start(start::StartArgs),
    /// Send a follow-up prompt to an agent (same conversation): its live
    /// run, or a new run of an ended session
    Resume(resume::ResumeArgs),
    /// Stop a run started by any cldpd process (SIGTERM, grace, SIGKILL)
    Stop(stop::StopArgs),
    /// Show a run's events from its session log, also after it ended
    Logs(logs::LogsArgs),
    /// List runs, found through their Docker labels (-a: also ended runs
    /// and the sessions that can be resumed)
    Ps(ps::PsArgs),
    /// Remove ended sessions: their workspace, agent state and run logs
    Rm(rm::RmArgs),
    /// Remove the sessions that ended long ago (default: 7 days)
    Prune(prune::PruneArgs),
    /// Print the changes a session made to its repository, as a patch
    Diff(diff::DiffArgs),
    /// List the pods in the pods directory and whether each is valid
    Pods(pods::PodsArgs),
    /// Run many jobs from a file, at most --concurrency at a time, and report
    Batch(batch::BatchArgs),
    /// Check Docker, the pods directory and every pod; one line per check
    Doctor(doctor::DoctorArgs),
    /// Create the pods directory with a pod that works (the demo pod), and
    /// say what to do next
    Init(init::InitArgs),
    /// Scaffold a new pod: Dockerfile, pod.json, template.md, README.md
    New(new::NewArgs),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Print cldpd's version (as --version does)
    Version,
    /// Serve a scripted model (Messages API) on 127.0.0.1, to run the real
    /// Claude Code against offline and for free
    ModelServer(model_server::ModelServerArgs),
    /// Candidates for the shell completion scripts (pods, live sessions,
    /// stored sessions)
    #[command(name = "__complete", hide = true)]
    Complete(completions::CompleteArgs),
}

/// Run one subcommand; returns the exit code.
pub async fn run(command: Command, ctx: &Ctx) -> Result<i32, CliError> {
    match command {
        Command::Start(args) => start::run(args, ctx).await,
        Command::Resume(args) => resume::run(args, ctx).await,
        Command::Stop(args) => stop::run(args, ctx).await,
        Command::Logs(args) => logs::run(args, ctx).await,
        Command::Ps(args) => ps::run(args, ctx).await,
        Command::Rm(args) => rm::run(args, ctx).await,
        Command::Prune(args) => prune::run(args, ctx).await,
        Command::Diff(args) => diff::run(args, ctx).await,
        Command::Pods(args) => pods::run(args, ctx),
        Command::Batch(args) => batch::run(args, ctx).await,
        Command::Doctor(args) => doctor::run(args, ctx).await,
        Command::Init(args) => init::run(args, ctx),
        Command::New(args) => new::run(args, ctx),
        Command::Completions(args) => completions::run(args),
        Command::Complete(args) => completions::candidates(args, ctx).await,
        Command::Version => {
            ctx.ui(false)
                .print(format_args!("cldpd {}\n", env!("CARGO_PKG_VERSION")));
            Ok(0)
        }
        Command::ModelServer(args) => model_server::run(args).await,
    }
}

/// The stop grace of a pod: its `stopGraceSecs`, else the dispatcher's
/// default (10 s). Only for messages; the library applies the same rule.
pub fn pod_grace(ctx: &Ctx, pod: &str) -> std::time::Duration {
    let settings = ctx.settings();
    cldpd::pod::Pod::discover(&settings.pods_dir, pod)
        .ok()
        .and_then(|p| p.config.stop_grace_secs)
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .unwrap_or(settings.policy.stop_grace)
}
