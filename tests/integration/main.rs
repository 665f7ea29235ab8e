//! nhiwatch's integration tests: one binary, one module per concern.

mod cli;
mod dead_letter;
mod fixtures;
mod schema;
#[path = "../scenarios/mod.rs"]
mod scenarios;
mod support;
