//! The JSON body extractor of every service: wrong content type, oversized, empty or garbage
//! bodies and bodies of the wrong shape become 4xx errors with a message that says which.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

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
/// or missing fields, wrong types).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                ApiError::bad_request("invalid_request", format!("invalid request: {e}"))
            }
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            ),
        }
    })
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
        let e = parse_json::<T>(b"{\"trak\": \"x\"}").unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(
            e.message().contains("unknown field `trak`"),
            "{}",
            e.message()
        );
    }
}
