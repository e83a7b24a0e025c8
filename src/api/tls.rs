//! HTTPS for the api: a listener that completes TLS handshakes off the accept path.
//!
//! Each handshake runs in its own task with a deadline, and only finished connections reach
//! the server, so a client that opens a connection and never finishes its handshake holds
//! one task for [`HANDSHAKE_TIMEOUT`], never the accept loop, and at most [`MAX_HANDSHAKES`]
//! of them are in progress at once.

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
};
use tokio_rustls::{rustls, server::TlsStream, TlsAcceptor};

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 128;
/// Most handshakes in progress at once. A client flooding the port with connections that never
/// finish their handshake holds at most this many tasks; further connections wait in the
/// kernel's accept queue until a handshake ends (at the latest after [`HANDSHAKE_TIMEOUT`]).
pub const MAX_HANDSHAKES: usize = 512;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("TLS certificate {path}: {message}")]
    Certificate {
        /// The `--tls-cert` path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The key file could not be read or holds no PEM private key.
    #[error("TLS key {path}: {message}")]
    Key {
        /// The `--tls-key` path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server configuration from PEM files (the certificate chain, then the key), HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.display().to_string(),
            message: "no PEM certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and hands the server only those whose TLS handshake finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        Self::with_limit(listener, config, MAX_HANDSHAKES)
    }

    /// [`TlsListener::new`] with at most `limit` handshakes in progress at once.
    pub fn with_limit(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        limit: usize,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(limit));
        tokio::spawn(async move {
            loop {
                // Wait for a free handshake slot before taking the next connection.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, handshaken) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(slot);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = handshaken.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task only ends when this listener is gone; wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost`, made with openssl in a fresh directory.
    fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl on PATH");
        assert!(made.status.success(), "{made:?}");
        (cert, key)
    }

    async fn handshake(
        addr: SocketAddr,
        cert: &Path,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(cert).expect("pem").flatten() {
            roots.add(der).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// Connections that never finish their handshake take every slot: the next client waits
    /// (it is not dropped), and gets through as soon as one of them goes away.
    #[tokio::test]
    async fn stalled_handshakes_are_bounded() {
        let dir = std::env::temp_dir().join(format!("kubexec-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = certificate(&dir);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = server_config(&cert, &key).expect("config");
        let mut tls = TlsListener::with_limit(listener, config, 2).expect("listener");
        let addr = tls.local;
        let stalled_a = TcpStream::connect(addr).await.expect("connect");
        let _stalled_b = TcpStream::connect(addr).await.expect("connect");
        let client = tokio::spawn({
            let cert = cert.clone();
            async move { handshake(addr, &cert).await }
        });
        // Both slots are held by clients that send nothing: the third handshake cannot finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!client.is_finished(), "a handshake beyond the limit ran");
        drop(stalled_a);
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            use axum::serve::Listener;
            tls.accept().await
        })
        .await
        .expect("the waiting client got a slot");
        drop(served);
        let connected = client.await.expect("join");
        assert!(connected.is_ok(), "{connected:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_are_named() {
        let err = server_config(
            Path::new("/no/such/cert.pem"),
            Path::new("/no/such/key.pem"),
        )
        .expect_err("no files");
        assert!(err.to_string().contains("/no/such/cert.pem"), "{err}");
    }
}
