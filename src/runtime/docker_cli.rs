//! STUB: the `docker` binary backend is being written.
use std::path::PathBuf;

/// The Docker CLI backend.
#[derive(Debug, Clone)]
pub struct DockerCli {
    #[allow(dead_code)]
    binary: PathBuf,
}

impl DockerCli {
    /// STUB.
    pub fn new() -> Self {
        todo!()
    }
}
impl crate::runtime::Runtime for DockerCli {
    fn name(&self) -> &str {
        todo!()
    }
    fn preflight(&self) -> futures_util::future::BoxFuture<'static, Result<String, crate::Error>> {
        todo!()
    }
    fn build(
        &self,
        _: crate::runtime::BuildSpec,
    ) -> futures_util::stream::BoxStream<'static, crate::runtime::BuildEvent> {
        todo!()
    }
    fn image_exists(
        &self,
        _: &str,
    ) -> futures_util::future::BoxFuture<'static, Result<bool, crate::Error>> {
        todo!()
    }
    fn run(
        &self,
        _: crate::runtime::RunSpec,
    ) -> futures_util::stream::BoxStream<'static, crate::runtime::ProcessEvent> {
        todo!()
    }
    fn exec(
        &self,
        _: crate::runtime::ExecSpec,
    ) -> futures_util::stream::BoxStream<'static, crate::runtime::ProcessEvent> {
        todo!()
    }
    fn signal(
        &self,
        _: &str,
        _: crate::runtime::StopSignal,
    ) -> futures_util::future::BoxFuture<'static, Result<(), crate::Error>> {
        todo!()
    }
    fn stop(
        &self,
        _: &str,
        _: std::time::Duration,
    ) -> futures_util::future::BoxFuture<'static, Result<(), crate::Error>> {
        todo!()
    }
    fn remove(
        &self,
        _: &str,
    ) -> futures_util::future::BoxFuture<'static, Result<(), crate::Error>> {
        todo!()
    }
    fn list(
        &self,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<Vec<crate::runtime::ContainerInfo>, crate::Error>,
    > {
        todo!()
    }
}
