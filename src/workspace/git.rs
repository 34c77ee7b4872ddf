//! Git in and out of a session's workspace: check the user's repository,
//! clone one commit of it into a workspace, commit what the agent left,
//! fetch the session's branch back, print its patch.
//!
//! Every function runs the `git` program (2.36 or later) and waits for it:
//! call them on a blocking thread. None of them reads the user's global or
//! system git configuration where it could change the result (identity,
//! hooks, signing, filters), and none prints or logs anything.
//!
//! What cldpd decided, and why:
//!
//! - **Bare repositories are accepted** as sources. They have no working
//!   tree, so there is nothing to be dirty and nothing to touch; the
//!   session's branch is fetched into them like into any other. A source
//!   must be the top level of its repository (the directory holding `.git`,
//!   or the bare repository itself), not a directory inside one: the
//!   workspace would hold the whole repository anyway, and a path that
//!   names a part of it would mislead.
//! - **The workspace has no remote.** It is a fresh repository into which
//!   the base commit (and its history, but no other branch or tag of the
//!   source) is fetched. The source's path means nothing inside the
//!   container, the agent needs no way to push into the user's repository,
//!   and the work comes back by the source fetching from the workspace
//!   ([`fetch_back`]), not by the workspace pushing.
//! - **The workspace is world-writable**: every directory `0777`, every
//!   file `0666` (`0777` if executable), and `core.sharedRepository = 0666`
//!   so that what git writes later keeps those modes, whichever side writes
//!   it. The container's user, whatever its uid, can then change any file.
//!   Git inside the container still refuses a repository owned by another
//!   uid ("dubious ownership"): give the container [`CONTAINER_GIT_ENV`],
//!   or `chown -R` the workspace to the container's user.
//! - **Untracked files are dirty** in a source ([`check_source`]); ignored
//!   ones are not, and they are not part of the workspace either (only
//!   committed files are).
//! - Submodules are not cloned into the workspace, and Git LFS files are
//!   checked out as their pointer files (no filters run on a workspace).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{Error, RepoProblem, Result};

/// The prefix of every session's branch: `cldpd/<session>`.
pub const BRANCH_PREFIX: &str = "cldpd/";

/// The author and committer name of the commits cldpd makes, and the
/// workspace's local `user.name` (so the agent's own commits carry it too).
pub const AGENT_NAME: &str = "cldpd agent";

/// The author and committer email of the commits cldpd makes, and the
/// workspace's local `user.email`.
pub const AGENT_EMAIL: &str = "cldpd-agent@localhost";

/// Environment variables that let git inside the container work on a
/// workspace owned by another uid (cldpd prepares it as its own user;
/// the agent runs as the image's user).
///
/// Git refuses a repository its user does not own ("detected dubious
/// ownership") unless `safe.directory` allows it, and it takes that
/// setting only from protected configuration: the system or global file,
/// the command line, or these `GIT_CONFIG_*` variables. They are not
/// secrets. The alternative is to `chown -R` the workspace to the
/// container's user.
///
/// ```
/// use cldpd::workspace::CONTAINER_GIT_ENV;
/// let mut cmd = std::process::Command::new("git");
/// cmd.envs(CONTAINER_GIT_ENV);
/// assert_eq!(CONTAINER_GIT_ENV[1], ("GIT_CONFIG_KEY_0", "safe.directory"));
/// ```
pub const CONTAINER_GIT_ENV: [(&str, &str); 3] = [
    ("GIT_CONFIG_COUNT", "1"),
    ("GIT_CONFIG_KEY_0", "safe.directory"),
    ("GIT_CONFIG_VALUE_0", "*"),
];

/// The repository a pod names: `"repo": {"path": "...", "ref": "main"}` in
/// `pod.json`, with `~` already expanded.
///
/// ```
/// use cldpd::workspace::RepoSpec;
/// let spec = RepoSpec::new("/home/me/src/app", "");
/// assert_eq!(spec.reference(), "HEAD");
/// assert_eq!(RepoSpec::new("/src/app", "main").reference(), "main");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    /// The repository's directory on the host: the top level of a work
    /// tree, or a bare repository.
    pub path: PathBuf,
    /// A branch, tag, commit or any revision git resolves to a commit
    /// (`main`, `v1.2`, `HEAD~1`); empty means `HEAD`.
    pub reference: String,
}

impl RepoSpec {
    /// A spec from a path and a ref (empty for `HEAD`).
    pub fn new(path: impl Into<PathBuf>, reference: impl Into<String>) -> Self {
        RepoSpec {
            path: path.into(),
            reference: reference.into(),
        }
    }

    /// The ref to resolve: [`RepoSpec::reference`], or `HEAD` when empty.
    pub fn reference(&self) -> &str {
        if self.reference.is_empty() {
            "HEAD"
        } else {
            &self.reference
        }
    }
}

/// A repository [`check_source`] accepted: what a session starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The repository's directory, canonical (absolute, no symbolic links).
    pub path: PathBuf,
    /// The ref as given (`HEAD` when the spec's was empty).
    pub reference: String,
    /// The commit it resolved to (full hex id): the session's base.
    pub commit: String,
}

/// A workspace [`prepare_workspace`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The commit the session's branch starts at (full hex id); keep it for
    /// [`fetch_back`] and [`diff`].
    pub base: String,
}

/// The session's branch in the source repository, after [`fetch_back`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Branch {
    /// `cldpd/<session>`.
    pub name: String,
    /// The commit it points at (full hex id).
    pub head: String,
    /// How many commits it has that the base has not (`base..head`).
    pub commits: usize,
}

/// The name of a session's branch: `cldpd/<session>`.
///
/// ```
/// assert_eq!(cldpd::workspace::branch_name("web-1a2b3c4d"), "cldpd/web-1a2b3c4d");
/// ```
pub fn branch_name(session: &str) -> String {
    format!("{BRANCH_PREFIX}{session}")
}

/// Check that a pod's repository can start a session, before anything
/// starts: the path exists, is the top level of a git repository (a work
/// tree, or a bare repository), its ref resolves to a commit, and its
/// working tree is clean. Staged, unstaged and untracked (not ignored)
/// files all count as dirty; the error names up to five of them.
///
/// Reads only: it takes no lock and does not refresh the index.
///
/// ```no_run
/// use cldpd::workspace::{check_source, RepoSpec};
/// match check_source(&RepoSpec::new("/home/me/src/app", "main")) {
///     Ok(source) => println!("starting from {}", source.commit),
///     Err(e) => eprintln!("{e} ({}); {}", e.code(), e.hint().unwrap_or_default()),
/// }
/// ```
pub fn check_source(repo: &RepoSpec) -> Result<Source> {
    Git::default().check_source(repo)
}

/// Make `dest` (an empty or absent directory) the workspace of a session:
/// a repository holding `source.commit` and its history, on a new branch
/// `cldpd/<session>` checked out, with [`AGENT_NAME`] / [`AGENT_EMAIL`] as
/// its local identity (so the agent's own `git commit` works), no remote,
/// and every file writable by any user (see the module docs).
///
/// ```no_run
/// use cldpd::workspace::{check_source, prepare_workspace, RepoSpec};
/// # fn main() -> cldpd::Result<()> {
/// let source = check_source(&RepoSpec::new("/home/me/src/app", "main"))?;
/// let prepared = prepare_workspace(&source, "web-1a2b3c4d", "/tmp/ws".as_ref())?;
/// assert_eq!(prepared.base, source.commit);
/// # Ok(())
/// # }
/// ```
pub fn prepare_workspace(source: &Source, session: &str, dest: &Path) -> Result<Prepared> {
    Git::default().prepare_workspace(source, session, dest)
}

/// Commit whatever the workspace holds uncommitted (modified, deleted and
/// untracked files; not ignored ones) on the session's branch, with
/// [`AGENT_NAME`] `<`[`AGENT_EMAIL`]`>` as author and committer and a
/// message naming the session and the issue. Returns the new commit, or
/// `None` when there was nothing to commit.
///
/// The workspace must still be on branch `cldpd/<session>`
/// ([`RepoProblem::WrongBranch`] otherwise: the agent switched branches,
/// and committing elsewhere would not bring the work back). Hooks and
/// signing never run. The workspace may belong to another uid.
///
/// ```no_run
/// # fn main() -> cldpd::Result<()> {
/// let ws = std::path::Path::new("/tmp/ws");
/// if let Some(commit) = cldpd::workspace::commit_pending(ws, "web-1a2b3c4d", Some("https://github.com/o/r/issues/7"))? {
///     println!("committed the agent's leftovers as {commit}");
/// }
/// # Ok(())
/// # }
/// ```
pub fn commit_pending(
    workspace: &Path,
    session: &str,
    issue: Option<&str>,
) -> Result<Option<String>> {
    Git::default().commit_pending(workspace, session, issue)
}

/// Make the workspace's branch `cldpd/<session>` the branch of the same
/// name in the source repository (a forced update: a later call after
/// more, or rewritten, commits moves it again), without touching the
/// source's working tree, index, HEAD or `FETCH_HEAD`. No tags come along.
///
/// Refused ([`RepoProblem::BranchCheckedOut`]) when that branch is checked
/// out in a work tree of the source. `base` is [`Prepared::base`]; the
/// result counts the commits in `base..cldpd/<session>`.
///
/// ```no_run
/// # fn main() -> cldpd::Result<()> {
/// let branch = cldpd::workspace::fetch_back(
///     "/tmp/ws".as_ref(),
///     "/home/me/src/app".as_ref(),
///     "web-1a2b3c4d",
///     "3f1c0a8e9b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
/// )?;
/// println!("{} ({} commits)", branch.name, branch.commits);
/// # Ok(())
/// # }
/// ```
pub fn fetch_back(workspace: &Path, source: &Path, session: &str, base: &str) -> Result<Branch> {
    Git::default().fetch_back(workspace, source, session, base)
}

/// The session's changes as one patch: `git diff --binary base
/// cldpd/<session>` in the source repository (after [`fetch_back`]).
///
/// One cumulative diff rather than `git format-patch` mail: it is what
/// `cldpd diff <session> | git apply` (or `patch -p1`, for text files)
/// expects, whatever the agent's commits were; the commits themselves are
/// on the branch for anyone who wants them (`git log -p base..cldpd/<id>`).
/// Binary files are included (`--binary`), renames are shown as such, paths
/// carry the usual `a/` and `b/` prefixes whatever the user's
/// configuration says, and external diff drivers, text conversion and
/// colour are off. Bytes, not a `String`: a patch of a file that is not
/// UTF-8 must stay byte-exact to apply. Empty when the session changed
/// nothing.
///
/// ```no_run
/// use std::io::Write;
/// # fn main() -> cldpd::Result<()> {
/// let patch = cldpd::workspace::diff(
///     "/home/me/src/app".as_ref(),
///     "web-1a2b3c4d",
///     "3f1c0a8e9b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
/// )?;
/// std::io::stdout().write_all(&patch).ok();
/// # Ok(())
/// # }
/// ```
pub fn diff(source: &Path, session: &str, base: &str) -> Result<Vec<u8>> {
    Git::default().diff(source, session, base)
}

// ----- the git program ------------------------------------------------------

/// Whose configuration a git command may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// The user's own repository: their global configuration applies
    /// (`core.excludesFile`, `safe.directory`, ...), hooks do not.
    User,
    /// A workspace: the container could have written anything into it, so
    /// no global configuration, hooks off, and `safe.directory` for it
    /// alone (it may belong to the container's uid).
    Workspace,
}

/// Runs the git program.
struct Git {
    program: OsString,
}

impl Default for Git {
    fn default() -> Self {
        Git {
            program: OsString::from("git"),
        }
    }
}

/// A `Repo` error.
fn repo_error(path: &Path, problem: RepoProblem) -> Error {
    Error::Repo {
        path: path.to_path_buf(),
        problem,
    }
}

/// Git's error output, trimmed and bounded.
fn stderr_text(out: &Output) -> String {
    const CAP: usize = 4000;
    let text = String::from_utf8_lossy(&out.stderr);
    let text = text.trim();
    if text.is_empty() {
        return match out.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        };
    }
    if text.len() <= CAP {
        return text.to_string();
    }
    let mut end = CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A command's output as trimmed text (ids, names, counts).
fn stdout_text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_string()
}

/// `<prefix><path>` as one argument.
fn arg_with(prefix: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(prefix);
    arg.push(path.as_os_str());
    arg
}

/// `path`, canonical; [`RepoProblem::Missing`] when it does not exist.
fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            repo_error(path, RepoProblem::Missing)
        } else {
            Error::io(format!("resolving {}", path.display()), e)
        }
    })
}

/// A session id fit for a branch name: what cldpd's ids are made of
/// (`<pod>-<hex8>`), letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit, with none of the sequences git refuses in a ref.
fn check_session(session: &str) -> Result<()> {
    let reason = if session.is_empty() {
        Some("it is empty")
    } else if session.len() > 200 {
        Some("it is longer than 200 characters")
    } else if !session
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' may make a branch name")
    } else if !session.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or digit")
    } else if session.contains("..") || session.ends_with('.') || session.ends_with(".lock") {
        Some("git refuses '..', a final '.' and a final \".lock\" in a branch name")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidOption {
            option: "session".to_string(),
            message: format!("`{session}` cannot name a git branch: {reason}"),
        }),
    }
}

/// A full commit id (SHA-1 or SHA-256, lowercase hex), as
/// [`Prepared::base`] holds.
fn check_commit_id(base: &str) -> Result<()> {
    if matches!(base.len(), 40 | 64) && base.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option: "base".to_string(),
            message: format!("`{base}` is not a full commit id (40 or 64 lowercase hex digits)"),
        })
    }
}

/// Quote a word for `sh`.
fn shell_quote(word: &OsStr) -> String {
    format!("'{}'", word.to_string_lossy().replace('\'', r"'\''"))
}

impl Git {
    /// `git -C dir <overrides> args...`, in an environment that no `GIT_*`
    /// variable of the caller redirects (`GIT_DIR`, `GIT_INDEX_FILE`,
    /// `GIT_AUTHOR_*`, ... as a git hook would set them), without the
    /// system configuration, with English messages.
    fn command<I, S>(&self, dir: &Path, trust: Trust, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        for (key, _) in std::env::vars_os() {
            let Some(name) = key.to_str() else { continue };
            let keep =
                name == "GIT_EXEC_PATH" || (trust == Trust::User && name == "GIT_CONFIG_GLOBAL");
            if name.starts_with("GIT_") && !keep {
                cmd.env_remove(&key);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C");
        cmd.arg("-C").arg(dir);
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ]);
        if trust == Trust::Workspace {
            cmd.env("GIT_CONFIG_GLOBAL", "/dev/null");
            cmd.arg("-c").arg(arg_with("safe.directory=", dir));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Run a command to its end; its exit status is the caller's to judge.
    fn output(&self, dir: &Path, mut cmd: Command) -> Result<Output> {
        cmd.output().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                repo_error(
                    dir,
                    RepoProblem::GitMissing {
                        message: format!("{}: {e}", self.program.to_string_lossy()),
                    },
                )
            } else {
                Error::io(format!("running git in {}", dir.display()), e)
            }
        })
    }

    /// Run `git <args>` in `dir`; its standard output, or
    /// [`RepoProblem::GitFailed`] when it fails.
    fn run<I, S>(&self, dir: &Path, trust: Trust, args: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.output(dir, self.command(dir, trust, &args))?;
        check(dir, &args, out)
    }

    fn check_source(&self, repo: &RepoSpec) -> Result<Source> {
        let given = &repo.path;
        let meta = fs::metadata(given).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                repo_error(given, RepoProblem::Missing)
            } else {
                Error::io(format!("reading {}", given.display()), e)
            }
        })?;
        let not_git = |reason: String| repo_error(given, RepoProblem::NotGit { reason });
        if !meta.is_dir() {
            return Err(not_git("is not a directory".to_string()));
        }
        let path = canonical(given)?;

        let cmd = self.command(
            &path,
            Trust::User,
            [
                "rev-parse",
                "--is-bare-repository",
                "--is-inside-git-dir",
                "--absolute-git-dir",
            ],
        );
        let out = self.output(&path, cmd)?;
        if !out.status.success() {
            let message = stderr_text(&out);
            if message.contains("not a git repository") {
                return Err(not_git("is not a git repository".to_string()));
            }
            return Err(repo_error(
                given,
                RepoProblem::GitFailed {
                    command: "git rev-parse".to_string(),
                    message,
                },
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let bare = lines.next() == Some("true");
        let inside_git_dir = lines.next() == Some("true");
        let git_dir = PathBuf::from(lines.next().unwrap_or_default());
        if bare {
            if fs::canonicalize(&git_dir).ok().as_deref() != Some(path.as_path()) {
                return Err(not_git(format!(
                    "is inside the bare repository {}, not its top level",
                    git_dir.display()
                )));
            }
        } else if inside_git_dir {
            let top = git_dir.parent().unwrap_or(&git_dir);
            return Err(not_git(format!(
                "is inside the git directory of {}, not its work tree",
                top.display()
            )));
        } else {
            let top =
                stdout_text(&self.run(&path, Trust::User, ["rev-parse", "--show-toplevel"])?);
            if fs::canonicalize(&top).ok().as_deref() != Some(path.as_path()) {
                return Err(not_git(format!(
                    "is inside the work tree of {top}, not its top level"
                )));
            }
        }

        let reference = repo.reference().to_string();
        let ref_missing = || {
            repo_error(
                given,
                RepoProblem::RefMissing {
                    reference: reference.clone(),
                },
            )
        };
        if reference.starts_with('-') {
            return Err(ref_missing());
        }
        let cmd = self.command(
            &path,
            Trust::User,
            [
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{reference}^{{commit}}"),
            ],
        );
        let out = self.output(&path, cmd)?;
        if !out.status.success() {
            return Err(ref_missing());
        }
        let commit = stdout_text(&out.stdout);

        if !bare {
            let status = self.run(
                &path,
                Trust::User,
                [
                    "status",
                    "--porcelain=v1",
                    "-z",
                    "--untracked-files=normal",
                    "--ignore-submodules=none",
                ],
            )?;
            let dirty = porcelain_paths(&status);
            if !dirty.is_empty() {
                let total = dirty.len();
                let paths = dirty.into_iter().take(5).collect();
                return Err(repo_error(given, RepoProblem::Dirty { paths, total }));
            }
        }

        Ok(Source {
            path,
            reference,
            commit,
        })
    }

    fn prepare_workspace(&self, source: &Source, session: &str, dest: &Path) -> Result<Prepared> {
        check_session(session)?;
        check_commit_id(&source.commit)?;
        match fs::symlink_metadata(dest) {
            Ok(meta) => {
                let empty = meta.is_dir()
                    && fs::read_dir(dest)
                        .map_err(|e| Error::io(format!("reading {}", dest.display()), e))?
                        .next()
                        .is_none();
                if !empty {
                    return Err(repo_error(dest, RepoProblem::NotEmpty));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dest)
                    .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", dest.display()), e)),
        }
        let dest = canonical(dest)?;
        let branch = branch_name(session);

        let format = stdout_text(&self.run(
            &source.path,
            Trust::User,
            ["rev-parse", "--show-object-format"],
        )?);
        let format = ObjectFormat::parse(&format).ok_or_else(|| {
            repo_error(
                &source.path,
                RepoProblem::GitFailed {
                    command: "git rev-parse".to_string(),
                    message: format!("unknown object format `{format}`"),
                },
            )
        })?;
        // No template: nothing from the system's template directory (hooks
        // included) lands in the workspace.
        self.run(
            &dest,
            Trust::Workspace,
            [
                "init",
                "--quiet",
                "--template=",
                &format!("--object-format={}", format.name()),
                &format!("--initial-branch={branch}"),
                ".",
            ],
        )?;
        write_config(&dest, format)?;
        // The base commit and its history, straight into the (unborn,
        // checked-out) session branch. The user's configuration applies:
        // git reads their repository here, as they would.
        let mut fetch: Vec<OsString> = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--no-auto-maintenance",
            "--update-head-ok",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        fetch.push(source.path.clone().into_os_string());
        fetch.push(format!("+{}:refs/heads/{branch}", source.commit).into());
        self.run(&dest, Trust::User, &fetch)?;
        self.run(
            &dest,
            Trust::Workspace,
            ["reset", "--quiet", "--hard", "HEAD"],
        )?;
        make_shared(&dest)?;
        Ok(Prepared {
            base: source.commit.clone(),
        })
    }

    fn commit_pending(
        &self,
        workspace: &Path,
        session: &str,
        issue: Option<&str>,
    ) -> Result<Option<String>> {
        check_session(session)?;
        let ws = harden(workspace)?;
        let branch = branch_name(session);

        let out = self.output(
            &ws,
            self.command(&ws, Trust::Workspace, ["symbolic-ref", "--quiet", "HEAD"]),
        )?;
        let head = match out.status.code() {
            Some(0) => stdout_text(&out.stdout),
            Some(1) => String::new(),
            _ => return Err(failure(&ws, "git symbolic-ref", &out)),
        };
        if head != format!("refs/heads/{branch}") {
            let head = match head.strip_prefix("refs/heads/") {
                Some(name) => format!("branch {name}"),
                None => "a detached HEAD".to_string(),
            };
            return Err(repo_error(
                workspace,
                RepoProblem::WrongBranch { branch, head },
            ));
        }

        let status = self.run(
            &ws,
            Trust::Workspace,
            [
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--ignore-submodules=none",
            ],
        )?;
        if status.is_empty() {
            return Ok(None);
        }
        self.run(&ws, Trust::Workspace, ["add", "--all"])?;
        // Changes inside a nested repository show in `status` but stage
        // nothing: then there is nothing to commit.
        let out = self.output(
            &ws,
            self.command(
                &ws,
                Trust::Workspace,
                ["diff", "--cached", "--quiet", "--no-ext-diff"],
            ),
        )?;
        match out.status.code() {
            Some(0) => return Ok(None),
            Some(1) => {}
            _ => return Err(failure(&ws, "git diff", &out)),
        }

        let mut message = format!("cldpd: work left uncommitted by session {session}");
        if let Some(issue) = issue {
            message.push_str(&format!(" on {issue}"));
        }
        message.push_str(&format!("\n\nSession: {session}\n"));
        if let Some(issue) = issue {
            message.push_str(&format!("Issue: {issue}\n"));
        }
        let args: Vec<OsString> = vec![
            "-c".into(),
            format!("user.name={AGENT_NAME}").into(),
            "-c".into(),
            format!("user.email={AGENT_EMAIL}").into(),
            "-c".into(),
            "commit.gpgSign=false".into(),
            "commit".into(),
            "--quiet".into(),
            "--no-verify".into(),
            "--no-gpg-sign".into(),
            "--cleanup=verbatim".into(),
            "--message".into(),
            message.into(),
        ];
        let mut cmd = self.command(&ws, Trust::Workspace, &args);
        cmd.env("GIT_AUTHOR_NAME", AGENT_NAME)
            .env("GIT_AUTHOR_EMAIL", AGENT_EMAIL)
            .env("GIT_COMMITTER_NAME", AGENT_NAME)
            .env("GIT_COMMITTER_EMAIL", AGENT_EMAIL);
        let out = self.output(&ws, cmd)?;
        check(&ws, &args, out)?;
        let commit =
            stdout_text(&self.run(&ws, Trust::Workspace, ["rev-parse", "--verify", "HEAD"])?);
        Ok(Some(commit))
    }

    fn fetch_back(
        &self,
        workspace: &Path,
        source: &Path,
        session: &str,
        base: &str,
    ) -> Result<Branch> {
        check_session(session)?;
        check_commit_id(base)?;
        let ws = harden(workspace)?;
        let source = canonical(source)?;
        let branch = branch_name(session);
        let full = format!("refs/heads/{branch}");

        // Git refuses to fetch into a branch checked out in a non-bare
        // repository's work tree; say so before, in cldpd's words.
        let list = self.run(
            &source,
            Trust::User,
            ["worktree", "list", "--porcelain", "-z"],
        )?;
        if let Some(worktree) = checked_out_in(&list, &full) {
            return Err(repo_error(
                &source,
                RepoProblem::BranchCheckedOut { branch, worktree },
            ));
        }

        // Local fetches run `git upload-pack` on the workspace without the
        // `-c` settings of this command, so it gets its own: the
        // workspace may belong to the container's uid.
        let upload_pack = format!(
            "{} -c 'safe.directory=*' -c core.hooksPath=/dev/null upload-pack",
            shell_quote(&self.program)
        );
        let mut fetch: Vec<OsString> = vec![
            "fetch".into(),
            "--quiet".into(),
            "--no-tags".into(),
            "--no-write-fetch-head".into(),
            "--no-recurse-submodules".into(),
            "--no-auto-maintenance".into(),
            format!("--upload-pack={upload_pack}").into(),
        ];
        fetch.push(ws.clone().into_os_string());
        fetch.push(format!("+{full}:{full}").into());
        self.run(&source, Trust::User, &fetch)?;

        let head = stdout_text(&self.run(
            &source,
            Trust::User,
            [
                "rev-parse",
                "--verify",
                "--end-of-options",
                &format!("{full}^{{commit}}"),
            ],
        )?);
        let count = stdout_text(&self.run(
            &source,
            Trust::User,
            ["rev-list", "--count", &format!("{base}..{head}")],
        )?);
        let commits = count.parse().map_err(|_| {
            repo_error(
                &source,
                RepoProblem::GitFailed {
                    command: "git rev-list".to_string(),
                    message: format!("unexpected output `{count}`"),
                },
            )
        })?;
        Ok(Branch {
            name: branch,
            head,
            commits,
        })
    }

    fn diff(&self, source: &Path, session: &str, base: &str) -> Result<Vec<u8>> {
        check_session(session)?;
        check_commit_id(base)?;
        let source = canonical(source)?;
        let branch = branch_name(session);
        let full = format!("refs/heads/{branch}");
        let cmd = self.command(
            &source,
            Trust::User,
            [
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{full}^{{commit}}"),
            ],
        );
        if !self.output(&source, cmd)?.status.success() {
            return Err(repo_error(
                &source,
                RepoProblem::RefMissing { reference: branch },
            ));
        }
        self.run(
            &source,
            Trust::User,
            [
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--binary",
                "--find-renames",
                "--submodule=short",
                "--src-prefix=a/",
                "--dst-prefix=b/",
                base,
                &full,
                "--",
            ],
        )
    }
}

/// The standard output of a command that succeeded, or
/// [`RepoProblem::GitFailed`] naming its subcommand.
fn check<S: AsRef<OsStr>>(dir: &Path, args: &[S], out: Output) -> Result<Vec<u8>> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    // The subcommand: the first argument that is not a `-c key=value`.
    let mut words = args.iter().map(|a| a.as_ref().to_string_lossy());
    let mut command = String::new();
    while let Some(word) = words.next() {
        if word == "-c" {
            words.next();
            continue;
        }
        command = word.into_owned();
        break;
    }
    Err(failure(dir, format!("git {command}").trim_end(), &out))
}

/// [`RepoProblem::GitFailed`] for a command that failed.
fn failure(dir: &Path, command: &str, out: &Output) -> Error {
    repo_error(
        dir,
        RepoProblem::GitFailed {
            command: command.to_string(),
            message: stderr_text(out),
        },
    )
}

/// The paths of `git status --porcelain=v1 -z` output (a rename's new
/// name only).
fn porcelain_paths(out: &[u8]) -> Vec<String> {
    let mut paths = Vec::new();
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(field) = fields.next() {
        if field.len() < 4 {
            continue;
        }
        let xy = &field[..2];
        paths.push(String::from_utf8_lossy(&field[3..]).into_owned());
        if xy.contains(&b'R') || xy.contains(&b'C') {
            fields.next();
        }
    }
    paths
}

/// The work tree in which `full_ref` is checked out, from `git worktree
/// list --porcelain -z`.
fn checked_out_in(list: &[u8], full_ref: &str) -> Option<PathBuf> {
    let mut worktree = None;
    for field in list.split(|b| *b == 0) {
        let field = String::from_utf8_lossy(field);
        if let Some(path) = field.strip_prefix("worktree ") {
            worktree = Some(PathBuf::from(path));
        } else if field.strip_prefix("branch ") == Some(full_ref) {
            return worktree;
        }
    }
    None
}

// ----- the workspace's .git ---------------------------------------------------

/// The hash function of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectFormat {
    Sha1,
    Sha256,
}

impl ObjectFormat {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(ObjectFormat::Sha1),
            "sha256" => Some(ObjectFormat::Sha256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ObjectFormat::Sha1 => "sha1",
            ObjectFormat::Sha256 => "sha256",
        }
    }
}

/// Write the workspace's `.git/config`: the only configuration git sees
/// there, cldpd's own. Whatever was there (the agent could have put
/// `core.fsmonitor`, filter drivers or an `include` in it) is replaced.
fn write_config(ws: &Path, format: ObjectFormat) -> Result<()> {
    let path = ws.join(".git").join("config");
    let (version, extensions) = match format {
        ObjectFormat::Sha1 => (0, ""),
        ObjectFormat::Sha256 => (1, "[extensions]\n\tobjectformat = sha256\n"),
    };
    let text = format!(
        "# Written by cldpd, and written again before cldpd runs git on this workspace.\n\
         [core]\n\
         \trepositoryformatversion = {version}\n\
         \tfilemode = true\n\
         \tbare = false\n\
         \tlogallrefupdates = true\n\
         \tsharedRepository = 0666\n\
         [user]\n\
         \tname = {AGENT_NAME}\n\
         \temail = {AGENT_EMAIL}\n\
         {extensions}"
    );
    let io_error = |e| Error::io(format!("writing {}", path.display()), e);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    fs::write(&path, text).map_err(io_error)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(io_error)
}

/// Make a workspace safe to run git on from the host (see the module docs
/// of [`crate::workspace`]); its canonical path.
fn harden(workspace: &Path) -> Result<PathBuf> {
    let ws = canonical(workspace)?;
    let untrusted = |reason: String| repo_error(workspace, RepoProblem::Untrusted { reason });
    let dot_git = ws.join(".git");
    match fs::symlink_metadata(&dot_git) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(untrusted(
                ".git is not a directory (a .git file or link points git elsewhere)".to_string(),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(untrusted("it has no .git directory".to_string()))
        }
        Err(e) => return Err(Error::io(format!("reading {}", dot_git.display()), e)),
    }
    no_links(&dot_git, Path::new(".git")).map_err(|e| match e {
        LinkCheck::Link(rel) => untrusted(format!("{} is a symbolic link", rel.display())),
        LinkCheck::Io(path, e) => Error::io(format!("reading {}", path.display()), e),
    })?;
    for borrowed in [
        "commondir",
        "objects/info/alternates",
        "objects/info/http-alternates",
    ] {
        if fs::symlink_metadata(dot_git.join(borrowed)).is_ok() {
            return Err(untrusted(format!(
                ".git/{borrowed} points git at another repository"
            )));
        }
    }
    // The hash function is the one thing of the old configuration kept.
    let config = fs::read(dot_git.join("config")).unwrap_or_default();
    let squeezed: Vec<u8> = config
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect();
    let sha256 = squeezed.windows(19).any(|w| w == b"objectformat=sha256");
    write_config(
        &ws,
        if sha256 {
            ObjectFormat::Sha256
        } else {
            ObjectFormat::Sha1
        },
    )?;
    Ok(ws)
}

/// Why [`no_links`] stopped.
enum LinkCheck {
    Link(PathBuf),
    Io(PathBuf, io::Error),
}

/// Refuse a symbolic link anywhere under `dir` (`rel` names it in errors):
/// git would write through it, wherever it points on the host.
fn no_links(dir: &Path, rel: &Path) -> std::result::Result<(), LinkCheck> {
    let entries = fs::read_dir(dir).map_err(|e| LinkCheck::Io(dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LinkCheck::Io(dir.to_path_buf(), e))?;
        let kind = entry
            .file_type()
            .map_err(|e| LinkCheck::Io(entry.path(), e))?;
        let rel = rel.join(entry.file_name());
        if kind.is_symlink() {
            return Err(LinkCheck::Link(rel));
        }
        if kind.is_dir() {
            no_links(&entry.path(), &rel)?;
        }
    }
    Ok(())
}

/// Every directory `0777`, every file `0666` (`0777` when its owner may
/// execute it), symbolic links left alone: the container's user, whatever
/// its uid, may change anything.
fn make_shared(dir: &Path) -> Result<()> {
    let io_error = |path: &Path, e| Error::io(format!("making {} writable", path.display()), e);
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).map_err(|e| io_error(dir, e))?;
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            make_shared(&path)?;
        } else {
            let exec = meta.permissions().mode() & 0o100 != 0;
            let mode = if exec { 0o777 } else { 0o666 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_error(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use tempfile::TempDir;

    const SESSION: &str = "web-1a2b3c4d";
    const ISSUE: &str = "https://github.com/o/r/issues/7";
    /// The container user of the tests that need another uid.
    const OTHER_UID: u32 = 1000;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A git command as a test's user (not cldpd) runs it: no global or
    /// system configuration, a fixed identity.
    fn user_git(dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=Test User",
                "-c",
                "user.email=test@example.com",
            ])
            .stdin(Stdio::null());
        cmd
    }

    fn run_cmd(mut cmd: Command) -> String {
        let out = cmd.output().expect("git runs");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    fn sh(dir: &Path, args: &[&str]) -> String {
        let mut cmd = user_git(dir);
        cmd.args(args);
        run_cmd(cmd)
    }

    /// git as the container's user would run it: as `OTHER_UID` when the
    /// tests run as root, with [`CONTAINER_GIT_ENV`] and the workspace's
    /// own identity.
    fn agent_git(dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/nonexistent")
            .envs(CONTAINER_GIT_ENV)
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null());
        if is_root() {
            cmd.uid(OTHER_UID).gid(OTHER_UID);
        }
        run_cmd(cmd)
    }

    fn write(path: &Path, content: impl AsRef<[u8]>) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    /// A temporary directory others may enter (the container's user must
    /// reach the workspace inside it).
    fn tmp() -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    /// A repository with two commits on `main`, a tag, and an ignored
    /// directory holding a file.
    fn source_repo(root: &Path) -> PathBuf {
        let repo = root.join("src");
        fs::create_dir(&repo).unwrap();
        sh(&repo, &["init", "-q", "--initial-branch=main"]);
        write(&repo.join("README.md"), "hello\n");
        write(&repo.join(".gitignore"), "target/\n");
        write(&repo.join("src/lib.rs"), "pub fn one() -> u32 { 1 }\n");
        write(&repo.join("old-name.txt"), "to be renamed\n".repeat(20));
        sh(&repo, &["add", "-A"]);
        sh(&repo, &["commit", "-q", "-m", "initial"]);
        sh(&repo, &["tag", "v1"]);
        write(
            &repo.join("src/lib.rs"),
            "pub fn one() -> u32 { 1 }\npub fn two() -> u32 { 2 }\n",
        );
        sh(&repo, &["commit", "-q", "-am", "two"]);
        write(&repo.join("target/build.out"), "ignored\n");
        repo
    }

    /// What most tests start from: a fresh directory (kept alive by the
    /// returned `TempDir`), a [`source_repo`] in it on `main`, and a
    /// workspace `ws` beside it prepared from it for [`SESSION`].
    fn prepared_workspace() -> (TempDir, PathBuf, Source, PathBuf, Prepared) {
        let root = tmp();
        let repo = source_repo(root.path());
        let source = check_source(&RepoSpec::new(&repo, "main")).unwrap();
        let ws = root.path().join("ws");
        let prepared = prepare_workspace(&source, SESSION, &ws).unwrap();
        (root, repo, source, ws, prepared)
    }

    fn failed_with(result: Result<impl std::fmt::Debug>) -> (String, String) {
        let err = result.expect_err("an error");
        (err.code().to_string(), err.to_string())
    }

    /// Everything of the source a fetch must not touch.
    #[derive(Debug, PartialEq)]
    struct Untouched {
        head: String,
        head_commit: String,
        index: Vec<u8>,
        files: Vec<(String, Vec<u8>)>,
        fetch_head: bool,
        status: String,
    }

    fn untouched(repo: &Path) -> Untouched {
        let files = [
            "README.md",
            "src/lib.rs",
            "old-name.txt",
            "target/build.out",
            "feature.txt",
        ]
        .iter()
        .map(|f| (f.to_string(), fs::read(repo.join(f)).unwrap_or_default()))
        .collect();
        Untouched {
            head: fs::read_to_string(repo.join(".git/HEAD")).unwrap(),
            head_commit: sh(repo, &["rev-parse", "HEAD"]),
            index: fs::read(repo.join(".git/index")).unwrap(),
            files,
            fetch_head: repo.join(".git/FETCH_HEAD").exists(),
            status: sh(repo, &["status", "--porcelain", "--untracked-files=all"]),
        }
    }

    #[test]
    fn branch_name_is_prefixed() {
        assert_eq!(branch_name(SESSION), "cldpd/web-1a2b3c4d");
        assert!(check_session(SESSION).is_ok());
        for bad in ["", "-x", "a..b", "a b", "a/b", "x.lock", "x.", "é"] {
            let err = check_session(bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_option", "{bad}");
        }
    }

    #[test]
    fn clean_repo_is_accepted() {
        let root = tmp();
        let repo = source_repo(root.path());
        let head = sh(&repo, &["rev-parse", "HEAD"]);

        let source = check_source(&RepoSpec::new(&repo, "")).unwrap();
        assert_eq!(source.reference, "HEAD");
        assert_eq!(source.commit, head);
        assert_eq!(source.path, fs::canonicalize(&repo).unwrap());

        let tagged = check_source(&RepoSpec::new(&repo, "v1")).unwrap();
        assert_eq!(tagged.commit, sh(&repo, &["rev-parse", "v1^{commit}"]));
        assert_eq!(tagged.reference, "v1");
        let by_id = check_source(&RepoSpec::new(&repo, &head[..12])).unwrap();
        assert_eq!(by_id.commit, head);
    }

    #[test]
    fn bare_repo_is_accepted() {
        let root = tmp();
        let repo = source_repo(root.path());
        let bare = root.path().join("bare.git");
        run_cmd({
            let mut cmd = user_git(root.path());
            cmd.args(["clone", "-q", "--bare"]).arg(&repo).arg(&bare);
            cmd
        });
        let source = check_source(&RepoSpec::new(&bare, "main")).unwrap();
        assert_eq!(source.commit, sh(&repo, &["rev-parse", "main"]));
    }

    #[test]
    fn dirty_repo_is_refused_naming_the_paths() {
        let root = tmp();
        let repo = source_repo(root.path());
        let spec = RepoSpec::new(&repo, "main");

        write(&repo.join("README.md"), "changed\n");
        let (code, message) = failed_with(check_source(&spec));
        assert_eq!(code, "repo_dirty");
        assert!(message.contains("README.md"), "{message}");
        sh(&repo, &["checkout", "-q", "--", "README.md"]);

        write(&repo.join("staged.txt"), "new\n");
        sh(&repo, &["add", "staged.txt"]);
        let (code, message) = failed_with(check_source(&spec));
        assert_eq!(code, "repo_dirty");
        assert!(message.contains("staged.txt"), "{message}");
        sh(&repo, &["rm", "-q", "--cached", "staged.txt"]);
        fs::remove_file(repo.join("staged.txt")).unwrap();

        write(&repo.join("untracked.txt"), "new\n");
        let err = check_source(&spec).unwrap_err();
        assert_eq!(err.code(), "repo_dirty");
        assert!(err.to_string().contains("untracked.txt"), "{err}");
        assert!(err.hint().unwrap().contains("stash"), "{:?}", err.hint());

        for i in 0..6 {
            write(&repo.join(format!("more-{i}.txt")), "x");
        }
        let err = check_source(&spec).unwrap_err();
        let Error::Repo {
            problem: RepoProblem::Dirty { paths, total },
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((paths.len(), *total), (5, 7));
        assert!(err.to_string().ends_with(" and 2 more"), "{err}");

        for i in 0..6 {
            fs::remove_file(repo.join(format!("more-{i}.txt"))).unwrap();
        }
        fs::remove_file(repo.join("untracked.txt")).unwrap();
        check_source(&spec).expect("clean again");
    }

    #[test]
    fn missing_path_is_refused() {
        let root = tmp();
        let missing = root.path().join("nope");
        let (code, message) = failed_with(check_source(&RepoSpec::new(&missing, "main")));
        assert_eq!(code, "repo_missing");
        assert!(
            message.contains("nope") && message.contains("does not exist"),
            "{message}"
        );
        assert!(Error::Repo {
            path: missing,
            problem: RepoProblem::Missing
        }
        .hint()
        .unwrap()
        .contains("pod.json"));
    }

    #[test]
    fn what_is_not_a_repository_top_level_is_refused() {
        let root = tmp();
        let plain = root.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let (code, message) = failed_with(check_source(&RepoSpec::new(&plain, "")));
        assert_eq!(code, "repo_not_git");
        assert!(message.contains("not a git repository"), "{message}");

        let file = root.path().join("file");
        write(&file, "x");
        assert_eq!(
            code_of(check_source(&RepoSpec::new(&file, ""))),
            "repo_not_git"
        );

        let repo = source_repo(root.path());
        let (code, message) = failed_with(check_source(&RepoSpec::new(repo.join("src"), "")));
        assert_eq!(code, "repo_not_git");
        assert!(message.contains("not its top level"), "{message}");
        assert_eq!(
            code_of(check_source(&RepoSpec::new(repo.join(".git"), ""))),
            "repo_not_git"
        );
    }

    fn code_of<T: std::fmt::Debug>(result: Result<T>) -> String {
        result.expect_err("an error").code().to_string()
    }

    #[test]
    fn unknown_ref_is_refused() {
        let root = tmp();
        let repo = source_repo(root.path());
        for reference in ["nope", "--all", "main:README.md", "v9"] {
            let (code, message) = failed_with(check_source(&RepoSpec::new(&repo, reference)));
            assert_eq!(code, "repo_ref_missing", "{reference}");
            assert!(message.contains(reference), "{message}");
        }
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        sh(&empty, &["init", "-q"]);
        assert_eq!(
            code_of(check_source(&RepoSpec::new(&empty, ""))),
            "repo_ref_missing"
        );
    }

    #[test]
    fn a_missing_git_program_is_a_clear_error() {
        let root = tmp();
        let repo = source_repo(root.path());
        let git = Git {
            program: "/nonexistent/git".into(),
        };
        let err = git.check_source(&RepoSpec::new(&repo, "")).unwrap_err();
        assert_eq!(err.code(), "git_missing");
        assert!(err.hint().unwrap().contains("install git"));
    }

    #[test]
    fn prepared_workspace_is_a_clone_on_the_session_branch() {
        let root = tmp();
        let repo = source_repo(root.path());
        let source = check_source(&RepoSpec::new(&repo, "v1")).unwrap();
        let ws = root.path().join("ws");
        let prepared = prepare_workspace(&source, SESSION, &ws).unwrap();

        assert_eq!(prepared.base, source.commit);
        assert_eq!(sh(&ws, &["rev-parse", "HEAD"]), source.commit);
        assert_eq!(
            sh(&ws, &["symbolic-ref", "HEAD"]),
            "refs/heads/cldpd/web-1a2b3c4d"
        );
        assert_eq!(sh(&ws, &["remote"]), "");
        assert_eq!(
            sh(&ws, &["for-each-ref", "--format=%(refname)"]),
            "refs/heads/cldpd/web-1a2b3c4d"
        );
        assert_eq!(sh(&ws, &["status", "--porcelain"]), "");
        let local = |key: &str| sh(&ws, &["config", "--file", ".git/config", key]);
        assert_eq!(local("user.name"), AGENT_NAME);
        assert_eq!(local("user.email"), AGENT_EMAIL);
        assert_eq!(
            fs::read_to_string(ws.join("src/lib.rs")).unwrap(),
            "pub fn one() -> u32 { 1 }\n"
        );
        assert!(!ws.join("target").exists(), "ignored files stay behind");
        assert!(!ws.join(".git/hooks").exists(), "no template hooks");
        for (path, mode) in [
            (ws.clone(), 0o777),
            (ws.join("src"), 0o777),
            (ws.join("README.md"), 0o666),
            (ws.join(".git/index"), 0o666),
            (ws.join(".git/objects"), 0o777),
        ] {
            let actual = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(actual, mode, "{}", path.display());
        }

        // The source was only read.
        assert_eq!(sh(&repo, &["status", "--porcelain"]), "");
        assert!(!repo.join(".git/FETCH_HEAD").exists());
    }

    #[test]
    fn a_workspace_directory_must_be_empty() {
        let root = tmp();
        let repo = source_repo(root.path());
        let source = check_source(&RepoSpec::new(&repo, "")).unwrap();
        let ws = root.path().join("ws");
        write(&ws.join("something"), "x");
        assert_eq!(
            code_of(prepare_workspace(&source, SESSION, &ws)),
            "workspace_not_empty"
        );
        assert_eq!(
            code_of(prepare_workspace(&source, "../x", &root.path().join("w2"))),
            "invalid_option"
        );
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        prepare_workspace(&source, SESSION, &empty).expect("an empty directory is fine");
    }

    /// The whole way: prepare, the agent commits (as another uid when the
    /// tests run as root) and leaves changes, cldpd commits them, fetches
    /// the branch back twice (the second time after more and rewritten
    /// commits), and the source's HEAD, index and files never move.
    fn round_trip(other_branch_checked_out: bool) {
        let root = tmp();
        let repo = source_repo(root.path());
        if other_branch_checked_out {
            sh(&repo, &["checkout", "-q", "-b", "feature"]);
            write(&repo.join("feature.txt"), "feature\n");
            sh(&repo, &["add", "feature.txt"]);
            sh(&repo, &["commit", "-q", "-m", "feature"]);
        }
        let source = check_source(&RepoSpec::new(&repo, "main")).unwrap();
        assert_eq!(source.commit, sh(&repo, &["rev-parse", "main"]));
        let before = untouched(&repo);

        let ws = root.path().join("ws");
        let prepared = prepare_workspace(&source, SESSION, &ws).unwrap();

        // The agent's own commit, as the container's user.
        write(
            &ws.join("src/lib.rs"),
            "pub fn one() -> u32 { 1 }\npub fn two() -> u32 { 2 }\npub fn three() -> u32 { 3 }\n",
        );
        agent_git(&ws, &["add", "-A"]);
        agent_git(&ws, &["commit", "-q", "-m", "agent: add three"]);
        let agent_commit = sh(&ws, &["rev-parse", "HEAD"]);
        assert_eq!(
            sh(&ws, &["log", "-1", "--format=%an <%ae>"]),
            "cldpd agent <cldpd-agent@localhost>"
        );
        // And what it left uncommitted: a new file, a rename, a binary file,
        // a deletion.
        write(&ws.join("notes.md"), "left uncommitted\n");
        fs::rename(ws.join("old-name.txt"), ws.join("new-name.txt")).unwrap();
        write(&ws.join("blob.bin"), [0u8, 159, 146, 150, 255, 0, 1, 2]);
        fs::remove_file(ws.join("README.md")).unwrap();

        let pending = commit_pending(&ws, SESSION, Some(ISSUE))
            .unwrap()
            .expect("a commit");
        assert_eq!(sh(&ws, &["rev-parse", "HEAD"]), pending);
        assert_eq!(sh(&ws, &["rev-parse", "HEAD~1"]), agent_commit);
        assert_eq!(
            sh(&ws, &["log", "-1", "--format=%an <%ae>|%cn <%ce>"]),
            "cldpd agent <cldpd-agent@localhost>|cldpd agent <cldpd-agent@localhost>"
        );
        let message = sh(&ws, &["log", "-1", "--format=%B"]);
        assert!(
            message.contains(SESSION) && message.contains(ISSUE),
            "{message}"
        );
        assert_eq!(
            sh(&ws, &["status", "--porcelain", "--untracked-files=all"]),
            ""
        );
        assert_eq!(
            commit_pending(&ws, SESSION, Some(ISSUE)).unwrap(),
            None,
            "nothing left"
        );

        let branch = fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        assert_eq!(
            branch,
            Branch {
                name: "cldpd/web-1a2b3c4d".to_string(),
                head: pending.clone(),
                commits: 2,
            }
        );
        assert_eq!(sh(&repo, &["rev-parse", "cldpd/web-1a2b3c4d"]), pending);
        assert_eq!(
            sh(
                &repo,
                &[
                    "log",
                    "--format=%s",
                    &format!("{}..cldpd/web-1a2b3c4d", prepared.base)
                ]
            )
            .lines()
            .count(),
            2
        );
        assert_eq!(sh(&repo, &["tag"]), "v1", "no tags come back");
        assert_eq!(untouched(&repo), before);

        // More work, a second fetch moves the branch.
        write(&ws.join("more.txt"), "more\n");
        agent_git(&ws, &["add", "more.txt"]);
        agent_git(&ws, &["commit", "-q", "-m", "agent: more"]);
        let branch = fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        assert_eq!(branch.commits, 3);
        assert_eq!(branch.head, sh(&ws, &["rev-parse", "HEAD"]));
        assert_eq!(sh(&repo, &["rev-parse", "cldpd/web-1a2b3c4d"]), branch.head);

        // Rewritten history: the update is forced.
        agent_git(
            &ws,
            &["commit", "-q", "--amend", "-m", "agent: more, reworded"],
        );
        let branch = fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        assert_eq!(branch.commits, 3);
        assert_eq!(
            sh(&repo, &["log", "-1", "--format=%s", "cldpd/web-1a2b3c4d"]),
            "agent: more, reworded"
        );
        assert_eq!(untouched(&repo), before);
        check_source(&RepoSpec::new(&repo, "main")).expect("still clean");
    }

    #[test]
    fn round_trip_brings_the_work_back_as_a_branch() {
        round_trip(false);
    }

    #[test]
    fn round_trip_leaves_another_checked_out_branch_alone() {
        round_trip(true);
    }

    #[test]
    fn diff_applies_to_a_fresh_checkout_of_the_base() {
        let (root, repo, source, ws, prepared) = prepared_workspace();
        // Nothing fetched back yet: no branch to diff.
        assert_eq!(
            code_of(diff(&repo, SESSION, &prepared.base)),
            "repo_ref_missing"
        );

        write(&ws.join("src/lib.rs"), "pub fn one() -> u32 { 11 }\n");
        fs::rename(ws.join("old-name.txt"), ws.join("new-name.txt")).unwrap();
        write(&ws.join("blob.bin"), [0u8, 159, 146, 150, 255, 0, 1, 2]);
        write(&ws.join("latin1.txt"), b"caf\xe9\n");
        commit_pending(&ws, SESSION, None)
            .unwrap()
            .expect("a commit");
        fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();

        let patch = diff(&repo, SESSION, &prepared.base).unwrap();
        let text = String::from_utf8_lossy(&patch);
        assert!(
            text.contains("diff --git a/src/lib.rs b/src/lib.rs"),
            "{text}"
        );
        assert!(text.contains("rename to new-name.txt"), "{text}");
        assert!(text.contains("GIT binary patch"), "{text}");

        let fresh = root.path().join("fresh");
        run_cmd({
            let mut cmd = user_git(root.path());
            cmd.args(["clone", "-q", "--no-checkout"])
                .arg(&repo)
                .arg(&fresh);
            cmd
        });
        sh(&fresh, &["checkout", "-q", "--detach", &prepared.base]);
        let patch_file = root.path().join("session.patch");
        fs::write(&patch_file, &patch).unwrap();
        sh(&fresh, &["apply", "--check", patch_file.to_str().unwrap()]);
        sh(&fresh, &["apply", "--index", patch_file.to_str().unwrap()]);
        // The result is the branch, byte for byte.
        sh(
            &fresh,
            &["diff", "--cached", "--quiet", "origin/cldpd/web-1a2b3c4d"],
        );

        // A session that changed nothing has an empty patch.
        let ws2 = root.path().join("ws2");
        prepare_workspace(&source, "web-00000000", &ws2).unwrap();
        fetch_back(&ws2, &repo, "web-00000000", &prepared.base).unwrap();
        assert!(diff(&repo, "web-00000000", &prepared.base)
            .unwrap()
            .is_empty());
        assert_eq!(code_of(diff(&repo, SESSION, "main")), "invalid_option");
    }

    #[test]
    fn a_workspace_owned_by_another_uid_works() {
        if !is_root() {
            eprintln!("skipped: changing a workspace's owner needs root");
            return;
        }
        let (_root, repo, _source, ws, prepared) = prepared_workspace();
        write(&ws.join("by-container.txt"), "x\n");
        let chown = Command::new("chown")
            .args(["-R", &format!("{OTHER_UID}:{OTHER_UID}")])
            .arg(&ws)
            .status()
            .unwrap();
        assert!(chown.success());
        // Plain git refuses it: the test is about something.
        let out = user_git(&ws).args(["status"]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("dubious ownership"),
            "{out:?}"
        );

        let commit = commit_pending(&ws, SESSION, Some(ISSUE))
            .unwrap()
            .expect("a commit");
        let branch = fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        assert_eq!((branch.head.as_str(), branch.commits), (commit.as_str(), 1));
    }

    #[test]
    fn the_container_user_needs_the_container_git_env() {
        if !is_root() {
            eprintln!("skipped: running git as another uid needs root");
            return;
        }
        let (_root, _repo, _source, ws, _) = prepared_workspace();
        let out = Command::new("git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/nonexistent")
            .arg("-C")
            .arg(&ws)
            .arg("status")
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("dubious ownership"),
            "{out:?}"
        );
        agent_git(&ws, &["status"]);
    }

    #[test]
    fn fetch_back_refuses_a_checked_out_session_branch() {
        let (_root, repo, _source, ws, prepared) = prepared_workspace();
        fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        sh(&repo, &["checkout", "-q", "cldpd/web-1a2b3c4d"]);
        write(&ws.join("x.txt"), "x\n");
        commit_pending(&ws, SESSION, None)
            .unwrap()
            .expect("a commit");

        let err = fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap_err();
        assert_eq!(err.code(), "repo_branch_checked_out");
        assert!(err.to_string().contains("cldpd/web-1a2b3c4d"), "{err}");
        assert_eq!(
            sh(&repo, &["rev-parse", "HEAD"]),
            prepared.base,
            "not moved"
        );
        assert_eq!(sh(&repo, &["status", "--porcelain"]), "");
    }

    #[test]
    fn commit_pending_refuses_a_workspace_on_another_branch() {
        let (_root, _repo, _source, ws, _) = prepared_workspace();
        agent_git(&ws, &["checkout", "-q", "-b", "elsewhere"]);
        write(&ws.join("x.txt"), "x\n");
        let (code, message) = failed_with(commit_pending(&ws, SESSION, None));
        assert_eq!(code, "workspace_wrong_branch");
        assert!(message.contains("branch elsewhere"), "{message}");
        agent_git(&ws, &["checkout", "-q", "--detach"]);
        let (_, message) = failed_with(commit_pending(&ws, SESSION, None));
        assert!(message.contains("detached HEAD"), "{message}");
    }

    #[test]
    fn nothing_the_workspace_configures_runs_on_the_host() {
        let (root, repo, _source, ws, prepared) = prepared_workspace();
        let marker = root.path().join("pwned");
        let touch = format!("touch {}", marker.display());
        let mut config = fs::read_to_string(ws.join(".git/config")).unwrap();
        config.push_str(&format!(
            "[core]\n\tfsmonitor = {touch}\n\tpager = {touch}\n[filter \"evil\"]\n\tclean = {touch}\n\tsmudge = {touch}\n[diff]\n\texternal = {touch}\n[uploadpack]\n\tpackObjectsHook = {touch}\n"
        ));
        write(&ws.join(".git/config"), config);
        write(&ws.join(".gitattributes"), "* filter=evil\n");
        for hook in [
            "pre-commit",
            "commit-msg",
            "post-commit",
            "reference-transaction",
            "pre-auto-gc",
        ] {
            let path = ws.join(".git/hooks").join(hook);
            write(&path, format!("#!/bin/sh\n{touch}\n"));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        write(&ws.join("x.txt"), "x\n");

        commit_pending(&ws, SESSION, None)
            .unwrap()
            .expect("a commit");
        fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        diff(&repo, SESSION, &prepared.base).unwrap();
        assert!(
            !marker.exists(),
            "a command of the workspace's configuration ran"
        );
        assert!(
            !fs::read_to_string(ws.join(".git/config"))
                .unwrap()
                .contains("evil"),
            "the configuration was rewritten"
        );
    }

    #[test]
    fn a_git_directory_that_points_elsewhere_is_refused() {
        let root = tmp();
        let repo = source_repo(root.path());
        let source = check_source(&RepoSpec::new(&repo, "main")).unwrap();
        let prepare = |name: &str| {
            let ws = root.path().join(name);
            prepare_workspace(&source, SESSION, &ws).unwrap();
            ws
        };

        let ws = prepare("link");
        let config = ws.join(".git/config");
        fs::remove_file(&config).unwrap();
        std::os::unix::fs::symlink(repo.join(".git/config"), &config).unwrap();
        let (code, message) = failed_with(commit_pending(&ws, SESSION, None));
        assert_eq!(code, "workspace_untrusted");
        assert!(
            message.contains(".git/config is a symbolic link"),
            "{message}"
        );

        let ws = prepare("file");
        fs::rename(ws.join(".git"), root.path().join("moved.git")).unwrap();
        write(
            &ws.join(".git"),
            format!("gitdir: {}\n", repo.join(".git").display()),
        );
        assert_eq!(
            code_of(commit_pending(&ws, SESSION, None)),
            "workspace_untrusted"
        );
        assert_eq!(
            code_of(fetch_back(&ws, &repo, SESSION, &source.commit)),
            "workspace_untrusted"
        );

        let ws = prepare("alternates");
        write(
            &ws.join(".git/objects/info/alternates"),
            format!("{}\n", repo.join(".git/objects").display()),
        );
        assert_eq!(
            code_of(fetch_back(&ws, &repo, SESSION, &source.commit)),
            "workspace_untrusted"
        );

        assert_eq!(
            code_of(commit_pending(&root.path().join("gone"), SESSION, None)),
            "repo_missing"
        );
        assert_eq!(sh(&repo, &["status", "--porcelain"]), "");
    }

    #[test]
    fn a_sha256_repository_round_trips() {
        let root = tmp();
        let repo = root.path().join("sha256");
        fs::create_dir(&repo).unwrap();
        sh(
            &repo,
            &[
                "init",
                "-q",
                "--object-format=sha256",
                "--initial-branch=main",
            ],
        );
        write(&repo.join("a.txt"), "a\n");
        sh(&repo, &["add", "a.txt"]);
        sh(&repo, &["commit", "-q", "-m", "a"]);
        let source = check_source(&RepoSpec::new(&repo, "main")).unwrap();
        assert_eq!(source.commit.len(), 64);
        let ws = root.path().join("ws");
        let prepared = prepare_workspace(&source, SESSION, &ws).unwrap();
        write(&ws.join("b.txt"), "b\n");
        commit_pending(&ws, SESSION, None)
            .unwrap()
            .expect("a commit");
        let branch = fetch_back(&ws, &repo, SESSION, &prepared.base).unwrap();
        assert_eq!(branch.commits, 1);
        assert_eq!(branch.head.len(), 64);
    }

    #[test]
    fn porcelain_paths_skip_rename_sources() {
        let out = b"R  new\0old\0 M a b\0?? c/\0";
        assert_eq!(porcelain_paths(out), vec!["new", "a b", "c/"]);
        let list = b"worktree /a\0HEAD 0\0branch refs/heads/main\0\0worktree /b\0HEAD 1\0branch refs/heads/cldpd/x\0\0";
        assert_eq!(
            checked_out_in(list, "refs/heads/cldpd/x"),
            Some(PathBuf::from("/b"))
        );
        assert_eq!(checked_out_in(list, "refs/heads/cldpd/y"), None);
    }
}
