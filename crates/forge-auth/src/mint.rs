//! Issuing local HS256 tokens (`forge token mint`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::claims::Audience;
use crate::verifier::LOCAL_KID;
use crate::{AuthSetupError, Claims, load_or_create_hs256_secret};

/// Signs tokens with the local HS256 secret.
pub struct LocalIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl LocalIssuer {
    /// Uses (creating it if needed) the data dir's secret.
    pub fn load_or_create(
        data_dir: &Path,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, AuthSetupError> {
        let secret = load_or_create_hs256_secret(data_dir)?;
        Ok(Self::from_secret(&secret, issuer, audience))
    }

    pub fn from_secret(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// A token for `sub` in `tenant` with `roles`, valid from now for `ttl`.
    pub fn mint(
        &self,
        tenant: &str,
        roles: &[String],
        sub: &str,
        ttl: Duration,
    ) -> Result<String, AuthSetupError> {
        let now = unix_now()?;
        self.mint_until(tenant, roles, sub, now.saturating_add(ttl.as_secs()))
    }

    /// A token for `sub` in `tenant` with `roles` that expires at `exp` (Unix seconds); one
    /// whose `exp` has passed is refused as expired (tests of expiry need one).
    pub fn mint_until(
        &self,
        tenant: &str,
        roles: &[String],
        sub: &str,
        exp: u64,
    ) -> Result<String, AuthSetupError> {
        if tenant.trim().is_empty() {
            return Err(AuthSetupError::Config("tenant must not be empty".into()));
        }
        if sub.trim().is_empty() {
            return Err(AuthSetupError::Config("sub must not be empty".into()));
        }
        let now = unix_now()?.min(exp);
        let claims = Claims {
            sub: sub.to_owned(),
            tenant_id: Some(tenant.to_owned()),
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            exp,
            nbf: Some(now),
            iat: Some(now),
            jti: Some(format!("{:032x}", rand::random::<u128>())),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(LOCAL_KID.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| AuthSetupError::Sign(e.to_string()))
    }
}

/// Parses a token lifetime: a whole number followed by `s`, `m`, `h` or `d` (`30m`, `1h`, `7d`).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("ttl `{text}` needs a unit: s, m, h or d (e.g. 30m, 1h, 7d)"))?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("ttl `{text}` must start with a whole number"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        other => {
            return Err(format!(
                "ttl unit `{other}` is unknown; use s, m, h or d (e.g. 30m, 1h, 7d)"
            ));
        }
    };
    if secs == 0 {
        return Err("ttl must be longer than zero".into());
    }
    Ok(Duration::from_secs(secs))
}

fn unix_now() -> Result<u64, AuthSetupError> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| AuthSetupError::Sign(e.to_string()))?
        .as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "h", "10", "1w", "0m", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
