//! nhiwatch: watches healthcare-interoperability audit logs and flags non-human identities that
//! behave unlike themselves.
//!
//! # Layout
//!
//! The modules follow the data flow:
//!
//! - [`ingest`]: raw records from Kafka, NDJSON files or stdin, with their coordinates; the dead
//!   letter for what cannot be used.
//! - [`normalize`]: sniffs each record's format and maps it to one [`event::Event`];
//!   pseudonymises patients on the way.
//! - [`pipeline`]: the one path every command uses: ingest → normalize → consumer of events,
//!   with counts per format and per dead-letter reason.
//! - [`engine`]: events in event-time order ([`engine::Reorder`]), repeats of a record dropped
//!   ([`engine::Dedupe`]) → per-identity state ([`baseline`]) → [`detect`]ors → [`findings`],
//!   folded and explained.
//! - [`score`]: precision and recall of findings against generated labels.
//! - [`http`]: the API, live stream, inventory, metrics, OpenAPI and dashboard over the findings
//!   store ([`findings::store`]); [`sink`]: SIEM encodings (CEF, Splunk HEC) beside OCSF.
//! - [`telemetry`]: logging and Prometheus metrics.
//!
//! [`report`] is what the commands print (a finding's line, run and findings summaries);
//! [`terminal`] escapes source strings bound for a terminal or a text log; [`private`] creates
//! the files that hold records, events or findings readable by their owner only.
//!
//! Leaves used by every stage: [`event`] (the normalized event), [`scope`] (SMART scopes),
//! [`registry`] (the inventory of known integrations).
//! Around them: [`config`] (settings, validated at load), [`generate`] (labelled synthetic
//! traffic), [`demo`] (the embedded Kafka broker), [`cli`] (the command line).

pub mod archive;
pub mod attest;
pub mod baseline;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod event;
pub mod findings;
pub mod generate;
pub mod group;
pub mod http;
pub mod ingest;
pub mod inventory;
pub mod kafka;
pub mod normalize;
pub mod pipeline;
pub mod private;
pub mod registry;
pub mod replay;
pub mod report;
pub mod scope;
pub mod score;
pub mod service;
pub mod sink;
pub mod state;
pub mod telemetry;
pub mod terminal;
