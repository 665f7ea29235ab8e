//! nhiwatch's integration tests: one binary, one module per concern.

mod abuse;
mod browser;
mod cli;
mod connections;
mod dead_letter;
mod durability;
mod e2e;
mod exactly_once;
mod findings;
mod fixtures;
mod governance;
mod group;
mod http;
mod layout;
mod ocsf;
mod replay;
#[path = "../scenarios/mod.rs"]
mod scenarios;
mod schema;
mod shapes;
mod sinks;
mod support;
