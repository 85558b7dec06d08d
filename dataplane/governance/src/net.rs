//! The governance network thread: one `meshgate-gov-net` std thread running a current-thread
//! tokio runtime, and a minimal HTTP/1.1 client (hyper + rustls/ring) for JWKS, authorization
//! server metadata and token endpoints.
//!
//! Off the request path. Hub workers (monoio) never run this code: they hand work over with
//! [`NetRuntime::spawn`] (a push onto this runtime's queue) and wait on `tokio::sync` channels
//! (`oneshot`, `watch`), which work from any runtime. Every operation here carries its own
//! timeout on this runtime, so a waiter on a worker is always answered.
//!
//! The client is deliberately small: one request per connection, no redirects (an IdP that
//! redirects its JWKS is a misconfiguration, and following redirects is an SSRF vector),
//! response bodies capped, `https` with the webpki roots (plus an optional extra CA file),
//! plain `http` only where the caller allows it (loopback in tests).

// `tokio::spawn` is banned under dataplane/ because workers run monoio; this module runs on its
// own dedicated tokio thread, where spawning the connection driver onto that runtime is right.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

/// Why an HTTP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The URL is not usable (scheme, host).
    #[error("bad URL {0}")]
    BadUrl(String),
    /// `http:` to a non-loopback host without permission.
    #[error("refusing plain http to {0} (use https, or allow_http for tests)")]
    InsecureUrl(String),
    /// Connecting, TLS, or the exchange failed.
    #[error("{url}: {why}")]
    Failed {
        /// The URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// No answer in time.
    #[error("{0}: timed out")]
    Timeout(String),
    /// The network thread is gone.
    #[error("the governance network thread stopped")]
    Stopped,
}

/// An HTTP response: status, selected headers, body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Cache-Control`, if any.
    pub cache_control: Option<String>,
    /// The body (at most the requested cap).
    pub body: Bytes,
}

/// The background runtime; `Send + Sync`, shared through an `Arc` by everything that fetches.
#[derive(Debug)]
pub struct NetRuntime {
    handle: tokio::runtime::Handle,
    stop: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    tls: Arc<rustls::ClientConfig>,
}

impl NetRuntime {
    /// Starts the thread; `extra_ca` adds a PEM file of CA certificates to the webpki roots.
    ///
    /// # Errors
    /// The thread or runtime cannot start, or the CA file is unreadable.
    pub fn start(extra_ca: Option<&Path>) -> std::io::Result<Arc<Self>> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("meshgate-gov-net".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
        Ok(Arc::new(NetRuntime {
            handle,
            stop: parking_lot::Mutex::new(Some(stop_tx)),
            tls: Arc::new(tls),
        }))
    }

    /// Runs `f` on the network thread (callable from any thread, any runtime).
    pub fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(f));
    }

    /// `GET url` with `timeout` for the whole exchange and a body cap. Run on the network thread.
    ///
    /// # Errors
    /// [`NetError`].
    pub async fn get(
        &self,
        url: &str,
        allow_http: bool,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, NetError> {
        self.request(url, allow_http, timeout, max_body, None, &[])
            .await
    }

    /// `POST url` with a form body and extra headers (e.g. `Authorization: Basic`).
    ///
    /// # Errors
    /// [`NetError`].
    pub async fn post_form(
        &self,
        url: &str,
        allow_http: bool,
        timeout: Duration,
        form: &[(&str, &str)],
        headers: &[(&str, String)],
    ) -> Result<Response, NetError> {
        let body = form_encode(form);
        self.request(url, allow_http, timeout, 1 << 20, Some(body), headers)
            .await
    }

    async fn request(
        &self,
        url: &str,
        allow_http: bool,
        timeout: Duration,
        max_body: usize,
        form: Option<String>,
        headers: &[(&str, String)],
    ) -> Result<Response, NetError> {
        let fut = self.exchange(url, allow_http, max_body, form, headers);
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout(url.to_string())),
        }
    }

    async fn exchange(
        &self,
        url: &str,
        allow_http: bool,
        max_body: usize,
        form: Option<String>,
        headers: &[(&str, String)],
    ) -> Result<Response, NetError> {
        let uri: Uri = url.parse().map_err(|_| NetError::BadUrl(url.to_string()))?;
        let host = uri
            .host()
            .ok_or_else(|| NetError::BadUrl(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => {
                if !(allow_http || is_loopback_host(&host)) {
                    return Err(NetError::InsecureUrl(url.to_string()));
                }
                false
            }
            _ => return Err(NetError::BadUrl(url.to_string())),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let failed = |why: String| NetError::Failed {
            url: url.to_string(),
            why,
        };
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let mut req = hyper::Request::builder()
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "meshgate-governance");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = match form {
            Some(body) => req
                .method(hyper::Method::POST)
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(Full::new(Bytes::from(body))),
            None => req.method(hyper::Method::GET).body(Full::new(Bytes::new())),
        }
        .map_err(|e| failed(format!("request: {e}")))?;
        if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| NetError::BadUrl(url.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| failed(format!("tls: {e}")))?;
            send(tls, req, max_body).await.map_err(failed)
        } else {
            send(tcp, req, max_body).await.map_err(failed)
        }
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.lock().take() {
            let _ = tx.send(());
        }
    }
}

async fn send<S>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let header = |n: hyper::header::HeaderName| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let cache_control = header(hyper::header::CACHE_CONTROL);
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(Response {
        status,
        content_type,
        cache_control,
        body,
    })
}

/// Whether `host` (a name or an IP literal) is loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `application/x-www-form-urlencoded` encoding.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(k, &mut out);
        out.push('=');
        percent_encode_into(v, &mut out);
    }
    out
}

fn percent_encode_into(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a form body or a query string into pairs.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_roundtrip() {
        let enc = form_encode(&[("a b", "c&d=e/é"), ("x", "")]);
        assert_eq!(enc, "a+b=c%26d%3De%2F%C3%A9&x=");
        assert_eq!(
            parse_form(&enc),
            vec![
                ("a b".to_string(), "c&d=e/é".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%4"), "%4");
        assert!(is_loopback_host("127.0.0.1") && is_loopback_host("[::1]"));
        assert!(!is_loopback_host("example.com"));
    }
}
