//! HTTPS for gridmesh's outgoing HTTP (the clients, and the node's calls to its DSO's VTN and to
//! subscription callbacks): rustls on AWS-LC, plugged into ureq as its TLS connector
//! ([`agent`]). Knows nothing of what is said over it.
//!
//! Trusted: the system's roots (`rustls-native-certs`: Debian's `ca-certificates`, or the file
//! `SSL_CERT_FILE` names), and the certificates in the PEM file `GRIDMESH_CA_CERT` names (a
//! community's own CA, or a node's self-signed certificate).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The environment variable naming a PEM file of certificates to trust besides the system's.
pub const CA_CERT_ENV: &str = "GRIDMESH_CA_CERT";

/// The TLS configuration every client of this process shares (loaded once), or why it could
/// not be made.
fn config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!(error = %e, "a system certificate could not be read");
            }
            let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
            if let Some(path) = std::env::var_os(CA_CERT_ENV) {
                let shown = std::path::Path::new(&path).display().to_string();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                    .map_err(|e| format!("{CA_CERT_ENV}={shown}: {e}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{CA_CERT_ENV}={shown}: {e}"))?;
                if certs.is_empty() {
                    return Err(format!("{CA_CERT_ENV}={shown} holds no PEM certificate"));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("{CA_CERT_ENV}={shown}: {e}"))?;
                }
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// ureq's TLS connector over rustls.
pub struct Rustls;

/// A ureq agent builder that speaks HTTPS through [`Rustls`].
pub fn agent() -> ureq::AgentBuilder {
    ureq::AgentBuilder::new().tls_connector(Arc::new(Rustls))
}

#[derive(Debug)]
struct TlsStream(rustls::StreamOwned<rustls::ClientConnection, Box<dyn ureq::ReadWrite>>);

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            // A server that closes without close_notify: the end of the answer.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r,
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl ureq::ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

impl ureq::TlsConnector for Rustls {
    fn connect(
        &self,
        dns_name: &str,
        mut io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let config = config().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let host = dns_name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(e.to_string()))?;
        // The handshake now, so that a certificate the client does not trust is the error.
        while conn.is_handshaking() {
            conn.complete_io(&mut io)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS with {host}: {e}")))?;
        }
        Ok(Box::new(TlsStream(rustls::StreamOwned::new(conn, io))))
    }
}
