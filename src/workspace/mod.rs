//! A session's work in and out of a git repository.
//!
//! A pod may name a local repository (`"repo": {"path": "...", "ref":
//! "main"}` in `pod.json`). The session's workspace then starts as a copy
//! of that commit on a new branch `cldpd/<session>`, and what the agent did
//! comes back into the repository as that branch, without touching the
//! user's working tree, index or current branch.
//!
//! The workspace is a directory of the session's [`storage`] on the host,
//! bind-mounted into its containers; [`git`] is the layer of that round
//! trip on plain host directories. It runs the `git`
//! program, synchronously: call it from a blocking thread
//! (`tokio::task::spawn_blocking`), not from an actor's handler.
//!
//! The life of a session's work, step by step ([`git`] has the details):
//!
//! 1. [`check_source`] before anything starts: the repository exists, is a
//!    git repository, its ref names a commit, its working tree is clean.
//! 2. [`prepare_workspace`]: an empty directory becomes a clone of that
//!    commit on branch `cldpd/<session>`, writable by the container's user.
//! 3. The agent works, and may commit (the workspace has a local identity).
//! 4. [`commit_pending`]: whatever it left uncommitted becomes one commit
//!    by "cldpd agent".
//! 5. [`fetch_back`]: the branch is fetched into the repository as
//!    `cldpd/<session>` (forced, so that a later fetch updates it).
//! 6. [`diff`]: the session's changes as a patch, for `cldpd diff`.
//!
//! ```no_run
//! use cldpd::workspace::{self, RepoSpec};
//! # fn main() -> cldpd::Result<()> {
//! let session = "web-1a2b3c4d";
//! let source = workspace::check_source(&RepoSpec::new("/home/me/src/app", "main"))?;
//! let dir = tempfile_dir();
//! let prepared = workspace::prepare_workspace(&source, session, &dir)?;
//! // ... the container runs on a copy of `dir` and the copy comes back ...
//! workspace::commit_pending(&dir, session, Some("https://github.com/o/r/issues/7"))?;
//! let branch = workspace::fetch_back(&dir, &source.path, session, &prepared.base)?;
//! println!("{}: {} commits", branch.name, branch.commits);
//! let patch = workspace::diff(&source.path, session, &prepared.base)?;
//! # let _ = patch;
//! # Ok(())
//! # }
//! # fn tempfile_dir() -> std::path::PathBuf { "/tmp/ws".into() }
//! ```
//!
//! # The workspace is untrusted
//!
//! Whatever ran in the container could write anything into the workspace,
//! `.git` included, and cldpd then runs git on it on the host. Git executes
//! programs named in a repository's configuration (`core.fsmonitor`, filter
//! drivers, hooks) and follows a `.git` file or symbolic links to wherever
//! they point. So before each command on a workspace cldpd refuses a `.git`
//! that is not a plain directory, holds a symbolic link, or borrows objects
//! from elsewhere (`objects/info/alternates`, `commondir`), rewrites
//! `.git/config` to the one it wrote itself, ignores the user's global and
//! the system git configuration, and disables hooks
//! ([`crate::RepoProblem::Untrusted`] otherwise).
//!
//! # Errors
//!
//! Everything fails with [`crate::Error::Repo`], whose
//! [`crate::RepoProblem`] says what is wrong (and gives the error's code),
//! except an invalid session id or base commit ([`crate::Error::InvalidOption`])
//! and file-system errors of cldpd's own ([`crate::Error::Io`]).

pub mod git;
pub mod storage;

pub use storage::{Storage, StoredRepo, StoredSession};

pub use git::{
    branch_name, check_source, commit_pending, diff, fetch_back, prepare_workspace, Branch,
    Prepared, RepoSpec, Source, AGENT_EMAIL, AGENT_NAME, BRANCH_PREFIX, CONTAINER_GIT_ENV,
};
