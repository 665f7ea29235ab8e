//! Bearer tokens with `read` and `admin` roles. Tokens are configured by the SHA-256 of their
//! secret (or given whole through the environment); a presented token is hashed and compared in
//! constant time with every configured hash. Tokens are never logged.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use super::HttpConfig;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read findings, identities, metrics.
    Read,
    /// Also change finding status.
    Admin,
}

impl Role {
    /// As configured (`read`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

struct Token {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The configured tokens.
pub struct Auth {
    tokens: Vec<Token>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("tokens", &self.tokens.len()).finish()
    }
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Auth {
    /// Tokens from `[http] tokens` plus `read` and `admin` tokens given whole (from
    /// `NHIWATCH_READ_TOKEN` / `NHIWATCH_ADMIN_TOKEN`, or made by `demo`).
    pub fn new(cfg: &HttpConfig, read: Option<&str>, admin: Option<&str>) -> Auth {
        let mut tokens: Vec<Token> = cfg
            .tokens
            .iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).ok()?;
                Some(Token {
                    name: t.name.clone(),
                    role: t.role,
                    hash,
                })
            })
            .collect();
        for (secret, role, name) in [(read, Role::Read, "env-read"), (admin, Role::Admin, "env-admin")] {
            if let Some(secret) = secret.filter(|s| !s.is_empty()) {
                tokens.push(Token {
                    name: name.to_owned(),
                    role,
                    hash: sha256(secret),
                });
            }
        }
        Auth { tokens }
    }

    /// The principal behind the request's bearer token, if it may act with `need`.
    pub fn check(&self, headers: &HeaderMap, need: Role) -> Result<Principal, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let hash = sha256(presented);
        // Compare with every token, without stopping at a match.
        let mut found: Option<&Token> = None;
        for token in &self.tokens {
            if bool::from(token.hash.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        let token = found.ok_or_else(ApiError::unauthorized)?;
        if token.role < need {
            return Err(ApiError::forbidden(need.as_str()));
        }
        Ok(Principal {
            name: token.name.clone(),
            role: token.role,
        })
    }
}
