//! `cldpd rm <session>...`: remove ended sessions' storage (workspace and
//! agent state, `<state>/workspaces/<session>/`) and the logs of their
//! runs, through [`cldpd::Dispatcher::remove_stored`]. A live session is
//! refused: its storage is in use.

use clap::Args;
use cldpd::messages::dispatcher::StoredInfo;
use cldpd::workspace::Storage;

use crate::cli::error::{CliError, EXIT_FAILURE};
use crate::cli::Ctx;

/// Arguments of `cldpd rm`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cldpd rm web-1a2b3c4d
  cldpd rm web-1a2b3c4d web-5e6f7a8b --json
  cldpd prune --older-than 7d           (every session ended a week ago or more)

Removes what a session of a long-lived agent (\"agentInput\": \"stream-json\")
keeps after its run ends so that `cldpd resume` can continue it: its
workspace, its agent's conversations and the logs of its runs. The branch
its work came back as (cldpd/<session>, pod.json \"repo\") stays in your
repository. A session whose run is live is refused: stop it first. Prints
each removed session's id; exit 1 if any could not be removed.")]
pub struct RmArgs {
    /// Session ids (`cldpd ps -a` lists those that can be removed)
    #[arg(value_name = "SESSION", required = true)]
    pub sessions: Vec<String>,

    /// Print each removed session as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd rm`.
pub async fn run(args: RmArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let state_dir = &ctx.settings().state_dir;
    // Which are live needs the engine; a name without storage does not.
    let any_stored = args.sessions.iter().any(|s| stored_on_disk(state_dir, s));
    let stored = if any_stored {
        ctx.dispatcher().stored().await?
    } else {
        Vec::new()
    };
    let mut code = 0;
    for session in &args.sessions {
        match remove(ctx, &stored, session).await {
            Ok(info) if ui.json => ui.json_line(&info),
            Ok(info) => {
                ui.print(format_args!("{}\n", info.meta.session));
                let runs = info.meta.runs.len();
                ui.status(format_args!(
                    "removed {} (workspace, agent state, {runs} run log{})",
                    info.meta.session,
                    if runs == 1 { "" } else { "s" }
                ));
            }
            Err(e) if args.sessions.len() == 1 => return Err(e),
            Err(e) => {
                ui.error(&CliError {
                    message: format!("{session}: {}", e.message),
                    hint: e.hint,
                });
                code = EXIT_FAILURE;
            }
        }
    }
    ui.flush();
    Ok(code)
}

/// True when `session` names a storage directory under `state_dir`.
pub fn stored_on_disk(state_dir: &std::path::Path, session: &str) -> bool {
    !session.is_empty()
        && !session.contains('/')
        && !session.starts_with('.')
        && Storage::of(state_dir, session).exists()
}

/// The error for a session with no storage.
pub fn not_stored(session: &str) -> CliError {
    CliError::new(format!("no stored session `{session}`")).hint(
        "`cldpd ps -a` lists the sessions that can be resumed or removed (only runs of a pod with \"agentInput\": \"stream-json\" keep a session)",
    )
}

async fn remove(ctx: &Ctx, stored: &[StoredInfo], session: &str) -> Result<StoredInfo, CliError> {
    let Some(info) = stored.iter().find(|s| s.meta.session == session) else {
        return Err(not_stored(session));
    };
    if info.live {
        return Err(
            CliError::new(format!("{session} is running: its storage is in use")).hint(format!(
                "stop it first (`cldpd stop {session}`), then `cldpd rm {session}`"
            )),
        );
    }
    ctx.dispatcher()
        .remove_stored(session)
        .await
        .map_err(|e| match e {
            // It went between the list and now.
            cldpd::Error::SessionNotFound { .. } => not_stored(session),
            e => e.into(),
        })
}
