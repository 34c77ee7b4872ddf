//! A run's or exec's standard input over the Engine API: the input half of
//! the hijacked attach (or exec start) connection.
//!
//! The container is created with `OpenStdin` and `StdinOnce` (an exec with
//! `AttachStdin`), and attached with `stdin=true` before it starts. Once
//! it has started, [`feed`] writes the bytes and then shuts the write half
//! down: the engine sees the half-close, and (`StdinOnce`; an exec always)
//! closes the process's stdin, so the process reads the bytes and EOF
//! (the [`Stdin`] contract). The output half goes on being read beside the
//! write, so a process that writes a lot before it reads cannot deadlock
//! the run.
//!
//! Kept as its own task over an [`Input`] so that a long-lived agent
//! (issue 13: follow-ups written to the stdin of one live agent) can hold
//! the same half open and write more later instead of closing it at once.

use std::pin::Pin;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::runtime::Stdin;

/// The write half of an attach or exec connection.
pub(crate) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Later input for an open stdin: what `write_input` sends in this
/// process, in order.
pub(crate) type More = tokio::sync::mpsc::UnboundedReceiver<Stdin>;

/// Write `bytes` to `input`, then close it — or, with `more` (an open
/// stdin), write each input arriving there, in order, for as long as the
/// run lives — on a task of its own (on the caller's runtime: the Engine
/// API's driver). The handle lets the run abort a write its process will
/// never read once the process has exited.
pub(crate) fn feed(mut input: Input, bytes: Stdin, more: Option<More>) -> JoinHandle<()> {
    tokio::spawn(async move { crate::runtime::input::feed(&mut input, &bytes, more).await })
}

/// Write `bytes` to the stdin of `container`, a run of another process
/// (or one this process no longer drives): attach with stdin only, write,
/// half-close, and wait (briefly) for the engine to end the attach. The
/// container must run and have an open stdin that outlives its clients
/// (`OpenStdin` without `StdinOnce`), or the write is refused — with
/// `StdinOnce` the half-close would end the agent's input.
pub(crate) async fn write_attached(
    docker: &bollard::Docker,
    container: &str,
    bytes: Stdin,
) -> Result<(), crate::error::Error> {
    use crate::error::Error;
    use futures_util::StreamExt;
    const CALL: std::time::Duration = std::time::Duration::from_secs(30);
    let not_found = || Error::SessionNotFound {
        target: container.to_string(),
    };
    // From the list, not an inspect (see `super::summary`).
    let found = tokio::time::timeout(CALL, super::summary::summary(docker, container))
        .await
        .map_err(|_| Error::RuntimeFailed {
            message: format!("the engine did not answer the list for {container}"),
        })?
        .map_err(|e| super::errors::runtime("list", &e))?;
    let Some(info) = found.filter(super::summary::running) else {
        return Err(not_found());
    };
    // cldpd gives a long-lived agent's container an open stdin that one
    // client's end does not close (`OpenStdin`, not `StdinOnce`), and says
    // so in this label.
    let label = info
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::runtime::labels::AGENT_INPUT));
    if label.map(String::as_str) != Some("stream-json") {
        return Err(Error::InputUnavailable {
            target: container.to_string(),
            message: "its agent does not take follow-ups on an open stdin (agentInput is not stream-json)".into(),
        });
    }
    let options = bollard::query_parameters::AttachContainerOptions {
        stream: true,
        stdin: true,
        stdout: false,
        stderr: false,
        ..Default::default()
    };
    let attached = tokio::time::timeout(CALL, docker.attach_container(container, Some(options)))
        .await
        .map_err(|_| Error::RuntimeFailed {
            message: format!("the engine did not answer the attach to {container}"),
        })?
        .map_err(|e| {
            if super::errors::gone(&e) {
                not_found()
            } else {
                super::errors::runtime("attach", &e)
            }
        })?;
    let (mut output, mut input) = (attached.output, attached.input);
    let written = async {
        input.write_all(bytes.bytes()).await?;
        input.flush().await?;
        input.shutdown().await
    };
    tokio::time::timeout(CALL, written)
        .await
        .map_err(|_| Error::RuntimeFailed {
            message: format!("writing to the stdin of {container} did not finish"),
        })?
        .map_err(|e| Error::RuntimeFailed {
            message: format!("writing to the stdin of {container}: {e}"),
        })?;
    // The engine ends the attach once it has copied the input.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while output.next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// The writer of one run, aborted when dropped (the process has ended, so
/// whatever it has not read is dropped).
pub(crate) struct Feeding(Option<JoinHandle<()>>);

impl Feeding {
    /// Start feeding `bytes` (and, for an open stdin, `more`) to
    /// `input`, or nothing when there are none.
    pub(crate) fn start(input: Input, bytes: Option<Stdin>, more: Option<More>) -> Feeding {
        Feeding(bytes.map(|b| feed(input, b, more)))
    }
}

impl Drop for Feeding {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
