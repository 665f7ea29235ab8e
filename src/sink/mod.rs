//! Delivery to SIEMs. This module starts with the wire encodings a finding takes besides OCSF
//! (`crate::findings::ocsf`): CEF for syslog collectors ([`cef`]) and the Splunk HTTP Event
//! Collector envelope ([`hec`]). Sinks and the durable outbox build on them.

pub mod cef;
pub mod hec;
pub mod outbox;
