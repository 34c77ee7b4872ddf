//! Performance: one walk of a pod directory for every session that asks
//! at once.
//!
//! Each start of a pod fingerprints its build context (a walk of the pod
//! directory, see `fingerprint_async`) to learn whether the recorded
//! image still matches. Started 10,000 at once (`bench_hold`), that was
//! 10,000 walks of the same directory, each in a blocking task of its own:
//! 6.8 % of the run's CPU and a thread hand-over per start (`perf`,
//! 2026-12-01).
//!
//! Here the requests for one context share walks. A walk starts only after
//! every request it answers was made, so its result is as fresh as a walk
//! of each request's own: requests that arrive while a walk runs wait for
//! the next one, which starts as soon as the current one is done. At most
//! one walk per context runs at a time, on one blocking thread, which goes
//! on while requests keep coming.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{read_inputs, Inputs};

type Key = (PathBuf, PathBuf);
type Reply = oneshot::Sender<Option<Arc<Inputs>>>;

/// Per context: the requests waiting for the next walk. A context is in
/// the map while its walker thread runs.
static WAITING: Mutex<Option<HashMap<Key, Vec<Reply>>>> = Mutex::new(None);

/// The inputs of the build context `context` with `dockerfile`, read after
/// this call began (`None`: unreadable or too large).
pub(super) async fn inputs(context: &Path, dockerfile: &Path) -> Option<Arc<Inputs>> {
    let (tx, rx) = oneshot::channel();
    let key = (context.to_path_buf(), dockerfile.to_path_buf());
    let start = {
        let mut waiting = WAITING.lock().unwrap_or_else(PoisonError::into_inner);
        let map = waiting.get_or_insert_with(HashMap::new);
        match map.get_mut(&key) {
            Some(queue) => {
                queue.push(tx);
                false
            }
            None => {
                map.insert(key.clone(), vec![tx]);
                true
            }
        }
    };
    if start {
        let walker = tokio::task::spawn_blocking(move || walker(key));
        drop(walker); // detached: it ends when nobody waits
    }
    rx.await.ok().flatten()
}

/// Walk for whoever waits, until nobody does.
fn walker(key: Key) {
    loop {
        let replies = {
            let mut waiting = WAITING.lock().unwrap_or_else(PoisonError::into_inner);
            let map = waiting.get_or_insert_with(HashMap::new);
            match map.get_mut(&key) {
                Some(queue) if !queue.is_empty() => std::mem::take(queue),
                _ => {
                    map.remove(&key);
                    return;
                }
            }
        };
        // Every request answered here was made before this walk began.
        let inputs = read_inputs(&key.0, &key.1).map(Arc::new);
        for reply in replies {
            let _ = reply.send(inputs.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_walks_and_each_sees_the_files_as_they_were_when_it_asked() {
        let dir = tempfile::tempdir().unwrap();
        let dockerfile = dir.path().join("Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\n").unwrap();
        let many = (0..200).map(|_| inputs(dir.path(), &dockerfile));
        let all = futures_util::future::join_all(many).await;
        let first = all[0].clone().expect("readable");
        assert_eq!(first.len(), 1);
        assert!(all.iter().all(|i| i.as_deref() == Some(&*first)));
        // Fewer walks than requests: the answers share one `Arc` per walk.
        let walks = all
            .iter()
            .map(|i| Arc::as_ptr(i.as_ref().unwrap()))
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert!(walks < 200, "{walks} walks for 200 requests");

        // A request made after a change sees it.
        std::fs::write(dir.path().join("more"), "x").unwrap();
        let after = inputs(dir.path(), &dockerfile).await.unwrap();
        assert_eq!(after.len(), 2);
        // Nothing left behind once nobody waits.
        for _ in 0..1_000_000 {
            let idle =
                WAITING.lock().unwrap().as_ref().is_none_or(|m| {
                    !m.contains_key(&(dir.path().to_path_buf(), dockerfile.clone()))
                });
            if idle {
                return;
            }
            std::thread::yield_now();
        }
        panic!("the walker did not end");
    }
}
