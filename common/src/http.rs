//! What the three HTTP endpoints (proxy admin, dashboard, kodis-ha) share: a serve
//! loop (plain HTTP, or HTTPS with reloaded files) that closes connections whose
//! handshake or request headers do not arrive in time, and the
//! request hygiene every route gets (JSON bodies only, JSON errors, also for a 405).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;
use tracing::{debug, warn};

use crate::tls::{ServerFiles, ServerTls};

/// How long a client may take to send a request's headers (and how long a kept-alive
/// connection may sit idle) before the connection is closed: a peer that opens
/// connections and sends half a header cannot hold them open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` over HTTP/1.1 until `shutdown` completes, then lets the
/// requests in flight finish. Each request carries the peer's [`ConnectInfo`]
/// (`SocketAddr`); headers must arrive within `header_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, app, header_timeout, None, shutdown).await;
}

/// As [`serve`], over TLS when `tls` is set: every connection's handshake uses the
/// configuration in force when it starts (see [`ServerTls::reload`]) and must end
/// within `header_timeout` too.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (app, stop) = (app.clone(), stop_rx.clone());
                    match &tls {
                        None => {
                            conns.spawn(connection(stream, peer, app, header_timeout, stop));
                        }
                        Some(tls) => {
                            let acceptor = tls.acceptor();
                            conns.spawn(async move {
                                let hs = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                                match hs.await {
                                    Ok(Ok(s)) => connection(s, peer, app, header_timeout, stop).await,
                                    // A client that does not trust the certificate ends
                                    // here: the error is on its side too.
                                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req.map(axum::body::Body::new)).await }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// How often an HTTPS endpoint's certificate and key files are read again.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Loads `cert` and `key` for an HTTPS endpoint (an error stops the start) and
/// reloads them every [`TLS_RELOAD_INTERVAL`] until `stop` turns true.
pub fn https(
    cert: &std::path::Path,
    key: &std::path::Path,
    stop: watch::Receiver<bool>,
) -> Result<Arc<ServerTls>, crate::tls::TlsError> {
    let tls = Arc::new(ServerTls::load(ServerFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: None,
    })?);
    tokio::spawn(tls.clone().watch(TLS_RELOAD_INTERVAL, stop));
    Ok(tls)
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference, so the time taken does not tell
/// how much of a guessed token was right (only whether its length was).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// A JSON error body, `{"error": msg}`, with `status`.
pub fn json_error(status: StatusCode, msg: impl Into<String>) -> Response {
    let msg: String = msg.into();
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Middleware for every route: a request with a body must say `Content-Type:
/// application/json` (415 otherwise: a browser's cross-site form post cannot set it
/// without a CORS preflight, which no Kodis endpoint answers); a request that would
/// change something and comes from a web page (it has an `Origin` header, which
/// browsers send and API clients do not) is refused with 403, which also covers
/// body-less cross-site POSTs; and a 405 gets the same JSON error body as every other
/// error (its `Allow` header kept).
pub async fn hygiene(req: Request, next: Next) -> Response {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !reads && req.headers().contains_key(header::ORIGIN) {
        return json_error(
            StatusCode::FORBIDDEN,
            format!(
                "{} {}: requests from web pages (with an Origin header) may only read",
                req.method(),
                req.uri().path()
            ),
        );
    }
    if has_body(req.headers()) && !is_json(req.headers()) {
        let given = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or("none".into(), |v| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            });
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{} {}: the body must be JSON sent with Content-Type: application/json \
                 (got {given})",
                req.method(),
                req.uri().path()
            ),
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let body = serde_json::json!({ "error": format!("method {method} not allowed on {path}") });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// Whether the request carries a body: a non-zero Content-Length or a chunked one.
fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().map_or(true, |s| s.trim() != "0"))
}

/// Whether Content-Type is `application/json` (parameters such as charset allowed).
fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        let h = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert!(bearer_matches(&h, "s3cret"));
        assert!(!bearer_matches(&h, "s3cre"));
        assert!(!bearer_matches(
            &headers(&[(header::AUTHORIZATION, "s3cret")]),
            "s3cret"
        ));
        assert!(!bearer_matches(&headers(&[]), "s3cret"));
    }

    #[test]
    fn bodies_and_content_types() {
        assert!(!has_body(&headers(&[])));
        assert!(!has_body(&headers(&[(header::CONTENT_LENGTH, "0")])));
        assert!(has_body(&headers(&[(header::CONTENT_LENGTH, "12")])));
        assert!(has_body(&headers(&[(
            header::TRANSFER_ENCODING,
            "chunked"
        )])));
        assert!(is_json(&headers(&[(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[(header::CONTENT_TYPE, "text/plain")])));
        assert!(!is_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded"
        )])));
        assert!(!is_json(&headers(&[])));
    }
}
