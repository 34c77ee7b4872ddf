//! Which process owns a container, and whether that process is still alive.
//!
//! Every container carries its owner in labels: the dispatcher instance id,
//! the host name, the pid and the pid's start time (so a recycled pid is not
//! mistaken for the owner). A run whose owner is gone is an *orphan*:
//! `cldpd ps` marks it and `cldpd stop --orphans` reaps exactly those.
//! Containers owned by another host are never considered orphans (their
//! owner cannot be checked from here).

use std::collections::BTreeMap;

use crate::runtime::labels;

/// The owner of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            host: hostname(),
            pid,
            start: process_start(pid),
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
    /// time.
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

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
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
