//! Writing a process's standard input, shared by the backends: the run's
//! bytes, then — for an open stdin ([`Stdin::open`]) — every later input,
//! in order, until the run's writer goes away; then end of input.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Stdin;

/// Write `bytes`, then each input arriving on `more` (flushed one by one),
/// then shut `input` down (EOF). A process that stops reading early is
/// not an error: the rest is dropped (only lengths are traced).
pub(crate) async fn feed<W: AsyncWrite + Unpin>(
    input: &mut W,
    bytes: &Stdin,
    more: Option<UnboundedReceiver<Stdin>>,
) {
    if let Err(e) = input.write_all(bytes.bytes()).await {
        tracing::debug!(error = %e, len = bytes.len(), "stdin not fully read by the process");
        return;
    }
    if let Some(mut more) = more {
        let _ = input.flush().await;
        while let Some(bytes) = more.recv().await {
            if let Err(e) = input.write_all(bytes.bytes()).await {
                tracing::debug!(error = %e, len = bytes.len(), "input not read by the process");
                return;
            }
            let _ = input.flush().await;
        }
    }
    if let Err(e) = input.shutdown().await {
        tracing::debug!(error = %e, "closing stdin failed");
    }
}
