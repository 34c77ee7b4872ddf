//! `cldpd diff <session>`: the changes a session made to its repository
//! (pod.json `repo`), as a patch on stdout, through
//! [`cldpd::Dispatcher::diff`].

use clap::Args;
use cldpd::workspace::Storage;

use super::rm::{not_stored, stored_on_disk};
use crate::cli::error::CliError;
use crate::cli::Ctx;

/// Arguments of `cldpd diff`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cldpd diff web-1a2b3c4d
  cldpd diff web-1a2b3c4d > work.patch && git apply --check work.patch
  cldpd diff web-1a2b3c4d --json | jq -r .patch

The patch goes from the commit the session started from to its branch
cldpd/<session>, which its work comes back as when a run of it ends (the
same as `git diff <base> cldpd/<session>` in your repository).")]
pub struct DiffArgs {
    /// The session id (`cldpd ps -a` lists the stored sessions)
    pub session: String,

    /// Print one JSON object on stdout: {"session", "patch"}
    #[arg(long)]
    pub json: bool,
}

/// Run `cldpd diff`.
pub async fn run(args: DiffArgs, ctx: &Ctx) -> Result<i32, CliError> {
    let mut ui = ctx.ui(args.json);
    let state_dir = &ctx.settings().state_dir;
    if !stored_on_disk(state_dir, &args.session) {
        return Err(not_stored(&args.session));
    }
    if let Ok(meta) = Storage::of(state_dir, &args.session).load() {
        if meta.repo.is_none() {
            return Err(CliError::new(format!(
                "{} does not work on a repository: it has no patch",
                args.session
            ))
            .hint(format!(
                "its files are in {}; a pod whose pod.json names a \"repo\" gets its work back as a branch, and a patch",
                Storage::of(state_dir, &args.session).work().display()
            )));
        }
        if meta.branch.is_none() {
            return Err(CliError::new(format!(
                "the work of {} has not come back yet: it does when a run of it ends",
                args.session
            ))
            .hint(format!(
                "wait for the run to end, or end it with `cldpd stop {}`",
                args.session
            )));
        }
    }
    let patch = ctx
        .dispatcher()
        .diff(&args.session)
        .await
        .map_err(|e| match e {
            cldpd::Error::SessionNotFound { .. } => not_stored(&args.session),
            e => e.into(),
        })?;
    if ui.json {
        ui.json_line(&serde_json::json!({
            "session": args.session,
            "patch": String::from_utf8_lossy(&patch),
        }));
    } else if patch.is_empty() {
        ui.status(format_args!("{} changed nothing", args.session));
    } else {
        ui.write_bytes(&patch);
    }
    ui.flush();
    Ok(0)
}
