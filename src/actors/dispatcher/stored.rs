//! The dispatcher's handlers for the storage of sessions that outlive their
//! containers ([`crate::workspace::storage`]): list, remove, prune, diff.
//! A storage is live while a container carrying its `cldpd.storage` label
//! exists (running or being created); live ones are never removed.

use std::collections::HashSet;

use actix::prelude::*;

use super::DispatcherActor;
use crate::actors::supervisor::guarded;
use crate::error::{Error, Result};
use crate::messages::dispatcher::{Diff, ListStored, PruneStored, RemoveStored, StoredInfo};
use crate::runtime::labels;
use crate::workspace::Storage;

impl DispatcherActor {
    /// Every storage with whether it is live, then `f` on a blocking thread.
    fn with_stored<T: Send + 'static>(
        &self,
        f: impl FnOnce(Vec<(Storage, bool)>, &std::path::Path) -> Result<T> + Send + 'static,
    ) -> ResponseFuture<Result<T>> {
        let list = guarded("the runtime's list", self.runtime.list());
        let state_dir = self.settings.state_dir.clone();
        let sessions_dir = self.settings.sessions_dir();
        Box::pin(async move {
            let containers = list.await??;
            let live: HashSet<String> = containers
                .iter()
                .filter(|c| c.is_running() || c.is_created())
                .filter_map(|c| c.label(labels::STORAGE).map(str::to_string))
                .collect();
            crate::state::blocking(move || {
                let all = Storage::all(&state_dir)
                    .into_iter()
                    .map(|s| {
                        let key = s
                            .dir()
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned());
                        let is_live = key.is_some_and(|k| live.contains(&k));
                        (s, is_live)
                    })
                    .collect();
                f(all, &sessions_dir)
            })
            .await?
        })
    }
}

fn info(storage: &Storage, live: bool) -> Option<StoredInfo> {
    Some(StoredInfo {
        meta: storage.load().ok()?,
        live,
        dir: storage.dir().to_path_buf(),
    })
}

/// Remove a storage and the logs of its runs.
fn remove(storage: &Storage, info: &StoredInfo, sessions_dir: &std::path::Path) -> Result<()> {
    storage.remove()?;
    for run in &info.meta.runs {
        let log = crate::log::path_for(sessions_dir, run);
        match std::fs::remove_file(&log) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", log.display()), e)),
        }
    }
    Ok(())
}

fn not_found(session: &str) -> Error {
    Error::SessionNotFound {
        target: session.to_string(),
    }
}

/// A session id names one directory: no path separators or dots first.
fn plain(session: &str) -> bool {
    !session.is_empty() && !session.contains('/') && !session.starts_with('.')
}

impl Handler<ListStored> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<StoredInfo>>>;

    fn handle(&mut self, _: ListStored, _ctx: &mut Context<Self>) -> Self::Result {
        self.with_stored(|all, _| {
            let mut infos: Vec<StoredInfo> =
                all.iter().filter_map(|(s, live)| info(s, *live)).collect();
            infos.sort_by(|a, b| a.meta.created.cmp(&b.meta.created));
            Ok(infos)
        })
    }
}

impl Handler<RemoveStored> for DispatcherActor {
    type Result = ResponseFuture<Result<StoredInfo>>;

    fn handle(&mut self, msg: RemoveStored, _ctx: &mut Context<Self>) -> Self::Result {
        let session = msg.session;
        if !plain(&session) {
            return Box::pin(futures_util::future::ready(Err(not_found(&session))));
        }
        self.with_stored(move |all, sessions_dir| {
            let (storage, live) = all
                .into_iter()
                .find(|(s, _)| s.dir().file_name().is_some_and(|n| n == session.as_str()))
                .ok_or_else(|| not_found(&session))?;
            let info = info(&storage, live).ok_or_else(|| not_found(&session))?;
            if live {
                return Err(Error::InvalidOption {
                    option: "session".into(),
                    message: format!(
                        "{session} is running; stop it first (`cldpd stop {session}`), then remove it"
                    ),
                });
            }
            remove(&storage, &info, sessions_dir)?;
            Ok(info)
        })
    }
}

impl Handler<PruneStored> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<StoredInfo>>>;

    fn handle(&mut self, msg: PruneStored, _ctx: &mut Context<Self>) -> Self::Result {
        let older_than = msg.older_than;
        self.with_stored(move |all, sessions_dir| {
            let now = std::time::SystemTime::now();
            let mut removed = Vec::new();
            for (storage, live) in all {
                let old = storage
                    .ended()
                    .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= older_than));
                if live || !old {
                    continue;
                }
                if let Some(info) = info(&storage, false) {
                    remove(&storage, &info, sessions_dir)?;
                    removed.push(info);
                }
            }
            Ok(removed)
        })
    }
}

impl Handler<Diff> for DispatcherActor {
    type Result = ResponseFuture<Result<Vec<u8>>>;

    fn handle(&mut self, msg: Diff, _ctx: &mut Context<Self>) -> Self::Result {
        let session = msg.session;
        let state_dir = self.settings.state_dir.clone();
        Box::pin(async move {
            if !plain(&session) {
                return Err(not_found(&session));
            }
            crate::state::blocking(move || {
                let storage = Storage::of(&state_dir, &session);
                if !storage.exists() {
                    return Err(not_found(&session));
                }
                let meta = storage.load()?;
                let Some(repo) = meta.repo else {
                    return Err(Error::InvalidOption {
                        option: "session".into(),
                        message: format!(
                            "{session} does not work on a repository (its pod has no `repo` field)"
                        ),
                    });
                };
                if meta.branch.is_none() {
                    return Err(Error::InvalidOption {
                        option: "session".into(),
                        message: format!(
                            "the work of {session} has not come back yet: it does when a run of it ends"
                        ),
                    });
                }
                crate::workspace::diff(&repo.source, &session, &repo.base)
            })
            .await?
        })
    }
}
