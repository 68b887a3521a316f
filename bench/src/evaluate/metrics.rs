//! Reads one counter off a node's Prometheus page.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BenchError;

/// The value of an unlabelled metric, or 0 when the page lacks it.
pub async fn metric(address: SocketAddr, name: &str) -> Result<f64, BenchError> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| BenchError::io(format!("connecting to {address}/metrics"), e))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| BenchError::io(format!("asking {address} for /metrics"), e))?;
    let mut page = String::new();
    stream
        .read_to_string(&mut page)
        .await
        .map_err(|e| BenchError::io(format!("reading {address}/metrics"), e))?;
    Ok(page
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0))
}
