//! The streaming server behind Exec/Attach/PortForward URLs.
//!
//! Requests are cached under single-use random tokens (TTL one minute, at most 1000 in flight,
//! as containerd's). The HTTP server answers `/exec|attach|portforward/<token>` with an HTTP/1.1
//! upgrade to the protocol the client asks for — SPDY/3.1 (kubelet's, crictl's and kubectl's
//! through the API server) or WebSocket — and negotiates the channel subprotocol. This module
//! and its children only frame bytes: once a connection's streams are there, the core's
//! [`StreamHandler`] runs the session, and its result goes back on the error stream.
//!
//! HTTP errors: an unknown, expired or already used token is 404; a request that asks for no
//! upgrade 400; a subprotocol the server does not speak 403 (SPDY, as kubelet's
//! `httpstream.Handshake`) or 400 (WebSocket); the body says why.

mod over_spdy;
mod websocket;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use crid::error::{Error, Result};
use crid::ports::{StreamHandler, StreamRequest, StreamServer};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Unpadded base64url (RFC 4648 §5): URL-safe without escaping, as containerd's tokens.
fn token_text(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

const TOKEN_TTL: Duration = Duration::from_secs(60);
const MAX_IN_FLIGHT: usize = 1000;
/// How long a client has to open the streams its request names (kubelet's
/// `streamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After the session ended, how long its output may take to reach the client.
pub const OUTPUT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

struct Cached {
    request: StreamRequest,
    expires_at: Instant,
}

#[derive(Default)]
struct TokenCache {
    entries: Mutex<HashMap<String, Cached>>,
}

impl TokenCache {
    fn insert(&self, request: StreamRequest) -> Result<String> {
        let mut entries = self.entries.lock().unwrap();
        let now = Instant::now();
        entries.retain(|_, cached| cached.expires_at > now);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(Error::new(crid::error::ErrorKind::ResourceExhausted, "too many in flight"));
        }
        loop {
            // 6 random bytes → 8 base64url characters, as containerd's tokens.
            let mut raw = [0u8; 6];
            crate::os::fill_random(&mut raw);
            let token = token_text(&raw);
            if !entries.contains_key(&token) {
                entries.insert(token.clone(), Cached { request, expires_at: now + TOKEN_TTL });
                return Ok(token);
            }
        }
    }

    /// Consumes a token: each URL serves once.
    fn take(&self, token: &str) -> Option<StreamRequest> {
        let cached = self.entries.lock().unwrap().remove(token)?;
        (cached.expires_at > Instant::now()).then_some(cached.request)
    }
}

pub struct HttpStreamServer {
    base_url: String,
    shared: Arc<Shared>,
}

struct Shared {
    tokens: TokenCache,
    handler: OnceLock<Arc<dyn StreamHandler>>,
}

fn kind_of(request: &StreamRequest) -> &'static str {
    match request {
        StreamRequest::Exec { .. } => "exec",
        StreamRequest::Attach { .. } => "attach",
        StreamRequest::PortForward { .. } => "portforward",
    }
}

type Body = Full<Bytes>;

pub(crate) fn respond(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
}

/// The upgrade a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upgrade {
    Spdy,
    WebSocket,
}

fn upgrade_of<B>(request: &Request<B>) -> Option<Upgrade> {
    let wants_upgrade = request
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("upgrade"));
    if !wants_upgrade {
        return None;
    }
    let protocol = request.headers().get(UPGRADE)?.to_str().ok()?.trim();
    if protocol.eq_ignore_ascii_case("websocket") {
        Some(Upgrade::WebSocket)
    } else if protocol.eq_ignore_ascii_case("SPDY/3.1") {
        Some(Upgrade::Spdy)
    } else {
        None
    }
}

/// Every value of a header that may repeat and may hold comma-separated lists.
pub(crate) fn header_list<B>(request: &Request<B>, name: &str) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol of the client's list (its order of preference) that the server speaks.
pub(crate) fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered.iter().find_map(|offer| supported.iter().copied().find(|s| s == offer))
}

/// The `port` query parameters of a port-forward URL (WebSocket clients name ports there).
pub(crate) fn query_ports(uri: &hyper::Uri) -> std::result::Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "port" {
            match value.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {value:?}")),
            }
        }
    }
    Ok(ports)
}

fn handle(shared: &Arc<Shared>, mut request: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return respond(StatusCode::NOT_FOUND, "unknown stream path");
    }
    let Some(upgrade) = upgrade_of(&request) else {
        return respond(StatusCode::BAD_REQUEST, "a stream URL needs an upgrade to SPDY/3.1 or websocket");
    };
    let stream_request = match shared.tokens.take(token) {
        Some(stream_request) if kind_of(&stream_request) == kind => stream_request,
        _ => return respond(StatusCode::NOT_FOUND, "unknown or expired stream token"),
    };
    let Some(handler) = shared.handler.get().cloned() else {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "the stream server is not ready yet");
    };
    match upgrade {
        Upgrade::WebSocket => websocket::upgrade(&mut request, stream_request, handler),
        Upgrade::Spdy => over_spdy::upgrade(&mut request, stream_request, handler),
    }
}

/// The 101 answer to an upgrade, with the protocol-specific headers still to add.
pub(crate) fn switching_protocols(upgrade: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    response.headers_mut().insert(UPGRADE, HeaderValue::from_static(upgrade));
    response
}

impl HttpStreamServer {
    /// Binds `address:port` ("0" = any free port) and serves in the background. Connections
    /// are answered 503 until [`HttpStreamServer::serve_with`] names the handler.
    pub async fn bind(address: &str, port: &str) -> Result<Arc<HttpStreamServer>> {
        let port: u16 = if port.is_empty() {
            0
        } else {
            port.parse().map_err(|_| Error::invalid(format!("invalid stream_server_port {port:?}")))?
        };
        let ip: std::net::IpAddr =
            address.parse().map_err(|_| Error::invalid(format!("invalid stream_server_address {address:?}")))?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .map_err(|e| crate::errors::from_io(e, format!("bind stream server on {address}:{port}")))?;
        let local = listener.local_addr().map_err(|e| crate::errors::from_io(e, "stream server address"))?;
        let shared = Arc::new(Shared { tokens: TokenCache::default(), handler: OnceLock::new() });
        let server = Arc::new(HttpStreamServer { base_url: format!("http://{local}"), shared: shared.clone() });
        tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "stream server accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = handle(&shared, request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(server)
    }

    /// Names the core that serves the sessions (once; later calls are ignored).
    pub fn serve_with(&self, handler: Arc<dyn StreamHandler>) {
        let _ = self.shared.handler.set(handler);
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

#[async_trait]
impl StreamServer for HttpStreamServer {
    async fn register(&self, request: StreamRequest) -> Result<String> {
        let kind = kind_of(&request);
        let token = self.shared.tokens.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec {
            container_id: "c".into(),
            cmd: vec!["sh".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        }
    }

    #[test]
    fn tokens_are_single_use_and_bounded() {
        let cache = TokenCache::default();
        let token = cache.insert(exec()).unwrap();
        assert_eq!(token.len(), 8);
        assert_eq!(cache.take(&token), Some(exec()));
        assert_eq!(cache.take(&token), None);
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert(exec()).unwrap();
        }
        assert!(cache.insert(exec()).is_err());
    }

    #[test]
    fn base64url_matches_known_values() {
        assert_eq!(token_text(b"\xfb\xff\xbf\x00\x00\x00"), "-_-_AAAA");
        assert_eq!(token_text(b"Man"), "TWFu");
    }

    #[test]
    fn negotiation_follows_the_clients_order() {
        let offered = vec!["v5.channel.k8s.io".to_string(), "v4.channel.k8s.io".to_string()];
        assert_eq!(negotiate(&offered, &["v4.channel.k8s.io", "v5.channel.k8s.io"]), Some("v5.channel.k8s.io"));
        assert_eq!(negotiate(&offered, &["channel.k8s.io"]), None);
        let uri: hyper::Uri = "/portforward/abc?port=80&port=8080".parse().unwrap();
        assert_eq!(query_ports(&uri), Ok(vec![80, 8080]));
        let bad: hyper::Uri = "/portforward/abc?port=x".parse().unwrap();
        assert!(query_ports(&bad).is_err());
    }
}
