//! The one tokio runtime every Engine API request runs on.
//!
//! bollard's client (hyper's connection pool underneath) spawns the task
//! of each connection on the tokio runtime that opened it. actix runs one
//! single-threaded tokio runtime per `Arbiter`; a pooled connection opened
//! from one arbiter and reused from another dies with the first arbiter,
//! and requests from the second then fail (bollard issue #387, "client
//! used from several tokio runtimes"). So no request is ever made from the
//! caller's runtime: a dedicated thread (`cldpd-engine-api`) runs one
//! current-thread runtime for the whole process, every call is spawned
//! there, and results come back over the task's `JoinHandle` (a future) or
//! a channel (a stream), both of which any runtime can await.

use std::future::Future;
use std::sync::OnceLock;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::error::Error;

/// Items a stream task may get ahead of its reader (backpressure beyond).
const STREAM_BUFFER: usize = 64;

/// The runtime of the driver thread (started on first use, lives as long
/// as the process).
pub(crate) fn handle() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cldpd-engine-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cannot build the Engine API runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("cannot start the Engine API thread");
        rx.recv().expect("the Engine API thread did not start")
    })
}

/// Run `fut` on the driver runtime; the result comes back to whichever
/// runtime awaits it. A panic in `fut` becomes [`Error::Internal`].
pub(crate) fn call<T, F>(fut: F) -> BoxFuture<'static, Result<T, Error>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let task = handle().spawn(fut);
    async move {
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Error::internal(format!("Engine API task failed: {e}"))),
        }
    }
    .boxed()
}

/// Run `produce` on the driver runtime, handing it a sender; its items
/// come back as a stream. The task notices a dropped stream at its next
/// send (`Sender::send` fails) and should then end.
pub(crate) fn stream<T, F, Fut>(produce: F) -> BoxStream<'static, T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(STREAM_BUFFER);
    handle().spawn(produce(tx));
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_from_two_runtimes_run_on_the_driver_thread() {
        let name =
            || call(async { Ok::<_, Error>(std::thread::current().name().map(String::from)) });
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let got = rt.block_on(name()).unwrap();
            assert_eq!(got.as_deref(), Some("cldpd-engine-api"));
            drop(rt); // the next runtime must still be served
        }
    }
}
