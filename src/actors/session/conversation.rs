//! The conversation of a long-lived agent (`agentInput: "stream-json"`):
//! follow-ups written to its open stdin, its turns tracked, the `idle`
//! state and the keep-alive.
//!
//! Claude Code reports each prompt's turn by the id cldpd gave it
//! (`command_lifecycle` → [`EventKind::AgentTurn`]: `queued`, `started`,
//! `completed`, the turn's `agent_result` before its `completed`); a
//! prompt sent by another process (`cldpd resume`, written straight to the
//! container's stdin) shows up there too. The agent is idle when every
//! prompt it was given has completed: the session then reports
//! [`SessionState::Idle`] and an `idle` event, and waits `keepAliveSecs`
//! (0: not at all) for a follow-up before it ends the agent — TERM, the
//! grace period, KILL, as any stop; the run's outcome is then its last
//! result's, not the signal's exit code.

use actix::prelude::*;

use super::{Phase, SessionActor, StopReason};
use crate::agent;
use crate::error::Error;
use crate::event::EventKind;
use crate::messages::session::{EndConversation, FollowUp, SessionState};
use crate::runtime::Stdin;

/// See the [module docs](self).
#[derive(Debug)]
pub(super) struct Conversation {
    /// The conversation id (`--session-id`).
    id: String,
    keep_alive: std::time::Duration,
    /// Prompts given (by this session, or seen `queued`/`started`) and not
    /// `completed` yet.
    pub(super) outstanding: Vec<String>,
    /// Turns completed.
    turns: u32,
    /// Follow-ups sent before the container started, written once it has.
    pub(super) held: Vec<Stdin>,
    pub(super) started: bool,
    /// Waiting for a follow-up: the keep-alive timer.
    pub(super) idle: Option<SpawnHandle>,
}

impl Conversation {
    /// A conversation whose first prompt (given its id here) is on its way.
    pub(super) fn new(id: String, keep_alive: std::time::Duration) -> Self {
        Conversation {
            id,
            keep_alive,
            outstanding: vec![uuid::Uuid::new_v4().to_string()],
            turns: 0,
            held: Vec::new(),
            started: false,
            idle: None,
        }
    }
}

impl SessionActor {
    /// Follow the turns the events of one output batch report; true when
    /// the agent has just answered its last outstanding prompt.
    pub(super) fn track_turns(&mut self, kinds: &[EventKind], ctx: &mut Context<Self>) -> bool {
        let Some(convo) = self.convo.as_mut() else {
            return false;
        };
        let mut completed = false;
        let mut woke = false;
        for kind in kinds {
            let EventKind::AgentTurn { command, state } = kind else {
                continue;
            };
            match state.as_str() {
                "completed" => {
                    convo.outstanding.retain(|c| c != command);
                    convo.turns += 1;
                    completed = true;
                }
                // `queued`, `started`: a prompt of another process too.
                _ => {
                    if !convo.outstanding.contains(command) {
                        convo.outstanding.push(command.clone());
                    }
                    if let Some(timer) = convo.idle.take() {
                        ctx.cancel_future(timer);
                        woke = true;
                    }
                }
            }
        }
        if woke && self.stopping.is_none() {
            self.back_to_work();
        }
        let convo = self.convo.as_ref().expect("checked above");
        completed && convo.outstanding.is_empty() && convo.idle.is_none()
    }

    /// Every prompt is answered: `idle`, then the keep-alive.
    pub(super) fn go_idle(&mut self, ctx: &mut Context<Self>) {
        if self.stopping.is_some() || self.phase != Phase::Running {
            return;
        }
        let Some(convo) = self.convo.as_mut() else {
            return;
        };
        let keep_alive = convo.keep_alive;
        let turns = convo.turns;
        if !keep_alive.is_zero() {
            // The run goes on: bring the work back now (`checkpoint`);
            // otherwise the end of the run does.
            self.checkpoint(ctx);
        }
        let Some(convo) = self.convo.as_mut() else {
            return;
        };
        convo.idle = Some(ctx.run_later(keep_alive, |act, ctx| {
            if let Some(convo) = act.convo.as_mut() {
                convo.idle = None;
            }
            tracing::debug!(session = %act.id, "keep-alive over: ending the agent");
            act.begin_stop(StopReason::Finished, act.policy.stop_grace, ctx);
            act.flush(ctx);
        }));
        self.emit(EventKind::Idle {
            turns,
            keep_alive_ms: keep_alive.as_millis() as u64,
        });
        if let Some(container) = &self.container {
            self.set_state(SessionState::Idle {
                container: container.to_string(),
                turns,
            });
        }
    }

    /// End the conversation once every prompt is answered: now when idle,
    /// else when the agent next goes idle (with no keep-alive left).
    fn end_conversation(&mut self, ctx: &mut Context<Self>) {
        let Some(convo) = self.convo.as_mut() else {
            let grace = self.policy.stop_grace;
            return self.begin_stop(StopReason::Requested, grace, ctx);
        };
        convo.keep_alive = std::time::Duration::ZERO;
        if let Some(timer) = convo.idle.take() {
            ctx.cancel_future(timer);
            let grace = self.policy.stop_grace;
            self.begin_stop(StopReason::Finished, grace, ctx);
        }
    }

    /// A follow-up arrived while idle: `running` again.
    fn back_to_work(&mut self) {
        if let Some(container) = &self.container {
            self.set_state(SessionState::Running {
                container: container.to_string(),
                attempt: self.attempt,
            });
        }
    }
}

impl Handler<FollowUp> for SessionActor {
    type Result = ResponseActFuture<Self, Result<String, Error>>;

    fn handle(&mut self, msg: FollowUp, ctx: &mut Context<Self>) -> Self::Result {
        let refuse = |e: Error| -> Self::Result { Box::pin(actix::fut::ready(Err(e))) };
        if let Err(e) = crate::pod::validate_prompt(&msg.prompt) {
            return refuse(e);
        }
        let target = self.id.to_string();
        let Some(convo) = self.convo.as_mut() else {
            return refuse(Error::InputUnavailable {
                target,
                message: "its agent takes no follow-ups on stdin (agentInput is not stream-json, or this is a resume); use `resume`".into(),
            });
        };
        if self.stopping.is_some() || self.phase != Phase::Running {
            return refuse(Error::InputUnavailable {
                target,
                message: "the run is not running (it is ending, restarting or has not started)"
                    .into(),
            });
        }
        let command = uuid::Uuid::new_v4().to_string();
        let bytes = Stdin::new(agent::user_message(&msg.prompt, &convo.id, &command));
        convo.outstanding.push(command.clone());
        if let Some(timer) = convo.idle.take() {
            ctx.cancel_future(timer);
            self.back_to_work();
        }
        let convo = self.convo.as_mut().expect("checked above");
        if !convo.started {
            convo.held.push(bytes);
            return Box::pin(actix::fut::ready(Ok(command)));
        }
        let container = self.container_name().unwrap_or_default();
        // Handed to the backend now (in call order); the future says
        // whether it could be written.
        let write = self.runtime.write_input(&container, bytes);
        Box::pin(
            actix::fut::wrap_future(write).map(move |written, act: &mut Self, ctx| match written {
                Ok(()) => Ok(command),
                Err(e) => {
                    if let Some(convo) = act.convo.as_mut() {
                        convo.outstanding.retain(|c| *c != command);
                        if convo.outstanding.is_empty() && convo.idle.is_none() && convo.turns > 0 {
                            act.go_idle(ctx);
                        }
                    }
                    Err(e)
                }
            }),
        )
    }
}

impl Handler<EndConversation> for SessionActor {
    type Result = ResponseFuture<Result<i32, Error>>;

    fn handle(&mut self, _: EndConversation, ctx: &mut Context<Self>) -> Self::Result {
        self.end_conversation(ctx);
        self.flush(ctx);
        self.outcome_future()
    }
}
