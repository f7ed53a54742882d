//! The client's task: it owns the connection to the relay, and between connections the
//! session that carries the client across them.
//!
//! It runs a small state machine ([`Link`]): `Up` with a socket, it reads the relay's
//! frames, takes the program's commands and acknowledges on time; `Down`, it waits for the
//! next attempt (the delays of [`Backoff`]) and keeps what the program sends for the
//! session's resume. A new connection first resumes the session when it can, or enters
//! the room again as a new peer when it cannot. What to count, keep, acknowledge and send
//! again is [`Session`]'s to say, the same policy as the page's.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signalroom_protocol::session::{AckDue, Backoff, Session, ACK_AFTER_MS};
use signalroom_protocol::{ErrorCode, Event, IceServer, PeerId, Request, Resumable, RoomName};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::Socket;
use crate::{Command, Data, Entered, Error, Options, Update, UPDATES};

/// The close code with which a draining relay tells a resumable client to resume its
/// session elsewhere at once.
const DRAINING: u16 = 4001;

/// How long a closing client waits for the relay's close frame.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// Where the connection stands.
enum Link {
    /// Connected.
    Up(Box<Socket>),
    /// Disconnected; the next attempt is due then.
    Down(Instant),
}

/// Why a connection ended.
enum Ending {
    /// The program closed the client (with whom to tell when done).
    Closed(Option<oneshot::Sender<()>>),
    /// The connection was lost; try again at once (a draining relay), or after backoff.
    Lost { reason: String, at_once: bool },
}

pub(crate) struct Driver<D> {
    options: Options,
    commands: mpsc::Receiver<Command<D>>,
    updates: mpsc::Sender<Update<D>>,
    session: Session,
    backoff: Backoff,
    /// The room the client is in, to enter again when its session cannot resume.
    room: Option<RoomName>,
    /// The program's `create_or_join`s the relay has not answered, oldest first.
    joining: VecDeque<oneshot::Sender<Result<Entered, Error>>>,
    /// A `resume` went out on this connection and is not answered yet.
    resuming: bool,
    /// When the acknowledgement of what arrived is due.
    ack_due: Option<Instant>,
    /// When the relay was last heard.
    heard: Instant,
    /// Updates the program has no room for yet, oldest first; at [`UPDATES`] the client
    /// stops reading the relay until the program catches up.
    pending: VecDeque<Update<D>>,
}

impl<D: Data> Driver<D> {
    pub(crate) fn new(
        options: Options,
        commands: mpsc::Receiver<Command<D>>,
        updates: mpsc::Sender<Update<D>>,
    ) -> Self {
        Self {
            options,
            commands,
            updates,
            session: Session::default(),
            backoff: Backoff::default(),
            room: None,
            joining: VecDeque::new(),
            resuming: false,
            ack_due: None,
            heard: Instant::now(),
            pending: VecDeque::new(),
        }
    }

    /// Runs until the program closes the client or the client gives up on the relay.
    pub(crate) async fn run(mut self, socket: Socket) {
        match self.connections(socket).await {
            // Closed: what the program did not read is void.
            Some(done) => {
                let _ = done.send(());
            }
            // Given up: the program reads the updates up to the last, which says so.
            None => {
                for update in std::mem::take(&mut self.pending) {
                    if self.updates.send(update).await.is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// Keeps a connection until the program closes the client (`Some` with whom to tell
    /// when done, if anyone) or the client gives up (`None`).
    async fn connections(&mut self, socket: Socket) -> Option<oneshot::Sender<()>> {
        let mut link = Link::Up(Box::new(socket));
        loop {
            link = match link {
                Link::Up(mut socket) => match self.serve(&mut socket).await {
                    Ending::Closed(done) => {
                        close(&mut socket).await;
                        return done;
                    }
                    Ending::Lost { reason, at_once } => Link::Down(self.lost(reason, at_once)?),
                },
                Link::Down(at) => {
                    if let Err(done) = self.wait(at).await {
                        return done;
                    }
                    match self.options.open().await {
                        Ok(socket) => {
                            let mut socket = Box::new(socket);
                            match self.opened(&mut socket).await {
                                Ok(()) => Link::Up(socket),
                                Err(reason) => Link::Down(self.lost(reason, false)?),
                            }
                        }
                        Err(Error::Refused { status, body }) if status == 401 || status == 403 => {
                            let reason =
                                format!("the relay refused the client: HTTP {status} {body}");
                            tracing::warn!("{reason}");
                            self.emit(Update::Disconnected {
                                reason,
                                retry_in: None,
                            });
                            return None;
                        }
                        Err(error) => Link::Down(self.lost(error.to_string(), false)?),
                    }
                }
            };
        }
    }

    /// Serves a connection until it ends.
    async fn serve(&mut self, socket: &mut Socket) -> Ending {
        self.heard = Instant::now();
        loop {
            let silent_at = self.heard + self.options.silence;
            let ack_at = self.ack_due;
            let updates = self.updates.clone();
            // Past UPDATES waiting for the program, the relay is not read: its frames wait
            // in the socket, and its silence is not measured meanwhile.
            let reading = self.pending.len() < UPDATES;
            let step = tokio::select! {
                permit = updates.reserve(), if !self.pending.is_empty() => {
                    match (permit, self.pending.pop_front()) {
                        (Ok(permit), Some(update)) => permit.send(update),
                        _ => self.pending.clear(),
                    }
                    if !reading && self.pending.len() < UPDATES {
                        // Reading again: the relay's silence counts from now.
                        self.heard = Instant::now();
                    }
                    Ok(())
                }
                frame = socket.next(), if reading => match frame {
                    Some(Ok(Message::Text(text))) => {
                        self.heard = Instant::now();
                        self.on_text(socket, text.as_str()).await
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let draining = frame.as_ref().is_some_and(|f| u16::from(f.code) == DRAINING);
                        let reason = frame.map_or_else(
                            || "the relay closed the connection".to_owned(),
                            |f| format!("the relay closed the connection: {} {}", u16::from(f.code), f.reason),
                        );
                        // Sends the answering close frame tungstenite queued.
                        let _ = socket.close(None).await;
                        Err(Ending::Lost { reason, at_once: draining })
                    }
                    Some(Ok(_)) => {
                        self.heard = Instant::now();
                        Ok(())
                    }
                    Some(Err(error)) => Err(lost(error.to_string())),
                    None => Err(lost("the connection closed".into())),
                },
                // While a resume is unanswered the program's frames wait: they go after
                // what the session sends again, not before it.
                command = self.commands.recv(), if !self.resuming => match command {
                    Some(command) => self.on_command(socket, command).await,
                    // Every handle is gone: the program is done with the client.
                    None => Err(Ending::Closed(None)),
                },
                () = sleep_until(ack_at.unwrap_or(silent_at)), if ack_at.is_some() => {
                    self.acknowledge(socket).await.map_err(lost)
                }
                () = sleep_until(silent_at), if reading => Err(lost(format!(
                    "the relay was silent for {:?}", self.options.silence
                ))),
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// A text frame from the relay.
    async fn on_text(&mut self, socket: &mut Socket, text: &str) -> Result<(), Ending> {
        self.backoff.connected();
        let event = match serde_json::from_str::<Event<D>>(text) {
            Ok(Event::Ack { received }) => {
                if !self.session.acknowledged(received) {
                    tracing::warn!(received, "the relay acknowledged more than was sent");
                }
                return Ok(());
            }
            Ok(Event::Resumed {
                peer,
                received,
                resume,
                incomplete,
                ..
            }) => {
                self.resuming = false;
                self.backoff.resuming(true);
                let again = self.session.resumed(received, resume, incomplete);
                tracing::debug!(%peer, again = again.len(), incomplete, "session resumed");
                for text in again {
                    write(socket, text).await.map_err(lost)?;
                }
                self.emit(Update::Resumed { peer, incomplete });
                return Ok(());
            }
            Ok(event) => Some(event),
            Err(error) => {
                // A frame of a newer relay, say: counted all the same.
                tracing::debug!(%error, "a frame this client does not know");
                None
            }
        };
        match self.session.received() {
            AckDue::Now => self.acknowledge(socket).await.map_err(lost)?,
            AckDue::Later => {
                self.ack_due = Some(Instant::now() + Duration::from_millis(ACK_AFTER_MS.into()));
            }
            AckDue::No => {}
        }
        match event {
            Some(event) => self.on_event(socket, event).await,
            None => Ok(()),
        }
    }

    /// A counted event from the relay.
    async fn on_event(&mut self, socket: &mut Socket, event: Event<D>) -> Result<(), Ending> {
        match event {
            Event::Created {
                room,
                peer,
                ice_servers,
                resume,
            } => self.entered(room, peer, Vec::new(), ice_servers, resume),
            Event::Joined {
                room,
                peer,
                peers,
                ice_servers,
                resume,
            } => self.entered(room, peer, peers, ice_servers, resume),
            Event::Full { room } => {
                self.room = None;
                match self.joining.pop_front() {
                    Some(answer) => {
                        let _ = answer.send(Err(Error::Full(room)));
                    }
                    None => self.emit(Update::Event(Event::Full { room })),
                }
            }
            Event::Error {
                code:
                    code @ (ErrorCode::ResumeRefused | ErrorCode::ResumeExpired | ErrorCode::ResumeLost),
                message,
            } if self.resuming => {
                tracing::info!(?code, %message, "the session did not resume");
                self.resuming = false;
                self.session.end();
                self.backoff.resuming(false);
                self.emit(Update::Rejoining { code: Some(code) });
                self.rejoin(socket).await.map_err(lost)?;
            }
            Event::Error { code, message }
                if !matches!(code, ErrorCode::UnknownPeer | ErrorCode::NotInRoom)
                    && !self.joining.is_empty() =>
            {
                if let Some(answer) = self.joining.pop_front() {
                    let _ = answer.send(Err(Error::Relay { code, message }));
                }
            }
            other => self.emit(Update::Event(other)),
        }
        Ok(())
    }

    /// The client is in a room: tells whoever asked.
    fn entered(
        &mut self,
        room: RoomName,
        peer: PeerId,
        peers: Vec<PeerId>,
        ice_servers: Vec<IceServer>,
        resume: Option<Resumable>,
    ) {
        self.room = Some(room.clone());
        self.backoff.resuming(resume.is_some());
        let entered = Entered {
            room,
            peer,
            peers,
            ice_servers,
            resumable: resume
                .as_ref()
                .map(|grant| Duration::from_millis(grant.window_ms)),
        };
        if let Some(grant) = resume {
            self.session.granted(peer, grant);
        }
        match self.joining.pop_front() {
            Some(answer) => {
                let _ = answer.send(Ok(entered));
            }
            None => {
                let event = match entered.peers.is_empty() {
                    true => Event::Created {
                        room: entered.room,
                        peer: entered.peer,
                        ice_servers: entered.ice_servers,
                        resume: None,
                    },
                    false => Event::Joined {
                        room: entered.room,
                        peer: entered.peer,
                        peers: entered.peers,
                        ice_servers: entered.ice_servers,
                        resume: None,
                    },
                };
                self.emit(Update::Event(event));
            }
        }
    }

    /// A command of the program's, while connected.
    async fn on_command(&mut self, socket: &mut Socket, command: Command<D>) -> Result<(), Ending> {
        match command {
            Command::Join(room, answer) => {
                self.joining.push_back(answer);
                self.send_counted(socket, Request::CreateOrJoin { room })
                    .await
                    .map_err(lost)
            }
            Command::Send(to, data, done) => {
                let text = match message_text(to, data) {
                    Ok(text) => text,
                    Err(error) => {
                        let _ = done.send(Err(error));
                        return Ok(());
                    }
                };
                // Written now: while a resume is unanswered no command is taken.
                let _ = self.session.sending(&text);
                match write(socket, text).await {
                    Ok(()) => {
                        let _ = done.send(Ok(()));
                        Ok(())
                    }
                    Err(reason) => {
                        let _ = done.send(self.carried());
                        Err(lost(reason))
                    }
                }
            }
            Command::Leave => {
                self.room = None;
                self.session.end();
                self.backoff.resuming(false);
                self.send_counted(socket, Request::<D>::Leave)
                    .await
                    .map_err(lost)
            }
            Command::Close(done) => Err(Ending::Closed(Some(done))),
        }
    }

    /// Waits for the next attempt, taking the program's commands meanwhile; `Err` when the
    /// program closed the client.
    async fn wait(&mut self, at: Instant) -> Result<(), Option<oneshot::Sender<()>>> {
        loop {
            let updates = self.updates.clone();
            let command = tokio::select! {
                () = sleep_until(at) => return Ok(()),
                command = self.commands.recv() => command,
                permit = updates.reserve(), if !self.pending.is_empty() => {
                    match (permit, self.pending.pop_front()) {
                        (Ok(permit), Some(update)) => permit.send(update),
                        _ => self.pending.clear(),
                    }
                    continue;
                }
            };
            match command {
                None => return Err(None),
                Some(Command::Close(done)) => return Err(Some(done)),
                Some(Command::Join(_, answer)) => {
                    let _ = answer.send(Err(Error::Disconnected));
                }
                Some(Command::Send(to, data, done)) => {
                    let result = message_text(to, data).and_then(|text| {
                        // Kept for the resume, when the session can resume.
                        let _ = self.session.sending(&text);
                        self.carried()
                    });
                    let _ = done.send(result);
                }
                Some(Command::Leave) => {
                    // The relay ends the away session when its window ends.
                    self.room = None;
                    self.session.end();
                    self.backoff.resuming(false);
                }
            }
        }
    }

    /// A new connection: resumes the session, or enters the room again as a new peer.
    async fn opened(&mut self, socket: &mut Socket) -> Result<(), String> {
        self.heard = Instant::now();
        if let Some(resume) = self.session.resume::<D>() {
            self.resuming = true;
            let text = serde_json::to_string(&resume).map_err(|e| e.to_string())?;
            return write(socket, text).await;
        }
        self.session.restart();
        if self.room.is_some() {
            self.emit(Update::Rejoining { code: None });
        }
        self.rejoin(socket).await
    }

    /// Enters the room the client was in again, as a new peer; the answer goes to the
    /// program as an update.
    async fn rejoin(&mut self, socket: &mut Socket) -> Result<(), String> {
        let Some(room) = self.room.clone() else {
            return Ok(());
        };
        self.send_counted(socket, Request::<D>::CreateOrJoin { room })
            .await
    }

    /// The connection is gone: when to try again, or `None` to give up.
    fn lost(&mut self, reason: String, at_once: bool) -> Option<Instant> {
        tracing::debug!(%reason, "connection to the relay lost");
        for answer in self.joining.drain(..) {
            let _ = answer.send(Err(Error::Disconnected));
        }
        (self.ack_due, self.resuming) = (None, false);
        let retry_in = self.options.reconnect.then(|| match at_once {
            true => Duration::ZERO,
            false => Duration::from_millis(self.backoff.next_delay_ms().into()),
        });
        self.emit(Update::Disconnected { reason, retry_in });
        retry_in.map(|delay| Instant::now() + delay)
    }

    /// Whether a frame sent without a connection goes later: it does when the session can
    /// resume (it keeps the frame).
    fn carried(&self) -> Result<(), Error> {
        match self.session.window_ms() {
            Some(_) => Ok(()),
            None => Err(Error::Disconnected),
        }
    }

    async fn acknowledge(&mut self, socket: &mut Socket) -> Result<(), String> {
        self.ack_due = None;
        match self.session.ack::<D>() {
            Some(ack) => {
                write(
                    socket,
                    serde_json::to_string(&ack).map_err(|e| e.to_string())?,
                )
                .await
            }
            None => Ok(()),
        }
    }

    /// Sends a counted request other than a message.
    async fn send_counted(
        &mut self,
        socket: &mut Socket,
        request: Request<D>,
    ) -> Result<(), String> {
        let text = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        drop(request);
        let _ = self.session.sending(&text);
        write(socket, text).await
    }

    /// Hands `update` to the program, or queues it while the program has not read those
    /// before it; one that no longer listens misses it. Never waits for the program, so
    /// its commands go on being taken (a program that awaits a send while its updates pile
    /// up does not deadlock); the connection stops being read instead ([`UPDATES`]).
    fn emit(&mut self, update: Update<D>) {
        self.pending.push_back(update);
        self.hand_over();
    }

    /// Hands queued updates to the program while it has room for them.
    fn hand_over(&mut self) {
        while let Some(update) = self.pending.pop_front() {
            match self.updates.try_send(update) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(update)) => {
                    self.pending.push_front(update);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// A `message` frame's text.
fn message_text<D: Data>(to: Option<PeerId>, data: D) -> Result<String, Error> {
    Ok(serde_json::to_string(&Request::Message { data, to })?)
}

fn lost(reason: String) -> Ending {
    Ending::Lost {
        reason,
        at_once: false,
    }
}

async fn write(socket: &mut Socket, text: String) -> Result<(), String> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

/// Closes the connection with a close frame (the relay ends the session at once), and
/// waits a little for the relay's.
async fn close(socket: &mut Socket) {
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if socket.close(Some(frame)).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_PATIENCE, async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }
}
