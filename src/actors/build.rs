//! Image builds for the dispatcher: one build per tag at a time, shared by
//! every run that needs it, and not repeated while its inputs are unchanged.
//!
//! - **Single flight**: runs that need a tag while it is being built join
//!   that build; they all receive its output (a run that joins late first
//!   gets the lines it missed, up to [`REPLAY_LINES`]) and its result. A
//!   failed build fails every run waiting on it, each with the build output.
//! - **Across processes**: a build holds the tag's lock file in the state
//!   directory (`<state>/images/<tag>.lock`, [`crate::state::lock`]) from
//!   before it starts until its record is written. A process that wants
//!   the tag while another builds it waits for the lock, then reads the
//!   record: inputs unchanged, it reuses that build (its runs report
//!   `cached: true` and check that the image exists) instead of building
//!   again.
//! - **Memo**: after a successful build the dispatcher remembers the
//!   *fingerprint* of the build inputs (every file of the pod directory —
//!   relative path, size, modification time — plus the Dockerfile path and
//!   build args), in memory and in `<state>/images/<tag>.json`. A later
//!   run with the same fingerprint skips `docker build` and reports
//!   `BuildComplete { cached: true }`; so do the runs that joined a build
//!   in flight (exactly one run per real build reports `cached: false`).
//!   Editing any file of the pod triggers a real build again — except
//!   cldpd's own `pod.json` and `template.md` when the Dockerfile cannot
//!   copy them (no `COPY`/`ADD` of `.`, a wildcard or their name): their
//!   build inputs (`image`, `buildArgs`) are in the fingerprint already,
//!   and runtime fields (timeouts, restart, env, …) or the template do not
//!   change the image. A pod
//!   directory with more than [`MAX_FINGERPRINT_FILES`] files is always
//!   built. The fingerprint is a keyed hash ([`crate::state::key`]): build
//!   args may be secrets, and the record must not be a way to guess them.
//! - **Off the actor threads**: the fingerprint (a walk of the pod
//!   directory), the records and the lock are read and written in blocking
//!   tasks ([`crate::state::blocking`]).
//! - **Cancellation**: when every run waiting on a build has ended (stopped
//!   while building), the build is abandoned.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use actix::{Recipient, SpawnHandle};

use crate::messages::session::{BuildDone, BuildNotice};
use crate::runtime::{BuildSpec, BuiltImage};
use crate::state::key::Fingerprint;
use crate::state::lock::BuildLock;
use crate::state::StateStore;

mod shared_walk;

/// Lines of an in-flight build kept for runs that join it late.
pub const REPLAY_LINES: usize = 500;

/// Largest pod directory (in files) that is fingerprinted.
pub const MAX_FINGERPRINT_FILES: usize = 10_000;

struct Waiter {
    session: String,
    reply: Recipient<BuildNotice>,
}

struct InFlight {
    fingerprint: Option<String>,
    waiters: Vec<Waiter>,
    replay: VecDeque<String>,
    handle: Option<SpawnHandle>,
    /// The tag's cross-process build lock, once taken.
    lock: Option<BuildLock>,
}

/// A successful build remembered: its inputs and what to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Memo {
    /// [`fingerprint`] of the inputs (keyed BLAKE3, hex).
    pub(crate) fingerprint: String,
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

/// The file name (without extension) of image `tag`'s record and lock.
pub(crate) fn file_stem(tag: &str) -> String {
    tag.replace('%', "%25")
        .replace('/', "%2F")
        .replace(':', "%3A")
}

/// The record of `tag` under `images_dir` (another process's build, or an
/// earlier run of this one). Only memos with an image id are written, so
/// running it runs exactly what was built from these inputs, whatever the
/// tag points at now. Blocking.
pub(crate) fn load(images_dir: &Path, tag: &str) -> Option<Memo> {
    let bytes = std::fs::read(images_dir.join(format!("{}.json", file_stem(tag)))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Write the record of `tag` (atomically: a temporary file renamed).
/// Blocking.
pub(crate) fn save(images_dir: &Path, tag: &str, memo: &Memo) {
    let path = images_dir.join(format!("{}.json", file_stem(tag)));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(images_dir)
        .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(memo).expect("memo serialises")))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::debug!(tag, error = %e, "could not record the build memo");
    }
}

/// What the dispatcher must write once a build is done: the record, then
/// the lock released (in that order, so a process waiting for the lock
/// finds the record).
pub(crate) struct Record {
    pub(crate) images_dir: PathBuf,
    pub(crate) tag: String,
    pub(crate) memo: Option<Memo>,
    pub(crate) lock: Option<BuildLock>,
}

impl Record {
    /// Write it (blocking).
    pub(crate) fn write(self) {
        if let Some(memo) = &self.memo {
            save(&self.images_dir, &self.tag, memo);
        }
        drop(self.lock);
    }
}

impl Builds {
    /// Bookkeeping whose memos also go to (and come from) `store`.
    pub(crate) fn with_store(store: PathBuf) -> Self {
        Builds {
            store: Some(store),
            ..Builds::default()
        }
    }

    /// `<state>/images`, when records are kept.
    pub(crate) fn images_dir(&self) -> Option<&Path> {
        self.store.as_deref()
    }

    /// Whether a build of `image` is still wanted.
    pub(crate) fn in_flight(&self, image: &str) -> bool {
        self.inflight.contains_key(image)
    }

    /// Register `session` as needing `spec.image`.
    pub(crate) fn join(
        &mut self,
        spec: &BuildSpec,
        fingerprint: Option<String>,
        session: String,
        reply: Recipient<BuildNotice>,
    ) -> Join {
        if let Some(fp) = &fingerprint {
            if let Some(m) = self.memo.get(&spec.image).filter(|m| &m.fingerprint == fp) {
                return Join::Cached {
                    image: m.run.clone(),
                    verify: !m.verified,
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
                lock: None,
            },
        );
        Join::Start
    }

    /// The build lock of `image` is held and its record read: when the
    /// record matches the inputs (another process just built them), the
    /// waiting runs reuse it and `true` is returned; otherwise the lock is
    /// kept for the build about to start.
    pub(crate) fn locked(
        &mut self,
        image: &str,
        lock: Option<BuildLock>,
        record: Option<Memo>,
    ) -> bool {
        let Some(b) = self.inflight.get_mut(image) else {
            return true;
        };
        let record = record.filter(|m| b.fingerprint.as_ref() == Some(&m.fingerprint));
        let Some(memo) = record else {
            b.lock = lock;
            return false;
        };
        let b = self.inflight.remove(image).expect("in flight");
        drop(lock);
        for w in b.waiters {
            w.reply.do_send(BuildNotice::Done(Ok(BuildDone {
                cached: true,
                image: memo.run.clone(),
                verify: true,
            })));
        }
        self.memo.insert(image.to_string(), memo);
        true
    }

    /// A session found the recorded image of `image` where it should be.
    pub(crate) fn checked(&mut self, image: &str) {
        if let Some(m) = self.memo.get_mut(image) {
            m.verified = true;
        }
    }

    /// Record the future driving the build of `image` (first the wait for
    /// its lock, then the build).
    pub(crate) fn started(&mut self, image: &str, handle: SpawnHandle) {
        if let Some(b) = self.inflight.get_mut(image) {
            b.handle = Some(handle);
        }
    }

    /// A real build of `image` starts (counted by [`Builds::count`]).
    pub(crate) fn building(&mut self, image: &str, handle: SpawnHandle) {
        self.started += 1;
        self.started(image, handle);
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

    /// The build of `image` ended. Returns what to write (off the actor
    /// thread): its record, and the lock to release after it.
    pub(crate) fn finished(
        &mut self,
        image: &str,
        result: Result<BuiltImage, crate::Error>,
    ) -> Option<Record> {
        let b = self.inflight.remove(image)?;
        let run = match &result {
            Ok(built) => built.id.clone().unwrap_or_else(|| image.to_string()),
            Err(_) => image.to_string(),
        };
        let mut to_save = None;
        match (&result, b.fingerprint) {
            (Ok(built), Some(fp)) => {
                let memo = Memo {
                    fingerprint: fp,
                    run: run.clone(),
                    verified: true,
                };
                if built.id.is_some() {
                    to_save = Some(memo.clone());
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
        let images_dir = self.store.clone()?;
        Some(Record {
            images_dir,
            tag: image.to_string(),
            memo: to_save,
            lock: b.lock,
        })
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

    /// Forget a memoised build (its image vanished); returns its record
    /// file, for the caller to delete off the actor thread.
    pub(crate) fn forget(&mut self, image: &str) -> Option<PathBuf> {
        self.memo.remove(image);
        self.store
            .as_ref()
            .map(|dir| dir.join(format!("{}.json", file_stem(image))))
    }

    /// Builds actually started so far.
    pub(crate) fn count(&self) -> u64 {
        self.started
    }
}

/// Fingerprint of the build inputs under `key` (the state directory's,
/// [`crate::state::key`]), `None` when the directory cannot be read or is
/// too large (then the image is always built). Blocking: walks the pod
/// directory.
#[cfg(test)]
pub(crate) fn fingerprint(spec: &BuildSpec, key: &[u8; 32]) -> Option<String> {
    let inputs = read_inputs(&spec.context, &spec.dockerfile)?;
    Some(fingerprint_of(spec, key, &inputs))
}

/// The files of a build context that count, as `(path, length, mtime)`,
/// sorted; `None` when the directory cannot be read or is too large.
/// Blocking: walks the directory.
pub(crate) type Inputs = Vec<(String, u64, u128)>;

fn read_inputs(context: &Path, dockerfile: &Path) -> Option<Inputs> {
    let mut entries = Vec::new();
    walk(context, context, &mut entries).ok()?;
    let dockerfile = std::fs::read_to_string(dockerfile).unwrap_or_default();
    if !may_copy_cldpd_files(&dockerfile) {
        entries.retain(|(path, _, _)| !CLDPD_FILES.contains(&path.as_str()));
    }
    if entries.len() > MAX_FINGERPRINT_FILES {
        return None;
    }
    entries.sort();
    Some(entries)
}

/// The fingerprint of inputs already read.
fn fingerprint_of(spec: &BuildSpec, key: &[u8; 32], entries: &Inputs) -> String {
    let mut h = Fingerprint::new(key);
    h.field(b"cldpd build inputs v1")
        .field(spec.image.as_bytes())
        .field(spec.dockerfile.as_os_str().as_encoded_bytes())
        .field(&(spec.build_args.len() as u64).to_le_bytes());
    for (k, v) in &spec.build_args {
        h.field(k.as_bytes()).field(v.expose().as_bytes());
    }
    h.field(&(entries.len() as u64).to_le_bytes());
    for (path, len, mtime) in entries {
        h.field(path.as_bytes())
            .field(&len.to_le_bytes())
            .field(&mtime.to_le_bytes());
    }
    h.hex()
}

/// The files of a pod directory that are cldpd's, not the image's.
const CLDPD_FILES: [&str; 2] = [crate::pod::POD_CONFIG_FILE, crate::pod::TEMPLATE_FILE];

/// True when a `COPY`/`ADD` of the Dockerfile may take `pod.json` or
/// `template.md` into the image: a source that is `.`, a wildcard at the
/// root of the context, or one that names one of them. Conservative: when in
/// doubt, they count.
fn may_copy_cldpd_files(dockerfile: &str) -> bool {
    let mut joined = String::new();
    for raw in dockerfile.lines() {
        let line = raw.trim();
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let logical = std::mem::take(&mut joined);
        let mut words = logical.split_whitespace();
        let Some(instr) = words.next() else { continue };
        if !(instr.eq_ignore_ascii_case("COPY") || instr.eq_ignore_ascii_case("ADD")) {
            continue;
        }
        let args: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        // JSON form: ["src", "dest"].
        let args: Vec<String> = if args.first().is_some_and(|a| a.starts_with('[')) {
            serde_json::from_str::<Vec<String>>(&args.join(" "))
                .unwrap_or_else(|_| vec![".".into(), "/".into()])
        } else {
            args.iter().map(|a| a.to_string()).collect()
        };
        let Some((_, sources)) = args.split_last() else {
            continue;
        };
        for src in sources {
            let src = src.trim_start_matches("./");
            // The root itself, or a wildcard at the root: pod.json and
            // template.md are at the root of the context.
            if src.is_empty()
                || src == "."
                || src == "/"
                || (src.contains(['*', '?', '[']) && !src.contains('/'))
                || CLDPD_FILES.iter().any(|f| src.contains(f))
            {
                return true;
            }
        }
    }
    false
}

/// The fingerprint of the build inputs, off the actor threads, with the state directory's key:
/// the walk is shared by every session of the process that asks for the
/// same context at once ([`shared_walk`]), and the key is read once.
pub(crate) async fn fingerprint_async(
    store: StateStore,
    spec: std::sync::Arc<BuildSpec>,
) -> Option<String> {
    let key = match store.key_if_read() {
        Some(key) => Ok(key),
        None => {
            let store = store.clone();
            crate::state::blocking(move || store.key_blocking())
                .await
                .and_then(|k| k)
        }
    };
    let key = match key {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!(error = %e, "no state key: the image is built every time");
            return None;
        }
    };
    let inputs = shared_walk::inputs(&spec.context, &spec.dockerfile).await?;
    Some(fingerprint_of(&spec, &key, &inputs))
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
        let key = [7u8; 32];
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let a = fingerprint(&spec(dir.path()), &key).unwrap();
        assert_eq!(fingerprint(&spec(dir.path()), &key), Some(a.clone()));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x"), "1").unwrap();
        let b = fingerprint(&spec(dir.path()), &key).unwrap();
        assert_ne!(a, b);
        std::fs::write(dir.path().join("sub/x"), "22").unwrap();
        assert_ne!(fingerprint(&spec(dir.path()), &key), Some(b));
    }

    #[test]
    fn runtime_fields_of_pod_json_and_the_template_do_not_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let key = [7u8; 32];
        let df = dir.path().join("Dockerfile");
        std::fs::write(&df, "FROM scratch\nCOPY claude /bin/claude\n").unwrap();
        std::fs::write(dir.path().join("claude"), "#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("pod.json"), r#"{"timeoutSecs": 60}"#).unwrap();
        let a = fingerprint(&spec(dir.path()), &key).unwrap();
        std::fs::write(
            dir.path().join("pod.json"),
            r#"{"timeoutSecs": 600, "restart": "always"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("template.md"), "Be brief.").unwrap();
        assert_eq!(fingerprint(&spec(dir.path()), &key), Some(a.clone()));
        // A Dockerfile that may copy them into the image: they count.
        for copy in [
            "COPY . /app",
            "ADD --chown=1:1 ./ /app",
            "COPY *.json /etc/",
            "COPY [\"pod.json\", \"/etc/\"]",
            "COPY template.md \\\n  /t",
        ] {
            std::fs::write(
                &df,
                format!("FROM scratch\nCOPY claude /bin/claude\n{copy}\n"),
            )
            .unwrap();
            let b = fingerprint(&spec(dir.path()), &key).unwrap();
            std::fs::write(dir.path().join("template.md"), format!("{copy} changed")).unwrap();
            assert_ne!(fingerprint(&spec(dir.path()), &key), Some(b), "{copy}");
        }
        assert!(!may_copy_cldpd_files(
            "FROM x\nCOPY src/ /app/src\nCOPY lib/*.so /lib/\n"
        ));
        assert!(!may_copy_cldpd_files(
            "FROM x\nCOPY bin/claude /bin/claude\nADD https://example.com/x.tgz /x\n"
        ));
    }
}
