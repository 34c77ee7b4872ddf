//! Which process owns a container, and whether that process is still alive.
//!
//! Every container carries its owner in labels: the dispatcher instance id,
//! the host name, the pid and the pid's start time (so a recycled pid is not
//! mistaken for the owner). A run whose owner is gone is an *orphan*:
//! `cldpd ps` marks it and `cldpd stop --orphans` reaps exactly those.
//! Containers owned by another host are never considered orphans (their
//! owner cannot be checked from here).
//!
//! A dispatcher with `adopt_orphans` set takes over the orphans of a dead
//! dispatcher that used the same state directory: it records itself as
//! their adopter in `<state-dir>/owners/<session>.json` (container labels
//! cannot change), counts them against its `max_concurrent` and stops them
//! on shutdown; while the adopter lives they are not orphans.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::labels;

/// The owner of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Dispatcher instance id (random, per dispatcher).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start time of the process, in clock ticks since boot.
    pub start: Option<u64>,
}

impl Owner {
    /// A new owner identity for a dispatcher in this process.
    /// (The host name and this process's start time are read once per
    /// process.)
    pub fn current() -> Owner {
        static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        let pid = std::process::id();
        let start = *START.get_or_init(|| process_start(pid));
        let host = hostname();
        Owner {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            host,
            pid,
            start,
        }
    }

    /// The labels to put on a container.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (labels::OWNER.to_string(), self.id.clone()),
            (labels::OWNER_HOST.to_string(), self.host.clone()),
            (labels::OWNER_PID.to_string(), self.pid.to_string()),
        ];
        if let Some(s) = self.start {
            v.push((labels::OWNER_START.to_string(), s.to_string()));
        }
        v
    }

    /// Read an owner back from container labels.
    pub fn from_labels(l: &BTreeMap<String, String>) -> Option<Owner> {
        Some(Owner {
            id: l.get(labels::OWNER)?.clone(),
            host: l.get(labels::OWNER_HOST)?.clone(),
            pid: l.get(labels::OWNER_PID)?.parse().ok()?,
            start: l.get(labels::OWNER_START).and_then(|s| s.parse().ok()),
        })
    }

    /// False only when the owner is known to be gone: same host, and its
    /// pid is not running or now belongs to a process started at another
    /// time. Reads `/proc`: call it off the actor threads.
    pub fn is_alive(&self) -> bool {
        if self.host != hostname() {
            return true;
        }
        match process_start(self.pid) {
            None => false,
            Some(start) => self.start.is_none_or(|s| s == start),
        }
    }
}

/// Where the adopter of `session` is recorded.
pub fn adoption_path(state_dir: &Path, session: &str) -> PathBuf {
    state_dir.join("owners").join(format!("{session}.json"))
}

impl Owner {
    /// Record `self` as the adopter of `session`.
    pub fn record_adoption(&self, state_dir: &Path, session: &str) -> std::io::Result<()> {
        let path = adoption_path(state_dir, session);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec(self).expect("owner serialises"))
    }

    /// The recorded adopter of `session`, if any.
    pub fn adopter(state_dir: &Path, session: &str) -> Option<Owner> {
        let bytes = std::fs::read(adoption_path(state_dir, session)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Who is responsible for a container now: its living adopter, else the
    /// owner in its labels. The adoption record is looked for in the run's
    /// own state directory (its [`labels::STATE_DIR`] label), where its
    /// adopter wrote it, and under `state_dir` only for a container without
    /// that label: a process using another state directory must still see
    /// that an adopted run has a living owner (`stop --orphans` from there
    /// once reaped runs a live batch had adopted).
    pub fn effective(labels: &BTreeMap<String, String>, state_dir: &Path) -> Option<Owner> {
        let records = labels
            .get(labels::STATE_DIR)
            .map(Path::new)
            .unwrap_or(state_dir);
        let adopter = labels
            .get(labels::SESSION)
            .and_then(|s| Owner::adopter(records, s))
            .filter(Owner::is_alive);
        adopter.or_else(|| Owner::from_labels(labels))
    }
}

/// This machine's host name (read once per process).
pub fn hostname() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string())
    })
    .clone()
}

/// Start time (field 22 of `/proc/<pid>/stat`), `None` when no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    // after[0] is field 3 (state); start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_round_trips_through_labels() {
        let me = Owner::current();
        assert!(me.start.is_some());
        let labels: BTreeMap<_, _> = me.labels().into_iter().collect();
        let back = Owner::from_labels(&labels).unwrap();
        assert_eq!(back, me);
        assert!(back.is_alive());
    }

    #[test]
    fn a_living_adopter_takes_over_from_dead_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = Owner::current();
        dead.pid = u32::MAX - 1;
        let mut labels: BTreeMap<_, _> = dead.labels().into_iter().collect();
        labels.insert(labels::SESSION.to_string(), "web-00000001".to_string());
        assert!(!Owner::effective(&labels, dir.path()).unwrap().is_alive());
        let me = Owner::current();
        me.record_adoption(dir.path(), "web-00000001").unwrap();
        assert_eq!(Owner::effective(&labels, dir.path()), Some(me));
    }

    #[test]
    fn a_dead_or_recycled_pid_is_gone_and_other_hosts_are_left_alone() {
        let mut o = Owner::current();
        o.start = o.start.map(|s| s + 1);
        assert!(!o.is_alive(), "same pid, other start time: a recycled pid");
        o.pid = u32::MAX - 1;
        assert!(!o.is_alive());
        o.host = "elsewhere.example".into();
        assert!(o.is_alive());
    }
}
