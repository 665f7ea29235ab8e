//! nhiwatch's integration tests: one binary, one module per concern.

mod fixtures;
mod support;
