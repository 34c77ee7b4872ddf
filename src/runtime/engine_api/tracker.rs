//! What this process has in flight, by key: runs being created and started
//! (a signal that finds no container yet is asked again until it exists),
//! and live execs with their unique markers (for `signal_exec`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Per key, the values held and the token of the guard holding each.
type Map = HashMap<String, Vec<(u64, String)>>;

/// Values by key, each held by a guard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker(Arc<Mutex<Map>>);

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Tracker {
    /// Hold `value` under `key` until the guard is dropped.
    pub(crate) fn track(&self, key: &str, value: &str) -> Guard {
        let token = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock()
            .entry(key.to_string())
            .or_default()
            .push((token, value.to_string()));
        Guard {
            tracker: self.clone(),
            key: key.to_string(),
            token,
        }
    }

    /// Whether anything is held under `key`.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// The values held under `key`.
    pub(crate) fn values(&self, key: &str) -> Vec<String> {
        self.lock()
            .get(key)
            .map(|v| v.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Holds one value; dropping it releases the value.
#[derive(Debug)]
pub(crate) struct Guard {
    tracker: Tracker,
    key: String,
    token: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut map = self.tracker.lock();
        if let Some(v) = map.get_mut(&self.key) {
            v.retain(|(t, _)| *t != self.token);
            if v.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_live_as_long_as_their_guards() {
        let t = Tracker::default();
        let a = t.track("k", "1");
        let b = t.track("k", "2");
        assert_eq!(t.values("k"), ["1", "2"]);
        drop(a);
        assert_eq!(t.values("k"), ["2"]);
        assert!(t.contains("k"));
        drop(b);
        assert!(!t.contains("k"));
        assert!(t.values("k").is_empty());
    }
}
