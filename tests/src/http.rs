//! HTTP/1.1 requests over a bare TCP connection, with the headers a test chooses and the
//! answer as it came: its status, its headers and its body's bytes.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::PATIENCE;

/// An HTTP answer as the relay sent it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body as sent, still encoded (`Content-Encoding`).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (any case), if it came.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET path` with `headers` (and `Host`, `Connection: close`) to the relay at
/// `addr` and reads the answer to its end.
pub async fn http_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    http_exchange(addr, head.as_bytes()).await
}

/// Writes `request` (a whole request head, as bytes) to the relay at `addr` and reads the
/// answer until the relay closes the connection.
pub async fn http_exchange(addr: SocketAddr, request: &[u8]) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    // The relay may answer and close before it has read all of an oversize head: what it
    // sent still arrives.
    let _ = stream.write_all(request).await;
    let mut raw = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => {}
        // A reset after the answer was sent, when the client had written more than was read.
        Ok(Err(_)) if !raw.is_empty() => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => bail!("no answer within {PATIENCE:?}"),
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP head")?;
    let head = std::str::from_utf8(&raw[..end]).context("the head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').context("a header without a colon")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut body = raw[end + 4..].to_vec();
    let response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().context("a bad Content-Length")?;
        if body.len() < length {
            bail!("the body ended after {} of {length} bytes", body.len());
        }
        body.truncate(length);
    } else if response.header("transfer-encoding") == Some("chunked") {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse { body, ..response })
}

fn dechunk(mut chunked: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = std::str::from_utf8(&chunked[..line_end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)?;
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(chunked.get(..size).context("a short chunk")?);
        chunked = chunked.get(size + 2..).context("a chunk without its end")?;
    }
}
