//! `POST /build` with a tar of the pod directory: output lines as they
//! come, errors from the JSON stream (a failed `RUN`, a base image that
//! cannot be pulled) as [`Error::BuildFailed`] with the tail of the output.

use std::collections::{HashMap, VecDeque};

use bollard::models::BuildInfo;
use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc::Sender;

use super::context::context_tar;
use super::errors::{failure, Failure};
use super::secrets::Placeholders;
use crate::error::Error;
use crate::event::OutputStream;
use crate::runtime::{BuildEvent, BuildSpec, BuiltImage, LineDecoder, DEFAULT_LINE_CAP};

/// Lines of output kept for the error of a failed build.
const TAIL: usize = 20;

/// Run one build, sending its events to `tx` (ends early if the reader
/// went away).
pub(crate) async fn build(docker: Docker, spec: BuildSpec, tx: Sender<BuildEvent>) {
    let result = run(&docker, &spec, &tx).await;
    let _ = tx.send(BuildEvent::Finished(result)).await;
}

async fn run(
    docker: &Docker,
    spec: &BuildSpec,
    tx: &Sender<BuildEvent>,
) -> Result<BuiltImage, Error> {
    let (context, dockerfile) = (spec.context.clone(), spec.dockerfile.clone());
    let (archive, dockerfile) =
        tokio::task::spawn_blocking(move || context_tar(&context, &dockerfile))
            .await
            .map_err(|e| Error::internal(format!("archiving the build context panicked: {e}")))?
            .map_err(|e| Error::io(format!("archiving {}", spec.context.display()), e))?;
    // Build args travel in the request (Docker reads them from its query),
    // never in any argv; as placeholders until the request leaves.
    let mut secrets = Placeholders::default();
    let buildargs: HashMap<String, String> = spec
        .build_args
        .iter()
        .map(|(name, value)| (name.clone(), secrets.add(value)))
        .collect();
    let options = BuildImageOptions {
        t: Some(spec.image.clone()),
        dockerfile,
        rm: true,
        forcerm: true,
        buildargs: (!buildargs.is_empty()).then_some(buildargs),
        labels: (!spec.labels.is_empty()).then(|| {
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ..Default::default()
    };
    tracing::debug!(image = %spec.image, "engine api: build");
    // As a stream: bollard logs a full body's bytes at `trace`, and the
    // context is the user's files (a key file in the pod directory would
    // end up in the log); a stream body it logs as `(stream)`.
    let archive = bytes::Bytes::from(archive);
    let body = bollard::body_stream(futures_util::stream::once(async move { archive }));
    let mut stream = docker.build_image(options, None, Some(body));
    // The request is sent at the first poll: keep the placeholders until
    // the whole build has been read.
    let _secrets = secrets;
    let mut decoder = LineDecoder::new(OutputStream::Stdout, DEFAULT_LINE_CAP);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL);
    let mut id = None;
    while let Some(item) = stream.next().await {
        let mut lines = Vec::new();
        match item {
            Ok(BuildInfo {
                stream,
                status,
                aux,
                ..
            }) => {
                for text in [stream, status].into_iter().flatten() {
                    decoder.push(text.as_bytes(), &mut lines);
                }
                if let Some(image) = aux {
                    id = image.id.or(id);
                }
            }
            Err(e) => {
                decoder.finish(&mut lines);
                let texts = keep(&mut tail, lines);
                if !texts.is_empty() {
                    let _ = tx.send(BuildEvent::Output(texts)).await;
                }
                return Err(match failure(&e) {
                    Failure::Unreachable(m) => Error::DockerUnavailable { message: m },
                    Failure::Status(_, m) | Failure::Other(m) => {
                        let m = match e {
                            bollard::errors::Error::DockerStreamError { error } => error,
                            _ => m,
                        };
                        if tail.len() == TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(m.trim_end().to_string());
                        Error::BuildFailed {
                            image: spec.image.clone(),
                            code: step_code(&m),
                            tail: tail.into(),
                        }
                    }
                });
            }
        }
        let texts = keep(&mut tail, lines);
        if !texts.is_empty() && tx.send(BuildEvent::Output(texts)).await.is_err() {
            // Nobody reads any more; the engine finishes the build anyway.
            return Err(Error::internal("build stream dropped"));
        }
    }
    let mut lines = Vec::new();
    decoder.finish(&mut lines);
    let texts = keep(&mut tail, lines);
    if !texts.is_empty() {
        let _ = tx.send(BuildEvent::Output(texts)).await;
    }
    if id.is_none() {
        id = docker
            .inspect_image(&spec.image)
            .await
            .ok()
            .and_then(|i| i.id);
    }
    Ok(BuiltImage { id })
}

/// The exit code of the step that failed. Docker sends it in the
/// `errorDetail` of the build stream, but bollard keeps only the message,
/// whose text (legacy builder) ends `returned a non-zero code: N`; the
/// docker CLI exits with that same code, so both backends report it.
fn step_code(message: &str) -> Option<i32> {
    let (_, n) = message.rsplit_once("non-zero code: ")?;
    n.trim().parse().ok()
}

/// The texts of `lines`, remembering the last [`TAIL`] of them.
fn keep(tail: &mut VecDeque<String>, lines: Vec<crate::runtime::OutputLine>) -> Vec<String> {
    let texts: Vec<String> = lines.into_iter().map(|l| l.text).collect();
    for t in texts.iter().skip(texts.len().saturating_sub(TAIL)) {
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(t.clone());
    }
    texts
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_failed_steps_code_comes_from_dockers_message() {
        let m = "The command '/bin/false' returned a non-zero code: 1";
        assert_eq!(super::step_code(m), Some(1));
        assert_eq!(
            super::step_code("returned a non-zero code: 127\n"),
            Some(127)
        );
        assert_eq!(super::step_code("pull access denied"), None);
    }
}
