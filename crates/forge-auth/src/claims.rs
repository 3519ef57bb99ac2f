//! The claims Forge reads from a token, and the authenticated caller handlers see.

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// Token claims (registered ones plus Forge's `tenant_id` and `roles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Absent in a token that is valid but not bound to a tenant: refused with 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Who is calling, after verification: what every tenant-scoped handler works with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub sub: String,
    /// The tenant every object lookup of this request is scoped to; only ever from the token.
    pub tenant_id: String,
    pub roles: Vec<String>,
    /// The token's `exp` (Unix seconds): what outlives the request — a terminal session — ends
    /// there too.
    #[serde(skip)]
    pub expires_at: u64,
}

impl Caller {
    /// The caller from verified claims; a token without a tenant is refused (403).
    pub fn from_claims(c: Claims) -> Result<Self, AuthError> {
        match c.tenant_id {
            Some(t) if !t.trim().is_empty() => Ok(Self {
                sub: c.sub,
                tenant_id: t,
                roles: c.roles,
                expires_at: c.exp,
            }),
            _ => Err(AuthError::MissingTenant),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `Err(403 missing_role)` unless the token grants `role`.
    pub fn require_role(&self, role: &str) -> Result<(), AuthError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(AuthError::MissingRole(role.to_owned()))
        }
    }
}
