//! Just enough of a WebSocket client for the load generator: the upgrade, prebuilt masked
//! text frames, and a reader that finds frame boundaries without copying or unmasking.
//!
//! The generator shares the cores with the server it measures, so every microsecond it
//! spends is one the server does not get. A general client (tungstenite) masks each frame
//! as it sends it and hands each received frame over as an owned message; here a frame is
//! masked once when built and received frames are only counted.

use std::ops::Range;

use anyhow::{bail, ensure, Context, Result};
use signalroom_wsframe::{apply_mask, Header, OpCode};
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A client connection past the upgrade.
pub struct Conn {
    stream: Io,
    /// Received bytes not yet taken as frames: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
}

/// A frame the server sent, as far as the generator cares.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Text,
    Close,
    Other,
}

/// How the relay's `ack` to a resumable session begins.
const RELAY_ACK: &[u8] = br#"{"type":"ack""#;

/// Bytes read per call: many small frames at once.
const READ_CHUNK: usize = 16 * 1024;

impl Conn {
    /// Upgrades `stream` to a WebSocket at `ws://{host}{path}` (or `wss://`).
    pub async fn upgrade(mut stream: Io, host: &str, path: &str) -> Result<Self> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut conn = Self {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        };
        let end = loop {
            if let Some(at) = conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(conn.buf.len() < 8192, "response head too long");
            conn.fill().await?;
        };
        let head = String::from_utf8_lossy(&conn.buf[..end]);
        ensure!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        );
        conn.start = end;
        Ok(conn)
    }

    /// Sends prebuilt frames (see [`text_frame`]).
    pub async fn send(&mut self, frames: &[u8]) -> Result<()> {
        self.stream.write_all(frames).await?;
        // Over TLS, what the socket did not take yet waits in the session until flushed.
        self.stream.flush().await?;
        Ok(())
    }

    /// Waits for a text frame and returns its text.
    pub async fn next_text(&mut self) -> Result<String> {
        loop {
            if let Some(payload) = self.take_text()? {
                return Ok(String::from_utf8(self.buf[payload].to_vec())?);
            }
            self.fill().await?;
        }
    }

    /// Waits for at least one text frame; returns how many arrived (all that one read
    /// brought).
    pub async fn texts(&mut self) -> Result<usize> {
        loop {
            let mut texts = 0;
            while self.take_text()?.is_some() {
                texts += 1;
            }
            if texts > 0 {
                return Ok(texts);
            }
            self.fill().await?;
        }
    }

    /// Where the next complete text frame's payload lies in the buffer, skipping pings and
    /// pongs.
    fn take_text(&mut self) -> Result<Option<Range<usize>>> {
        loop {
            match self.take_frame()? {
                None => return Ok(None),
                Some((Frame::Close, _)) => bail!("closed by the server"),
                Some((Frame::Other, _)) => {}
                // A resumable session's acknowledgements are the session's, not the load's.
                Some((Frame::Text, payload))
                    if self.buf[payload.clone()].starts_with(RELAY_ACK) => {}
                Some((Frame::Text, payload)) => return Ok(Some(payload)),
            }
        }
    }

    /// Reads what the socket has, keeping an incomplete frame's bytes.
    async fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let read = self.stream.read_buf(&mut self.buf).await?;
        ensure!(read > 0, "connection closed");
        Ok(())
    }

    /// The next complete frame in the buffer and where its payload lies, if there is one.
    fn take_frame(&mut self) -> Result<Option<(Frame, Range<usize>)>> {
        let Some((header, size)) = Header::parse(&self.buf[self.start..])? else {
            return Ok(None);
        };
        ensure!(header.mask.is_none(), "server frames are never masked");
        let start = self.start + size;
        let end = start + usize::try_from(header.len).context("frame length")?;
        if self.buf.len() < end {
            return Ok(None);
        }
        let frame = match header.opcode {
            OpCode::Text => Frame::Text,
            OpCode::Close => Frame::Close,
            OpCode::Continuation | OpCode::Binary | OpCode::Ping | OpCode::Pong => Frame::Other,
        };
        self.start = end;
        Ok(Some((frame, start..end)))
    }
}

/// A masked client text frame carrying `text`, ready to send any number of times.
pub fn text_frame(text: &str) -> Vec<u8> {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];
    let header = Header::client(OpCode::Text, MASK, text.len());
    let mut frame = Vec::with_capacity(header.size() + text.len());
    header.write(&mut frame);
    let at = frame.len();
    frame.extend_from_slice(text.as_bytes());
    apply_mask(&mut frame[at..], MASK);
    frame
}

/// A client's socket: plain TCP, or TLS over it.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
