//! The byte stream a WebSocket is framed on: the client's TCP connection, in the clear or
//! through its TLS session ([`TlsSocket`]).
//!
//! Both are read, written and waited on the same way, through the TCP socket's readiness,
//! so [`crate::ws`] and [`crate::outbox`] treat them alike and what they argue about
//! wakeups holds for both. What TLS adds: ciphertext can wait in the session after its
//! plaintext was taken ([`Stream::try_flush`]), and reading can make the session want to
//! write ([`Stream::output_waiting`]).

use std::io;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::tls::TlsSocket;

/// A connected socket the relay frames a WebSocket on.
#[derive(Debug)]
pub enum Stream {
    /// The client's own TCP connection.
    Tcp(TcpStream),
    /// The client's TCP connection through its TLS session (boxed: the session is a
    /// kilobyte a plain connection need not carry).
    Tls(Box<TlsSocket>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(tcp) => tcp,
            Self::Tls(tls) => tls.tcp(),
        }
    }

    /// Runs `f`, a non-blocking call on the socket, clearing the readiness event it saw
    /// if it returns `WouldBlock` (tokio's `try_io`).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        self.tcp().try_io(interest, f)
    }

    /// Reads what the socket has into the spare capacity of `buf`, without waiting. Fewer
    /// bytes than there was room for means the socket had no more.
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Self::Tcp(tcp) => tcp.try_read_buf(buf),
            Self::Tls(tls) => tls.try_read_buf(buf),
        }
    }

    /// Writes what the socket takes of `buf`, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(tcp) => tcp.try_write(buf),
            Self::Tls(tls) => tls.try_write(buf),
        }
    }

    /// Writes what the stream itself still holds of bytes already taken (TLS records);
    /// `WouldBlock` while some wait for the socket.
    pub fn try_flush(&self) -> io::Result<()> {
        match self {
            Self::Tcp(_) => Ok(()),
            Self::Tls(tls) => tls.try_flush(),
        }
    }

    /// Whether reading left bytes of the stream's own to write (a TLS alert or key update).
    pub fn output_waiting(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            Self::Tls(tls) => tls.output_waiting(),
        }
    }

    /// Polls for read readiness, in the socket's one reader slot.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    /// Completes when the socket may take a write.
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp().writable().await
    }

    /// Closes the writing half (a FIN; over TLS, `close_notify` first); reading goes on.
    pub fn shut_writes(&self) -> io::Result<()> {
        if let Self::Tls(tls) = self {
            tls.send_close_notify();
        }
        socket2::SockRef::from(self.tcp()).shutdown(std::net::Shutdown::Write)
    }
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Self {
        Self::Tcp(stream)
    }
}
