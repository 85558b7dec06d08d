//! A minimal HTTP/1.1 client (hyper, tokio-rustls for `https`) for talking to the control plane:
//! one connection per request, a deadline on the whole exchange, a cap on the response body.
//! Used by the [`crate::watch`] thread and by the `meshgate-control` CLI. Control traffic is rare
//! and long-polled, so connection reuse is not worth a pool here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

/// Largest response body accepted (snapshots of big catalogs included).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a request failed before an HTTP status came back.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL could not be used.
    #[error("bad URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// TCP connect, TLS handshake, or the exchange failed.
    #[error("{url}: {reason}")]
    Io {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No complete answer before the deadline.
    #[error("{url}: no answer within {0:?}", .timeout)]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// An answer: status and whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as (lossy) text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connection settings shared by every request of one client.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Client {
    /// A client for `base` (`http://host:port` or `https://host:port`, an optional path prefix
    /// kept). `ca_pem` is the CA that signed the control plane's certificate (required for
    /// `https`); `token` is sent as `Authorization: Bearer`.
    pub fn new(
        base: &str,
        ca_pem: Option<&[u8]>,
        token: Option<String>,
    ) -> Result<Self, HttpError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::Url {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => {
                let ca = ca_pem.ok_or_else(|| HttpError::Url {
                    url: base.clone(),
                    reason: "https needs the control plane's CA certificate (PEM)".into(),
                })?;
                Some(Arc::new(tls_config(ca).map_err(|reason| {
                    HttpError::Url {
                        url: base.clone(),
                        reason,
                    }
                })?))
            }
            _ => {
                return Err(HttpError::Url {
                    url: base,
                    reason: "scheme must be http or https".into(),
                })
            }
        };
        if uri.host().is_none() {
            return Err(HttpError::Url {
                url: base,
                reason: "no host".into(),
            });
        }
        Ok(Client { base, token, tls })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` (path and query, starting with `/`).
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Response, HttpError> {
        self.request(Method::GET, path, None, timeout).await
    }

    /// A request with an optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let url = format!("{}{}", self.base, path);
        match tokio::time::timeout(timeout, self.exchange(method, &url, json)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout { url, timeout }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        json: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let io_err = |reason: String| HttpError::Io {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::Url {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let connect_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = tokio::net::TcpStream::connect((connect_host.as_str(), port))
            .await
            .map_err(|e| io_err(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder().method(method).uri(path);
        if let Some(h) = req.headers_mut() {
            h.insert(
                HOST,
                HeaderValue::from_str(&authority).map_err(|e| io_err(e.to_string()))?,
            );
            if let Some(t) = &self.token {
                h.insert(
                    AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {t}"))
                        .map_err(|_| io_err("token is not a valid header value".into()))?,
                );
            }
            if json.is_some() {
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let req = req
            .body(Full::new(json.unwrap_or_default()))
            .map_err(|e| io_err(e.to_string()))?;
        match &self.tls {
            None => send(TokioIo::new(tcp), req, url).await,
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::try_from(connect_host.clone())
                    .map_err(|e| io_err(format!("TLS server name: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io_err(format!("TLS: {e}")))?;
                send(TokioIo::new(tls), req, url).await
            }
        }
    }
}

async fn send<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
    url: &str,
) -> Result<Response, HttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io_err = |reason: String| HttpError::Io {
        url: url.to_owned(),
        reason,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| io_err(format!("handshake: {e}")))?;
    let conn_task = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| io_err(format!("request: {e}")))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| io_err(format!("body: {e}")))?
        .to_bytes();
    conn_task.abort();
    Ok(Response { status, body })
}

fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("CA PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("CA PEM holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}
