//! A TCP relay to the apiserver that a test can cut and restore, to break a process's watches
//! for real: while cut, open connections are dropped and new ones are closed at once, so the
//! process sees what it would see when the apiserver is unreachable. TLS passes through
//! untouched (the apiserver's certificate names 127.0.0.1).

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::repo_root;

/// A running relay; dropping it stops accepting (open connections end with their peers).
pub struct CuttableProxy {
    /// Where the relay listens.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Relays 127.0.0.1:<port> to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                if *cut.borrow() {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut, accept }
    }

    /// Drops every open connection and refuses new ones until [`CuttableProxy::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Relays again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// A relay to the apiserver of the test's kubeconfig (`$KUBECONFIG`).
    pub async fn to_apiserver() -> CuttableProxy {
        let (_, upstream) = rewrite_server(&test_kubeconfig(), "unused");
        Self::start(upstream).await
    }

    /// A copy of the test's kubeconfig whose server is this relay, written under
    /// `target/e2e-logs/<name>.kubeconfig`.
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        let (text, _) = rewrite_server(&test_kubeconfig(), &self.addr.to_string());
        let dir = repo_root().join("target/e2e-logs");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

fn test_kubeconfig() -> String {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG (eval e2e/cluster/env)");
    std::fs::read_to_string(&path).expect("read KUBECONFIG")
}

/// `kubeconfig` with its `server: https://<host:port>` replaced by `server`, and the address it
/// had.
fn rewrite_server(kubeconfig: &str, server: &str) -> (String, String) {
    let mut upstream = None;
    let lines: Vec<String> = kubeconfig
        .lines()
        .map(
            |line| match line.trim_start().strip_prefix("server: https://") {
                Some(host_port) => {
                    upstream = Some(host_port.trim().to_string());
                    let indent = &line[..line.len() - line.trim_start().len()];
                    format!("{indent}server: https://{server}")
                }
                None => line.to_string(),
            },
        )
        .collect();
    let upstream = upstream.expect("a `server: https://…` line in KUBECONFIG");
    (lines.join("\n") + "\n", upstream)
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}
