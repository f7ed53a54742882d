//! The bare forwarder: the least any WebSocket forwarder can do for this work, so its
//! throughput is the machine's ceiling for it. It pairs connections in arrival order and,
//! per wakeup, reads what one client sent, unmasks each frame, frames it as a server frame
//! and writes it all to the partner in one write: no validation, no ids, no rooms, no
//! limits. A task per direction; nothing is queued that the socket will not take.

use std::io;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use signalroom_wsframe::{apply_mask, Header};
use tokio::net::{TcpListener, TcpStream};

/// Serves forever on `listener`.
pub async fn run(listener: TcpListener) -> Result<()> {
    let mut waiting: Option<Arc<TcpStream>> = None;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        if upgrade(&stream).await.is_err() {
            continue;
        }
        match waiting.take() {
            None => waiting = Some(stream),
            Some(first) => {
                tokio::spawn(forward(first.clone(), stream.clone()));
                tokio::spawn(forward(stream, first));
            }
        }
    }
}

/// Reads the upgrade request and accepts it. The load generator always sends the same
/// key, so the answer is fixed.
async fn upgrade(stream: &TcpStream) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 || read_some(stream, &mut head).await? == 0 {
            bail!("no upgrade request");
        }
    }
    write_all(
        stream,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await?;
    Ok(())
}

/// Forwards every frame `from` sends to `to` until either side goes.
async fn forward(from: Arc<TcpStream>, to: Arc<TcpStream>) -> Result<()> {
    let mut input = Vec::with_capacity(16 * 1024);
    let mut output = Vec::with_capacity(16 * 1024);
    loop {
        if read_some(&from, &mut input).await? == 0 {
            return Ok(());
        }
        let used = reframe(&mut input, &mut output)?;
        input.drain(..used);
        write_all(&to, &output).await?;
        output.clear();
    }
}

/// Appends the whole client frames at the start of `input` to `output` as server frames;
/// returns the bytes of `input` they took.
fn reframe(input: &mut [u8], output: &mut Vec<u8>) -> Result<usize> {
    let mut at = 0;
    loop {
        let Some((header, size)) = Header::parse(&input[at..])? else {
            return Ok(at);
        };
        let mask = header.mask.context("unmasked client frame")?;
        let len = usize::try_from(header.len)?;
        let Some(payload) = input.get_mut(at + size..at + size + len) else {
            return Ok(at);
        };
        apply_mask(payload, mask);
        Header {
            mask: None,
            ..header
        }
        .write(output);
        output.extend_from_slice(payload);
        at += size + len;
    }
}

/// Reads what `stream` has into the end of `buf`, waiting for some; 0 when it closed.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(4096);
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
