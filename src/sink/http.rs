//! HTTP sinks: Splunk's HTTP Event Collector and signed webhooks.
//!
//! HEC: `POST <url>` with `Authorization: Splunk <token>`, a batch of HEC events (the OCSF
//! finding in the envelope of [`super::hec`]) concatenated in one body, gzip-compressed by
//! default. Webhook: one `POST` per delivery, the OCSF finding as the JSON body, signed:
//! `X-Nhiwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of "<t>.<body>">` with the
//! shared secret (the timestamp in the signed text lets a receiver refuse replays), and
//! `X-Nhiwatch-Delivery: <finding id>:<sequence>` for deduplication. Any answer other than 2xx
//! fails the attempt and is retried; the reason recorded is the status, never the body.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use sha2::Sha256;

use super::SendError;
use super::hec::{self, HecTarget};
use super::outbox::Delivery;
use crate::findings::ocsf;

/// An HTTP client that trusts the system's CAs and, when given, the PEM certificates `ca`.
pub fn client(ca: Option<&[u8]>, timeout: Duration) -> anyhow::Result<Client> {
    let mut b = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("nhiwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

fn failure(url: &str, e: &reqwest::Error) -> String {
    // reqwest's messages carry the URL (no credentials in it) and the cause.
    let mut reason = format!("{url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(&format!(": {s}"));
        source = s.source();
    }
    reason
}

/// `kind = "splunk_hec"`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HecConfig {
    /// The HEC endpoint URL (required).
    #[serde(default)]
    pub url: String,
    /// The environment variable holding the HEC token (required).
    #[serde(default)]
    pub token_env: String,
    /// Index (the token's default when unset).
    #[serde(default)]
    pub index: Option<String>,
    /// Sourcetype.
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// Gzip request bodies (default true).
    #[serde(default)]
    pub gzip: Option<bool>,
    /// PEM file of CA certificates to trust (in addition to the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Host name to report (this machine's by default).
    #[serde(default)]
    pub hostname: Option<String>,
}

impl HecConfig {
    /// Its keys.
    pub const KEYS: &[&str] = &["url", "token_env", "index", "sourcetype", "gzip", "ca_file", "hostname"];

    /// The key that is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        url(&self.url, "splunk_hec")?;
        if self.token_env.is_empty() {
            return Err(("token_env", super::required("splunk_hec")));
        }
        Ok(())
    }
}

/// `kind = "webhook"`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint URL (required).
    #[serde(default)]
    pub url: String,
    /// The environment variable holding the HMAC-SHA-256 signing secret (required).
    #[serde(default)]
    pub secret_env: String,
    /// PEM file of CA certificates to trust (in addition to the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// Its keys.
    pub const KEYS: &[&str] = &["url", "secret_env", "ca_file"];

    /// The key that is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        url(&self.url, "webhook")?;
        if self.secret_env.is_empty() {
            return Err(("secret_env", super::required("webhook")));
        }
        Ok(())
    }
}

/// A sink's `url`: required, `http://` or `https://`.
fn url(url: &str, kind: &str) -> Result<(), (&'static str, String)> {
    if url.is_empty() {
        return Err(("url", super::required(kind)));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(("url", "must be an http:// or https:// URL".into()));
    }
    Ok(())
}

/// The Splunk HEC sink.
pub struct HecSink {
    client: Client,
    url: String,
    auth: HeaderValue,
    target: HecTarget,
    gzip: bool,
}

impl HecSink {
    /// A sink posting to `url` with `token`.
    pub fn new(client: Client, url: String, token: &str, target: HecTarget, gzip: bool) -> HecSink {
        let mut auth = HeaderValue::from_str(&format!("Splunk {token}")).unwrap_or(HeaderValue::from_static(""));
        auth.set_sensitive(true);
        HecSink {
            client,
            url,
            auth,
            target,
            gzip,
        }
    }

    /// Posts `batch` as one request.
    pub async fn send(&mut self, batch: &[&Delivery]) -> Result<(), SendError> {
        let mut body = Vec::new();
        for d in batch {
            let event = hec::encode_delivery(&d.finding, d.activity, d.seq, &self.target);
            body.extend_from_slice(event.to_string().as_bytes());
            body.push(b'\n');
        }
        let mut req = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json");
        if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&body)
                .and_then(|()| gz.finish())
                .map(|b| body = b)
                .map_err(|e| SendError::new(0, format!("gzip: {e}")))?;
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::new(0, failure(&self.url, &e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(SendError::new(0, format!("{}: HTTP {}", self.url, resp.status())))
        }
    }
}

/// The webhook sink.
pub struct WebhookSink {
    client: Client,
    url: String,
    secret: Vec<u8>,
}

/// The signature header value of `body` at unix time `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSink {
    /// A sink posting to `url`, signing with `secret`.
    pub fn new(client: Client, url: String, secret: Vec<u8>) -> WebhookSink {
        WebhookSink { client, url, secret }
    }

    /// Posts each delivery of `batch` in order.
    pub async fn send(&mut self, batch: &[&Delivery]) -> Result<(), SendError> {
        for (i, d) in batch.iter().enumerate() {
            let body = ocsf::encode_delivery(&d.finding, d.activity, Some(d.seq)).to_string();
            let t = chrono::Utc::now().timestamp();
            let resp = self
                .client
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .header("X-Nhiwatch-Signature", signature(&self.secret, t, body.as_bytes()))
                .header("X-Nhiwatch-Delivery", format!("{}:{}", d.finding.id, d.seq))
                .body(body)
                .send()
                .await
                .map_err(|e| SendError::new(i, failure(&self.url, &e)))?;
            if !resp.status().is_success() {
                return Err(SendError::new(i, format!("{}: HTTP {}", self.url, resp.status())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key and data, with the timestamp prefix folded into the data.
        let sig = signature(b"Jefe", 1, b"what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"1.what do ya want for nothing?");
        assert_eq!(sig, format!("t=1,v1={}", hex::encode(mac.finalize().into_bytes())));
        assert_ne!(sig, signature(b"Jefe", 2, b"what do ya want for nothing?"));
        assert_eq!(sig.len(), "t=1,v1=".len() + 64);
    }
}
