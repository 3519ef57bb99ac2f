//! The pages' scripts and styles, compiled into the binary from `assets/`, served at
//! `/assets/{hash}/{file}` where `hash` is the first 16 hex digits of the file's SHA-256.
//!
//! A hashed URL never changes meaning, so browsers may keep it a year without asking again
//! (`immutable`); a new build with a changed file has a new URL, which the pages (rendered with
//! [`render`]) name. A request for a file under any other hash is a 404, so a stale page never
//! gets new code under an old name, nor an old one cached under a new one.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};
use forge_http::ApiError;
use sha2::{Digest, Sha256};

/// One served file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the pages load: the vendored terminal (assets/vendor, see its README) and ours.
const ASSETS: &[Asset] = &[
    Asset {
        name: "xterm.js",
        content_type: JS,
        body: include_bytes!("../../assets/vendor/xterm/xterm.js"),
    },
    Asset {
        name: "addon-fit.js",
        content_type: JS,
        body: include_bytes!("../../assets/vendor/xterm/addon-fit.js"),
    },
    Asset {
        name: "xterm.css",
        content_type: CSS,
        body: include_bytes!("../../assets/vendor/xterm/xterm.css"),
    },
    Asset {
        name: "forge.css",
        content_type: CSS,
        body: include_bytes!("../../assets/css/forge.css"),
    },
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_bytes!("../../assets/js/common.js"),
    },
    Asset {
        name: "console.js",
        content_type: JS,
        body: include_bytes!("../../assets/js/console.js"),
    },
    Asset {
        name: "learner.js",
        content_type: JS,
        body: include_bytes!("../../assets/js/learner.js"),
    },
    Asset {
        name: "instructor.js",
        content_type: JS,
        body: include_bytes!("../../assets/js/instructor.js"),
    },
    Asset {
        name: "operator.js",
        content_type: JS,
        body: include_bytes!("../../assets/js/operator.js"),
    },
];

/// File name → (content hash, asset).
fn index() -> &'static HashMap<&'static str, (String, &'static Asset)> {
    static INDEX: OnceLock<HashMap<&'static str, (String, &'static Asset)>> = OnceLock::new();
    INDEX.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = hex::encode(Sha256::digest(a.body));
                (a.name, (digest[..16].to_owned(), a))
            })
            .collect()
    })
}

/// The URL of asset `name`; panics on a name that is not an asset (a page's typo, caught by
/// the tests that render every page).
pub fn url(name: &str) -> String {
    let (hash, _) = index()
        .get(name)
        .unwrap_or_else(|| panic!("`{name}` is not a bundled asset"));
    format!("/assets/{hash}/{name}")
}

/// `page` with every `{{asset:NAME}}` replaced by that asset's URL.
pub fn render(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut rest = page;
    while let Some(start) = rest.find("{{asset:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{asset:".len()..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&url(&after[..end]));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `GET /assets/{hash}/{file}`.
pub(super) async fn serve(Path((hash, file)): Path<(String, String)>) -> Response {
    match index().get(file.as_str()) {
        Some((h, asset)) if *h == hash => (
            [
                (CONTENT_TYPE, asset.content_type.to_owned()),
                (
                    CACHE_CONTROL,
                    "public, max-age=31536000, immutable".to_owned(),
                ),
                (ETAG, format!("\"{h}\"")),
                (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            ],
            asset.body,
        )
            .into_response(),
        _ => ApiError::not_found(
            "asset_not_found",
            format!("no asset `{file}` under `{hash}`"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_names_only_bundled_assets_by_hash() {
        for (_, page) in super::super::PAGES {
            let html = render(page);
            assert!(!html.contains("{{"), "unrendered placeholder");
            assert!(html.contains("/assets/"), "a page loads its scripts");
            assert!(!html.contains("<script>"), "no inline script (CSP)");
        }
        let u = url("xterm.js");
        assert_eq!(u.len(), "/assets/".len() + 16 + "/xterm.js".len(), "{u}");
    }
}
