//! Token verification: choose the key by the token's algorithm family and `kid`, never by
//! anything the token could use to pick a weaker check.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use crate::jwks::JwksCache;
use crate::{AuthConfig, AuthError, Caller, Claims};

/// Kid the local issuer puts in its tokens (informative; HS256 tokens are checked against the
/// one local secret whatever their kid).
pub(crate) const LOCAL_KID: &str = "forge-local-hs256";

/// Verifies bearer tokens. Share one per process (`Arc<Verifier>`): it caches the JWKS.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: u64,
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

impl Verifier {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
            hs256: config.hs256_secret.as_deref().map(DecodingKey::from_secret),
            jwks: config.jwks.clone().map(JwksCache::new),
        }
    }

    /// Times the JWKS was fetched so far (0 without a JWKS).
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks.as_ref().map_or(0, JwksCache::fetches)
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let (alg, kid) = peek_header(token)?;
        let (key, alg) = match alg.family() {
            AlgorithmFamily::Hmac => {
                let Some(key) = &self.hs256 else {
                    return Err(AuthError::UnsupportedAlgorithm(
                        format!("{alg:?}"),
                        "this deployment verifies tokens against its JWKS only".into(),
                    ));
                };
                if alg != Algorithm::HS256 {
                    return Err(AuthError::UnsupportedAlgorithm(
                        format!("{alg:?}"),
                        "local tokens are HS256".into(),
                    ));
                }
                (KeyRef::Local(key), alg)
            }
            family => {
                let Some(jwks) = &self.jwks else {
                    return Err(AuthError::UnsupportedAlgorithm(
                        format!("{alg:?}"),
                        "this deployment has no JWKS; only local HS256 tokens are accepted".into(),
                    ));
                };
                let kid = kid.ok_or(AuthError::MissingKeyId)?;
                let entry = jwks.key(&kid).await?;
                let fits = entry.family == family && entry.alg.is_none_or(|a| a == alg);
                if !fits {
                    return Err(AuthError::AlgorithmMismatch {
                        alg: format!("{alg:?}"),
                        expected: match entry.alg {
                            Some(a) => format!("{a:?}"),
                            None => format!("{:?} family", entry.family),
                        },
                        kid,
                    });
                }
                (KeyRef::Jwks(entry), alg)
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_audience(&[&self.audience]);
        v.set_issuer(&[&self.issuer]);
        v.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        let key = match &key {
            KeyRef::Local(k) => *k,
            KeyRef::Jwks(e) => &e.key,
        };
        // Decode loosely, then type the claims ourselves, so a wrong or missing claim gets a
        // message naming it rather than a serde position.
        let raw =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &v)
                .map_err(|e| self.map_error(e.into_kind()))?
                .claims;
        typed_claims(raw)
    }

    /// Verifies the value of an `Authorization` header and returns the caller (403 without a
    /// tenant).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let token = bearer_token(authorization)?;
        Caller::from_claims(self.verify(token).await?)
    }

    fn map_error(&self, kind: ErrorKind) -> AuthError {
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::InvalidIssuer(self.issuer.clone()),
            ErrorKind::InvalidAudience => AuthError::InvalidAudience(self.audience.clone()),
            ErrorKind::InvalidSignature => AuthError::InvalidSignature,
            ErrorKind::MissingRequiredClaim(c) => {
                AuthError::InvalidClaims(format!("claim `{c}` is required"))
            }
            ErrorKind::InvalidClaimFormat(c) => {
                AuthError::InvalidClaims(format!("claim `{c}` has the wrong type"))
            }
            ErrorKind::Json(e) => AuthError::InvalidClaims(e.to_string()),
            ErrorKind::InvalidAlgorithm => AuthError::UnsupportedAlgorithm(
                "in the header".into(),
                "it does not match the key".into(),
            ),
            ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                AuthError::MalformedToken("it is not three base64url parts".into())
            }
            // Key-shape problems (a JWKS key that cannot verify this token) are, to the
            // caller, a signature that does not verify.
            _ => AuthError::InvalidSignature,
        }
    }
}

fn typed_claims(raw: serde_json::Map<String, serde_json::Value>) -> Result<Claims, AuthError> {
    use serde_json::Value;
    let bad = |c: &str, want: &str| AuthError::InvalidClaims(format!("claim `{c}` must be {want}"));
    match raw.get("tenant_id") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err(bad("tenant_id", "a string")),
    }
    match raw.get("roles") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(bad("roles", "an array of strings")),
    }
    if !raw.get("sub").is_some_and(Value::is_string) {
        return Err(bad("sub", "a string"));
    }
    let mut raw = raw;
    if raw.get("roles").is_some_and(Value::is_null) {
        raw.remove("roles");
    }
    serde_json::from_value(Value::Object(raw)).map_err(|e| AuthError::InvalidClaims(e.to_string()))
}

enum KeyRef<'a> {
    Local(&'a DecodingKey),
    Jwks(std::sync::Arc<crate::jwks::KeyEntry>),
}

/// `Bearer <token>` → token; anything else is a malformed header.
pub(crate) fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::MissingToken)?.trim();
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AuthError::MalformedHeader("expected `Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader(format!(
            "scheme `{scheme}` is not supported; use `Bearer <token>`"
        )));
    }
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::MalformedHeader(
            "the bearer token must be one non-empty word".into(),
        ));
    }
    Ok(token)
}

/// Reads `alg` and `kid` from the unverified header, so `alg: none` and unknown algorithms get
/// a precise refusal instead of a parse error.
fn peek_header(token: &str) -> Result<(Algorithm, Option<String>), AuthError> {
    let malformed = |why: &str| AuthError::MalformedToken(why.to_owned());
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("it must have three dot-separated parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| malformed("its header is not base64url"))?;
    #[derive(serde::Deserialize)]
    struct Header {
        alg: Option<serde_json::Value>,
        kid: Option<String>,
    }
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|_| malformed("its header is not a JSON object"))?;
    let alg = match header.alg {
        Some(serde_json::Value::String(a)) => a,
        _ => return Err(malformed("its header has no `alg`")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::UnsupportedAlgorithm(
            "none".into(),
            "unsigned tokens are never accepted".into(),
        ));
    }
    let parsed = alg.parse::<Algorithm>().map_err(|_| {
        AuthError::UnsupportedAlgorithm(alg.clone(), "it is not a known JWS algorithm".into())
    })?;
    Ok((parsed, header.kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::MissingToken));
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Token x",
            "Bearer a b",
        ] {
            assert!(
                matches!(bearer_token(Some(bad)), Err(AuthError::MalformedHeader(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_peek_refuses_none_and_garbage() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", enc(r#"{"alg":"none"}"#), enc("{}"));
        assert!(matches!(
            peek_header(&none),
            Err(AuthError::UnsupportedAlgorithm(a, _)) if a == "none"
        ));
        let mixed = format!("{}.{}.", enc(r#"{"alg":"nOnE"}"#), enc("{}"));
        assert!(matches!(
            peek_header(&mixed),
            Err(AuthError::UnsupportedAlgorithm(..))
        ));
        assert!(matches!(
            peek_header("a.b"),
            Err(AuthError::MalformedToken(_))
        ));
        assert!(matches!(
            peek_header("!!.b.c"),
            Err(AuthError::MalformedToken(_))
        ));
        let rs = format!("{}.{}.sig", enc(r#"{"alg":"RS256","kid":"k"}"#), enc("{}"));
        assert_eq!(
            peek_header(&rs).unwrap(),
            (Algorithm::RS256, Some("k".into()))
        );
    }
}
