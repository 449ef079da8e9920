//! The API's HTTP server: hyper's HTTP/1.1 under the node's bounds on connections, in number and
//! in time, so that no client can hold the node's descriptors or its attention.
//!
//! - **Number.** At most [`ServerLimits::max_connections`] connections are served at once (by
//!   default three quarters of the process's descriptor limit, at most 16,384). The next are
//!   answered `503 busy` and closed (at most [`MAX_REFUSING`] such answers in flight; beyond that a
//!   connection is closed unanswered), so `/v1/status` keeps answering whoever gets in.
//! - **Head.** A request's head must arrive within [`ServerLimits::header_read_timeout`], counted
//!   from when the connection starts waiting for it: a half-sent or trickled request is dropped,
//!   and a kept-alive connection waits no longer than that for its next request.
//! - **Idle.** A connection that reads and writes nothing for [`ServerLimits::idle_timeout`] is
//!   closed: a client that stops reading an answer or a stream. Event streams ping within it.
//! - **Handlers** finish within the API's request timeout (`api::REQUEST_TIMEOUT`).
//! - An event stream, once upgraded to a WebSocket, leaves the connection count (it keeps the idle
//!   timeout); the `events` module bounds streams, in all and per client address.
//!
//! - **TLS.** With a certificate and key ([`TlsFiles`]), every connection is TLS (rustls on
//!   AWS-LC): the handshake must finish within the head's timeout, and counts as the head.
//!
//! Handlers see the client's address as axum's `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Most `503 busy` answers being written at once.
pub const MAX_REFUSING: usize = 256;
/// How long a connection still being served may take to finish when the node stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's bounds (see the module docs).
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: default_max_connections(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ServerLimits {
    /// Checks the bounds; the message names the setting.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "http.max_connections = {} is out of range (1 to 1000000)",
                self.max_connections
            ));
        }
        for (name, d) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.idle_timeout", self.idle_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err(format!("{name} = {d:?} is out of range (0.1 s to 1 hour)"));
            }
        }
        Ok(())
    }
}

/// Three quarters of the soft descriptor limit (the rest for the database, peers, the broker and
/// refusals), between 64 and 16,384.
fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1_024
    };
    (soft / 4 * 3).clamp(64, 16_384)
}

/// The API's certificate chain and private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// The server's TLS configuration; errors name the file.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        use anyhow::Context;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("TLS certificate {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("TLS certificate {}", self.cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "TLS certificate {} holds no PEM certificate",
                self.cert.display()
            );
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("TLS key {} (a PEM private key)", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!(
                    "TLS key {} does not go with the certificate {}",
                    self.key.display(),
                    self.cert.display()
                )
            })?;
        Ok(Arc::new(config))
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` fires; then stops
/// accepting, asks every connection to finish its request and waits for them (at most
/// [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (close_tx, close_rx) = watch::channel(());
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = IdleTimeout::new(stream, limits.idle_timeout);
        let router = router.clone();
        let closing = close_rx.clone();
        let header_read_timeout = limits.header_read_timeout;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection(stream, router, addr, header_read_timeout, closing).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            connection(tls, router, addr, header_read_timeout, closing).await
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = close_tx.send(());
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT * 2, permits.acquire_many(all)).await;
    Ok(())
}

/// One connection's requests, until it ends or the server stops.
async fn connection<S>(
    stream: S,
    router: Router,
    addr: std::net::SocketAddr,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(%addr, error = %e, "connection ended");
        },
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

/// Errors of one connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers `503 busy` to a connection over the limit and closes it.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":"busy","message":"the node has as many connections open as it serves; try again shortly"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A stream that fails with `TimedOut` once neither a read nor a write has moved a byte for
/// `idle`.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
