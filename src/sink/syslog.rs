//! Syslog delivery: RFC 5424 messages whose MSG is the finding's CEF line, over TCP with
//! octet-counting framing (RFC 6587), TLS (RFC 5425, the same framing) or UDP (RFC 5426, one
//! datagram per message).
//!
//! TCP gives no application acknowledgement: what sat in the socket buffers when a collector
//! died is lost with it. The sink notices a closed connection before each batch and reconnects,
//! which narrows the window, but a SOC that needs every finding in the SIEM should prefer the
//! Kafka or HEC sinks, which confirm each delivery.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_native_tls::TlsStream;

use super::SendError;
use super::outbox::Delivery;
use crate::findings::Severity;

/// The facility code of a facility name.
pub fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
        "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// Syslog severity of a finding severity: critical → 2 (crit), high → 3 (err), medium → 4
/// (warning), low → 5 (notice), info → 6 (informational).
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// The RFC 5424 message of a delivery: `<PRI>1 TIMESTAMP HOST nhiwatch PROCID MSGID - CEF…`,
/// MSGID being the detector id.
pub fn message(d: &Delivery, facility: u8, hostname: &str) -> String {
    let f = &d.finding;
    format!(
        "<{}>1 {} {} nhiwatch {} {} - {}",
        u16::from(facility) * 8 + u16::from(severity(f.severity)),
        d.queued_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        header_field(hostname, 255),
        std::process::id(),
        f.detector.as_str(),
        super::cef::encode(f, d.activity)
    )
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if v.is_empty() { "-".into() } else { v }
}

/// Octet-counting frame: `LEN SP MSG`.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

/// The octet-counted frames of a batch, back to back.
fn frames(batch: &[&Delivery], facility: u8, hostname: &str) -> Vec<u8> {
    batch
        .iter()
        .flat_map(|d| frame(&message(d, facility, hostname)))
        .collect()
}

/// `kind = "syslog"`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// The collector's `host:port` (required).
    #[serde(default)]
    pub address: String,
    /// `tcp` (RFC 6587 octet counting, the default), `tls` (RFC 5425) or `udp` (RFC 5426).
    #[serde(default)]
    pub transport: Transport,
    /// Facility name (`auth` by default; `authpriv`, `local0`… `local7`).
    #[serde(default)]
    pub facility: Option<String>,
    /// PEM file of CA certificates to trust over TLS (in addition to the system's).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Host name to report (this machine's by default).
    #[serde(default)]
    pub hostname: Option<String>,
}

impl SyslogConfig {
    /// Its keys.
    pub const KEYS: &[&str] = &["address", "transport", "facility", "ca_file", "hostname"];

    /// The key that is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.address.is_empty() {
            return Err(("address", super::required("syslog")));
        }
        if self
            .address
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(("address", "must be host:port".into()));
        }
        if let Some(f) = &self.facility
            && facility(f).is_none()
        {
            return Err((
                "facility",
                "must be a syslog facility name: kern, user, … auth, authpriv, local0 … local7".into(),
            ));
        }
        Ok(())
    }
}

/// Transport of the syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP, octet counting.
    #[default]
    Tcp,
    /// TLS, octet counting.
    Tls,
    /// UDP.
    Udp,
}

impl<'de> serde::Deserialize<'de> for Transport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match <String as serde::Deserialize>::deserialize(d)?.as_str() {
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            "udp" => Ok(Transport::Udp),
            _ => Err(serde::de::Error::custom("must be \"tcp\", \"tls\" or \"udp\"")),
        }
    }
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

/// A syslog sink's connection, opened on first use and after a failure.
pub struct SyslogSink {
    address: String,
    transport: Transport,
    tls: Option<tokio_native_tls::TlsConnector>,
    facility: u8,
    hostname: String,
    timeout: Duration,
    conn: Option<Conn>,
}

impl SyslogSink {
    /// A sink for `address`; `tls` is required for [`Transport::Tls`].
    pub fn new(
        address: String,
        transport: Transport,
        tls: Option<tokio_native_tls::TlsConnector>,
        facility: u8,
        hostname: String,
        timeout: Duration,
    ) -> SyslogSink {
        SyslogSink {
            address,
            transport,
            tls,
            facility,
            hostname,
            timeout,
            conn: None,
        }
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        Ok(match self.transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(if self.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await?;
                socket.connect(&self.address).await?;
                Conn::Udp(socket)
            }
            Transport::Tcp => Conn::Tcp(TcpStream::connect(&self.address).await?),
            Transport::Tls => {
                let tcp = TcpStream::connect(&self.address).await?;
                let host = self.address.rsplit_once(':').map_or("", |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let connector = self
                    .tls
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("no TLS connector"))?;
                Conn::Tls(Box::new(
                    connector.connect(host, tcp).await.map_err(std::io::Error::other)?,
                ))
            }
        })
    }

    /// Sends `batch` in order.
    pub async fn send(&mut self, batch: &[&Delivery]) -> Result<(), SendError> {
        // A collector that closed the connection shows as a readable EOF: reconnect rather than
        // write into a dead socket.
        if let Some(Conn::Tcp(stream)) = &self.conn {
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::ZERO, stream.peek(&mut probe)).await {
                self.conn = None;
            }
        }
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, self.send_inner(batch)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(SendError::new(0, format!("syslog {}: {e}", self.address)))
            }
            Err(_) => {
                self.conn = None;
                Err(SendError::new(0, format!("syslog {}: timed out", self.address)))
            }
        }
    }

    async fn send_inner(&mut self, batch: &[&Delivery]) -> std::io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let (facility, hostname) = (self.facility, self.hostname.clone());
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| std::io::Error::other("not connected"))?;
        match conn {
            Conn::Udp(socket) => {
                for d in batch {
                    socket.send(message(d, facility, &hostname).as_bytes()).await?;
                }
            }
            Conn::Tcp(stream) => {
                stream.write_all(&frames(batch, facility, &hostname)).await?;
                stream.flush().await?;
            }
            Conn::Tls(stream) => {
                stream.write_all(&frames(batch, facility, &hostname)).await?;
                stream.flush().await?;
                // Surface an alert the server sent (e.g. it closed the session).
                let mut probe = [0u8; 1];
                if let Ok(Ok(0)) = tokio::time::timeout(Duration::ZERO, stream.read(&mut probe)).await {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the collector closed the TLS session",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::ocsf::Activity;
    use crate::findings::test_finding;

    #[test]
    fn rfc5424_message_with_cef_and_octet_counting() {
        let d = Delivery {
            seq: 7,
            queued_at: chrono::DateTime::from_timestamp_millis(1_767_571_200_123).expect("valid"),
            activity: Activity::Create,
            finding: test_finding("abc"),
        };
        let m = message(&d, facility("auth").expect("auth"), "host one");
        let prefix = format!(
            "<35>1 2026-01-05T00:00:00.123Z hostone nhiwatch {} break_glass - CEF:0|",
            std::process::id()
        );
        assert!(m.starts_with(&prefix), "{m}");
        assert_eq!(facility("local7"), Some(23));
        assert_eq!(facility("nope"), None);
        let f = frame("héllo");
        assert_eq!(f, b"6 h\xc3\xa9llo");
    }
}
