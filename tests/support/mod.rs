//! Shared support for integration tests. Each test file that needs it says
//! `mod support;`; not every file uses every item.
#![allow(dead_code)]

pub mod claude;
pub mod docker;
pub mod engine;
pub mod fault;
pub mod git;
