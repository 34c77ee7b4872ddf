//! `cldpd start -d`: the run goes on in a background `cldpd` process that
//! outlives the terminal; the foreground one prints the session id and
//! returns.
//!
//! The foreground process starts itself again with the same arguments, in
//! its own process group (a terminal's Ctrl-C and hang-up go to the
//! foreground group only), stdin and stdout on `/dev/null`, and stderr in a
//! file, plus [`HANDOFF_ENV`] naming a file. The background process starts
//! the run as `start` does, writes the session id into that file, removes
//! the stderr file (its later output goes nowhere: the session log has
//! every event) and follows the run to its end. The foreground process
//! waits for the id, or for the background process to fail first, and then
//! shows its error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::error::CliError;
use super::output::Ui;

/// Set in the background process: where to write the session id.
pub const HANDOFF_ENV: &str = "CLDPD_DETACHED_HANDOFF";

/// How long the foreground process waits for the run to exist (the start
/// returns before the image build).
const HANDOFF_LIMIT: Duration = Duration::from_secs(120);

/// The handoff file of this process when it is the background one.
pub fn handoff_file() -> Option<PathBuf> {
    std::env::var_os(HANDOFF_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn err_file(handoff: &Path) -> PathBuf {
    handoff.with_extension("err")
}

/// In the background process: the run exists; tell the foreground one.
pub fn hand_off(handoff: &Path, session: &str) {
    let tmp = handoff.with_extension("tmp");
    let written =
        std::fs::write(&tmp, format!("{session}\n")).and_then(|()| std::fs::rename(&tmp, handoff));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot hand the session id over");
    }
    let _ = std::fs::remove_file(err_file(handoff));
}

/// In the foreground process: start the background one and wait for its
/// session id (printed on stdout) or its failure (its stderr shown, its
/// exit code returned).
pub async fn detach(ui: &mut Ui) -> Result<i32, CliError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find cldpd's own binary to detach: {e}")))?;
    let handoff =
        std::env::temp_dir().join(format!("cldpd-detach-{}.id", uuid::Uuid::new_v4().simple()));
    let err_path = err_file(&handoff);
    let err = std::fs::File::create(&err_path)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", err_path.display())))?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(HANDOFF_ENV, &handoff)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start the background cldpd: {e}")))?;
    let deadline = Instant::now() + HANDOFF_LIMIT;
    loop {
        if let Ok(id) = std::fs::read_to_string(&handoff) {
            let _ = std::fs::remove_file(&handoff);
            ui.print(id);
            return Ok(0);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&err_path).unwrap_or_default();
            let _ = std::fs::remove_file(&err_path);
            let _ = std::fs::remove_file(&handoff);
            eprint!("{text}");
            return Ok(status.code().unwrap_or(super::error::EXIT_FAILURE));
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(format!(
                "the background cldpd (pid {}) did not start the run within {}s",
                child.id(),
                HANDOFF_LIMIT.as_secs()
            ))
            .hint(format!("its output so far is in {}", err_path.display())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
