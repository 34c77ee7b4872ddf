//! STUB: the scriptable in-memory runtime is being written.

/// In-memory runtime with scripted failures.
#[derive(Debug, Clone, Default)]
pub struct FaultRuntime {}
/// A build script.
#[derive(Debug, Clone)]
pub enum BuildScript {}
/// A run script.
#[derive(Debug, Clone, Default)]
pub struct RunScript {}
/// A run step.
#[derive(Debug, Clone)]
pub enum Step {}
