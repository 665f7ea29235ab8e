//! nhiwatch: watches healthcare-interoperability audit logs and flags non-human identities that
//! behave unlike themselves.
//!
//! # Layout
//!
//! The modules follow the data flow, which [`runtime`] assembles for every command:
//!
//! - [`ingest`]: raw records from NDJSON files or stdin with their coordinates; the dead letter
//!   for what cannot be used. [`kafka`]: everything Kafka — client configuration, the consumer
//!   (a pure source: records out, acknowledgements in; partitions read in step in event time),
//!   producers, topic creation, the embedded broker.
//! - [`normalize`]: sniffs each record's format and maps it to one [`event::Event`];
//!   pseudonymises patients on the way.
//! - [`runtime`]: the one topology — source → normalize → judge → outputs; the after-the-engine
//!   path (archive, findings store, metrics, announcement, NDJSON) exists once, in
//!   [`runtime::Outputs`].
//! - [`engine`]: events in event-time order ([`engine::Reorder`]), repeats of a record dropped
//!   ([`engine::Dedupe`]) → per-identity state ([`baseline`]) → [`detect`]ors → [`findings`],
//!   folded and explained; [`engine::state`] writes the detection into [`engine::checkpoint`]
//!   files. [`group`] splits it across a consumer group (rekey and detect roles, the changelog).
//! - [`archive`]: events and findings as Parquet; [`replay`]: SQL over it and detection again;
//!   [`attest`]: the access attestation a compliance officer signs; [`inventory`]: the registry
//!   against what was seen.
//! - [`http`]: the API, live stream, inventory, metrics, OpenAPI and dashboard over the findings
//!   store ([`findings::store`]); [`sink`]: SIEM delivery through the outbox (Kafka, Splunk HEC,
//!   syslog CEF, webhook), each sink's settings in its own file.
//! - [`telemetry`]: logging and Prometheus metrics (a leaf: components register into it).
//!
//! [`report`] is what the commands print (a finding's line, run and findings summaries);
//! [`terminal`] escapes source strings bound for a terminal or a text log; [`private`] creates
//! the files that hold records, events or findings readable by their owner only; [`score`]
//! measures precision and recall of findings against generated labels.
//!
//! Leaves used by every stage: [`event`] (the normalized event), [`scope`] (SMART scopes),
//! [`registry`] (the inventory of known integrations).
//! Around them: [`config`] (settings, validated at load), [`generate`] (labelled synthetic
//! traffic), [`demo`] (the demo on the embedded broker), [`bench`] (the benchmark), [`cli`]
//! (the command line, one file per command).
//!
//! No two modules import each other, directly or through others (a test keeps it so).

pub mod archive;
pub mod attest;
pub mod baseline;
pub mod bench;
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
pub mod private;
pub mod registry;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod scope;
pub mod score;
pub mod sink;
pub mod telemetry;
pub mod terminal;
