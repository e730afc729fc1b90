//! The streaming server behind Exec/Attach/PortForward URLs.
//!
//! Requests are cached under single-use random tokens (TTL one minute, at most 1000 in flight,
//! as containerd's). The HTTP server answers `/exec|attach|portforward/<token>`: an unknown or
//! expired token gets 404; a valid one is consumed and answered 501, because the SPDY/websocket
//! stream protocols kubelet speaks are not served by crid yet.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
/// Unpadded base64url (RFC 4648 §5): URL-safe without escaping, as containerd's tokens.
fn token_text(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
use crid::error::{Error, Result};
use crid::ports::{StreamRequest, StreamServer};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const TOKEN_TTL: Duration = Duration::from_secs(60);
const MAX_IN_FLIGHT: usize = 1000;

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
    tokens: Arc<TokenCache>,
}

fn kind_of(request: &StreamRequest) -> &'static str {
    match request {
        StreamRequest::Exec { .. } => "exec",
        StreamRequest::Attach { .. } => "attach",
        StreamRequest::PortForward { .. } => "portforward",
    }
}

fn respond(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
}

fn handle(tokens: &TokenCache, path: &str) -> Response<Full<Bytes>> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    match tokens.take(token) {
        Some(request) if kind_of(&request) == kind => {
            respond(StatusCode::NOT_IMPLEMENTED, "crid does not serve SPDY/websocket streaming yet; use ExecSync")
        }
        _ => respond(StatusCode::NOT_FOUND, "unknown or expired stream token"),
    }
}

impl HttpStreamServer {
    /// Binds `address:port` ("0" = any free port) and serves in the background.
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
        let tokens = Arc::new(TokenCache::default());
        let server = Arc::new(HttpStreamServer { base_url: format!("http://{local}"), tokens: tokens.clone() });
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
                let tokens = tokens.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = handle(&tokens, request.uri().path());
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(server)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

#[async_trait]
impl StreamServer for HttpStreamServer {
    async fn register(&self, request: StreamRequest) -> Result<String> {
        let kind = kind_of(&request);
        let token = self.tokens.insert(request)?;
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
        assert_eq!(handle(&cache, &format!("/exec/{token}")).status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(handle(&cache, &format!("/exec/{token}")).status(), StatusCode::NOT_FOUND);
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
}
