//! The storage of a session that outlives its container: its workspace
//! and its agent's state, on the host, found from the session id.
//!
//! A run whose agent is long-lived (`agentInput: "stream-json"`) gets a
//! directory `<state>/workspaces/<session>/` holding:
//!
//! | path | mounted at | what |
//! |---|---|---|
//! | `work/` | the pod's `workdir` (default `/workspace`) | the files the agent works on; with a `repo`, a clone on branch `cldpd/<session>` |
//! | `agent/` | [`AGENT_DIR`], with `CLAUDE_CONFIG_DIR` pointing there | Claude Code's config and conversations (`projects/<cwd>/<conversation>.jsonl`) |
//! | `session.json` | — | [`StoredSession`]: pod, image, conversation, workdir, repository, runs |
//!
//! So each session has a config directory of its own (concurrent sessions
//! never share one: Claude Code's `~/.claude.json` does not survive two
//! writers), and a session whose container has ended can be resumed: a new
//! container of the same pod gets the same directories and `--resume
//! <conversation>` ([`crate::messages::dispatcher::Resume`]). `cldpd rm`
//! deletes the directory, `cldpd prune` those of sessions ended long ago.
//!
//! Host directories (bind mounts) rather than Docker named volumes: cldpd
//! reads and writes the workspace itself (git in and out, `cldpd diff`)
//! without a helper container, and the directories are made writable for
//! the container's user (mode 0777), which a new named volume is not
//! unless the image happens to hold the mount point with the right owner.
//! The price: a persistent session needs an engine on this machine (a
//! remote `DOCKER_HOST` cannot mount these directories).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the agent's state directory is mounted in the container.
pub const AGENT_DIR: &str = "/cldpd-agent";

/// The workdir of a persistent session whose pod names none.
pub const DEFAULT_WORKDIR: &str = "/workspace";

const META: &str = "session.json";

/// What a session's storage records about it (`session.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The session id the storage belongs to (its first run).
    pub session: String,
    /// The pod.
    pub pod: String,
    /// The image tag.
    pub image: String,
    /// The agent's conversation (`--session-id`, then `--resume`).
    pub conversation: String,
    /// The container's working directory (the workspace's mount point).
    pub workdir: String,
    /// The issue worked on, when there is one.
    #[serde(default)]
    pub issue: Option<String>,
    /// The repository the workspace came from.
    #[serde(default)]
    pub repo: Option<StoredRepo>,
    /// When the storage was made (RFC 3339).
    pub created: String,
    /// Every run on this storage: the first, then its resumes.
    #[serde(default)]
    pub runs: Vec<String>,
    /// When its last run ended (RFC 3339), once one has.
    #[serde(default)]
    pub ended: Option<String>,
    /// How its last run ended: `exited 0`, an error code.
    #[serde(default)]
    pub outcome: Option<String>,
    /// The branch the work came back as, once it has.
    #[serde(default)]
    pub branch: Option<crate::workspace::Branch>,
}

/// The repository a workspace was cloned from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRepo {
    /// The source repository (absolute).
    pub source: PathBuf,
    /// The ref asked for.
    pub reference: String,
    /// The commit the workspace started from.
    pub base: String,
}

/// A session's storage directory. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    dir: PathBuf,
}

impl Storage {
    /// The storage of `session` under `state_dir` (it may not exist).
    pub fn of(state_dir: &Path, session: &str) -> Storage {
        Storage {
            dir: state_dir.join("workspaces").join(session),
        }
    }

    /// Every storage under `state_dir`.
    pub fn all(state_dir: &Path) -> Vec<Storage> {
        let Ok(entries) = std::fs::read_dir(state_dir.join("workspaces")) else {
            return Vec::new();
        };
        let mut all: Vec<Storage> = entries
            .flatten()
            .filter(|e| e.path().join(META).is_file())
            .map(|e| Storage { dir: e.path() })
            .collect();
        all.sort_by(|a, b| a.dir.cmp(&b.dir));
        all
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The workspace (mounted at the workdir).
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The agent's state (mounted at [`AGENT_DIR`]).
    pub fn agent(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// True once made.
    pub fn exists(&self) -> bool {
        self.dir.join(META).is_file()
    }

    /// Make the directories (writable by the container's user) and record
    /// `meta`. Fails if the storage exists already.
    pub fn create(&self, meta: &StoredSession) -> Result<()> {
        let io =
            |what: &str, e: std::io::Error| Error::io(format!("{what} {}", self.dir.display()), e);
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating the parent of", e))?;
        }
        std::fs::create_dir(&self.dir).map_err(|e| io("creating", e))?;
        for sub in [self.work(), self.agent()] {
            std::fs::create_dir(&sub).map_err(|e| io("creating a directory in", e))?;
            open_up(&sub)?;
        }
        self.save(meta)
    }

    /// Read `session.json`.
    pub fn load(&self) -> Result<StoredSession> {
        let path = self.dir.join(META);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::io(
                format!("reading {}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a session record: {e}"),
                ),
            )
        })
    }

    /// Write `session.json` (whole, through a temporary file).
    pub fn save(&self, meta: &StoredSession) -> Result<()> {
        let path = self.dir.join(META);
        let tmp = self.dir.join(".session.json.tmp");
        let json = serde_json::to_vec_pretty(meta).expect("a session record serialises");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Change `session.json` with `f`.
    pub fn update(&self, f: impl FnOnce(&mut StoredSession)) -> Result<StoredSession> {
        let mut meta = self.load()?;
        f(&mut meta);
        self.save(&meta)?;
        Ok(meta)
    }

    /// Delete the storage (workspace, agent state, record).
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.dir.display()), e)),
        }
    }

    /// When its last run ended, if one has.
    pub fn ended(&self) -> Option<std::time::SystemTime> {
        self.load()
            .ok()?
            .ended
            .and_then(|t| humantime::parse_rfc3339(&t).ok())
    }
}

/// Mode 0777: the container's user (any uid) writes there.
fn open_up(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| Error::io(format!("opening up {}", dir.display()), e))
}

/// Now, as RFC 3339 (seconds).
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(session: &str) -> StoredSession {
        StoredSession {
            session: session.into(),
            pod: "web".into(),
            image: "cldpd-web".into(),
            conversation: "c".into(),
            workdir: "/workspace".into(),
            issue: None,
            repo: None,
            created: now(),
            runs: vec![session.into()],
            ended: None,
            outcome: None,
            branch: None,
        }
    }

    #[test]
    fn storage_is_made_found_updated_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let s = Storage::of(state.path(), "web-00000001");
        assert!(!s.exists());
        s.create(&meta("web-00000001")).unwrap();
        assert!(s.exists() && s.work().is_dir() && s.agent().is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.work()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
        assert!(s.create(&meta("web-00000001")).is_err(), "made twice");
        Storage::of(state.path(), "web-00000002")
            .create(&meta("web-00000002"))
            .unwrap();
        assert_eq!(Storage::all(state.path()).len(), 2);
        let m = s
            .update(|m| {
                m.ended = Some(now());
                m.runs.push("web-00000003".into());
            })
            .unwrap();
        assert_eq!(m.runs.len(), 2);
        assert!(s.ended().is_some());
        assert_eq!(s.load().unwrap(), m);
        s.remove().unwrap();
        s.remove().unwrap();
        assert_eq!(Storage::all(state.path()).len(), 1);
    }
}
