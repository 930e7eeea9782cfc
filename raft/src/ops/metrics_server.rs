//! The metrics endpoint: `GET /metrics` over plain HTTP/1.1 on
//! `--metrics-listen`. One route, one response per connection: a few lines
//! of our own rather than an HTTP stack in a daemon that serves nothing else.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cluster::node::Node;

/// A scrape request is one short header block.
const MAX_REQUEST: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub async fn bind(addr: &str) -> anyhow::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub async fn serve(self, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(&node, stream).await {
                            tracing::debug!(error = %e, "metrics connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reads the request head and answers it.
async fn answer(node: &Node, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_REQUEST {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    };
    let complete = tokio::time::timeout(READ_TIMEOUT, read_head)
        .await
        .unwrap_or(Ok(false))?;
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (status, content_type, body) = match (complete, parts.next(), parts.next()) {
        (true, Some("GET"), Some("/metrics")) => {
            ("200 OK", CONTENT_TYPE, node.metrics.render(node))
        }
        (true, Some("GET"), Some(_)) => (
            "404 Not Found",
            "text/plain",
            "ipkeepd serves /metrics only\n".into(),
        ),
        (true, Some(_), _) => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
        _ => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
