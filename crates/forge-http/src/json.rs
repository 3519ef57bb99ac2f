//! The JSON body extractor of every service: wrong content type, oversized, empty or garbage
//! bodies and bodies of the wrong shape become 4xx errors with a message that says which.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, Kind};

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Kind::PayloadTooLarge,
                    "payload_too_large",
                    "request body is larger than this endpoint accepts",
                )
            } else {
                ApiError::bad_request("unreadable_body", "request body could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let unsupported = |got: &str| {
        ApiError::new(
            Kind::UnsupportedMediaType,
            "unsupported_media_type",
            format!("content-type must be application/json, got `{got}`"),
        )
    };
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::new(
            Kind::UnsupportedMediaType,
            "unsupported_media_type",
            "content-type header is missing; send application/json",
        ));
    };
    let text = value.to_str().map_err(|_| unsupported("<not ascii>"))?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json { Ok(()) } else { Err(unsupported(text)) }
}

/// Parses a JSON body, naming what is wrong: syntax (with line and column), or shape (unknown
/// or missing fields, wrong types). Every body of a Forge API is a JSON object: anything else is
/// refused before it is parsed (serde would take an array for a struct, field by field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "request body is empty; expected a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => ApiError::bad_request(
                        "invalid_request",
                        "request body must be a JSON object",
                    ),
                    Err(e) => ApiError::bad_request(
                        "invalid_json",
                        format!("request body is not valid JSON: {e}"),
                    ),
                },
            );
        }
    }
    let e = match serde_json::from_slice(bytes) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            // `2.0` is the integer 2 in JSON (and JSON Schema), not to serde: a body with a
            // whole number written as a float gets a second chance with it as an integer. Only
            // on this error path, so the error of a body that still does not fit keeps its
            // position.
            if let Ok(mut value) = serde_json::from_slice::<Value>(bytes)
                && whole_floats_as_integers(&mut value)
                && let Ok(parsed) = serde_json::from_value(value)
            {
                return Ok(parsed);
            }
            Err(ApiError::bad_request(
                "invalid_request",
                format!("invalid request: {e}"),
            ))
        }
        Category::Syntax | Category::Eof | Category::Io => Err(ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// 2^53: every whole number up to it (in magnitude) is exactly one float.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// Rewrites every float of `value` that is a whole number up to 2^53 in magnitude as that
/// integer; whether it changed anything.
fn whole_floats_as_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 {
                return false;
            }
            // Only within ±2^53, where every whole number is a float of its own: past it, a float
            // may be an integer literal too large for i64/u64 that serde_json read inexactly
            // (-9223372036854775809 becomes -2^63), which must stay refused.
            if f.abs() > MAX_EXACT_FLOAT {
                return false;
            }
            let whole = if f < 0.0 {
                serde_json::Number::from(f as i64)
            } else {
                serde_json::Number::from(f as u64)
            };
            *n = whole;
            true
        }
        // `|`, not `||`: every element is rewritten.
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| whole_floats_as_integers(v) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| whole_floats_as_integers(v) | changed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            h.insert(CONTENT_TYPE, ok.parse().unwrap());
            assert!(check_content_type(&h).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            h.insert(CONTENT_TYPE, bad.parse().unwrap());
            let e = check_content_type(&h).unwrap_err();
            assert_eq!(e.status(), 415);
            assert!(e.message().contains(bad), "{}", e.message());
        }
    }

    #[test]
    fn body_errors_name_the_problem() {
        let e = parse_json::<serde_json::Value>(b"  ").unwrap_err();
        assert!(e.message().contains("empty"));
        let e = parse_json::<serde_json::Value>(b"{\"track\": ").unwrap_err();
        assert_eq!(e.code(), "invalid_json");
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            track: String,
        }
        for not_an_object in [&b"[\"x\"]"[..], b" \"x\"", b"1", b"null"] {
            let e = parse_json::<T>(not_an_object).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(
                e.message().contains("must be a JSON object"),
                "{}",
                e.message()
            );
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct N {
            n: u64,
            i: i64,
            v: Vec<u8>,
            f: f64,
        }
        let n: N = parse_json(br#"{"n": 233.0, "i": -5.0, "v": [1.0, 2], "f": 1.0}"#).unwrap();
        assert_eq!(
            n,
            N {
                n: 233,
                i: -5,
                v: vec![1, 2],
                f: 1.0
            }
        );
        for bad in [
            &br#"{"n": 2.5, "i": 0, "v": [], "f": 0}"#[..],
            br#"{"n": -1.0, "i": 0, "v": [], "f": 0}"#,
            br#"{"n": 1e30, "i": 0, "v": [], "f": 0}"#,
            br#"{"n": 1, "i": 0, "v": [256.0], "f": 0}"#,
            br#"{"n": 1, "i": -9223372036854775809, "v": [], "f": 0}"#,
            br#"{"n": 18446744073709551616, "i": 0, "v": [], "f": 0}"#,
        ] {
            let e = parse_json::<N>(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(
                e.message().contains("line 1"),
                "keeps the position: {}",
                e.message()
            );
        }
        let e = parse_json::<T>(b"{\"trak\": \"x\"}").unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(
            e.message().contains("unknown field `trak`"),
            "{}",
            e.message()
        );
    }
}
