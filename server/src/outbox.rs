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
//! # Pushing and writing are apart
//!
//! A push ([`Outbox::push_text`] and the rest) only queues a frame: it never makes a
//! syscall, so the rooms backend may push while it holds its lock. The push that finds a
//! queue empty names the outbox in the caller's [`Batch`]; [`Batch::flush`] then writes
//! each named outbox once, with everything queued meanwhile, so a read's worth of frames
//! for one peer leaves in one write. `flush` takes the batch by value and the rooms
//! backend is only ever lent one (`&mut Batch`), so it cannot flush: no write happens under
//! the rooms lock, by construction. The lock order is rooms, then an outbox's queue; the
//! queue's lock is held across its socket write, so writers never interleave frames.
//!
//! # Why no wakeup is lost
//!
//! Two things tell the connection's task to act, and each is written so that a change can
//! never fall between the task's look and its sleep:
//!
//! - **`attention` and the [`AtomicWaker`].** `attention` mirrors whether the queue's
//!   `State` needs the task, and is written only by `Shared::set`, under the queue lock,
//!   together with the state (Release), *then* `wake` is called. The task registers its
//!   waker *then* loads `attention` (Acquire), in [`Socket::needs_attention`], and in
//!   `Socket::overflowed`, which looks at the state under the lock. Interleavings: the
//!   state changes before the task's first look: it sees it. Between the first look and
//!   `register`: the second look sees it. After `register`: the `wake` that follows finds
//!   the registered waker (an `AtomicWaker` hands a wake that races a `register` to the
//!   registering side, which then wakes the task itself).
//! - **The socket's write readiness.** It is dropped only by `try_write` itself returning
//!   `WouldBlock` (tokio's `try_io` clears the readiness event it saw before that write),
//!   never by a guess; the task then waits in `writable()`, which a later readiness event
//!   wakes.
//!
//! **Who writes a non-empty queue** (no bytes may wait with nobody coming for them): the
//! state says, as `Writer`. A push onto an empty queue makes it `Writer::Batch` and names
//! the outbox in its batch, whose flush writes it. A batch dropped unflushed (its task was
//! cancelled) hands each of its queues to the connection's own task (`Writer::Task`) and
//! wakes it: no I/O in a destructor, and nothing stranded. A write the socket will not
//! take makes it `Writer::Task`; the task writes once the socket is writable. A push onto
//! a non-empty queue leaves the writer as it is: its frame leaves with the frames before
//! it. All of this happens under the queue lock, so "bytes wait" and "someone is coming"
//! change together. The thread-local spare buffers take part in no wakeup: a buffer is
//! owned by one queue or one reader at a time.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use serde::Serialize;
use signalroom_protocol::Event;
use signalroom_wsframe::{self as wsframe, CloseCode, OpCode};

use crate::metrics::{self, Counter};
use crate::spare;
use crate::stream::Stream;

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an overflowed outbox's member must be taken out of its room"]
pub enum Push {
    /// The frame is queued, to be written in order.
    Queued,
    /// The connection is ending (a close frame is queued, or it broke): the frame is
    /// dropped, and the connection's end cleans up.
    Ignored,
    /// The queue was full: the frame is dropped and the connection must go.
    Overflowed,
}

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
    /// `None` for an away session's outbox, which only keeps frames ([`Outbox::detached`]).
    stream: Option<Stream>,
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    /// The connection's task, woken when its queue's state needs it.
    waker: AtomicWaker,
    /// Whether the queue's state needs the connection's task ([`State::needs_task`]),
    /// readable without the lock, which the task would otherwise take on every wakeup.
    attention: AtomicBool,
}

/// Framed bytes not yet written. A plain buffer: it holds only what waits, so an idle
/// connection's costs nothing but the struct.
#[derive(Debug)]
struct Queue {
    bytes: Vec<u8>,
    /// The size of each frame in `bytes`, oldest first, for the frame limit.
    frames: VecDeque<usize>,
    /// Bytes of the oldest frame already written.
    head_written: usize,
    state: State,
    /// A resumable connection's counted frames, kept until the client acknowledges them.
    retention: Option<Box<Retention>>,
    /// How many of the last frames in `frames` a resumable connection queued since its
    /// retention last took its copies ([`Queue::settle`]); their counted ones are marked
    /// [`COUNTED`].
    unsettled: usize,
}

/// Marks, in a queue's `frames`, a counted frame whose text the retention has not yet
/// copied.
const COUNTED: usize = 1 << (usize::BITS - 1);

/// Bytes a session's retention holds in a buffer of its own size before it takes one from
/// the thread's stock.
const RETAINED_SMALL: usize = 1024;

/// What a resumable session keeps of the counted frames it was sent (every text frame but
/// `ack` and `resumed`), from the first its client has not acknowledged: they go out again
/// after a resume.
///
/// A frame is counted, and its room reserved, when it is pushed ([`Retention::reserve`]);
/// its text is copied in when its queue settles ([`Queue::settle`]): before the queue
/// writes any of it, drops it (a failed write, an overflow, the socket's end), or hands the
/// retention over. So the copy is made outside the rooms lock (by the flush), the frames go
/// in in the queue's order, and a frame the client may have received is always in.
///
/// Bounded in bytes and frames; empty once the client's `ack` covers what it was sent, and
/// its buffer back in the thread's stock at the next heartbeat after that
/// ([`Retention::rest`]): a busy session keeps it from one `ack` to the next.
///
/// A frame that grants the session a new key (`created`, `joined`) is counted but not
/// kept, and neither is anything before it: a client can only resume with that key, so a
/// client that resumes has received that frame, and, the stream being in order, every
/// frame before it.
#[derive(Debug)]
pub struct Retention {
    /// Counted frames pushed in the session so far.
    sent: u64,
    /// Of those, the last ones reserved but not copied in yet, and their bytes.
    pending: u32,
    pending_bytes: usize,
    /// The text of the counted frames after the client's acknowledged count, oldest
    /// first: one ring buffer, so keeping a frame is a copy, not an allocation (but for the
    /// first few bytes after the session was last empty), and forgetting one moves nothing.
    text: VecDeque<u8>,
    /// Each kept frame's length, oldest first: apart from the text, so that an
    /// acknowledgement reads one or two cache lines, not one per frame.
    sizes: VecDeque<u32>,
    max_bytes: u32,
    max_frames: u32,
}

impl Retention {
    /// Keeps up to `max_bytes` of text in up to `max_frames` frames.
    pub fn new(max_bytes: usize, max_frames: usize) -> Box<Self> {
        Box::new(Self {
            sent: 0,
            pending: 0,
            pending_bytes: 0,
            text: VecDeque::new(),
            sizes: VecDeque::new(),
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            max_frames: u32::try_from(max_frames).unwrap_or(u32::MAX),
        })
    }

    /// An empty retention whose session had already been sent `sent` counted frames (one
    /// that comes from another relay).
    pub fn continuing(sent: u64, max_bytes: usize, max_frames: usize) -> Box<Self> {
        let mut retention = Self::new(max_bytes, max_frames);
        retention.sent = sent;
        retention
    }

    /// Counted frames pushed in the session so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Counts and keeps each of `frames` after what it keeps; false as soon as one does
    /// not fit.
    pub fn keep_all<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> bool {
        frames.into_iter().all(|frame| self.keep(frame))
    }

    /// Counts and keeps `text`; false, keeping nothing, when it does not fit.
    fn keep(&mut self, text: &[u8]) -> bool {
        self.reserve(text.len()) && {
            self.settle(text);
            true
        }
    }

    /// Counts a frame of `len` bytes and reserves its room, for [`Retention::settle`] to
    /// copy it in; false, counting nothing, when it does not fit.
    fn reserve(&mut self, len: usize) -> bool {
        if u32::try_from(len).is_err()
            || self.sizes.len() + self.pending as usize >= self.max_frames as usize
            || self.bytes() + len > self.max_bytes as usize
        {
            return false;
        }
        self.sent += 1;
        self.pending += 1;
        self.pending_bytes += len;
        true
    }

    /// Copies in the text of the oldest frame reserved and not copied yet.
    fn settle(&mut self, text: &[u8]) {
        debug_assert!(self.pending > 0, "a frame settled without a reservation");
        self.pending = self.pending.saturating_sub(1);
        self.pending_bytes = self.pending_bytes.saturating_sub(text.len());
        // Fits in a u32: `reserve` checked.
        let size = text.len() as u32;
        let want = self.text.len() + text.len();
        if want > self.text.capacity()
            && want > RETAINED_SMALL
            && self.text.capacity() < spare::SIZE
        {
            // Busy: a buffer from the thread's stock, reused from one ack to the next. A
            // session that keeps a frame or two (at rest until the next ack) holds just
            // their bytes.
            let mut bigger = spare::take();
            let (first, second) = self.text.as_slices();
            bigger.extend_from_slice(first);
            bigger.extend_from_slice(second);
            self.text = VecDeque::from(bigger);
        }
        self.text.extend(text);
        self.sizes.push_back(size);
    }

    /// Counts a frame that grants the session a new key, and forgets every frame kept:
    /// a client that resumes has them all (see [`Retention`]). Nothing may be pending (the
    /// queue settles first).
    fn granted(&mut self) {
        debug_assert_eq!(
            self.pending, 0,
            "a grant before the frames ahead were settled"
        );
        self.sent += 1;
        self.forget_all();
    }

    /// Forgets what the client's count `received` covers; false for a count beyond what
    /// was sent, which changes nothing.
    fn ack(&mut self, received: u64) -> bool {
        if received > self.sent {
            return false;
        }
        // A client cannot have received a frame not copied in yet: none of its bytes were
        // written. Defensively, such a count forgets only what is in.
        let settled = self.sent - u64::from(self.pending);
        let received = received.min(settled);
        if received == settled {
            // All of it (the usual case): the buffers stay, for the frames to come, until
            // the session rests ([`Retention::rest`]).
            self.text.clear();
            self.sizes.clear();
            return true;
        }
        let first_kept = settled - self.sizes.len() as u64;
        let mut acknowledged = 0;
        for _ in first_kept..received {
            if let Some(size) = self.sizes.pop_front() {
                acknowledged += size as usize;
            }
        }
        self.text.drain(..acknowledged);
        true
    }

    /// Hands the buffers back if nothing is kept: called at each heartbeat, so a session
    /// that goes quiet holds none from the next one on, while a busy one keeps its buffer
    /// from one acknowledgement to the next instead of growing a new one each time.
    fn rest(&mut self) {
        if self.sizes.is_empty() && (self.text.capacity() > 0 || self.sizes.capacity() > 0) {
            self.forget_all();
        }
    }

    /// Keeps nothing: at rest a session holds no buffer.
    fn forget_all(&mut self) {
        let mut text = std::mem::take(&mut self.text);
        // Emptied, the ring starts at its buffer's start: handing the buffer back moves
        // nothing.
        text.clear();
        spare::give(Vec::from(text));
        self.sizes = VecDeque::new();
    }

    /// The kept frames, oldest first: each the text of one frame, all of them once the
    /// retention is out of its queue ([`Outbox::take_retention`] settles it). (Lines the
    /// ring up in its buffer first: for a resume or a handover, not per frame.)
    pub fn frames(&mut self) -> impl Iterator<Item = &[u8]> {
        debug_assert_eq!(self.pending, 0, "frames read before the queue settled");
        let text = &*self.text.make_contiguous();
        let mut at = 0;
        self.sizes.iter().map(move |&size| {
            let frame = &text[at..at + size as usize];
            at += size as usize;
            frame
        })
    }

    /// Bytes of text kept, or reserved to be.
    pub fn bytes(&self) -> usize {
        self.text.len() + self.pending_bytes
    }
}

/// What a resumable connection's retention does with a counted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Keeps it until the client acknowledges it.
    Kept,
    /// It grants the session a new key: forgets it and everything before it.
    Granting,
}

/// Whether a queue takes frames, and who writes those that wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Frames are taken.
    Open(Writer),
    /// A close frame is queued, the last: nothing more is taken.
    Closing(Writer),
    /// As `Closing`, but queued by the relay for a connection whose task does not know yet:
    /// the task is to end the connection.
    Ended(Writer),
    /// The connection must go: nothing more is taken or written.
    Broken(WriteError),
    /// The connection's task has finished with the socket: nothing more is taken.
    Closed,
}

/// Who writes the bytes that wait in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Nothing waits.
    Nobody,
    /// The batch that queued the first waiting frame writes them all when flushed.
    Batch,
    /// The socket would not take more: the connection's task writes once it is writable.
    Task,
}

impl State {
    fn writer(self) -> Option<Writer> {
        match self {
            Self::Open(writer) | Self::Closing(writer) | Self::Ended(writer) => Some(writer),
            Self::Broken(_) | Self::Closed => None,
        }
    }

    /// The same state with another writer.
    fn written_by(self, writer: Writer) -> Self {
        match self {
            Self::Open(_) => Self::Open(writer),
            Self::Closing(_) => Self::Closing(writer),
            Self::Ended(_) => Self::Ended(writer),
            other => other,
        }
    }

    /// Whether the connection's task has to act.
    fn needs_task(self) -> bool {
        self.writer() == Some(Writer::Task) || matches!(self, Self::Broken(_) | Self::Ended(_))
    }
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

/// Outboxes whose queues a caller's pushes made non-empty, to be written by
/// [`Batch::flush`] once the caller holds no lock but theirs.
#[derive(Debug, Default)]
#[must_use = "frames pushed through a batch are written when it is flushed"]
pub struct Batch {
    due: Vec<Outbox>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes each outbox this batch queued the first waiting frame of, with every frame
    /// queued since. Taking the batch by value keeps this out of the rooms backend, which
    /// is only lent batches: it never runs under the rooms lock.
    pub fn flush(mut self) {
        for outbox in self.due.drain(..) {
            outbox.shared.write_for_batch();
        }
    }
}

impl Drop for Batch {
    /// A batch dropped unflushed hands its queues to their connections' tasks, which
    /// write them once woken: no write here.
    fn drop(&mut self) {
        for outbox in self.due.drain(..) {
            let mut queue = outbox.shared.lock();
            if queue.state.writer() == Some(Writer::Batch) {
                let state = queue.state.written_by(Writer::Task);
                outbox.shared.set(&mut queue, state);
            }
        }
    }
}

impl Outbox {
    /// An outbox writing to `stream`, holding up to `max_frames` frames and `max_bytes`
    /// bytes while the socket will not take them; and the connection's end of it.
    pub fn new(stream: Stream, max_frames: usize, max_bytes: usize) -> (Self, Socket) {
        let shared = Arc::new(Shared {
            stream: Some(stream),
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                frames: VecDeque::new(),
                head_written: 0,
                state: State::Open(Writer::Nobody),
                retention: None,
                unsettled: 0,
            }),
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

    /// The outbox of a session whose connection is gone: it writes nothing and keeps the
    /// counted frames pushed to it in `retention`, until a resume takes them
    /// ([`Outbox::take_retention`]). A frame that does not fit overflows it.
    pub fn detached(retention: Box<Retention>) -> Self {
        Self {
            shared: Arc::new(Shared {
                stream: None,
                queue: Mutex::new(Queue {
                    bytes: Vec::new(),
                    frames: VecDeque::new(),
                    head_written: 0,
                    state: State::Closed,
                    retention: Some(retention),
                    unsettled: 0,
                }),
                max_frames: 0,
                max_bytes: 0,
                waker: AtomicWaker::new(),
                attention: AtomicBool::new(false),
            }),
        }
    }

    /// Whether `self` and `other` are the same outbox.
    pub fn same(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Makes the connection resumable: from now on its counted frames are kept in
    /// `retention` until acknowledged.
    pub fn retain(&self, retention: Box<Retention>) {
        let mut queue = self.shared.lock();
        // Frames queued before count for the retention they were queued under.
        queue.settle();
        queue.retention = Some(retention);
    }

    /// Takes the session's kept frames away (a resume, or the end of the session): the
    /// outbox keeps nothing more.
    pub fn take_retention(&self) -> Option<Box<Retention>> {
        let mut queue = self.shared.lock();
        queue.settle();
        queue.retention.take()
    }

    /// The client has received `received` counted frames: forgets those. False for a
    /// count beyond what was sent (or a connection that keeps nothing).
    pub fn ack(&self, received: u64) -> bool {
        match self.shared.lock().retention.as_mut() {
            Some(retention) => retention.ack(received),
            None => false,
        }
    }

    /// A heartbeat: a session that keeps nothing gives its buffers back.
    pub fn rest(&self) {
        if let Some(retention) = self.shared.lock().retention.as_mut() {
            retention.rest();
        }
    }

    /// Bytes this outbox keeps for a resume.
    pub fn retained_bytes(&self) -> usize {
        self.shared
            .lock()
            .retention
            .as_ref()
            .map_or(0, |r| r.bytes())
    }

    /// Takes over a session on a new connection: queues `resumed` (not counted), then the
    /// counted frames `retention` kept after the client's count `received`, in order; the
    /// session's counting goes on here. Those frames fit: the retention is bounded
    /// within the outbox's limits.
    pub fn adopt(
        &self,
        mut retention: Box<Retention>,
        received: u64,
        resumed: &str,
        batch: &mut Batch,
    ) -> Push {
        retention.ack(received.min(retention.sent));
        let pushed = self.push(OpCode::Text, resumed.as_bytes(), batch);
        if pushed == Push::Queued {
            let mut queue = self.shared.lock();
            // What waits before them (`resumed`) is settled; they are in the retention.
            queue.settle();
            for text in retention.frames() {
                queue.enqueue(OpCode::Text, text);
            }
            queue.retention = Some(retention);
        }
        pushed
    }

    /// Queues a text frame: counted, and kept for a resume, on a resumable connection.
    pub fn push_text(&self, text: &str, batch: &mut Batch) -> Push {
        self.push_counted(text, Kept::Kept, batch)
    }

    /// Queues `event`, serialized, for this connection only: the answer to a join that
    /// grants its session a new key. Counted, but neither it nor anything before it is
    /// kept (see [`Retention`]).
    pub fn send_granting<D: Serialize>(&self, event: &Event<D>, batch: &mut Batch) -> Push {
        self.push_counted(&encode(event), Kept::Granting, batch)
    }

    /// Queues a text frame that sessions do not count (`ack`).
    pub fn push_uncounted(&self, text: &str, batch: &mut Batch) -> Push {
        self.push(OpCode::Text, text.as_bytes(), batch)
    }

    /// Queues `event`, serialized, for this connection only.
    pub fn send<D: Serialize>(&self, event: &Event<D>, batch: &mut Batch) -> Push {
        self.push_text(&encode(event), batch)
    }

    /// Queues a close frame, the last this connection takes. A reason over 123 bytes is
    /// cut (a control frame holds 125).
    pub fn push_close(&self, code: CloseCode, reason: &str, batch: &mut Batch) -> Push {
        self.push(OpCode::Close, &wsframe::close_payload(code, reason), batch)
    }

    /// Queues a close frame on the relay's own initiative (not the connection's task's):
    /// the connection's task is woken to see it out, within its bounded close handshake.
    pub fn push_end(&self, code: CloseCode, reason: &str, batch: &mut Batch) -> Push {
        let pushed = self.push_close(code, reason, batch);
        if pushed == Push::Queued {
            let mut queue = self.shared.lock();
            if let State::Closing(writer) = queue.state {
                self.shared.set(&mut queue, State::Ended(writer));
            }
        }
        pushed
    }

    /// Queues a ping.
    pub fn push_ping(&self, batch: &mut Batch) -> Push {
        self.push(OpCode::Ping, &[], batch)
    }

    /// Queues the answer to a ping.
    pub fn push_pong(&self, payload: &[u8], batch: &mut Batch) -> Push {
        self.push(OpCode::Pong, payload, batch)
    }

    /// A counted text frame: kept first when the connection is resumable, so that a frame
    /// the socket loses (queued, or written into a connection that died) goes out again
    /// after a resume. While the connection breaks or is gone, it is only kept.
    fn push_counted(&self, text: &str, kept: Kept, batch: &mut Batch) -> Push {
        let mut queue = self.shared.lock();
        let state = queue.state;
        if kept == Kept::Granting {
            // The frames ahead go in before the grant forgets them.
            queue.settle();
        }
        let writes = !matches!(state, State::Broken(_) | State::Closed);
        if let Some(retention) = queue.retention.as_mut() {
            if matches!(state, State::Closing(_) | State::Ended(_)) {
                return Push::Ignored;
            }
            let fits = match kept {
                // Copied in when the queue settles, outside the rooms lock.
                Kept::Kept if writes => retention.reserve(text.len()),
                Kept::Kept => retention.keep(text.as_bytes()),
                Kept::Granting => {
                    retention.granted();
                    true
                }
            };
            if !fits {
                // The session can no longer be resumed: it ends as a full outbox does.
                queue.retention = None;
                queue.release();
                self.shared
                    .set(&mut queue, State::Broken(WriteError::Overflowed));
                return Push::Overflowed;
            }
            if !writes {
                return Push::Queued;
            }
            let counted = kept == Kept::Kept;
            let pushed =
                self.push_locked(&mut queue, OpCode::Text, text.as_bytes(), counted, batch);
            if pushed != Push::Queued && counted {
                // Not queued (the queue overflowed), yet reserved: in, after the frames
                // ahead, which dropping the queue settled.
                if let Some(retention) = queue.retention.as_mut() {
                    retention.settle(text.as_bytes());
                }
            }
            return pushed;
        }
        self.push_locked(&mut queue, OpCode::Text, text.as_bytes(), false, batch)
    }

    fn push(&self, kind: OpCode, payload: &[u8], batch: &mut Batch) -> Push {
        let mut queue = self.shared.lock();
        self.push_locked(&mut queue, kind, payload, false, batch)
    }

    /// Queues a frame; `counted` says the retention reserved it, to copy it in when the
    /// queue settles.
    fn push_locked(
        &self,
        queue: &mut MutexGuard<'_, Queue>,
        kind: OpCode,
        payload: &[u8],
        counted: bool,
        batch: &mut Batch,
    ) -> Push {
        let size = wsframe::frame_len(payload.len());
        let State::Open(writer) = queue.state else {
            // The connection is already ending; its disconnect cleans up.
            return Push::Ignored;
        };
        if queue.frames.len() >= self.shared.max_frames
            || queue.bytes.len() + size > self.shared.max_bytes
        {
            queue.release();
            self.shared
                .set(queue, State::Broken(WriteError::Overflowed));
            return Push::Overflowed;
        }
        queue.enqueue(kind, payload);
        if queue.retention.is_some() {
            queue.unsettled += 1;
            if counted {
                if let Some(size) = queue.frames.back_mut() {
                    *size |= COUNTED;
                }
            }
        }
        let writer = match writer {
            Writer::Nobody => {
                batch.due.push(self.clone());
                Writer::Batch
            }
            coming => coming,
        };
        let state = if kind == OpCode::Close {
            State::Closing(writer)
        } else {
            State::Open(writer)
        };
        self.shared.set(queue, state);
        Push::Queued
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// Moves `queue` to `state`, and tells the connection's task when it has to act.
    fn set(&self, queue: &mut Queue, state: State) {
        let was = queue.state.needs_task();
        queue.state = state;
        let needs = state.needs_task();
        if needs != was {
            self.attention.store(needs, Ordering::Release);
        }
        if needs {
            self.waker.wake();
        }
    }

    /// Writes what waits if a batch was to write it (and has not yet).
    fn write_for_batch(&self) {
        let mut queue = self.lock();
        if queue.state.writer() == Some(Writer::Batch) {
            self.write(&mut queue);
        }
    }

    /// Writes queued bytes until they are out or the socket would block. The queue stays
    /// locked meanwhile, so writers from different tasks never interleave.
    fn write(&self, queue: &mut Queue) {
        let Some(stream) = self.stream.as_ref() else {
            // A detached outbox never has a writer: nothing to write to.
            return queue.release();
        };
        // Before any byte of a frame can reach the client, its retention has it.
        queue.settle();
        while !queue.bytes.is_empty() {
            match stream.try_write(&queue.bytes) {
                Ok(written) if written > 0 => {
                    metrics::add(Counter::BytesSent, written as u64);
                    queue.written(written);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    let state = queue.state.written_by(Writer::Task);
                    return self.set(queue, state);
                }
                Ok(_) | Err(_) => {
                    queue.release();
                    return self.set(queue, State::Broken(WriteError::Failed));
                }
            }
        }
        // Written out: an idle connection keeps no buffers.
        queue.release();
        // Over TLS the last records may still wait in the session: they are bytes that
        // wait like any other, and this queue's writer is the one to come for them.
        let writer = match stream.try_flush() {
            Ok(()) => Writer::Nobody,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Writer::Task,
            Err(_) => return self.set(queue, State::Broken(WriteError::Failed)),
        };
        let state = queue.state.written_by(writer);
        self.set(queue, state);
    }
}

impl Queue {
    /// Appends a frame, taking a buffer from the thread's stock when the queue has none.
    fn enqueue(&mut self, kind: OpCode, payload: &[u8]) {
        if self.bytes.capacity() == 0 {
            self.bytes = spare::take();
        }
        wsframe::encode(&mut self.bytes, kind, payload);
        self.frames.push_back(wsframe::frame_len(payload.len()));
    }

    /// Drops what waits (its counted frames settled first: the retention keeps them) and
    /// gives the buffers back. The few frame sizes a busy connection tracks keep their
    /// room.
    fn release(&mut self) {
        self.settle();
        spare::give(std::mem::take(&mut self.bytes));
        if self.frames.capacity() > FRAME_SIZES_KEPT {
            self.frames = VecDeque::new();
        } else {
            self.frames.clear();
        }
        self.head_written = 0;
    }

    /// Copies the text of the counted frames queued since the last time into the
    /// retention, in order ([`Retention`]). Every byte of them still waits: a queue settles
    /// before it writes or drops any.
    fn settle(&mut self) {
        if self.unsettled == 0 {
            return;
        }
        let first = self.frames.len() - self.unsettled.min(self.frames.len());
        self.unsettled = 0;
        let Self {
            bytes,
            frames,
            retention,
            ..
        } = self;
        let Some(retention) = retention.as_mut() else {
            return;
        };
        let tail: usize = frames.range(first..).map(|&size| size & !COUNTED).sum();
        let mut at = bytes.len() - tail;
        for size in frames.range_mut(first..) {
            let counted = *size & COUNTED != 0;
            *size &= !COUNTED;
            if counted {
                retention.settle(&bytes[at + header_size(*size)..at + *size]);
            }
            at += *size;
        }
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
            // Settled before any was written: no mark left.
            if done < size {
                break;
            }
            done -= size;
            self.frames.pop_front();
        }
        self.head_written = done;
    }
}

impl Socket {
    /// The connection's stream, for reading.
    pub fn stream(&self) -> &Stream {
        let stream = self.shared.stream.as_ref();
        // tidy: only `Outbox::new` makes a Socket, with its stream; detached ones have none.
        stream.expect("a socket has its stream")
    }

    /// Completes when the stream has bytes to read (or has closed). Waits in the stream's
    /// one reader slot rather than in its list of waiters: only this task reads.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.stream().poll_read_ready(cx)).await
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

    /// Writes what the stream itself has to send after a read (over TLS, an alert or a key
    /// update's answer the socket did not take at once), unless a writer is coming anyway:
    /// every write sends the stream's waiting bytes before its own.
    pub fn write_stream_output(&self) {
        if !self.stream().output_waiting() {
            return;
        }
        let mut queue = self.shared.lock();
        if queue.state.writer() == Some(Writer::Nobody) {
            self.shared.write(&mut queue);
        }
    }

    /// Whether the relay ended the connection from elsewhere ([`Outbox::push_end`]).
    pub fn ended(&self) -> bool {
        matches!(self.shared.lock().state, State::Ended(_))
    }

    /// Writes what waits for this task as the socket takes it. Fails when the queue
    /// overflows meanwhile, or when the socket takes nothing for `stall`.
    pub async fn write_waiting(&self, stall: std::time::Duration) -> Result<(), WriteError> {
        loop {
            match self.shared.lock().state {
                State::Broken(error) => return Err(error),
                state if state.writer() == Some(Writer::Task) => {}
                _ => return Ok(()),
            }
            tokio::select! {
                biased;
                () = self.overflowed() => return Err(WriteError::Overflowed),
                ready = tokio::time::timeout(stall, self.stream().writable()) => match ready {
                    Err(_) => return Err(WriteError::Stalled),
                    Ok(Err(_)) => return Err(WriteError::Failed),
                    Ok(Ok(())) => self.shared.write(&mut self.shared.lock()),
                },
            }
        }
    }

    /// Writes everything still queued (the last frames, a close frame), whoever was to
    /// write it, giving up after `within`.
    pub async fn write_last(&self, within: std::time::Duration) -> Result<(), WriteError> {
        self.shared.write_for_batch();
        self.write_waiting(within).await
    }

    /// Closes the relay's side of the stream (a FIN): the client reads to the end of what
    /// was written, then sees it closed. Reading goes on.
    pub fn shut_writes(&self) -> io::Result<()> {
        self.stream().shut_writes()
    }

    async fn overflowed(&self) {
        std::future::poll_fn(|cx| {
            self.shared.waker.register(cx.waker());
            if self.shared.lock().state == State::Broken(WriteError::Overflowed) {
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
        queue.release();
        queue.state = State::Closed;
    }
}

/// The header's bytes in a server frame of `size` bytes in all (see
/// [`wsframe::frame_len`]).
fn header_size(size: usize) -> usize {
    if size <= 127 {
        2
    } else if size <= 65_539 {
        4
    } else {
        10
    }
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
    // tidy: our own types, with string keys only: serializing cannot fail.
    serde_json::to_string(event).expect("events always serialize")
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use tokio::net::TcpSocket;

    use super::*;
    use signalroom_wsframe::Header;

    /// The client's end of a test connection.
    enum Client {
        Tcp(std::net::TcpStream),
        Tls(Box<crate::tls::testing::TlsClient>),
    }

    impl Client {
        /// Appends what has arrived (decrypted, over TLS), without waiting.
        fn receive(&mut self, bytes: &mut Vec<u8>) {
            match self {
                Self::Tcp(tcp) => {
                    let mut chunk = [0; 65536];
                    while let Ok(read @ 1..) = tcp.read(&mut chunk) {
                        bytes.extend_from_slice(&chunk[..read]);
                    }
                }
                Self::Tls(tls) => tls.read(bytes),
            }
        }
    }

    /// The relay's end of a loopback connection, with small kernel buffers so that writes
    /// can be cut short, and the client's end, read without waiting.
    async fn socket_pair() -> io::Result<(Stream, Client)> {
        socket_pair_over(false).await
    }

    /// [`socket_pair`], in the clear or over TLS.
    async fn socket_pair_over(tls: bool) -> io::Result<(Stream, Client)> {
        let listener = TcpSocket::new_v4()?;
        listener.set_send_buffer_size(4096)?;
        listener.bind("127.0.0.1:0".parse().expect("an address"))?;
        let listener = listener.listen(1)?;
        let client = TcpSocket::new_v4()?;
        client.set_recv_buffer_size(4096)?;
        let client = client.connect(listener.local_addr()?).await?;
        if tls {
            let (relay, client) = crate::tls::testing::pair(listener, client).await?;
            return Ok((Stream::Tls(Box::new(relay)), Client::Tls(Box::new(client))));
        }
        let (relay, _) = listener.accept().await?;
        let client = client.into_std()?;
        client.set_nonblocking(true)?;
        Ok((relay.into(), Client::Tcp(client)))
    }

    /// What the client has received so far, as frames: opcode and payload.
    fn frames(client: &mut Client, bytes: &mut Vec<u8>) -> Vec<(OpCode, Vec<u8>)> {
        client.receive(bytes);
        let mut frames = Vec::new();
        while let Ok(Some((header, size))) = Header::parse(bytes) {
            let end = size + header.len as usize;
            if bytes.len() < end {
                break;
            }
            assert_eq!((header.mask, header.rsv, header.fin), (None, 0, true));
            frames.push((header.opcode, bytes[size..end].to_vec()));
            bytes.drain(..end);
        }
        frames
    }

    fn state(outbox: &Outbox) -> State {
        outbox.shared.lock().state
    }

    #[tokio::test]
    async fn a_batch_writes_nothing_until_flushed_then_everything_in_order() -> io::Result<()> {
        for tls in [false, true] {
            a_batch_writes_in_order(tls).await?;
        }
        Ok(())
    }

    async fn a_batch_writes_in_order(tls: bool) -> io::Result<()> {
        let (relay, mut client) = socket_pair_over(tls).await?;
        let (outbox, _socket) = Outbox::new(relay, 8, 1 << 20);
        let mut batch = Batch::new();
        for text in ["one", "two", "three"] {
            assert_eq!(outbox.push_text(text, &mut batch), Push::Queued);
        }
        assert_eq!(state(&outbox), State::Open(Writer::Batch));
        let mut bytes = Vec::new();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            frames(&mut client, &mut bytes).is_empty(),
            "no write before the flush"
        );
        batch.flush();
        assert_eq!(state(&outbox), State::Open(Writer::Nobody));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let texts: Vec<_> = frames(&mut client, &mut bytes)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(texts, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        Ok(())
    }

    #[tokio::test]
    async fn what_the_socket_will_not_take_the_task_writes_when_it_can() -> io::Result<()> {
        for tls in [false, true] {
            the_task_writes_what_waits(tls).await?;
        }
        Ok(())
    }

    /// Over TLS, what waits after the queue is written out is ciphertext in the session:
    /// the task writes it too.
    async fn the_task_writes_what_waits(tls: bool) -> io::Result<()> {
        let (relay, mut client) = socket_pair_over(tls).await?;
        let (outbox, socket) = Outbox::new(relay, 64, 1 << 20);
        let big: Vec<String> = (0..16)
            .map(|i| format!("{i:x}").repeat(16 * 1024))
            .collect();
        let mut batch = Batch::new();
        for text in &big {
            assert_eq!(outbox.push_text(text, &mut batch), Push::Queued);
        }
        batch.flush();
        assert_eq!(
            state(&outbox),
            State::Open(Writer::Task),
            "the write was cut short"
        );
        let (received, _socket) = the_task_writes(socket, &mut client, big.len()).await;
        let texts: Vec<_> = received.into_iter().map(|(_, p)| p).collect();
        let sent: Vec<_> = big.iter().map(|t| t.as_bytes().to_vec()).collect();
        assert_eq!(texts, sent, "every frame whole and in order");
        assert_eq!(state(&outbox), State::Open(Writer::Nobody));
        Ok(())
    }

    /// Lets the connection's task write what waits, as the client reads, until the client
    /// has `count` frames; gives the socket back, still open.
    async fn the_task_writes(
        socket: Socket,
        client: &mut Client,
        count: usize,
    ) -> (Vec<(OpCode, Vec<u8>)>, Socket) {
        socket.needs_attention().await;
        let writer = tokio::spawn(async move {
            socket.write_waiting(Duration::from_secs(5)).await?;
            Ok::<_, WriteError>(socket)
        });
        let mut bytes = Vec::new();
        let mut received = Vec::new();
        while received.len() < count {
            received.extend(frames(client, &mut bytes));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let socket = writer.await.expect("the task ran").expect("written");
        (received, socket)
    }

    #[tokio::test]
    async fn over_tls_records_the_socket_did_not_take_are_the_tasks_to_write() -> io::Result<()> {
        let (relay, mut client) = socket_pair_over(true).await?;
        let (outbox, socket) = Outbox::new(relay, 8, 1 << 20);
        // Fits in one write's worth of records, not in the kernel's buffers: the session
        // takes all of it and the queue empties, while ciphertext still waits.
        let text = "x".repeat(12 * 1024);
        let mut batch = Batch::new();
        assert_eq!(outbox.push_text(&text, &mut batch), Push::Queued);
        batch.flush();
        assert_eq!(
            outbox.shared.lock().bytes.len(),
            0,
            "the queue is written out"
        );
        assert_eq!(
            state(&outbox),
            State::Open(Writer::Task),
            "and the records that wait are the task's"
        );
        let (received, _socket) = the_task_writes(socket, &mut client, 1).await;
        assert_eq!(received, [(OpCode::Text, text.into_bytes())]);
        assert_eq!(state(&outbox), State::Open(Writer::Nobody));
        Ok(())
    }

    #[tokio::test]
    async fn a_queue_overflows_by_frames_or_by_bytes() -> io::Result<()> {
        for (max_frames, max_bytes) in [(3, 1 << 20), (64, 100)] {
            let (relay, _client) = socket_pair().await?;
            let (outbox, socket) = Outbox::new(relay, max_frames, max_bytes);
            let mut batch = Batch::new();
            let text = "x".repeat(40);
            let mut taken = 0;
            while outbox.push_text(&text, &mut batch) == Push::Queued {
                taken += 1;
                assert!(taken <= 3, "a limit holds");
            }
            assert_eq!(taken, if max_frames == 3 { 3 } else { 2 });
            assert_eq!(state(&outbox), State::Broken(WriteError::Overflowed));
            // The task hears of it, and nothing more is taken.
            socket.needs_attention().await;
            let waited = socket.write_waiting(Duration::from_secs(1)).await;
            assert_eq!(waited, Err(WriteError::Overflowed));
            assert_eq!(outbox.push_text("late", &mut batch), Push::Ignored);
            assert!(outbox.shared.lock().bytes.is_empty());
            batch.flush();
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_stalls_the_write_and_is_dropped() -> io::Result<()> {
        let (relay, _client) = socket_pair().await?;
        let (outbox, socket) = Outbox::new(relay, 1024, 16 << 20);
        let chunk = "s".repeat(60 * 1024);
        while state(&outbox) != State::Open(Writer::Task) {
            let mut batch = Batch::new();
            assert_eq!(outbox.push_text(&chunk, &mut batch), Push::Queued);
            batch.flush();
        }
        let waited = socket.write_waiting(Duration::from_millis(200)).await;
        assert_eq!(waited, Err(WriteError::Stalled));
        Ok(())
    }

    #[tokio::test]
    async fn a_close_from_elsewhere_wakes_the_connections_task() -> io::Result<()> {
        let (relay, _client) = socket_pair().await?;
        let (outbox, socket) = Outbox::new(relay, 8, 1 << 20);
        let mut batch = Batch::new();
        assert!(!socket.ended());
        assert_eq!(
            outbox.push_end(CloseCode::ServiceRestart, "seat lost", &mut batch),
            Push::Queued
        );
        assert_eq!(state(&outbox), State::Ended(Writer::Batch));
        assert!(socket.ended());
        // The task, waiting for its writes' attention, is let go at once.
        tokio::time::timeout(Duration::from_secs(1), socket.needs_attention())
            .await
            .map_err(|_| io::Error::other("the connection's task was not woken"))?;
        assert_eq!(outbox.push_text("late", &mut batch), Push::Ignored);
        batch.flush();
        Ok(())
    }

    #[tokio::test]
    async fn the_close_frame_is_the_last_thing_written() -> io::Result<()> {
        let (relay, mut client) = socket_pair().await?;
        let (outbox, socket) = Outbox::new(relay, 8, 1 << 20);
        let mut batch = Batch::new();
        assert_eq!(outbox.push_text("before", &mut batch), Push::Queued);
        assert_eq!(
            outbox.push_close(CloseCode::Normal, "bye", &mut batch),
            Push::Queued
        );
        assert_eq!(
            outbox.push_text("after", &mut batch),
            Push::Ignored,
            "taken quietly"
        );
        let _ = outbox.push_ping(&mut batch);
        assert_eq!(state(&outbox), State::Closing(Writer::Batch));
        batch.flush();
        drop((outbox, socket));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut bytes = Vec::new();
        let received = frames(&mut client, &mut bytes);
        let close = [&1000u16.to_be_bytes()[..], b"bye"].concat();
        assert_eq!(
            received,
            [(OpCode::Text, b"before".to_vec()), (OpCode::Close, close)]
        );
        assert!(bytes.is_empty());
        let mut rest = [0; 16];
        let Client::Tcp(tcp) = &mut client else {
            unreachable!("a TCP client")
        };
        assert_eq!(tcp.read(&mut rest)?, 0, "and then the socket closes");
        Ok(())
    }

    #[tokio::test]
    async fn a_batch_dropped_unflushed_leaves_its_writes_to_the_task() -> io::Result<()> {
        let (relay, mut client) = socket_pair().await?;
        let (outbox, socket) = Outbox::new(relay, 8, 1 << 20);
        let mut batch = Batch::new();
        assert_eq!(outbox.push_text("stranded?", &mut batch), Push::Queued);
        drop(batch);
        assert_eq!(state(&outbox), State::Open(Writer::Task));
        socket.needs_attention().await;
        assert_eq!(socket.write_waiting(Duration::from_secs(1)).await, Ok(()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut bytes = Vec::new();
        assert_eq!(
            frames(&mut client, &mut bytes),
            [(OpCode::Text, b"stranded?".to_vec())]
        );
        Ok(())
    }

    fn kept(retention: &mut Retention) -> Vec<&str> {
        retention
            .frames()
            .map(|f| std::str::from_utf8(f).expect("text"))
            .collect()
    }

    #[test]
    fn a_retention_keeps_what_was_not_acknowledged_in_order_and_within_its_bounds() {
        let mut retention = Retention::new(12, 3);
        assert!(retention.keep_all([&b"one"[..], b"two", b"three"]));
        assert_eq!(retention.sent(), 3);
        assert_eq!(retention.bytes(), 11, "text only, not the lengths");
        assert_eq!(kept(&mut retention), ["one", "two", "three"]);
        assert!(
            !retention.keep(b"four"),
            "a fourth frame is over the frame bound"
        );
        assert!(retention.ack(1));
        assert_eq!(kept(&mut retention), ["two", "three"]);
        assert!(!retention.keep(b"seventeen"), "over the byte bound");
        assert!(retention.keep(b"4"));
        assert_eq!(retention.sent(), 4);
        assert_eq!(kept(&mut retention), ["two", "three", "4"]);
        assert!(!retention.ack(5), "more than was sent");
        assert_eq!(kept(&mut retention), ["two", "three", "4"]);
        assert!(retention.ack(3));
        assert_eq!(kept(&mut retention), ["4"]);
        assert!(retention.ack(2), "an older count changes nothing");
        assert_eq!(kept(&mut retention), ["4"]);
        assert!(retention.ack(4));
        assert!(kept(&mut retention).is_empty());
        assert!(
            retention.text.capacity() > 0,
            "a busy session keeps its buffer between acknowledgements"
        );
        retention.rest();
        assert_eq!(
            (retention.bytes(), retention.text.capacity()),
            (0, 0),
            "at rest it holds none"
        );
    }

    #[test]
    fn a_frame_that_grants_a_key_is_counted_and_forgets_what_came_before() {
        let mut retention = Retention::continuing(7, 1024, 16);
        assert!(retention.keep_all([&b"a"[..], b"b"]));
        retention.granted();
        assert_eq!(retention.sent(), 10);
        assert!(kept(&mut retention).is_empty());
        assert!(retention.keep(b"after"));
        assert_eq!(kept(&mut retention), ["after"]);
        assert!(retention.ack(10), "the client's count includes the grant");
        assert_eq!(kept(&mut retention), ["after"]);
        assert!(retention.ack(11));
        assert!(kept(&mut retention).is_empty());
    }

    #[test]
    fn a_frames_header_size_follows_from_its_size() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 100_000] {
            let size = wsframe::frame_len(len);
            assert_eq!(header_size(size) + len, size, "payload of {len} bytes");
        }
    }

    #[test]
    fn a_busy_retention_compacts_and_keeps_every_frame_intact() {
        let mut retention = Retention::new(1 << 16, 255);
        let mut acked = 0;
        for n in 0..2000u64 {
            let frame = format!("frame {n} {}", "x".repeat((n % 97) as usize));
            assert!(retention.keep(frame.as_bytes()));
            if n % 7 == 6 {
                acked = n - 2;
                assert!(retention.ack(acked));
            }
        }
        let expected: Vec<String> = (acked..2000)
            .map(|n| format!("frame {n} {}", "x".repeat((n % 97) as usize)))
            .collect();
        assert_eq!(kept(&mut retention), expected);
    }
}
