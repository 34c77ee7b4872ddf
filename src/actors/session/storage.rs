//! A persistent session's storage in its containers, and its work saved
//! when a run ends: uncommitted changes committed, the branch fetched back
//! into the repository, `session.json` updated (see
//! [`crate::workspace`]).

use actix::prelude::*;

use super::{Ending, Persistent, Plan, SessionActor};
use crate::event::EventKind;
use crate::runtime::{labels, BindMount, RunSpec, SecretValue};
use crate::workspace::{self, storage, Branch};

/// Mount the session's storage into `spec`: the workspace at the workdir
/// (unless the pod mounts its own there), the agent's state at
/// [`storage::AGENT_DIR`] with `CLAUDE_CONFIG_DIR` pointing at it, and git
/// told to trust the workspace (owned by another uid).
pub(super) fn persist(spec: &mut RunSpec, p: &Persistent) {
    if p.mount_work {
        spec.mounts.push(BindMount {
            source: p.storage.work(),
            target: p.workdir.clone(),
            read_only: false,
        });
    }
    spec.mounts.push(BindMount {
        source: p.storage.agent(),
        target: storage::AGENT_DIR.into(),
        read_only: false,
    });
    spec.env.push((
        "CLAUDE_CONFIG_DIR".into(),
        SecretValue::new(storage::AGENT_DIR),
    ));
    if p.repo.is_some() {
        for (name, value) in workspace::CONTAINER_GIT_ENV {
            spec.env.push((name.into(), SecretValue::new(value)));
        }
    }
    spec.workdir = Some(p.workdir.clone());
    spec.labels.insert(labels::STORAGE.into(), p.key.clone());
}

/// Commit what is left, fetch the branch back (none without a `repo`),
/// and record the branch plus `end` in `session.json`.
fn bring_back(
    p: &Persistent,
    end: impl FnOnce(&mut workspace::StoredSession),
) -> Result<Option<Branch>, crate::Error> {
    let branch = match &p.repo {
        Some(repo) => {
            let work = p.storage.work();
            workspace::commit_pending(&work, &p.key, p.issue.as_deref())?;
            Some(workspace::fetch_back(
                &work,
                &repo.source,
                &p.key,
                &repo.base,
            )?)
        }
        None => None,
    };
    p.storage.update(|m| {
        if branch.is_some() {
            m.branch = branch.clone();
        }
        end(m);
    })?;
    Ok(branch)
}

impl SessionActor {
    /// After a turn, for a session with `checkpoint`: bring the work back
    /// now (on a blocking thread), reported as a `branch` event.
    pub(super) fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        let Plan::Start(plan) = &self.plan else {
            return;
        };
        let Some(p) = plan
            .persistent
            .clone()
            .filter(|p| p.checkpoint && p.repo.is_some())
        else {
            return;
        };
        let id = self.id.clone();
        let saved = tokio::task::spawn_blocking(move || bring_back(&p, |_| {}));
        ctx.spawn(actix::fut::wrap_future(saved).map(
            move |saved, act: &mut Self, ctx| match saved {
                Ok(Ok(Some(b))) if !act.finished && !act.harvested => {
                    act.emit(EventKind::Branch {
                        name: b.name,
                        head: b.head,
                        commits: b.commits,
                    });
                    act.flush(ctx);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(session = %id, error = %e, "checkpoint failed"),
                Err(e) => tracing::warn!(session = %id, error = %e, "checkpoint failed"),
            },
        ));
    }

    /// For a persistent session, save its work before the run ends (on a
    /// blocking thread), then finish with `ending`: true when that was
    /// started (the caller returns), false when there is nothing to save.
    pub(super) fn harvest(
        &mut self,
        ending: &Ending,
        cleanup: &Option<String>,
        ctx: &mut Context<Self>,
    ) -> bool {
        if self.harvested {
            return false;
        }
        let Plan::Start(plan) = &self.plan else {
            return false;
        };
        let Some(p) = plan.persistent.clone() else {
            return false;
        };
        self.harvested = true;
        // The container is gone: a stop meanwhile has nothing to signal.
        self.phase = super::Phase::Cleanup;
        let outcome = match ending {
            Ending::Exited(code) => format!("exited {code}"),
            Ending::Failed(e) => e.code().to_string(),
        };
        let (ending, cleanup) = (ending.clone(), cleanup.clone());
        let id = self.id.clone();
        let saved = tokio::task::spawn_blocking(move || {
            bring_back(&p, |m| {
                m.ended = Some(storage::now());
                m.outcome = Some(outcome);
            })
        });
        ctx.spawn(actix::fut::wrap_future(saved).map(move |saved, act: &mut Self, ctx| {
            match saved {
                Ok(Ok(Some(b))) if !act.finished => act.emit(EventKind::Branch {
                    name: b.name,
                    head: b.head,
                    commits: b.commits,
                }),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(session = %id, error = %e, "the session's work could not be saved")
                }
                Err(e) => tracing::warn!(session = %id, error = %e, "saving the session's work failed"),
            }
            act.finish(ending, cleanup, ctx);
            act.flush(ctx);
        }));
        true
    }
}
