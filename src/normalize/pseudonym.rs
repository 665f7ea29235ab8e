//! Keyed pseudonymisation of patient references, before they leave the normalizer.
//!
//! A patient reference is reduced to its canonical `Patient/<id>` form (base URL and
//! `_history` dropped, bare ids prefixed) and replaced by HMAC-SHA-256 under a secret key,
//! truncated to 128 bits and hex-encoded. The same patient seen by two sources gets the same
//! pseudonym, so distinct-patient counts stay right; without the key it cannot be reversed or
//! confirmed by guessing.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `[pseudonymisation]`
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymConfig {
    /// The HMAC key; empty when unset.
    pub key: String,
}

impl std::fmt::Debug for PseudonymConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.key.is_empty() { "<unset>" } else { "<redacted>" };
        f.debug_struct("PseudonymConfig").field("key", &state).finish()
    }
}

/// Turns patient references into pseudonyms. The key never appears in `Debug` output.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer { key: <redacted> }")
    }
}

/// The key was too short to be a secret.
#[derive(Debug, thiserror::Error)]
#[error("the pseudonymisation key must be at least {min} bytes (got {len})")]
pub struct WeakKey {
    /// Length given.
    pub len: usize,
    /// Minimum accepted.
    pub min: usize,
}

impl Pseudonymizer {
    /// Minimum key length in bytes.
    pub const MIN_KEY_BYTES: usize = 16;

    /// A pseudonymizer under `key`.
    pub fn new(key: &[u8]) -> Result<Pseudonymizer, WeakKey> {
        if key.len() < Self::MIN_KEY_BYTES {
            return Err(WeakKey {
                len: key.len(),
                min: Self::MIN_KEY_BYTES,
            });
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| WeakKey {
            len: key.len(),
            min: Self::MIN_KEY_BYTES,
        })?;
        Ok(Pseudonymizer { mac })
    }

    /// A pseudonymizer under a fresh random key (for demos; pseudonyms differ between runs).
    pub fn random() -> Pseudonymizer {
        use rand::TryRngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut key)
            .expect("the operating system provides randomness");
        Pseudonymizer::new(&key).expect("32 bytes is long enough")
    }

    /// The pseudonym of a patient reference (`Patient/123`, a full URL, or a bare id).
    pub fn patient(&self, reference: &str) -> String {
        let id = canonical_patient_id(reference);
        let mut mac = self.mac.clone();
        mac.update(b"Patient/");
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        hex::encode(&digest[..16])
    }
}

/// The logical id of a patient reference.
fn canonical_patient_id(reference: &str) -> &str {
    let reference = reference.trim();
    let tail = match reference.rfind("Patient/") {
        Some(i) => &reference[i + "Patient/".len()..],
        None => reference,
    };
    tail.split(['/', '?', '#']).next().unwrap_or(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Pseudonymizer {
        Pseudonymizer::new(b"unit-test-key-not-a-secret").expect("long enough")
    }

    #[test]
    fn same_patient_same_pseudonym_across_reference_forms() {
        let a = p().patient("Patient/ex-patient");
        assert_eq!(a.len(), 32);
        assert_eq!(a, p().patient("https://fhir.example.org/r4/Patient/ex-patient"));
        assert_eq!(a, p().patient("Patient/ex-patient/_history/3"));
        assert_eq!(a, p().patient("ex-patient"));
        assert_ne!(a, p().patient("Patient/other"));
        assert!(!a.contains("ex-patient"));
    }

    #[test]
    fn key_matters_and_is_not_printed() {
        let other = Pseudonymizer::new(b"another-key-for-the-test").expect("long enough");
        assert_ne!(p().patient("Patient/1"), other.patient("Patient/1"));
        assert!(!format!("{:?}", p()).contains("unit-test"));
        assert!(Pseudonymizer::new(b"short").is_err());
    }
}
