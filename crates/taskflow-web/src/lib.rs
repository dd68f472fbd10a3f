//! TaskFlow's web UI, embedded in the binary.
//!
//! The UI is plain HTML, CSS and JavaScript modules under `web/` at the repository root, with no
//! build step: this crate embeds those files at compile time (`include_bytes!`) and [`router`]
//! serves them — `index.html` at `/`, everything else under `/ui/`.
//!
//! Every answer carries a strong `ETag` (a hash of the file) and `Cache-Control: no-cache`, so
//! browsers keep a copy and revalidate it with a cheap `304`; file names stay stable, which keeps
//! ES module imports plain. Every answer also carries a strict `Content-Security-Policy`: scripts,
//! styles and connections only from our own origin, no inline script or style, no framing.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// The policy sent with every UI file. `connect-src 'self'` covers the API and the event stream
/// (same origin); nothing inline is allowed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// URL prefix of every UI file except the page itself.
pub const ASSET_PREFIX: &str = "/ui/";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path below `web/` (and below [`ASSET_PREFIX`] in URLs).
    pub path: &'static str,
    /// `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the UI. A file missing here is not served; the tests check that every
/// reference in the page and every module import names one of these.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/session.js", JS),
    asset!("js/live.js", JS),
    asset!("js/tasks.js", JS),
    asset!("js/editor.js", JS),
    asset!("js/recurrence.js", JS),
    asset!("js/notifications.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
];

/// An asset with its precomputed `ETag`.
struct Served {
    asset: &'static Asset,
    etag: HeaderValue,
}

static SERVED: LazyLock<Vec<Served>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let tag = format!("\"{}\"", hex::encode(&digest[..12]));
            Served {
                asset,
                etag: HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\"")),
            }
        })
        .collect()
});

/// The embedded asset at `path` (below `web/`), if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The UI's routes: `GET /` (the page) and `GET /ui/<file>` for each embedded file.
///
/// Generic over the state so any application router can merge it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/", get(|headers: HeaderMap| serve(0, headers)));
    for (index, asset) in ASSETS.iter().enumerate() {
        let url = format!("{ASSET_PREFIX}{}", asset.path);
        router = router.route(&url, get(move |headers: HeaderMap| serve(index, headers)));
    }
    router
}

async fn serve(index: usize, request: HeaderMap) -> Response {
    let Some(served) = SERVED.get(index) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, served.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/").as_bytes() == served.etag.as_bytes())
        });
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(served.asset.content_type),
    );
    (StatusCode::OK, headers, served.asset.body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).unwrap()
    }

    #[tokio::test]
    async fn the_page_is_served_with_a_strict_policy_and_an_etag() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(!policy.contains("unsafe-eval"), "{policy}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"<!doctype html>"));

        let tag = headers[header::ETAG].to_str().unwrap();
        let again = get("/", Some(tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag);
        assert!(
            again
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_content_type() {
        for asset in ASSETS {
            let response = get(&format!("{ASSET_PREFIX}{}", asset.path), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                asset.content_type,
                "{}",
                asset.path
            );
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
        }
        assert_eq!(
            get("/ui/missing.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = text(asset("index.html").unwrap());
        for script in page.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: <script{tag}>");
        }
        assert!(!page.contains("<style"), "inline <style>");
        assert!(!page.contains(" style="), "inline style attribute");
        assert!(!page.contains(" onclick="), "inline handler");
    }

    /// Every `/ui/…` reference of the page and every relative import of a module names an
    /// embedded file, so a forgotten `asset!` line fails here instead of in a browser.
    #[test]
    fn every_reference_names_an_embedded_file() {
        let page = text(asset("index.html").unwrap());
        let mut references: Vec<String> = page
            .split(ASSET_PREFIX)
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect();
        for module in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in text(module).lines() {
                let line = line.trim();
                if !(line.starts_with("import ") || line.starts_with("} from ")) {
                    continue;
                }
                let Some(start) = line.find("'./") else {
                    continue;
                };
                let name = &line[start + 3..];
                let name = &name[..name.find('\'').unwrap()];
                references.push(format!("js/{name}"));
            }
        }
        assert!(references.len() > 3, "{references:?}");
        for reference in references {
            assert!(asset(&reference).is_some(), "not embedded: {reference}");
        }
    }
}
