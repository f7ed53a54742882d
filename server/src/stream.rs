//! The byte stream a WebSocket is framed on: the client's TCP connection itself, or, for a
//! connection that came in over TLS, the relay's end of a local socket pair whose other end
//! a [`crate::tls`] pump task encrypts to the client.
//!
//! Both are kernel sockets with the same readiness model, so [`crate::ws`] and
//! [`crate::outbox`] read, write and wait on either the same way, and what they argue about
//! wakeups holds for both: this type only forwards each call to the socket it holds.

use std::io;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// A connected socket the relay frames a WebSocket on.
#[derive(Debug)]
pub enum Stream {
    /// The client's own TCP connection.
    Tcp(TcpStream),
    /// The relay's end of a socket pair to a TLS pump.
    Pipe(UnixStream),
}

macro_rules! each {
    ($stream:expr, $s:ident => $call:expr) => {
        match $stream {
            Stream::Tcp($s) => $call,
            Stream::Pipe($s) => $call,
        }
    };
}

impl Stream {
    /// Runs `f`, a non-blocking call on the socket, clearing the readiness event it saw
    /// if it returns `WouldBlock` (tokio's `try_io`).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        each!(self, s => s.try_io(interest, f))
    }

    /// Reads what the socket has into the spare capacity of `buf`, without waiting.
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        each!(self, s => s.try_read_buf(buf))
    }

    /// Writes what the socket takes of `buf`, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(buf))
    }

    /// Polls for read readiness, in the socket's one reader slot.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read_ready(cx))
    }

    /// Completes when the socket may take a write.
    pub async fn writable(&self) -> io::Result<()> {
        each!(self, s => s.writable().await)
    }

    /// Closes the writing half (a FIN, or end of stream to the pump); reading goes on.
    pub fn shut_writes(&self) -> io::Result<()> {
        each!(self, s => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write))
    }
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Self {
        Self::Tcp(stream)
    }
}
