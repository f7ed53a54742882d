//! Where frames for one connection go: its socket's write side, shared by every task that
//! delivers to it.
//!
//! A frame for a connection is written straight into that connection's socket by the task
//! that has it (usually the sender's connection), without waking the receiving
//! connection's task: that wakeup, and the poll that follows it, cost about as much as the
//! write itself. Only when the socket will not take more does the connection's own task
//! step in: it waits until the socket is writable and writes what waits, and drops a
//! client whose queue overflows or that reads nothing for the idle timeout.
//!
//! Frames pushed inside [`corked`] are written when it ends, so a read's worth of frames
//! for one peer leaves in one write instead of one each.
//!
//! # Why no wakeup is lost
//!
//! Two things tell the connection's task to act, and each is written so that a change can
//! never fall between the task's look and its sleep:
//!
//! - **`attention` and the [`AtomicWaker`].** A writer sets `attention` (Release) *then*
//!   calls `wake`; the task registers its waker *then* loads `attention` (Acquire), in
//!   [`Socket::needs_attention`] and in `Socket::overflowed` (which looks under the lock).
//!   Interleavings: the flag is set before the task's first look: it sees it. Set between
//!   the first look and `register`: the second look sees it. Set after `register`: the
//!   `wake` that follows it finds the registered waker (`AtomicWaker` hands a wake that
//!   races a `register` to the registering side, which then wakes the task itself). The
//!   flag is cleared only by the task, under the queue lock, to exactly what the queue's
//!   state still needs, and every writer that sets it holds the same lock; so a clear
//!   never erases another writer's news.
//! - **The socket's write readiness.** It is dropped only by `try_write` itself returning
//!   `WouldBlock` (tokio's `try_io` clears the readiness event it saw before that write),
//!   never by a guess; the task then waits in `writable()`, which a later readiness event
//!   wakes.
//!
//! **Who writes a non-empty queue** (no bytes may wait with nobody coming to write them):
//! a push that makes the queue non-empty either writes at once, or, inside [`corked`],
//! leaves the outbox on that task's list, which is flushed when `corked` ends, cancelled or
//! not. A push onto a non-empty queue writes nothing: its bytes leave with the ones before
//! them, written by whoever is coming for those, since the queue emptied last: a corked
//! task not yet ended, or the connection's task when `blocked` (it is woken by the
//! `WouldBlock` that set it). All of this happens under the queue lock, so "empty" and
//! "someone is coming" change together. The thread-local spare buffers take part in no
//! wakeup: a buffer is only ever owned by one queue or one reader at a time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use serde::Serialize;
use signalroom_protocol::Event;
use tokio::net::TcpStream;

use crate::spare;
use crate::ws::{self, opcode};

/// The handle the rooms deliver through. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The connection's own end: its socket, and the writes that had to wait.
#[derive(Debug)]
pub struct Socket {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    stream: TcpStream,
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    /// The connection's task, woken when the socket would not take a write, or on overflow.
    waker: AtomicWaker,
    /// Whether the connection's task has to act: the queue is blocked, overflowed or
    /// failed. Kept outside the lock, which the task would otherwise take on every wakeup.
    attention: AtomicBool,
}

/// Framed bytes not yet written. A plain buffer: it holds only what waits, so an idle
/// connection's costs nothing but the struct.
#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    /// The size of each frame in `bytes`, oldest first, for the frame limit.
    frames: VecDeque<usize>,
    /// Bytes of the oldest frame already written.
    head_written: usize,
    /// The socket would not take more: the connection's task writes when it may.
    blocked: bool,
    /// A push was refused for lack of room: the connection must go.
    overflowed: bool,
    /// Writing failed: the connection is broken.
    failed: bool,
    /// A close frame is queued: nothing follows it.
    closing: bool,
    /// The connection is gone: pushes are dropped.
    closed: bool,
}

/// Room for frame sizes a queue keeps when it empties.
const FRAME_SIZES_KEPT: usize = 8;

/// What stopped a connection's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The queue overflowed: the client does not read.
    Overflowed,
    /// The socket took nothing for the given time: the client does not read.
    Stalled,
    /// The socket failed.
    Failed,
}

impl Outbox {
    /// An outbox writing to `stream`, holding up to `max_frames` frames and `max_bytes`
    /// bytes while the socket will not take them; and the connection's end of it.
    pub fn new(stream: TcpStream, max_frames: usize, max_bytes: usize) -> (Self, Socket) {
        let shared = Arc::new(Shared {
            stream,
            queue: Mutex::new(Queue::default()),
            max_frames,
            max_bytes,
            waker: AtomicWaker::new(),
            attention: AtomicBool::new(false),
        });
        (
            Self {
                shared: shared.clone(),
            },
            Socket { shared },
        )
    }

    /// Queues a text frame; false if the queue is full and the connection must go.
    pub fn push_text(&self, text: &str) -> bool {
        self.push(opcode::TEXT, text.as_bytes())
    }

    /// Queues `event`, serialized, for this connection only.
    pub fn send<D: Serialize>(&self, event: &Event<D>) -> bool {
        self.push_text(&encode(event))
    }

    /// Queues a close frame: the connection sends it and stops.
    pub fn push_close(&self, code: u16, reason: &str) -> bool {
        self.push(opcode::CLOSE, &ws::close_payload(code, reason))
    }

    /// Queues a ping.
    pub fn push_ping(&self) -> bool {
        self.push(opcode::PING, &[])
    }

    /// Queues the answer to a ping.
    pub fn push_pong(&self, payload: &[u8]) -> bool {
        self.push(opcode::PONG, payload)
    }

    fn push(&self, kind: u8, payload: &[u8]) -> bool {
        let size = ws::header_len(payload.len()) + payload.len();
        let mut queue = self.shared.lock();
        if queue.closed || queue.closing || queue.failed {
            // The connection is already ending; its disconnect cleans up.
            return true;
        }
        if queue.frames.len() >= self.shared.max_frames
            || queue.bytes.len() + size > self.shared.max_bytes
        {
            queue.overflowed = true;
            self.shared.attention.store(true, Ordering::Release);
            drop(queue);
            self.shared.waker.wake();
            return false;
        }
        let first = queue.bytes.is_empty();
        if queue.bytes.capacity() == 0 {
            queue.bytes = spare::take();
        }
        ws::encode(&mut queue.bytes, kind, payload);
        queue.frames.push_back(size);
        queue.closing = kind == opcode::CLOSE;
        // A queue that held bytes already has a writer coming: a corked task, or the
        // connection's task waiting for the socket.
        if first && !defer(self) {
            self.shared.write(&mut queue);
        }
        true
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// Writes what waits, unless the connection's task is waiting for the socket to.
    fn flush(&self) {
        let mut queue = self.lock();
        if !queue.blocked {
            self.write(&mut queue);
        }
    }

    /// Writes queued bytes until they are out or the socket would block. The queue stays
    /// locked meanwhile, so writers from different tasks never interleave.
    fn write(&self, queue: &mut Queue) {
        while !queue.bytes.is_empty() {
            match self.stream.try_write(&queue.bytes) {
                Ok(written) if written > 0 => queue.written(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    queue.blocked = true;
                    self.attention.store(true, Ordering::Release);
                    self.waker.wake();
                    return;
                }
                Ok(_) | Err(_) => {
                    queue.failed = true;
                    queue.release();
                    self.attention.store(true, Ordering::Release);
                    self.waker.wake();
                    return;
                }
            }
        }
        // Written out: an idle connection keeps no buffers.
        queue.release();
    }
}

impl Queue {
    /// Drops what waits and gives the buffers back. The few frame sizes a busy connection
    /// tracks keep their room.
    fn release(&mut self) {
        spare::give(std::mem::take(&mut self.bytes));
        if self.frames.capacity() > FRAME_SIZES_KEPT {
            self.frames = VecDeque::new();
        } else {
            self.frames.clear();
        }
        self.head_written = 0;
    }

    /// Drops the first `n` bytes, which the socket took.
    fn written(&mut self, n: usize) {
        if n == self.bytes.len() {
            self.bytes.clear();
            self.frames.clear();
            self.head_written = 0;
            return;
        }
        self.bytes.drain(..n);
        let mut done = self.head_written + n;
        while let Some(&size) = self.frames.front() {
            if done < size {
                break;
            }
            done -= size;
            self.frames.pop_front();
        }
        self.head_written = done;
    }

    fn trouble(&self) -> Option<WriteError> {
        if self.overflowed {
            Some(WriteError::Overflowed)
        } else if self.failed {
            Some(WriteError::Failed)
        } else {
            None
        }
    }
}

impl Socket {
    /// The connection's stream, for reading.
    pub fn stream(&self) -> &TcpStream {
        &self.shared.stream
    }

    /// Completes when the stream has bytes to read (or has closed). Waits in the stream's
    /// one reader slot rather than in its list of waiters: only this task reads.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.shared.stream.poll_read_ready(cx)).await
    }

    /// Completes when the connection's task has to act on its writes: the socket would not
    /// take them, the queue overflowed, or writing failed.
    pub async fn needs_attention(&self) {
        std::future::poll_fn(|cx| {
            if self.shared.attention.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            // Registered before looking again, so a change in between still wakes us.
            self.shared.waker.register(cx.waker());
            if self.shared.attention.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Writes what waits as the socket takes it. Fails when the queue overflows meanwhile,
    /// or when the socket takes nothing for `stall`.
    pub async fn write_waiting(&self, stall: std::time::Duration) -> Result<(), WriteError> {
        loop {
            {
                let queue = self.shared.lock();
                if let Some(error) = queue.trouble() {
                    return Err(error);
                }
                if !queue.blocked {
                    return Ok(());
                }
            }
            tokio::select! {
                biased;
                () = self.overflowed() => return Err(WriteError::Overflowed),
                ready = tokio::time::timeout(stall, self.shared.stream.writable()) => match ready {
                    Err(_) => return Err(WriteError::Stalled),
                    Ok(Err(_)) => return Err(WriteError::Failed),
                    Ok(Ok(())) => {
                        let mut queue = self.shared.lock();
                        queue.blocked = false;
                        let trouble = queue.trouble().is_some();
                        self.shared.attention.store(trouble, Ordering::Release);
                        self.shared.write(&mut queue);
                    }
                },
            }
        }
    }

    /// Writes what is still queued (a close frame, a last error), giving up after `within`.
    pub async fn write_last(&self, within: std::time::Duration) -> Result<(), WriteError> {
        self.shared.flush();
        self.write_waiting(within).await
    }

    async fn overflowed(&self) {
        std::future::poll_fn(|cx| {
            self.shared.waker.register(cx.waker());
            if self.shared.lock().overflowed {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.closed = true;
        queue.release();
    }
}

tokio::task_local! {
    /// Outboxes that became non-empty inside [`corked`], to write when it ends.
    static CORKED: RefCell<Vec<Outbox>>;
}

/// Runs `work`, holding back the writes it causes until it is done: each outbox it pushed
/// to is then written once, with everything queued.
pub async fn corked<F: Future>(work: F) -> F::Output {
    CORKED
        .scope(RefCell::new(Vec::new()), async {
            // Written on the way out even if `work` is dropped half-way: a queue left with
            // bytes and no writer would never be written again.
            let _uncork = Uncork;
            work.await
        })
        .await
}

/// Writes the corked outboxes when dropped.
struct Uncork;

impl Drop for Uncork {
    fn drop(&mut self) {
        let held = CORKED
            .try_with(|corked| std::mem::take(&mut *corked.borrow_mut()))
            .unwrap_or_default();
        for outbox in held {
            outbox.shared.flush();
        }
    }
}

/// Leaves `outbox` to be written when the surrounding [`corked`] ends; false outside one.
fn defer(outbox: &Outbox) -> bool {
    CORKED
        .try_with(|corked| corked.borrow_mut().push(outbox.clone()))
        .is_ok()
}

/// Locks `mutex`. The data behind the relay's mutexes is consistent at every step, so a
/// lock poisoned by a panic elsewhere is safe to keep using.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serializes an event.
pub fn encode<D: Serialize>(event: &Event<D>) -> String {
    // Our own types, with string keys only: serializing cannot fail.
    serde_json::to_string(event).expect("events always serialize")
}
