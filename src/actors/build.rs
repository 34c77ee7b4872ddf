//! Image builds for the dispatcher: one build per tag at a time, shared by
//! every run that needs it, and not repeated while its inputs are unchanged.
//!
//! - **Single flight**: runs that need a tag while it is being built join
//!   that build; they all receive its output (a run that joins late first
//!   gets the lines it missed, up to [`REPLAY_LINES`]) and its result. A
//!   failed build fails every run waiting on it, each with the build output.
//! - **Memo**: after a successful build the dispatcher remembers the
//!   *fingerprint* of the build inputs (every file of the pod directory —
//!   relative path, size, modification time — plus the Dockerfile path and
//!   build args). A later run with the same fingerprint skips `docker
//!   build` and reports `BuildComplete { cached: true }`; so do the runs
//!   that joined a build in flight (exactly one run per real build reports
//!   `cached: false`). Editing any file of
//!   the pod triggers a real build again. A pod directory with more than
//!   [`MAX_FINGERPRINT_FILES`] files is always built.
//! - **Cancellation**: when every run waiting on a build has ended (stopped
//!   while building), the build is abandoned.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use actix::{Recipient, SpawnHandle};

use crate::messages::session::{BuildDone, BuildNotice};
use crate::runtime::{BuildSpec, BuiltImage};

/// Lines of an in-flight build kept for runs that join it late.
pub const REPLAY_LINES: usize = 500;

/// Largest pod directory (in files) that is fingerprinted.
pub const MAX_FINGERPRINT_FILES: usize = 10_000;

struct Waiter {
    session: String,
    reply: Recipient<BuildNotice>,
}

struct InFlight {
    fingerprint: Option<u64>,
    waiters: Vec<Waiter>,
    replay: VecDeque<String>,
    handle: Option<SpawnHandle>,
}

/// A successful build remembered: its inputs and what to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Memo {
    /// [`fingerprint`] of the inputs, as hex (stable text in the file).
    fingerprint: String,
    /// The image id (`sha256:…`), else the tag.
    run: String,
    /// Known to exist: built by this dispatcher, or checked since.
    #[serde(skip)]
    verified: bool,
}

/// The dispatcher's build bookkeeping (the actor drives the builds).
#[derive(Default)]
pub(crate) struct Builds {
    memo: HashMap<String, Memo>,
    inflight: HashMap<String, InFlight>,
    started: u64,
    /// `<state-dir>/images`: memos of builds by image id, shared by every
    /// process using this state directory.
    store: Option<PathBuf>,
}

/// What the dispatcher must do for a build request.
pub(crate) enum Join {
    /// The image is already built from identical inputs: run this (its
    /// id); `verify` when that is only recorded, not known, to exist.
    Cached { image: String, verify: bool },
    /// Joined a build in flight.
    Joined,
    /// No build in flight: start one (then call [`Builds::started`]).
    Start,
}

impl Builds {
    /// Bookkeeping whose memos also go to (and come from) `store`.
    pub(crate) fn with_store(store: PathBuf) -> Self {
        Builds {
            store: Some(store),
            ..Builds::default()
        }
    }

    fn store_path(&self, tag: &str) -> Option<PathBuf> {
        let file = tag
            .replace('%', "%25")
            .replace('/', "%2F")
            .replace(':', "%3A");
        self.store
            .as_ref()
            .map(|dir| dir.join(format!("{file}.json")))
    }

    /// A memo of `tag` from another process (or an earlier run of this
    /// one). Only memos with an image id are written, so running it runs
    /// exactly what was built from these inputs, whatever the tag points
    /// at now.
    fn load(&self, tag: &str) -> Option<Memo> {
        let bytes = std::fs::read(self.store_path(tag)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, tag: &str, memo: &Memo) {
        let Some(path) = self.store_path(tag) else {
            return;
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(memo).expect("memo serialises")))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!(tag, error = %e, "could not record the build memo");
        }
    }

    /// Register `session` as needing `spec.image`.
    pub(crate) fn join(
        &mut self,
        spec: &BuildSpec,
        fingerprint: Option<u64>,
        session: String,
        reply: Recipient<BuildNotice>,
    ) -> Join {
        if let Some(fp) = fingerprint.map(|f| format!("{f:016x}")) {
            if let Some(m) = self.memo.get(&spec.image).filter(|m| m.fingerprint == fp) {
                return Join::Cached {
                    image: m.run.clone(),
                    verify: !m.verified,
                };
            }
            if let Some(m) = self.load(&spec.image).filter(|m| m.fingerprint == fp) {
                let image = m.run.clone();
                self.memo.insert(spec.image.clone(), m);
                return Join::Cached {
                    image,
                    verify: true,
                };
            }
        }
        if let Some(b) = self.inflight.get_mut(&spec.image) {
            if !b.replay.is_empty() {
                reply.do_send(BuildNotice::Lines(b.replay.iter().cloned().collect()));
            }
            b.waiters.push(Waiter { session, reply });
            return Join::Joined;
        }
        self.inflight.insert(
            spec.image.clone(),
            InFlight {
                fingerprint,
                waiters: vec![Waiter { session, reply }],
                replay: VecDeque::new(),
                handle: None,
            },
        );
        Join::Start
    }

    /// A session found the recorded image of `image` where it should be.
    pub(crate) fn checked(&mut self, image: &str) {
        if let Some(m) = self.memo.get_mut(image) {
            m.verified = true;
        }
    }

    /// Record the future driving the build of `image`.
    pub(crate) fn started(&mut self, image: &str, handle: SpawnHandle) {
        self.started += 1;
        if let Some(b) = self.inflight.get_mut(image) {
            b.handle = Some(handle);
        }
    }

    /// Output of the build of `image`.
    pub(crate) fn output(&mut self, image: &str, lines: Vec<String>) {
        let Some(b) = self.inflight.get_mut(image) else {
            return;
        };
        for l in &lines {
            if b.replay.len() == REPLAY_LINES {
                b.replay.pop_front();
            }
            b.replay.push_back(l.clone());
        }
        for w in &b.waiters {
            w.reply.do_send(BuildNotice::Lines(lines.clone()));
        }
    }

    /// The build of `image` ended.
    pub(crate) fn finished(&mut self, image: &str, result: Result<BuiltImage, crate::Error>) {
        let Some(b) = self.inflight.remove(image) else {
            return;
        };
        let run = match &result {
            Ok(built) => built.id.clone().unwrap_or_else(|| image.to_string()),
            Err(_) => image.to_string(),
        };
        match (&result, b.fingerprint) {
            (Ok(built), Some(fp)) => {
                let memo = Memo {
                    fingerprint: format!("{fp:016x}"),
                    run: run.clone(),
                    verified: true,
                };
                if built.id.is_some() {
                    self.save(image, &memo);
                }
                self.memo.insert(image.to_string(), memo);
            }
            _ => {
                self.memo.remove(image);
            }
        }
        // One run is reported as the one the image was built for; the
        // others reused its build (`cached`).
        for (i, w) in b.waiters.into_iter().enumerate() {
            let done = result.clone().map(|_| BuildDone {
                cached: i > 0,
                image: run.clone(),
                verify: false,
            });
            w.reply.do_send(BuildNotice::Done(done));
        }
    }

    /// `session` no longer waits; returns builds nobody waits for any more
    /// (the caller cancels their futures).
    pub(crate) fn leave(&mut self, session: &str) -> Vec<SpawnHandle> {
        let mut abandoned = Vec::new();
        self.inflight.retain(|_, b| {
            b.waiters.retain(|w| w.session != session);
            if b.waiters.is_empty() {
                abandoned.extend(b.handle.take());
                false
            } else {
                true
            }
        });
        abandoned
    }

    /// Forget a memoised build (its image vanished).
    pub(crate) fn forget(&mut self, image: &str) {
        self.memo.remove(image);
        if let Some(path) = self.store_path(image) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Builds actually started so far.
    pub(crate) fn count(&self) -> u64 {
        self.started
    }
}

/// Fingerprint of the build inputs, `None` when the directory cannot be read
/// or is too large (then the image is always built).
pub(crate) fn fingerprint(spec: &BuildSpec) -> Option<u64> {
    let mut entries = Vec::new();
    walk(&spec.context, &spec.context, &mut entries).ok()?;
    if entries.len() > MAX_FINGERPRINT_FILES {
        return None;
    }
    entries.sort();
    let mut h = DefaultHasher::new();
    spec.image.hash(&mut h);
    spec.dockerfile.hash(&mut h);
    for (k, v) in &spec.build_args {
        k.hash(&mut h);
        v.expose().hash(&mut h);
    }
    entries.hash(&mut h);
    Some(h.finish())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64, u128)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let path = entry.path();
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.push((rel, meta.len(), mtime));
        }
        if out.len() > MAX_FINGERPRINT_FILES {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(dir: &Path) -> BuildSpec {
        BuildSpec {
            pod: "p".into(),
            image: "cldpd-p".into(),
            context: dir.to_path_buf(),
            dockerfile: dir.join("Dockerfile"),
            build_args: vec![],
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn fingerprint_changes_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let a = fingerprint(&spec(dir.path())).unwrap();
        assert_eq!(fingerprint(&spec(dir.path())), Some(a));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x"), "1").unwrap();
        let b = fingerprint(&spec(dir.path())).unwrap();
        assert_ne!(a, b);
        std::fs::write(dir.path().join("sub/x"), "22").unwrap();
        assert_ne!(fingerprint(&spec(dir.path())), Some(b));
    }
}
