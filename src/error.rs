//! The one error type of cldpd.
//!
//! Every failure a caller can meet is a variant of [`Error`]: match on the
//! variant, print it with `Display` (one sentence saying what went wrong) and
//! show [`Error::hint`] (what to do about it) where there is one. The
//! variants cover the sentinel errors of the Go original (`ErrPodNotFound`,
//! `ErrInvalidPod`, `ErrBuildFailed`, `ErrContainerFailed`,
//! `ErrSessionNotFound`, `ErrDockerUnavailable`, `ErrStopFailed`) plus the
//! bad inputs and run failures the Go tool did not name.
//!
//! Errors are `Clone` so that one failure can be handed to every waiter of a
//! run (`wait()`, shared builds) without re-running anything.
//!
//! ```
//! use cldpd::Error;
//! let err = Error::PodNotFound {
//!     name: "web".into(),
//!     pods_dir: "/home/me/.cldpd/pods".into(),
//!     available: vec!["api".into()],
//! };
//! assert_eq!(err.code(), "pod_not_found");
//! assert!(err.to_string().contains("web"));
//! assert!(err.hint().unwrap().contains("api"));
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Shorthand for `Result<T, cldpd::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which timeout ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// `timeoutSecs`: the wall-clock limit of the whole run.
    Run,
    /// `idleTimeoutSecs`: no output for that long.
    Idle,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Run => "run timeout (timeoutSecs)",
            TimeoutKind::Idle => "idle timeout (idleTimeoutSecs)",
        })
    }
}

/// What is wrong with a repository or a session workspace, in
/// [`Error::Repo`]: see [`crate::workspace`]. Each kind has its own
/// [`Error::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepoProblem {
    /// `repo_missing`: the path does not exist.
    Missing,
    /// `repo_not_git`: the path is not the top level of a git repository
    /// (not a directory, no repository at all, or a directory inside one).
    NotGit {
        /// What it is instead, e.g. "not a git repository" or "inside the
        /// work tree of /src/app, not its top level".
        reason: String,
    },
    /// `repo_dirty`: the working tree has staged, unstaged or untracked
    /// (not ignored) changes.
    Dirty {
        /// Up to five of the offending paths, as git names them.
        paths: Vec<String>,
        /// How many paths are dirty in all.
        total: usize,
    },
    /// `repo_ref_missing`: the ref does not name a commit of the repository.
    RefMissing {
        /// The ref asked for.
        reference: String,
    },
    /// `repo_branch_checked_out`: the session's branch is checked out in a
    /// work tree of the repository, so cldpd will not move it.
    BranchCheckedOut {
        /// The branch (`cldpd/<session>`).
        branch: String,
        /// The work tree it is checked out in.
        worktree: PathBuf,
    },
    /// `workspace_not_empty`: the directory meant for a new workspace
    /// already holds files.
    NotEmpty,
    /// `workspace_untrusted`: the session's workspace (written by the
    /// container) has a `.git` that cldpd will not run git on, e.g. one
    /// holding symbolic links.
    Untrusted {
        /// What was found.
        reason: String,
    },
    /// `workspace_wrong_branch`: the workspace's HEAD is no longer on the
    /// session's branch, so its changes would not come back with it.
    WrongBranch {
        /// The session's branch.
        branch: String,
        /// Where HEAD is instead (a branch name or "a detached HEAD").
        head: String,
    },
    /// `git_missing`: the `git` program could not be run.
    GitMissing {
        /// The operating system's error.
        message: String,
    },
    /// `git_failed`: git ran and failed.
    GitFailed {
        /// The git command (`git fetch`, ...), without its arguments.
        command: String,
        /// Git's own error output, trimmed.
        message: String,
    },
}

impl std::fmt::Display for RepoProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoProblem::Missing => f.write_str("does not exist"),
            RepoProblem::NotGit { reason } => f.write_str(reason),
            RepoProblem::Dirty { paths, total } => {
                write!(f, "has uncommitted changes: {}", paths.join(", "))?;
                if *total > paths.len() {
                    write!(f, " and {} more", total - paths.len())?;
                }
                Ok(())
            }
            RepoProblem::RefMissing { reference } => {
                write!(f, "has no commit named `{reference}`")
            }
            RepoProblem::BranchCheckedOut { branch, worktree } => write!(
                f,
                "branch {branch} is checked out in {}, so cldpd will not update it",
                worktree.display()
            ),
            RepoProblem::NotEmpty => {
                f.write_str("is not empty, so it cannot become a new workspace")
            }
            RepoProblem::Untrusted { reason } => {
                write!(f, "is not a workspace cldpd runs git on: {reason}")
            }
            RepoProblem::WrongBranch { branch, head } => write!(
                f,
                "is on {head}, not on branch {branch}, so its work was not taken"
            ),
            RepoProblem::GitMissing { message } => {
                write!(f, "the `git` program could not be run: {message}")
            }
            RepoProblem::GitFailed { command, message } => {
                write!(f, "`{command}` failed")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// Everything that can go wrong in cldpd.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- pods and input -------------------------------------------------
    /// The pod directory does not exist (Go: `ErrPodNotFound`).
    #[error("pod `{name}` not found in {}", pods_dir.display())]
    PodNotFound {
        /// The name asked for.
        name: String,
        /// The pods directory searched.
        pods_dir: PathBuf,
        /// The pods that do exist there, for the hint.
        available: Vec<String>,
    },
    /// The pods directory itself does not exist.
    #[error("pods directory {} does not exist", path.display())]
    PodsDirMissing {
        /// The directory.
        path: PathBuf,
    },
    /// The pod name is not a plain directory name Docker accepts in a tag.
    #[error("invalid pod name `{name}`: {reason}")]
    InvalidPodName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The pod directory has no Dockerfile (Go: `ErrInvalidPod`).
    #[error("invalid pod `{name}`: no Dockerfile in {}", dir.display())]
    InvalidPod {
        /// Pod name.
        name: String,
        /// Pod directory.
        dir: PathBuf,
    },
    /// `pod.json` cannot be read, is not valid JSON, or has a bad field.
    #[error("{}: {message}", path.display())]
    PodConfig {
        /// The `pod.json` file.
        path: PathBuf,
        /// The offending field, when one is to blame.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A bind mount's host path does not exist.
    #[error("pod `{pod}`: mount source {} does not exist", source_path.display())]
    MountSourceMissing {
        /// Pod name.
        pod: String,
        /// The host path after `~` expansion.
        source_path: PathBuf,
    },
    /// A bind mount's container path is not absolute.
    #[error("pod `{pod}`: mount target `{target}` is not an absolute path")]
    MountTargetRelative {
        /// Pod name.
        pod: String,
        /// The target given.
        target: String,
    },
    /// An environment variable name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name `{name}` in {origin}")]
    InvalidEnvName {
        /// The name.
        name: String,
        /// Where it came from (`pod.json env`, `inheritEnv`, `buildArgs`, ...).
        origin: String,
    },
    /// The issue URL is missing or is not a GitHub issue URL.
    #[error("invalid issue URL `{url}`: {reason}")]
    InvalidIssueUrl {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A prompt (start task or resume follow-up) is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A setting or request option is out of range.
    #[error("invalid option `{option}`: {message}")]
    InvalidOption {
        /// The option.
        option: String,
        /// What is wrong.
        message: String,
    },

    // ----- Docker and the container ----------------------------------------
    /// The container runtime cannot be reached (Go: `ErrDockerUnavailable`).
    #[error("docker is not available: {message}")]
    DockerUnavailable {
        /// What the runtime said.
        message: String,
    },
    /// The image build failed (Go: `ErrBuildFailed`). When its output shows
    /// that the base image could not be pulled
    /// ([`crate::runtime::pull_failure`]) the message says so, the code is
    /// `base_image_unavailable` and the hint is about the image, not the
    /// Dockerfile.
    #[error("building image `{image}` failed{}{}{}", code.map(|c| format!(" (exit {c})")).unwrap_or_default(), crate::runtime::pull_failure(tail).map(|f| format!(": {}", f.describe())).unwrap_or_default(), tail_text(tail))]
    BuildFailed {
        /// The image tag.
        image: String,
        /// The build command's exit code, when it ran.
        code: Option<i32>,
        /// The last lines of build output.
        tail: Vec<String>,
    },
    /// The container exited with a non-zero code where that is a failure
    /// (Go: `ErrContainerFailed`), e.g. a job of a batch.
    #[error("container exited with code {code}")]
    ContainerFailed {
        /// Exit code.
        code: i32,
    },
    /// Docker itself failed to create or start the container (exit 125).
    #[error("docker could not run the container: {message}")]
    DockerFailed {
        /// Docker's own error output.
        message: String,
    },
    /// The connection to the Docker daemon (or the docker client of a run)
    /// was lost while a container ran, and what became of the container
    /// could not be learnt: the daemon is gone, or the container ended and
    /// was removed meanwhile, with its exit code. Not retried: the
    /// container may still exist.
    #[error("lost track of container {container}: {message}")]
    DockerLost {
        /// Container name.
        container: String,
        /// What happened.
        message: String,
    },
    /// The image to run does not exist in the engine (removed since it was
    /// built, or never built there): the next run builds it again.
    #[error("image `{image}` does not exist in the engine")]
    ImageMissing {
        /// Image tag or id.
        image: String,
    },
    /// The agent command is missing (127) or not executable (126) in the image.
    #[error("agent command `{command}` {} in image `{image}`{}", if *code == 127 { "was not found" } else { "is not executable" }, if message.is_empty() { String::new() } else { format!(": {message}") })]
    AgentNotRunnable {
        /// Image tag.
        image: String,
        /// The agent program.
        command: String,
        /// 126 or 127.
        code: i32,
        /// Docker's stderr.
        message: String,
    },
    /// The docker client's command line (arguments plus environment) is
    /// over the Linux limit: one string over 128 KiB, or all of them over
    /// `ARG_MAX`. Caught before spawning where the size is known (see
    /// [`crate::pod::limits`]), or from the spawn's `E2BIG`. Never retried.
    #[error("{what} is {bytes} bytes, over the limit of {limit} bytes that Linux allows for a command line")]
    ArgumentsTooLong {
        /// What is too long (e.g. "the prompt (template.md plus the task)").
        what: String,
        /// Its size.
        bytes: usize,
        /// The limit it is over.
        limit: usize,
    },
    /// The runtime failed while the container was running.
    #[error("container runtime failed: {message}")]
    RuntimeFailed {
        /// What failed.
        message: String,
    },

    // ----- sessions ---------------------------------------------------------
    /// No live run matches (Go: `ErrSessionNotFound`).
    #[error("no running session matches `{target}`")]
    SessionNotFound {
        /// The session id or pod name asked for.
        target: String,
    },
    /// A follow-up cannot reach the live agent of a run: its agent does not
    /// read follow-ups on stdin (`agentInput` is not `stream-json`), or this
    /// backend cannot reach that stdin from here.
    #[error("cannot send a follow-up to {target}: {message}")]
    InputUnavailable {
        /// The session id or container.
        target: String,
        /// Why.
        message: String,
    },
    /// A pod name was given but more than one run of it is live.
    #[error("`{target}` matches {} running sessions: {}", sessions.len(), sessions.join(", "))]
    AmbiguousTarget {
        /// The pod name given.
        target: String,
        /// The live session ids.
        sessions: Vec<String>,
    },
    /// Stopping a container did not complete (Go: `ErrStopFailed`).
    #[error("stopping {container} failed: {message}")]
    StopFailed {
        /// Container name.
        container: String,
        /// What went wrong.
        message: String,
    },
    /// The run was stopped before its container started.
    #[error("the run was stopped before its container started")]
    Stopped,
    /// A timeout ended the run.
    #[error("{kind} fired after {}", humantime::format_duration(*after))]
    Timeout {
        /// Which one.
        kind: TimeoutKind,
        /// Its length.
        after: Duration,
    },
    /// The restart policy gave up.
    #[error("restart limit reached: {restarts} restarts within {}; last failure: {last}", humantime::format_duration(*within))]
    RestartLimit {
        /// Restarts allowed.
        restarts: u32,
        /// Within this period.
        within: Duration,
        /// The failure that was not retried.
        last: String,
        /// The exit code of the last container when it exited (rather than
        /// failed to run): what the CLI exits with.
        exit_code: Option<i32>,
    },
    /// The agent's final result is an error (stream-json `result` with
    /// `is_error: true`, also under `subtype: "success"`). Codes:
    /// `agent_max_turns`, `agent_max_budget`, `rate_limited` (HTTP 429),
    /// `api_error` (another API status), `agent_error`.
    #[error("the agent failed ({subtype}{}) after {turns} turns: {message}", api_error_status.map(|s| format!(", API status {s}")).unwrap_or_default())]
    AgentFailed {
        /// The result's subtype (`error_max_turns`, `success`, …).
        subtype: String,
        /// The result text, or a description.
        message: String,
        /// HTTP status of the API error that ended it, when one did.
        api_error_status: Option<u16>,
        /// Turns taken.
        turns: u32,
    },
    /// The session's event log could not be written or read.
    #[error("session log {}: {message}", path.display())]
    Log {
        /// Log file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A batch job file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    BatchFile {
        /// The job file.
        path: PathBuf,
        /// Line of the bad job.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A job of a batch is refused (the batch does not start).
    #[error("job {}{}: {source}", index + 1, line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    BatchJob {
        /// Index of the job, from 0 (shown from 1).
        index: usize,
        /// Its line in the job file.
        line: Option<usize>,
        /// Why.
        source: Box<Error>,
    },
    // ----- repositories and workspaces ------------------------------------
    /// A pod's repository or a session's workspace cannot be used, or git
    /// failed on it ([`crate::workspace`]). The code depends on the
    /// [`RepoProblem`]: `repo_missing`, `repo_not_git`, `repo_dirty`,
    /// `repo_ref_missing`, `repo_branch_checked_out`, `workspace_not_empty`,
    /// `workspace_untrusted`, `workspace_wrong_branch`, `git_missing`,
    /// `git_failed`.
    #[error("{}: {problem}", path.display())]
    Repo {
        /// The repository or workspace.
        path: PathBuf,
        /// What is wrong with it.
        problem: RepoProblem,
    },

    /// The dispatcher is shutting down and takes no new runs.
    #[error("the dispatcher is shutting down")]
    ShuttingDown,
    /// A file-system or process error outside the cases above.
    #[error("{context}: {source}")]
    Io {
        /// What cldpd was doing.
        context: String,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A bug or a panic inside cldpd, a runtime backend or a subscriber.
    #[error("internal error: {message}")]
    Internal {
        /// Description (panic message included).
        message: String,
    },
}

/// What to do when the engine cannot be reached: for a `tcp://` engine
/// (`DOCKER_HOST`), the TLS settings are the usual cause; otherwise the
/// daemon is not running.
fn docker_unavailable_hint(docker_host: Option<&str>) -> String {
    match docker_host {
        Some(host) if host.starts_with("tcp://") || host.starts_with("http://") => format!(
            "check that an engine listens at {host} and that cldpd reaches it as it is set up: an engine started with --tlsverify needs DOCKER_TLS_VERIFY=1 and its ca.pem with your cert.pem and key.pem in DOCKER_CERT_PATH (default ~/.docker); one without TLS needs DOCKER_TLS_VERIFY unset; `docker info` with the same variables tells"
        ),
        Some(host) if host.starts_with("ssh://") => format!(
            "check that `ssh {}` logs in without a prompt and that `docker info` works there; `docker info` with the same DOCKER_HOST tells",
            host.trim_start_matches("ssh://")
        ),
        _ => "start the Docker daemon and check `docker info` and DOCKER_HOST (or use a docker-compatible binary: CLDPD_RUNTIME=cli CLDPD_DOCKER=<binary>)".to_string(),
    }
}

fn repo_hint(path: &std::path::Path, problem: &RepoProblem) -> String {
    match problem {
        RepoProblem::Missing => {
            "check the path in pod.json's repo field (a directory on this host; `~` is expanded)"
                .to_string()
        }
        RepoProblem::NotGit { .. } => {
            "point pod.json's repo.path at the top level of a git repository (the directory holding .git), or run `git init` there".to_string()
        }
        RepoProblem::Dirty { .. } => format!(
            "commit or stash your changes (`git -C {} stash -u` includes untracked files), or ignore build output in .gitignore; a session starts only from a clean tree so that its branch holds only the agent's work",
            path.display()
        ),
        RepoProblem::RefMissing { .. } => format!(
            "check repo.ref in pod.json: a branch, tag or commit of that repository (`git -C {} branch -a` lists the branches)",
            path.display()
        ),
        RepoProblem::BranchCheckedOut { worktree, .. } => format!(
            "switch {} to another branch (`git switch -`), then take the session's work again",
            worktree.display()
        ),
        RepoProblem::NotEmpty => "give the new workspace an empty or absent directory".to_string(),
        RepoProblem::Untrusted { .. } | RepoProblem::WrongBranch { .. } => {
            "the agent changed the workspace's git setup; its files are still in the session's workspace, inspect them there by hand".to_string()
        }
        RepoProblem::GitMissing { .. } => {
            "install git; cldpd runs the `git` program found on PATH".to_string()
        }
        RepoProblem::GitFailed { .. } => "git's own message above says what went wrong".to_string(),
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n  {}", tail.join("\n  "))
    }
}

impl Error {
    /// A stable machine-readable name of the variant, used as the `code` of
    /// error events and in `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            Error::PodNotFound { .. } => "pod_not_found",
            Error::PodsDirMissing { .. } => "pods_dir_missing",
            Error::InvalidPodName { .. } => "invalid_pod_name",
            Error::InvalidPod { .. } => "invalid_pod",
            Error::PodConfig { .. } => "pod_config",
            Error::MountSourceMissing { .. } => "mount_source_missing",
            Error::MountTargetRelative { .. } => "mount_target_relative",
            Error::InvalidEnvName { .. } => "invalid_env_name",
            Error::InvalidIssueUrl { .. } => "invalid_issue_url",
            Error::EmptyPrompt => "empty_prompt",
            Error::InvalidOption { .. } => "invalid_option",
            Error::DockerUnavailable { .. } => "docker_unavailable",
            Error::BuildFailed { tail, .. } if crate::runtime::pull_failure(tail).is_some() => {
                "base_image_unavailable"
            }
            Error::BuildFailed { .. } => "build_failed",
            Error::ContainerFailed { .. } => "container_failed",
            Error::DockerFailed { .. } => "docker_failed",
            Error::DockerLost { .. } => "docker_lost",
            Error::ImageMissing { .. } => "image_missing",
            Error::AgentNotRunnable { .. } => "agent_not_runnable",
            Error::ArgumentsTooLong { .. } => "arguments_too_long",
            Error::RuntimeFailed { .. } => "runtime_failed",
            Error::SessionNotFound { .. } => "session_not_found",
            Error::InputUnavailable { .. } => "input_unavailable",
            Error::AmbiguousTarget { .. } => "ambiguous_target",
            Error::StopFailed { .. } => "stop_failed",
            Error::Stopped => "stopped",
            Error::Timeout { .. } => "timeout",
            Error::RestartLimit { .. } => "restart_limit",
            Error::AgentFailed {
                subtype,
                api_error_status,
                ..
            } => match (subtype.as_str(), api_error_status) {
                ("error_max_turns", _) => "agent_max_turns",
                ("error_max_budget_usd", _) => "agent_max_budget",
                (_, Some(429)) => "rate_limited",
                (_, Some(_)) => "api_error",
                _ => "agent_error",
            },
            Error::Log { .. } => "log",
            Error::BatchFile { .. } => "batch_file",
            Error::BatchJob { .. } => "batch_job",
            Error::Repo { problem, .. } => match problem {
                RepoProblem::Missing => "repo_missing",
                RepoProblem::NotGit { .. } => "repo_not_git",
                RepoProblem::Dirty { .. } => "repo_dirty",
                RepoProblem::RefMissing { .. } => "repo_ref_missing",
                RepoProblem::BranchCheckedOut { .. } => "repo_branch_checked_out",
                RepoProblem::NotEmpty => "workspace_not_empty",
                RepoProblem::Untrusted { .. } => "workspace_untrusted",
                RepoProblem::WrongBranch { .. } => "workspace_wrong_branch",
                RepoProblem::GitMissing { .. } => "git_missing",
                RepoProblem::GitFailed { .. } => "git_failed",
            },
            Error::ShuttingDown => "shutting_down",
            Error::Io { .. } => "io",
            Error::Internal { .. } => "internal",
        }
    }

    /// What the user can do about it, when cldpd knows.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::PodNotFound {
                available,
                pods_dir,
                ..
            } => {
                if available.is_empty() {
                    format!(
                        "no pods exist in {}; create <pods-dir>/<name>/Dockerfile, or point --pods-dir / CLDPD_PODS_DIR elsewhere",
                        pods_dir.display()
                    )
                } else {
                    format!("pods that exist: {}", available.join(", "))
                }
            }
            Error::PodsDirMissing { .. } => {
                "run `cldpd init` to create it with an example pod, or pass --pods-dir / set CLDPD_PODS_DIR".to_string()
            }
            Error::InvalidPodName { .. } => {
                "a pod name is the name of a directory in the pods directory: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit".to_string()
            }
            Error::InvalidPod { .. } => "add a Dockerfile to the pod directory".to_string(),
            Error::PodConfig { field: Some(f), .. } => format!(
                "fix or remove `{f}`; the fields are image, env, buildArgs, workdir, inheritEnv, mounts, agentCommand, stopGraceSecs, restart, maxRestarts, withinSecs, backoffMs, backoffMaxMs, timeoutSecs, idleTimeoutSecs, cpus, memory, pidsLimit, agentOutput, agentInput, keepAliveSecs, maxTurns, maxBudgetUsd, network, repository, repo, checkpoint (see the README)"
            ),
            Error::PodConfig { .. } => "pod.json must be one JSON object; see the README for its fields".to_string(),
            Error::MountSourceMissing { .. } => {
                "create the directory or fix `source` in pod.json (cldpd does not let Docker create it empty)".to_string()
            }
            Error::MountTargetRelative { .. } => {
                "use an absolute container path, e.g. /workspace".to_string()
            }
            Error::InvalidEnvName { .. } => {
                "names are letters, digits and '_', not starting with a digit".to_string()
            }
            Error::InvalidIssueUrl { .. } => {
                "pass the issue's URL, e.g. https://github.com/owner/repo/issues/42".to_string()
            }
            Error::EmptyPrompt => "give a non-empty prompt".to_string(),
            Error::DockerUnavailable { .. } => docker_unavailable_hint(
                std::env::var("DOCKER_HOST").ok().as_deref(),
            ),
            Error::BuildFailed { tail, .. } => match crate::runtime::pull_failure(tail) {
                Some(f) => f.hint(),
                None => "fix the pod's Dockerfile; the build output above says where it failed".to_string(),
            },
            Error::DockerFailed { .. } => {
                "this is docker's own error (exit 125): check the image, mounts and options it names".to_string()
            }
            Error::DockerLost { .. } => {
                "check that the Docker daemon runs (`docker info`); then `cldpd ps` shows whether the container is still there, and `cldpd stop --orphans` removes what is left".to_string()
            }
            Error::ImageMissing { .. } => {
                "run it again: cldpd builds the pod's image when it is missing".to_string()
            }
            Error::AgentNotRunnable { image, command, .. } => format!(
                "install `{command}` in image `{image}` (for Claude Code: `RUN npm install -g @anthropic-ai/claude-code` in the Dockerfile) or set agentCommand in pod.json"
            ),
            Error::ArgumentsTooLong { .. } => "shorten the prompt or the pod's template.md (put long material in a file the agent can read, e.g. a mount, and name it in the prompt), or use fewer or shorter env / inheritEnv / buildArgs entries".to_string(),
            Error::SessionNotFound { .. } => "list live runs with `cldpd ps`".to_string(),
            Error::InputUnavailable { .. } => "send it from the process that started the run, or use the Engine API backend (unset CLDPD_RUNTIME); a pod takes follow-ups on its live agent with \"agentInput\": \"stream-json\"".to_string(),
            Error::AmbiguousTarget { .. } => "name one session id instead of the pod".to_string(),
            Error::StopFailed { container, .. } => format!(
                "the container may still be running; check `docker ps --filter name={container}` and remove it with `docker rm -f {container}`"
            ),
            Error::Timeout { .. } => "raise timeoutSecs / idleTimeoutSecs if the run needs longer".to_string(),
            Error::Log { .. } => "check that the state directory (CLDPD_STATE_DIR, default ~/.cldpd) is writable and has space".to_string(),
            Error::BatchFile { .. } => {
                "each job is {\"pod\": \"<name>\", \"issue\": \"<url>\"} or {\"pod\": ..., \"prompt\": ...}, plus optional pod.json fields; the batch did not start".to_string()
            }
            Error::BatchJob { source, .. } => {
                return source.hint().map(|h| format!("{h} (the batch did not start)"))
            }
            Error::Repo { path, problem } => repo_hint(path, problem),
            Error::Internal { .. } => "this is a bug in cldpd or its runtime backend; please report it".to_string(),
            Error::AgentFailed { subtype, api_error_status, .. } => match (subtype.as_str(), api_error_status) {
                ("error_max_turns", _) => "raise maxTurns in pod.json, or split the task".to_string(),
                ("error_max_budget_usd", _) => "raise maxBudgetUsd in pod.json".to_string(),
                (_, Some(429)) | (_, Some(529)) => "the API is rate-limited or overloaded: retry later, or set \"restart\": \"on-failure\" with a back-off in pod.json".to_string(),
                (_, Some(401)) => "check ANTHROPIC_API_KEY / CLAUDE_CODE_OAUTH_TOKEN (pass it with inheritEnv)".to_string(),
                _ => "the agent's own output above says what went wrong (`cldpd logs <session>`)".to_string(),
            },
            _ => return None,
        })
    }

    /// Wrap an I/O error with what cldpd was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// An internal error from any message.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_unavailable_hints_fit_the_kind_of_docker_host() {
        for host in [None, Some(""), Some("unix:///var/run/docker.sock")] {
            assert!(docker_unavailable_hint(host).starts_with("start the Docker daemon"));
        }
        let tcp = docker_unavailable_hint(Some("tcp://10.0.0.2:2376"));
        assert!(
            tcp.contains("at tcp://10.0.0.2:2376")
                && tcp.contains("DOCKER_TLS_VERIFY=1")
                && tcp.contains("DOCKER_CERT_PATH"),
            "{tcp}"
        );
        let ssh = docker_unavailable_hint(Some("ssh://me@build-host"));
        assert!(ssh.contains("`ssh me@build-host`"), "{ssh}");
    }

    #[test]
    fn build_failed_shows_the_tail() {
        let e = Error::BuildFailed {
            image: "cldpd-x".into(),
            code: Some(1),
            tail: vec!["step 2".into(), "boom".into()],
        };
        let s = e.to_string();
        assert!(
            s.contains("cldpd-x") && s.contains("exit 1") && s.ends_with("boom"),
            "{s}"
        );
    }

    #[test]
    fn every_repo_problem_has_a_code_and_a_hint() {
        let problems = [
            (RepoProblem::Missing, "repo_missing"),
            (
                RepoProblem::NotGit {
                    reason: "is not a git repository".into(),
                },
                "repo_not_git",
            ),
            (
                RepoProblem::Dirty {
                    paths: vec!["a".into(), "b".into()],
                    total: 3,
                },
                "repo_dirty",
            ),
            (
                RepoProblem::RefMissing {
                    reference: "main".into(),
                },
                "repo_ref_missing",
            ),
            (
                RepoProblem::BranchCheckedOut {
                    branch: "cldpd/x".into(),
                    worktree: "/w".into(),
                },
                "repo_branch_checked_out",
            ),
            (RepoProblem::NotEmpty, "workspace_not_empty"),
            (
                RepoProblem::Untrusted { reason: "r".into() },
                "workspace_untrusted",
            ),
            (
                RepoProblem::WrongBranch {
                    branch: "cldpd/x".into(),
                    head: "branch y".into(),
                },
                "workspace_wrong_branch",
            ),
            (
                RepoProblem::GitMissing {
                    message: "not found".into(),
                },
                "git_missing",
            ),
            (
                RepoProblem::GitFailed {
                    command: "git fetch".into(),
                    message: "fatal: boom".into(),
                },
                "git_failed",
            ),
        ];
        for (problem, code) in problems {
            let e = Error::Repo {
                path: "/src/app".into(),
                problem,
            };
            assert_eq!(e.code(), code);
            assert!(e.to_string().starts_with("/src/app: "), "{e}");
            assert!(e.hint().is_some(), "{code}");
        }
        let dirty = Error::Repo {
            path: "/src/app".into(),
            problem: RepoProblem::Dirty {
                paths: vec!["a".into(), "b".into()],
                total: 3,
            },
        };
        assert_eq!(
            dirty.to_string(),
            "/src/app: has uncommitted changes: a, b and 1 more"
        );
        assert!(dirty.hint().unwrap().contains("commit or stash"));
    }

    #[test]
    fn every_variant_names_itself() {
        let e = Error::AgentNotRunnable {
            image: "img".into(),
            command: "claude".into(),
            code: 127,
            message: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "agent command `claude` was not found in image `img`"
        );
        assert!(e.hint().unwrap().contains("claude"));
        assert_eq!(
            Error::Timeout {
                kind: TimeoutKind::Idle,
                after: Duration::from_secs(5)
            }
            .to_string(),
            "idle timeout (idleTimeoutSecs) fired after 5s"
        );
    }
}
