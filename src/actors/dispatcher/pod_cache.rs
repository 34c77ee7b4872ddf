//! The dispatcher's cache of discovered pods.
//!
//! [`Pod::discover`] resolves paths (two `realpath`s), reads `pod.json` and
//! `template.md` and validates the configuration: about twenty system calls
//! and a JSON parse per `Start`. The cache keeps each successfully
//! discovered pod with a *stamp* of what it was read from and reuses it
//! while the stamp is unchanged, so an edited pod is always seen:
//!
//! - the stamp is the `lstat` (device, inode, mode, size, modification
//!   and change times) of the pod directory and of `pod.json` and
//!   `template.md` when they exist. Adding, removing or renaming any entry
//!   of the pod directory (a new `pod.json`, a deleted `Dockerfile`, an
//!   editor's save-by-rename) changes the directory's times; editing a file
//!   in place changes the file's. So a hit costs one to three `lstat`s;
//! - the stamp is read before the discovery it describes, so a change
//!   racing with a discovery at worst causes one more discovery later;
//! - a discovery is only cached when every stamped time is more than
//!   [`SETTLE`] older than the moment the stamp was read: a later change
//!   then always gets a later time, even on file systems with one- or
//!   two-second timestamps (the "racy git" rule). A pod edited less than
//!   that long ago is simply discovered again on every start;
//! - symbolic links anywhere in the pod (the pod directory itself, its
//!   `Dockerfile`, `pod.json`, `template.md`) and anything unusual
//!   (unreadable entries) are not cached: [`Pod::discover`] runs every
//!   time, and reports what is wrong;
//! - failures are never cached.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::pod::{self, Pod};

/// How much older than the stamp's reading a pod's files must be for the
/// discovery to be cached (covers coarse file-system timestamps).
const SETTLE: Duration = Duration::from_secs(2);

/// More pods than this are not worth remembering (the cache is cleared).
const MAX_PODS: usize = 4096;

/// Identity and version of one directory entry (not following links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// Why a stamp cannot be used.
struct Uncacheable;

impl FileStamp {
    /// `Ok(None)` when nothing is there; a symbolic link or an error is
    /// [`Uncacheable`].
    fn read(path: &Path) -> std::result::Result<Option<Self>, Uncacheable> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(Uncacheable),
            Ok(meta) => Ok(Some(FileStamp {
                dev: meta.dev(),
                ino: meta.ino(),
                mode: meta.mode(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(Uncacheable),
        }
    }

    /// The later of its two times, as a `SystemTime`.
    fn newest(&self) -> SystemTime {
        let at = |(secs, nanos): (i64, i64)| {
            if secs < 0 {
                return UNIX_EPOCH;
            }
            UNIX_EPOCH + Duration::new(secs as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        at(self.mtime).max(at(self.ctime))
    }
}

/// What a cached pod was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dir: FileStamp,
    config: Option<FileStamp>,
    template: Option<FileStamp>,
}

impl Stamp {
    /// The full stamp, before a discovery: also checks that the
    /// `Dockerfile` is a plain file (its presence is then covered by the
    /// directory's times) and that the pod's files are old enough.
    fn before_discovery(dir: &Path, settle: Duration) -> Option<Stamp> {
        let read_at = SystemTime::now();
        let dir_stamp = FileStamp::read(dir).ok()??;
        if dir_stamp.mode & 0o170000 != 0o040000 {
            return None; // not a directory: let discovery say so
        }
        let dockerfile = FileStamp::read(&dir.join(pod::DOCKERFILE)).ok()??;
        if dockerfile.mode & 0o170000 != 0o100000 {
            return None;
        }
        let stamp = Stamp {
            dir: dir_stamp,
            config: FileStamp::read(&dir.join(pod::POD_CONFIG_FILE)).ok()?,
            template: FileStamp::read(&dir.join(pod::TEMPLATE_FILE)).ok()?,
        };
        let newest = [
            Some(stamp.dir),
            Some(dockerfile),
            stamp.config,
            stamp.template,
        ]
        .into_iter()
        .flatten()
        .map(|f| f.newest())
        .max()
        .expect("the directory is stamped");
        let settled = read_at
            .checked_sub(settle)
            .is_some_and(|limit| newest < limit);
        settled.then_some(stamp)
    }

    /// True when nothing changed since `self` was read (one `lstat` per
    /// entry that existed).
    fn still_valid(&self, dir: &Path) -> bool {
        let same = |name: &str, then: &Option<FileStamp>| match then {
            // Absent then: its creation would have changed the directory.
            None => true,
            Some(_) => FileStamp::read(&dir.join(name)).ok().as_ref() == Some(then),
        };
        FileStamp::read(dir).ok() == Some(Some(self.dir))
            && same(pod::POD_CONFIG_FILE, &self.config)
            && same(pod::TEMPLATE_FILE, &self.template)
    }
}

/// Discovered pods by name, each with the stamp it was read under.
pub(super) struct PodCache {
    pods: HashMap<String, (Stamp, Arc<Pod>)>,
    settle: Duration,
}

impl Default for PodCache {
    fn default() -> Self {
        PodCache {
            pods: HashMap::new(),
            settle: SETTLE,
        }
    }
}

impl PodCache {
    /// [`Pod::discover`], reusing an earlier discovery while none of the
    /// pod's files changed.
    pub(super) fn discover(&mut self, pods_dir: &Path, name: &str) -> Result<Arc<Pod>> {
        pod::validate_pod_name(name)?;
        let dir = pods_dir.join(name);
        if let Some((stamp, pod)) = self.pods.get(name) {
            if pod.dir == dir && stamp.still_valid(&dir) {
                return Ok(pod.clone());
            }
        }
        let stamp = Stamp::before_discovery(&dir, self.settle);
        match Pod::discover(pods_dir, name) {
            Ok(pod) => {
                let pod = Arc::new(pod);
                // Only a pod found at `<pods>/<name>` itself (no link or
                // non-canonical pods directory in between) is cached.
                match stamp.filter(|_| pod.dir == dir) {
                    Some(stamp) => {
                        if self.pods.len() >= MAX_PODS {
                            self.pods.clear();
                        }
                        self.pods.insert(name.to_string(), (stamp, pod.clone()));
                    }
                    None => {
                        self.pods.remove(name);
                    }
                }
                Ok(pod)
            }
            Err(e) => {
                self.pods.remove(name);
                Err(e)
            }
        }
    }

    #[cfg(test)]
    fn is_cached(&self, name: &str) -> bool {
        self.pods.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let web = root.path().join("web");
        std::fs::create_dir(&web).unwrap();
        std::fs::write(web.join("Dockerfile"), "FROM scratch\n").unwrap();
        root
    }

    /// A cache that trusts files however recent. Every edit below changes
    /// a file's size, and is followed by [`mark`] on the directory, so the
    /// test does not depend on the timestamp granularity.
    fn eager() -> PodCache {
        PodCache {
            pods: HashMap::new(),
            settle: Duration::ZERO,
        }
    }

    /// Give `dir` a modification time of its own (as the next tick of a
    /// clock would).
    fn mark(dir: &Path) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1_000);
        let t = UNIX_EPOCH + Duration::from_secs(NEXT.fetch_add(1, Ordering::Relaxed));
        std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn a_pod_is_reused_until_one_of_its_files_changes() {
        let root = pods();
        // Canonical, as the pods directory must be for caching.
        let dir = &std::fs::canonicalize(root.path()).unwrap();
        let web = dir.join("web");
        let mut cache = eager();
        let a = cache.discover(dir, "web").unwrap();
        assert!(cache.is_cached("web"));
        let b = cache.discover(dir, "web").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "unchanged pod: reused");
        assert_eq!(*a, Pod::discover(dir, "web").unwrap());

        // A new pod.json is seen (a new directory entry).
        std::fs::write(web.join("pod.json"), r#"{"image": "x:1"}"#).unwrap();
        mark(&web);
        assert_eq!(cache.discover(dir, "web").unwrap().image(), "x:1");
        // An edit in place is seen (the file's size and times change).
        std::fs::write(web.join("pod.json"), r#"{"image": "yy:1"}"#).unwrap();
        assert_eq!(cache.discover(dir, "web").unwrap().image(), "yy:1");
        // A save-by-rename is seen.
        std::fs::write(web.join("new.json"), r#"{"image": "zzz:1"}"#).unwrap();
        std::fs::rename(web.join("new.json"), web.join("pod.json")).unwrap();
        mark(&web);
        assert_eq!(cache.discover(dir, "web").unwrap().image(), "zzz:1");
        // A template is seen, and its edits.
        std::fs::write(web.join("template.md"), "first\n").unwrap();
        mark(&web);
        assert_eq!(
            cache.discover(dir, "web").unwrap().template.as_deref(),
            Some("first")
        );
        std::fs::write(web.join("template.md"), "the second\n").unwrap();
        assert_eq!(
            cache.discover(dir, "web").unwrap().template.as_deref(),
            Some("the second")
        );
        // A broken edit is an error, not the old pod.
        std::fs::write(web.join("pod.json"), r#"{"imgae": "z"}"#).unwrap();
        assert!(cache.discover(dir, "web").is_err());
        assert!(!cache.is_cached("web"));
        std::fs::remove_file(web.join("pod.json")).unwrap();
        mark(&web);
        assert_eq!(cache.discover(dir, "web").unwrap().image(), "cldpd-web");
        // A removed Dockerfile makes the pod invalid.
        std::fs::remove_file(web.join("Dockerfile")).unwrap();
        mark(&web);
        assert!(cache.discover(dir, "web").is_err());
        std::fs::write(web.join("Dockerfile"), "FROM scratch\n").unwrap();
        mark(&web);
        assert!(cache.discover(dir, "web").is_ok());
        // A removed pod is gone.
        std::fs::remove_dir_all(&web).unwrap();
        assert!(cache.discover(dir, "web").is_err());
        // Bad names are refused before anything else.
        assert!(cache.discover(dir, "../web").is_err());
    }

    #[test]
    fn links_and_fresh_files_are_not_cached() {
        let root = pods();
        let dir = &std::fs::canonicalize(root.path()).unwrap();
        // Files younger than the settle time: discovered every time.
        let mut cache = PodCache::default();
        assert!(cache.discover(dir, "web").is_ok());
        assert!(!cache.is_cached("web"));

        let mut cache = eager();
        let outside = pods();
        std::os::unix::fs::symlink(outside.path().join("web"), dir.join("linked")).unwrap();
        assert!(cache.discover(dir, "linked").is_err(), "a link outside");
        let inside = dir.join("real");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::os::unix::fs::symlink(&inside, dir.join("alias")).unwrap();
        assert!(cache.discover(dir, "alias").is_ok());
        assert!(!cache.is_cached("alias"), "a linked pod directory");
        std::os::unix::fs::symlink(inside.join("Dockerfile"), dir.join("web/pod.json")).unwrap();
        assert!(cache.discover(dir, "web").is_err());
        assert!(!cache.is_cached("web"));
    }

    #[test]
    fn a_pod_replaced_by_a_link_outside_is_refused() {
        let root = pods();
        let dir = &std::fs::canonicalize(root.path()).unwrap();
        let outside = pods();
        let mut cache = eager();
        assert!(cache.discover(dir, "web").is_ok());
        assert!(cache.is_cached("web"));
        let web = dir.join("web");
        std::fs::remove_dir_all(&web).unwrap();
        std::os::unix::fs::symlink(outside.path().join("web"), &web).unwrap();
        assert!(cache.discover(dir, "web").is_err());
    }

    #[test]
    fn a_non_canonical_pods_directory_is_not_cached() {
        let root = pods();
        let link = tempfile::tempdir().unwrap();
        let pods_link = link.path().join("pods");
        std::os::unix::fs::symlink(root.path(), &pods_link).unwrap();
        let mut cache = eager();
        assert!(cache.discover(&pods_link, "web").is_ok());
        assert!(!cache.is_cached("web"));
    }
}
