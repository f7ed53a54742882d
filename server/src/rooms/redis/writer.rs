//! The one writer toward Redis: a queue ([`Queue`]) that carries every change to Redis's
//! data in the order the relay decided it, and the task ([`run`]) that owns the only
//! [`Writer`] and sends what waits as pipelines.
//!
//! Joins, departures, re-registrations after a lost connection, counter raises, heartbeats
//! and sweeps all go through it, so a member's departure can never be overtaken by a
//! re-registration of the same member: whatever reaches Redis reaches it in queue order.
//! A re-assertion of this relay's members ([`Command::Reassert`]) reads the members when
//! the writer reaches it, not when it was queued, so it never writes back a member whose
//! departure was queued before that moment (departures are queued under the rooms lock,
//! together with the change that took the member out).
//!
//! Messages for other relays are bounded (commands and bytes): a full queue refuses them.
//! The rest is bounded by the members this relay holds (a few commands per member) and is
//! never refused, so a departure is never lost to a burst of messages.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use redis::{Cmd, Pipeline, Value};
use tokio::sync::{mpsc, oneshot};

use super::bus::{hash_tag, push_event};
use super::link::{Shape, Writer};
use crate::rooms::RoomError;

/// Messages the queue holds at most.
const QUEUED_MESSAGES: usize = 4096;
/// Bytes of messages the queue holds at most.
const QUEUED_BYTES: usize = 4 << 20;
/// Commands sent in one pipeline at most.
const PIPELINE: usize = 256;

/// What the queue carries.
pub(super) enum Command {
    /// A room event: `channel` gets `payload`.
    Publish { channel: String, payload: String },
    /// Any other command, on keys of hash tag `tag`; its reply (or failure) goes to
    /// `reply` when someone waits for it.
    Call {
        cmd: Cmd,
        tag: String,
        reply: Option<oneshot::Sender<Result<Value, ()>>>,
    },
    /// Commands made when the writer reaches this point in the queue: the relay's members
    /// as they are then.
    Reassert(Box<dyn FnOnce() -> Vec<Command> + Send>),
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

impl Command {
    /// `cmd` on keys of hash tag `tag`, its reply unwanted.
    pub(super) fn call(cmd: Cmd, tag: &str) -> Self {
        Self::Call {
            cmd,
            tag: tag.to_owned(),
            reply: None,
        }
    }
}

/// The sending side, shared by every task of the relay.
pub(super) struct Queue {
    commands: mpsc::UnboundedSender<Command>,
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Whether Redis answered the last pipeline: while it does not, messages for other
    /// relays are refused rather than queued to be lost.
    reachable: AtomicBool,
}

impl Queue {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (commands, queued) = mpsc::unbounded_channel();
        let queue = Self {
            commands,
            messages: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            reachable: AtomicBool::new(true),
        };
        (queue, queued)
    }

    /// Queues `command` after everything queued before it. Never waits, so it may be
    /// called under the rooms lock, which is what orders a departure with the change
    /// that made it.
    pub(super) fn send(&self, command: Command) {
        // Fails only once the writer has stopped, at shutdown: nothing is written then.
        let _ = self.commands.send(command);
    }

    /// Queues a message for other relays, or refuses it: Redis is unreachable, or the
    /// queue holds as many messages as it may.
    pub(super) fn publish(&self, channel: String, payload: String) -> Result<(), RoomError> {
        if !self.reachable() {
            return Err(RoomError::Unavailable);
        }
        let len = payload.len();
        let bytes = self.bytes.fetch_add(len, Ordering::Relaxed);
        let messages = self.messages.fetch_add(1, Ordering::Relaxed);
        if bytes + len > QUEUED_BYTES || messages >= QUEUED_MESSAGES {
            self.sent(1, len);
            return Err(RoomError::Backlogged);
        }
        self.send(Command::Publish { channel, payload });
        Ok(())
    }

    /// Queues `cmd`, on keys of hash tag `tag`, and waits for its reply.
    pub(super) async fn call(&self, cmd: Cmd, tag: &str) -> Result<Value, RoomError> {
        self.request(cmd, tag).await
    }

    /// Queues `cmd`, on keys of hash tag `tag`, at once; its reply is to be awaited.
    pub(super) fn request(
        &self,
        cmd: Cmd,
        tag: &str,
    ) -> impl std::future::Future<Output = Result<Value, RoomError>> + Send + 'static {
        let (reply, replied) = oneshot::channel();
        let reply = Some(reply);
        let tag = tag.to_owned();
        self.send(Command::Call { cmd, tag, reply });
        async move {
            replied
                .await
                .map_err(|_| RoomError::Unavailable)?
                .map_err(|()| RoomError::Unavailable)
        }
    }

    /// Waits until everything queued so far has been sent.
    pub(super) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        self.send(Command::Flush(done));
        let _ = flushed.await;
    }

    pub(super) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub(super) fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    fn sent(&self, messages: usize, bytes: usize) {
        self.messages.fetch_sub(messages, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Sends the queue's commands to Redis, each time all that wait (up to [`PIPELINE`]) in
/// one pipeline: one write carries many frames. In a cluster, a pipeline holds one hash
/// slot's commands, so what waits goes as runs of one tag each, in order. Ends when every
/// sender is gone.
pub(super) async fn run(
    mut redis: Writer,
    queue: std::sync::Arc<Queue>,
    mut queued: mpsc::UnboundedReceiver<Command>,
) {
    let mut received = Vec::with_capacity(PIPELINE);
    while queued.recv_many(&mut received, PIPELINE).await > 0 {
        let mut runs: Vec<Vec<Command>> = Vec::new();
        let mut pending = received
            .drain(..)
            .collect::<std::collections::VecDeque<_>>();
        while let Some(command) = pending.pop_front() {
            match command {
                Command::Reassert(make) => {
                    for (i, made) in make().into_iter().enumerate() {
                        pending.insert(i, made);
                    }
                }
                Command::Flush(done) => {
                    for run in runs.drain(..) {
                        send_run(&mut redis, &queue, run).await;
                    }
                    let _ = done.send(());
                }
                command => match runs.last_mut() {
                    Some(run) if !redis.cluster() || tag(&run[0]) == tag(&command) => {
                        run.push(command);
                    }
                    _ => runs.push(vec![command]),
                },
            }
        }
        for run in runs {
            send_run(&mut redis, &queue, run).await;
        }
    }
}

/// The hash tag of the keys a command touches: commands of one tag are in one slot.
fn tag(command: &Command) -> &str {
    match command {
        Command::Publish { channel, .. } => hash_tag(channel),
        Command::Call { tag, .. } => tag,
        Command::Reassert(_) | Command::Flush(_) => "",
    }
}

/// Sends `run`, trying again while Redis cannot be reached (or a cluster fails over) as
/// long as it holds anything but messages: a departure or a re-registration is never lost
/// to an outage, and nothing queued after it overtakes it. Every script is idempotent, so
/// sending again what a broken connection may have cut changes nothing. Messages are not
/// sent again: they go at most once, and senders are refused while Redis is unreachable.
async fn send_run(redis: &mut Writer, queue: &Queue, mut run: Vec<Command>) {
    let mut backoff = RETRY_FIRST;
    loop {
        let (messages, bytes) = counted(&run);
        match send_once(redis, run).await {
            Ok(()) => {
                queue.sent(messages, bytes);
                queue.set_reachable(true);
                return;
            }
            Err((error, unsent)) => {
                queue.sent(messages, bytes);
                queue.set_reachable(false);
                let retry = error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_cluster_error()
                    // A primary that came back as a replica after a failover.
                    || error.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                run = unsent
                    .into_iter()
                    .filter(|c| !matches!(c, Command::Publish { .. }))
                    .collect();
                if !retry || run.is_empty() {
                    tracing::warn!(%error, "Redis refused a pipeline");
                    for command in run {
                        if let Command::Call {
                            reply: Some(reply), ..
                        } = command
                        {
                            let _ = reply.send(Err(()));
                        }
                    }
                    return;
                }
                tracing::warn!(%error, retry_in = ?backoff, "Redis could not take a pipeline");
                tokio::time::sleep(backoff).await;
                if backoff >= REOPEN_AFTER {
                    // Failing for a while: a cluster may have failed over under the link.
                    if let Err(error) = redis.reopen().await {
                        tracing::warn!(%error, "could not open a new link to Redis");
                    }
                }
                backoff = (backoff * 2).min(RETRY_LAST);
            }
        }
    }
}

/// The first pause before sending a failed run again, and the longest.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_LAST: std::time::Duration = std::time::Duration::from_secs(1);
/// The pause from which a failing run opens a new link first (after about 0.75 s of
/// failures, then at most once a second).
const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_millis(400);

/// The messages in `run` and their bytes.
fn counted(run: &[Command]) -> (usize, usize) {
    run.iter()
        .filter_map(|c| match c {
            Command::Publish { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .fold((0, 0), |(n, bytes), len| (n + 1, bytes + len))
}

/// Sends `run` in one pipeline, events in a row for one room in one publish (`events`
/// takes them apart), and hands each waiting command its reply. On failure, hands the run
/// back (its commands rebuilt) to be sent again.
async fn send_once(
    redis: &mut Writer,
    run: Vec<Command>,
) -> Result<(), (redis::RedisError, Vec<Command>)> {
    let publish = redis.publish_command();
    let mut pipe = redis::pipe();
    let mut pending: Option<(String, String)> = None;
    // What goes out is kept to be sent again: the calls, their replies' senders.
    let mut calls = Vec::new();
    for command in run {
        match command {
            Command::Publish { channel, payload } => {
                if let Some((_, events)) = pending.as_mut().filter(|(to, _)| *to == channel) {
                    push_event(events, &payload);
                    continue;
                }
                publish_pending(&mut pipe, publish, &mut pending);
                let mut events = String::with_capacity(2 * payload.len() + 8);
                push_event(&mut events, &payload);
                pending = Some((channel, events));
            }
            Command::Call { cmd, tag, reply } => {
                publish_pending(&mut pipe, publish, &mut pending);
                pipe.add_command(cmd.clone());
                if reply.is_none() {
                    pipe.ignore();
                }
                calls.push((cmd, tag, reply));
            }
            Command::Reassert(_) | Command::Flush(_) => {}
        }
    }
    publish_pending(&mut pipe, publish, &mut pending);
    match redis.send(&pipe).await {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            for (_, _, reply) in calls {
                if let Some(reply) = reply {
                    let _ = reply.send(replies.next().ok_or(()));
                }
            }
            Ok(())
        }
        Err(error) => {
            let unsent = calls
                .into_iter()
                .map(|(cmd, tag, reply)| Command::Call { cmd, tag, reply })
                .collect();
            Err((error, unsent))
        }
    }
}

/// Adds the events waiting for one channel, if any, to `pipe` as one publish.
fn publish_pending(pipe: &mut Pipeline, publish: &str, pending: &mut Option<(String, String)>) {
    if let Some((to, events)) = pending.take() {
        pipe.cmd(publish).arg(to).arg(events).ignore();
    }
}
