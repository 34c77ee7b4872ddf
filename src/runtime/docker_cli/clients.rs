//! The `docker run` clients of this process that are still running, by
//! container name.
//!
//! The daemon creates and starts a container some time (tens to hundreds
//! of milliseconds) after its client was spawned, which is when the run
//! counts as started. A `docker kill` in that window answers "No such
//! container" (or "is not running" while it is only created): the
//! container is not gone, it is not there *yet*. Knowing that the client
//! still runs lets a signal be asked again until the container exists, so
//! a stop right after a start still reaches the agent with SIGTERM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// First delay before asking again; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_millis(200);

/// Names of the containers whose `docker run` client is running.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clients(Arc<Mutex<HashMap<String, usize>>>);

impl Clients {
    /// Count `name`'s client as running until the guard is dropped.
    pub(crate) fn track(&self, name: &str) -> ClientGuard {
        *self.lock().entry(name.to_string()).or_insert(0) += 1;
        ClientGuard {
            clients: self.clone(),
            name: name.to_string(),
        }
    }

    /// Whether a client of `name` runs in this process.
    pub(crate) fn running(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // The map stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Held while one client runs.
#[derive(Debug)]
pub(crate) struct ClientGuard {
    clients: Clients,
    name: String,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut map = self.clients.lock();
        if let Some(n) = map.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// Delays between attempts: 10, 20, 40 … ms, capped at 200 ms.
pub(crate) fn retry_delays() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_DELAY), |d| Some((*d * 2).min(MAX_DELAY)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_runs_while_any_guard_of_it_lives() {
        let clients = Clients::default();
        assert!(!clients.running("c1"));
        let a = clients.track("c1");
        let b = clients.track("c1");
        let other = clients.track("c2");
        assert!(clients.running("c1"));
        drop(a);
        assert!(clients.running("c1"));
        drop(b);
        assert!(!clients.running("c1"));
        assert!(clients.running("c2"));
        drop(other);
        assert!(!clients.running("c2"));
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let d: Vec<u64> = retry_delays()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(d, [10, 20, 40, 80, 160, 200, 200]);
    }
}
