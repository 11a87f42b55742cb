//! The web console: one HTML page, its style sheet and its script, embedded in the
//! binary and served at `/`, `/console.css` and `/console.js`, with an icon at `/favicon.svg`.
//!
//! The page holds no data, so loading it needs no token; what it shows comes from
//! `GET /api/v1/overview`, under the API's usual token rules (the page asks for the
//! token when the API answers 401 and keeps it in the tab's `sessionStorage`). Every
//! asset is sent with a Content-Security-Policy that lets the page load and call
//! nothing but this dashboard, and run no inline script or style.
//!
//! Changes from the page (its actions) carry an `Origin` header, which the API's
//! hygiene refuses from web pages; [`own_page`] tells the console's own requests
//! apart, so that the guard may let them through.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The paths of the console's assets: open reads, like the probes.
pub const ASSETS: [&str; 4] = ["/", "/console.css", "/console.js", "/favicon.svg"];

/// Only this dashboard: no inline script or style, no frames, no other host.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self'; connect-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("console/index.html");
const CSS: &str = include_str!("console/console.css");
const JS: &str = include_str!("console/console.js");
const ICON: &str = include_str!("console/favicon.svg");

/// The console's routes (open reads; see [`ASSETS`]).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Whether a request with an `Origin` header comes from this dashboard's own page:
/// the origin is the very host the request was sent to (`Host`), and the browser
/// does not call it cross-site (`Sec-Fetch-Site`, when sent). Without an admin token
/// the host must also be a loopback name or address: a page of another site whose
/// name was re-pointed at 127.0.0.1 (DNS rebinding) is same-origin with itself, but
/// its `Host` is its own name. With a token, the token is the proof (another site's
/// page cannot read the tab's storage).
pub fn own_page(headers: &HeaderMap, has_token: bool) -> bool {
    fn text(v: Option<&HeaderValue>) -> Option<&str> {
        v.and_then(|v| v.to_str().ok()).map(str::trim)
    }
    let (Some(origin), Some(host)) = (
        text(headers.get(header::ORIGIN)),
        text(headers.get(header::HOST)),
    ) else {
        return false;
    };
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    let fetch_site = text(headers.get("sec-fetch-site"));
    if !same || fetch_site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    has_token || loopback_host(host)
}

/// Whether `host` (a `Host` header: name or address, maybe with a port) is
/// `localhost` or a loopback address.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:port
        rest.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_consoles_own_requests_and_no_others() {
        let own = headers(&[
            ("origin", "http://127.0.0.1:18080"),
            ("host", "127.0.0.1:18080"),
        ]);
        assert!(own_page(&own, false));
        assert!(own_page(&own, true));
        let v6 = headers(&[("origin", "http://[::1]:18080"), ("host", "[::1]:18080")]);
        assert!(own_page(&v6, false));
        let local = headers(&[
            ("origin", "http://localhost:18080"),
            ("host", "localhost:18080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(own_page(&local, false));
        // Another site.
        let evil = headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:18080"),
        ]);
        assert!(!own_page(&evil, true));
        // DNS rebinding: same origin, but a name that is not loopback; fine only when
        // the token (which that page cannot have) is required.
        let rebound = headers(&[
            ("origin", "http://evil.example:18080"),
            ("host", "evil.example:18080"),
        ]);
        assert!(!own_page(&rebound, false));
        assert!(own_page(&rebound, true));
        let cross = headers(&[
            ("origin", "http://127.0.0.1:18080"),
            ("host", "127.0.0.1:18080"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!own_page(&cross, true));
        assert!(!own_page(&headers(&[("host", "127.0.0.1:1")]), true));
        assert!(!loopback_host("10.0.0.1:80"));
        assert!(loopback_host("127.0.0.2"));
    }
}
