//! The [`Runtime`] implementation of [`FaultRuntime`]: what `build`, `run`,
//! `exec`, the signals and `list` do to the engine state in `fault.rs`.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{self, BoxStream, StreamExt};

use super::process::{Kind, Process, Shared, BATCH_LINES};
use super::script::{BuildOutcome, OnStart};
use super::{failed, unavailable, ExecProcess, FaultRuntime, Live, PackedLabels, BUILD_TAIL};
use crate::error::Error;
use crate::runtime::escalation;
use crate::runtime::{
    labels, BuildEvent, BuildSpec, BuiltImage, ContainerInfo, ExecSpec, ProcessEvent, RunSpec,
    Runtime, Stdin, StopSignal,
};

impl Runtime for FaultRuntime {
    fn name(&self) -> &str {
        "fault"
    }

    fn preflight(&self) -> BoxFuture<'static, Result<String, Error>> {
        let result = if self.inner.lock().unavailable {
            Err(unavailable())
        } else {
            Ok(concat!("fault ", env!("CARGO_PKG_VERSION")).to_string())
        };
        futures_util::future::ready(result).boxed()
    }

    fn build(&self, spec: BuildSpec) -> BoxStream<'static, BuildEvent> {
        let mut reg = self.inner.lock();
        if reg.unavailable {
            return stream::iter([BuildEvent::Finished(Err(unavailable()))]).boxed();
        }
        let n = {
            let count = reg.build_counts.entry(spec.image.clone()).or_default();
            *count += 1;
            *count
        };
        let script = reg
            .builds
            .get(&spec.image)
            .or_else(|| reg.builds.get(&spec.pod))
            .cloned()
            .unwrap_or_default();
        drop(reg);
        let batches: Vec<BuildEvent> = script
            .lines
            .chunks(BATCH_LINES)
            .map(|c| BuildEvent::Output(c.to_vec()))
            .collect();
        let inner = Arc::clone(&self.inner);
        let finish = async move {
            if let Some(delay) = script.delay {
                tokio::time::sleep(delay).await;
            }
            let image = spec.image;
            match &script.outcome {
                BuildOutcome::Succeed => {
                    let id = format!("sha256:fault-{image}-{n}");
                    let mut reg = inner.lock();
                    reg.images.insert(image.clone());
                    reg.images.insert(id.clone());
                    reg.tags.insert(image, id.clone());
                    BuildEvent::Finished(Ok(BuiltImage { id: Some(id) }))
                }
                BuildOutcome::Fail(code) => {
                    let tail =
                        script.lines[script.lines.len().saturating_sub(BUILD_TAIL)..].to_vec();
                    BuildEvent::Finished(Err(Error::BuildFailed {
                        image,
                        code: Some(*code),
                        tail,
                    }))
                }
                BuildOutcome::Hang => futures_util::future::pending().await,
                BuildOutcome::Panic(message) => panic!("{message}"),
            }
        };
        stream::iter(batches).chain(stream::once(finish)).boxed()
    }

    fn image_exists(&self, image: &str) -> BoxFuture<'static, Result<bool, Error>> {
        let held = self
            .inner
            .lock()
            .checks_held
            .as_ref()
            .map(|h| h.subscribe());
        let inner = self.inner.clone();
        let image = image.to_owned();
        async move {
            if let Some(mut held) = held {
                let _ = held.wait_for(|h| !h).await;
            }
            let reg = inner.lock();
            if reg.unavailable {
                Err(unavailable())
            } else {
                Ok(reg.images.contains(&image))
            }
        }
        .boxed()
    }

    fn image_id(&self, image: &str) -> BoxFuture<'static, Result<Option<String>, Error>> {
        let reg = self.inner.lock();
        let result = if reg.unavailable {
            Err(unavailable())
        } else if reg.images.contains(image) {
            Ok(Some(
                reg.tags
                    .get(image)
                    .cloned()
                    .unwrap_or_else(|| image.to_string()),
            ))
        } else {
            Ok(None)
        };
        futures_util::future::ready(result).boxed()
    }

    fn remove_unused_image(&self, id: &str) -> BoxFuture<'static, Result<bool, Error>> {
        let mut reg = self.inner.lock();
        let result = if reg.unavailable {
            Err(unavailable())
        } else if reg.live.values().any(|l| &*l.image == id) {
            Ok(false)
        } else {
            Ok(reg.images.remove(id))
        };
        futures_util::future::ready(result).boxed()
    }

    fn run(&self, spec: RunSpec) -> BoxStream<'static, ProcessEvent> {
        let mut reg = self.inner.lock();
        *reg.run_counts.entry(spec.pod.clone()).or_default() += 1;
        if reg.record_specs {
            reg.runs.push(spec.clone());
        }
        if let (true, Some(stdin)) = (reg.record_specs, &spec.stdin) {
            reg.stdins.push((spec.container.clone(), stdin.clone()));
        }
        if reg.unavailable {
            return failed(unavailable());
        }
        let script = match reg
            .next_runs
            .get_mut(&spec.pod)
            .and_then(VecDeque::pop_front)
        {
            Some(script) => Arc::new(script),
            None => reg
                .pods
                .get(&spec.pod)
                .cloned()
                .unwrap_or_else(|| self.inner.empty.clone()),
        };
        match &script.on_start {
            None => {}
            Some(OnStart::Panic(message)) => {
                drop(reg);
                panic!("{message}");
            }
            Some(OnStart::NotRunnable(code)) => {
                return failed(not_runnable(*code, spec.image, &spec.command))
            }
            Some(OnStart::DockerFails(message)) => {
                return failed(Error::DockerFailed {
                    message: message.clone(),
                })
            }
        }
        if reg.live.contains_key(spec.container.as_str()) {
            return failed(Error::DockerFailed {
                message: format!(
                    "Conflict. The container name \"/{}\" is already in use (fault runtime)",
                    spec.container
                ),
            });
        }
        let name: Arc<str> = Arc::from(spec.container);
        // Without a creation delay the process has started at the call.
        let shared = Arc::new(match reg.creation_delay {
            Some(_) => Shared::new(),
            None => Shared::started(),
        });
        let input_open = spec.stdin.as_ref().is_some_and(|s| s.keeps_open());
        if let Some(stdin) = &spec.stdin {
            shared.write_input(stdin.bytes(), input_open);
        }
        reg.live.insert(
            name.clone(),
            Live {
                shared: shared.clone(),
                pod: spec.pod.into_boxed_str(),
                image: spec.image.into_boxed_str(),
                labels: PackedLabels::new(spec.labels),
                ignore_sigterm: script.ignore_sigterm,
                stop_fails: script.stop_fails,
                input_open,
                execs: Vec::new(),
            },
        );
        reg.max_running = reg.max_running.max(reg.live.len());
        let delay = reg.creation_delay;
        drop(reg);
        Process::new(
            self.inner.clone(),
            name,
            script,
            shared,
            Kind::Main,
            spec.line_cap,
        )
        .created_for(delay)
        .boxed()
    }

    fn exec(&self, spec: ExecSpec) -> BoxStream<'static, ProcessEvent> {
        let mut reg = self.inner.lock();
        if reg.record_specs {
            reg.execs.push(spec.clone());
        }
        if let (true, Some(stdin)) = (reg.record_specs, &spec.stdin) {
            reg.stdins.push((spec.container.clone(), stdin.clone()));
        }
        if reg.unavailable {
            return failed(unavailable());
        }
        let Some(live) = reg.live.get(spec.container.as_str()) else {
            return failed(Error::SessionNotFound {
                target: spec.container,
            });
        };
        let script = reg
            .exec_scripts
            .get(&*live.pod)
            .cloned()
            .unwrap_or_else(|| self.inner.empty.clone());
        match &script.on_start {
            None => {}
            Some(OnStart::Panic(message)) => {
                drop(reg);
                panic!("{message}");
            }
            Some(OnStart::NotRunnable(code)) => {
                return failed(not_runnable(*code, live.image.to_string(), &spec.command))
            }
            Some(OnStart::DockerFails(message)) => {
                return failed(Error::DockerFailed {
                    message: message.clone(),
                })
            }
        }
        let shared = Arc::new(Shared::started());
        if let Some(stdin) = &spec.stdin {
            // An exec's stdin is always closed after its bytes.
            shared.write_input(stdin.bytes(), false);
        }
        if let Some(live) = reg.live.get_mut(spec.container.as_str()) {
            live.execs.push(ExecProcess {
                command: spec.command.clone().into_boxed_slice(),
                ignore_sigterm: script.ignore_sigterm,
                shared: shared.clone(),
            });
        }
        drop(reg);
        let name: Arc<str> = Arc::from(spec.container);
        Process::new(
            self.inner.clone(),
            name,
            script,
            shared,
            Kind::Exec,
            spec.line_cap,
        )
        .boxed()
    }

    fn signal(&self, container: &str, signal: StopSignal) -> BoxFuture<'static, Result<(), Error>> {
        let inner = self.inner.clone();
        let name = container.to_owned();
        async move { inner.deliver(&name, signal, None).map(drop) }.boxed()
    }

    fn signal_exec(
        &self,
        spec: &ExecSpec,
        signal: StopSignal,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let result = self
            .inner
            .deliver_exec(&spec.container, &spec.command, signal);
        async move { result }.boxed()
    }

    fn stop(&self, container: &str, grace: Duration) -> BoxFuture<'static, Result<(), Error>> {
        // The instance running now: the signals go to it, not to a
        // successor of the same name, and its end ends the stop.
        let shared = {
            let reg = self.inner.lock();
            if reg.unavailable {
                return async { Err(unavailable()) }.boxed();
            }
            match reg.live.get(container) {
                Some(live) => live.shared.clone(),
                None => return async { Ok(()) }.boxed(),
            }
        };
        let inner = self.inner.clone();
        let name = container.to_owned();
        async move {
            let signal = |sig| {
                let result = inner.deliver(&name, sig, Some(&shared)).map(drop);
                async move { result }
            };
            let stopped = async {
                let mut ended = pin!(shared.ended.notified());
                ended.as_mut().enable();
                if shared.code().is_none() {
                    ended.await;
                }
                Ok(())
            };
            escalation::stop(&name, grace, signal, stopped).await
        }
        .boxed()
    }

    fn remove(&self, container: &str) -> BoxFuture<'static, Result<(), Error>> {
        let inner = self.inner.clone();
        let name = container.to_owned();
        async move { inner.deliver(&name, StopSignal::Kill, None).map(drop) }.boxed()
    }

    fn list(&self) -> BoxFuture<'static, Result<Vec<ContainerInfo>, Error>> {
        let reg = self.inner.lock();
        let result = if reg.unavailable {
            Err(unavailable())
        } else {
            let mut infos: Vec<ContainerInfo> = reg
                .live
                .iter()
                .filter(|(_, live)| live.labels.iter().any(|(k, _)| k == labels::SESSION))
                .map(|(name, live)| ContainerInfo {
                    name: name.to_string(),
                    // Listed while they live only: an exit removes them.
                    exit_code: None,
                    state: if live.shared.has_started() {
                        "running"
                    } else {
                        "created"
                    }
                    .to_string(),
                    labels: live
                        .labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                })
                .collect();
            infos.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            Ok(infos)
        };
        futures_util::future::ready(result).boxed()
    }

    fn write_input(&self, container: &str, bytes: Stdin) -> BoxFuture<'static, Result<(), Error>> {
        let mut reg = self.inner.lock();
        let result = if reg.unavailable {
            Err(unavailable())
        } else {
            match reg.live.get(container) {
                Some(live) if live.shared.has_started() && live.shared.code().is_none() => {
                    if live.input_open {
                        live.shared.write_input(bytes.bytes(), true);
                        Ok(())
                    } else {
                        Err(Error::InputUnavailable {
                            target: container.to_string(),
                            message: "its agent's stdin is closed (the run was not started with an open stdin)".into(),
                        })
                    }
                }
                _ => Err(Error::SessionNotFound {
                    target: container.to_string(),
                }),
            }
        };
        if result.is_ok() {
            reg.stdins.push((container.to_string(), bytes));
        }
        futures_util::future::ready(result).boxed()
    }
}

/// Docker's answer to an agent command that cannot run.
fn not_runnable(code: i32, image: String, command: &[String]) -> Error {
    let program = command.first().cloned().unwrap_or_default();
    let message = if code == 127 {
        format!("exec: \"{program}\": executable file not found in $PATH")
    } else {
        format!("exec: \"{program}\": permission denied")
    };
    Error::AgentNotRunnable {
        image,
        command: program,
        code,
        message,
    }
}
