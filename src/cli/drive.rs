//! Follow a live run to its end: render its events, turn Ctrl-C / SIGTERM
//! into a graceful stop (a second one: kill at once), and work out the exit
//! code. Shared by `start` and `resume`; with `start -i`, also the
//! follow-ups typed on stdin ([`Attach`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use cldpd::Session;
use futures_util::{FutureExt, StreamExt};

use super::attach::{Attach, Report};
use super::error::{exit_code_for, exit_code_for_error, CliError, EXIT_FAILURE};
use super::output::{grace_text, Ui, SPINNER_INTERVAL};
use super::render::Renderer;
use super::signals::{Sig, Signals};

/// Events handled before the loop looks at signals and the clock again.
const DRAIN_BATCH: usize = 1024;

type StopFuture = Pin<Box<dyn Future<Output = cldpd::Result<i32>>>>;

/// Render `session` until it ends; returns the process exit code: the
/// container's code, the agent's last code or [`super::error::EXIT_LIMIT`]
/// when a limit ended it, [`EXIT_FAILURE`] when the run failed, or `128 + n`
/// when signal `n` stopped it while no container ran (before the first one,
/// or during a restart back-off). `grace` is the SIGTERM → SIGKILL period of
/// a stop caused by a signal. `attach`: the follow-ups read from stdin
/// (`start -i`); their errors are shown, their answers are in the events.
pub async fn drive(
    ui: &mut Ui,
    session: &Session,
    signals: &mut Signals,
    grace: Duration,
    resume_of: Option<String>,
    mut attach: Option<Attach>,
) -> i32 {
    let mut events = session.events();
    let mut renderer = Renderer::live(resume_of).attached(attach.is_some());
    let mut tick = tokio::time::interval(SPINNER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stop: Option<StopFuture> = None;
    let mut stop_error: Option<cldpd::Error> = None;
    let mut signalled: Option<Sig> = None;
    let mut out_stop = false;

    loop {
        tokio::select! {
            biased;
            sig = signals.recv() => {
                ui.spin_end();
                let grace = if signalled.is_none() {
                    ui.notice(format_args!(
                        "stopping {} (SIGTERM, then SIGKILL after {})",
                        session.id(),
                        grace_text(grace)
                    ));
                    signalled = Some(sig);
                    grace
                } else {
                    ui.notice(format_args!("killing {} now (SIGKILL)", session.id()));
                    Duration::ZERO
                };
                let s = session.clone();
                stop = Some(Box::pin(async move { s.stop(Some(grace)).await }));
            }
            res = async { stop.as_mut().expect("guarded").await }, if stop.is_some() => {
                stop = None;
                // The outcome itself comes from `wait` below.
                if let Err(e @ cldpd::Error::StopFailed { .. }) = res {
                    stop_error = Some(e);
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let mut done = ev.is_terminal();
                renderer.event(ui, &ev);
                // Handle what is already there before flushing.
                for _ in 0..DRAIN_BATCH {
                    if done {
                        break;
                    }
                    match events.next().now_or_never() {
                        Some(Some(ev)) => {
                            done = ev.is_terminal();
                            renderer.event(ui, &ev);
                        }
                        Some(None) => done = true,
                        None => break,
                    }
                }
                ui.flush();
                if done {
                    break;
                }
                if ui.out_failed_now() && stop.is_none() && !out_stop {
                    // Nobody reads what the run prints: stop it the
                    // normal way (said on stderr by the Ui already).
                    out_stop = true;
                    ui.notice(format_args!(
                        "stopping {} (SIGTERM, then SIGKILL after {})",
                        session.id(),
                        grace_text(grace)
                    ));
                    let s = session.clone();
                    stop = Some(Box::pin(async move { s.stop(Some(grace)).await }));
                }
            }
            report = async { attach.as_mut().expect("guarded").next().await }, if attach.is_some() => {
                match report {
                    None => attach = None,
                    Some(Report::Refused(e)) => ui.error(&CliError::from(e)),
                    Some(Report::Unreadable(e)) => ui.notice(format_args!(
                        "cannot read stdin ({e}): taken as the end of the follow-ups"
                    )),
                    Some(Report::Ending) if stop.is_none() && signalled.is_none() && !out_stop => {
                        ui.status("end of input: the conversation ends once the agent has answered")
                    }
                    Some(Report::Ending) => {}
                }
                ui.flush();
            }
            _ = tick.tick(), if ui.spinning() => ui.spin_tick(),
        }
    }
    ui.spin_end();
    ui.flush();

    let outcome = session.wait().await;
    let code = outcome_code(ui, outcome, stop_error, signalled);
    // The work's branch, when it came back: the last line.
    renderer.finish(ui);
    ui.flush();
    code
}

/// The exit code of a run's outcome, its error shown.
fn outcome_code(
    ui: &mut Ui,
    outcome: cldpd::Result<i32>,
    stop_error: Option<cldpd::Error>,
    signalled: Option<Sig>,
) -> i32 {
    if let Some(e) = stop_error {
        ui.error(&e.into());
        return EXIT_FAILURE;
    }
    match outcome {
        Ok(code) => exit_code_for(code),
        Err(cldpd::Error::Stopped) if signalled.is_some() => {
            let sig = signalled.expect("checked");
            ui.status(format_args!(
                "stopped by {} while no container was running",
                sig.name()
            ));
            128 + sig.number()
        }
        Err(e) => {
            let code = exit_code_for_error(&e);
            let e = match e {
                // -v printed the build log already: not its tail again.
                cldpd::Error::BuildFailed { image, code, .. } if ui.verbose => {
                    cldpd::Error::BuildFailed {
                        image,
                        code,
                        tail: Vec::new(),
                    }
                }
                e => e,
            };
            ui.error(&CliError::from(e));
            code
        }
    }
}
