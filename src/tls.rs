//! TLS with rustls (ring as the one crypto provider): termination for
//! clients (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, a certificate per SNI
//! name, swapped on reload without touching open connections), and the
//! client side for https upstreams.
//!
//! A TLS stream is a [`ClientIo`]: a parked connection waits for the
//! socket to be readable, unless rustls already holds decrypted bytes
//! (a record can carry more than hyper read), which are ready at once.

use std::io;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::config::tls::{LoadedCerts, UpstreamTlsConfig, provider, read_certs};
use crate::connection::ClientIo;

/// ALPN protocol ids, in order of preference (RFC 7301).
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN id.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A client's TLS stream over TCP.
pub type ServerTlsStream = tokio_rustls::server::TlsStream<TcpStream>;

impl ClientIo for ServerTlsStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, session) = self.get_ref();
        // wants_read is false while decrypted bytes wait to be read (or the
        // peer has closed): a read would not wait.
        if !session.wants_read() {
            return Poll::Ready(Ok(()));
        }
        tcp.poll_read_ready(cx)
    }
}

/// Picks the certificate of a handshake by SNI name, from a table a reload
/// swaps whole: handshakes that start afterwards get the new certificates,
/// open connections keep their session.
#[derive(Debug)]
pub struct CertResolver {
    certs: ArcSwap<LoadedCerts>,
}

impl CertResolver {
    /// Serves these certificates.
    pub fn new(certs: Arc<LoadedCerts>) -> CertResolver {
        CertResolver {
            certs: ArcSwap::new(certs),
        }
    }

    /// Serves these from the next handshake on.
    pub fn swap(&self, certs: Arc<LoadedCerts>) {
        self.certs.store(certs);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().pick(hello.server_name()))
    }
}

/// The acceptor of the TLS listener: TLS 1.2 and 1.3 only, ALPN `h2` then
/// `http/1.1`, certificates from `resolver`.
pub fn acceptor(resolver: Arc<CertResolver>) -> TlsAcceptor {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// The system's trusted roots, read once (rustls-native-certs: the
/// operating system's store, which the machine's administrator keeps).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                warn!(%error, "reading the system's trusted roots");
            }
            let mut roots = RootCertStore::empty();
            let (_added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                warn!(ignored, "system roots that could not be parsed");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The client configuration for a pool's https servers: verified against
/// `[upstreams.tls] ca`, or the system's roots; ALPN `http/1.1` (pools
/// speak HTTP/1.1).
pub fn upstream_client(tls: Option<&UpstreamTlsConfig>) -> Result<Arc<ClientConfig>, String> {
    let roots = match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}
