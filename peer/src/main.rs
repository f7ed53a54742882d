//! `signalroom-peer` on the command line: the arguments, standard input as chat lines,
//! the reports printed, signals to stop, and exit statuses that say why it could not take
//! part. The peer itself is the library's [`signalroom_peer::run`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use signalroom_client::{Error, Options};
use signalroom_peer::ivf::Clip;
use signalroom_peer::report::Printer;
use signalroom_peer::{Command, Config, PeerError};
use signalroom_protocol::RoomName;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

const EXITS: &str = "\
Exit status:
  0  stopped by Ctrl-C or SIGTERM (the room sees the peer leave)
  1  any other failure (a bad argument, a broken socket, the relay gone for good)
  3  the relay cannot be reached
  4  the relay refused the connection (a bad or missing token, a refused origin)
  5  the room is full, or the relay refused to let the peer in

Examples:
  signalroom-peer lobby
  signalroom-peer --relay wss://relay.example.com --token \"$JWT\" --json lobby";

/// Joins a signalroom room and calls every member (WebRTC, data channel chat).
///
/// Each line on standard input is sent to every member: over the call's data channel once
/// it is open, through the relay before. What arrives is printed, one line each, with its
/// sender. The peer takes calls on one UDP port of `--bind`, offered as its host
/// candidate, and on a relayed address when the relay names a TURN server; it keeps its
/// calls when the relay connection drops and resumes. With --record it records each
/// member's video and sound; with --send-video it sends a VP8 clip as its camera.
#[derive(Debug, Parser)]
#[command(name = "signalroom-peer", version, after_help = EXITS)]
struct Args {
    /// The room to create or join.
    room: String,
    /// The relay: ws://host:port or wss://host, with or without the /ws path.
    #[arg(long, default_value = "ws://127.0.0.1:2013")]
    relay: String,
    /// A room token (JWT), for a relay that requires one.
    #[arg(long, env = "SIGNALROOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The Origin header to send, for a relay that admits only some origins.
    #[arg(long)]
    origin: Option<String>,
    /// A PEM file of the certificate authority that signed the relay's certificate, for a
    /// wss:// relay the system does not trust.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The local address to take calls on (a port is picked). It must be one the other
    /// members can reach: loopback only reaches this machine, and 0.0.0.0 names none (it
    /// is refused before the peer enters the room).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Print one JSON object per line (`{"event": ...}`) instead of sentences.
    #[arg(long)]
    json: bool,
    /// Offer only a relayed address, on the TURN server the relay names with the
    /// credential it mints (as a browser does with iceTransportPolicy "relay"). Without it
    /// the peer offers its address on --bind, and a relayed one too when there is a TURN
    /// server.
    #[arg(long)]
    relay_only: bool,
    /// Record each member's video into DIR/peer-<id>.ivf (VP8 in IVF, from its first
    /// keyframe, asked for with a PLI). A member who comes back starts a new file.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Send this VP8 IVF file as the peer's camera, looped, to every member (make one with
    /// `ffmpeg -i in.mp4 -c:v libvpx -g 30 out.ivf`).
    #[arg(long, value_name = "FILE.ivf")]
    send_video: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "signalroom_peer=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("signalroom-peer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ran = runtime.block_on(run(args));
    // The read of standard input blocks a thread of the runtime's that cannot be
    // cancelled: leave it behind rather than wait for a line that may never come.
    runtime.shutdown_background();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signalroom-peer: {}", explain(&error));
            let relay = match error.downcast_ref::<PeerError>() {
                Some(PeerError::Relay(error)) => Some(error),
                _ => error.downcast_ref::<Error>(),
            };
            let code = match relay {
                Some(Error::Unreachable(_)) => 3,
                Some(Error::Refused { .. }) => 4,
                Some(Error::Full(_) | Error::Relay { .. }) => 5,
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, each told once: a cause whose text its effect already
/// quotes (the WebSocket library's I/O errors do) is left out.
fn explain(error: &anyhow::Error) -> String {
    let mut told = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !told.contains(&text) {
            if !told.is_empty() {
                told.push_str(": ");
            }
            told.push_str(&text);
        }
    }
    told
}

async fn run(args: Args) -> anyhow::Result<()> {
    let room = RoomName::new(&args.room).with_context(|| format!("room {:?}", args.room))?;
    let mut options = Options::new(&args.relay)?;
    if let Some(token) = args.token {
        options = options.token(token);
    }
    if let Some(origin) = args.origin {
        options = options.origin(origin);
    }
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        options = options.ca_pem(&pem)?;
    }
    let send = match &args.send_video {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let clip = Clip::parse(&bytes).with_context(|| format!("{}", path.display()))?;
            Some(Arc::new(clip))
        }
        None => None,
    };
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = Config {
        options,
        room,
        bind: args.bind,
        record: args.record,
        send,
        relay_only: args.relay_only,
    };
    let (commands, taken) = mpsc::unbounded_channel();
    let (reported, mut reports) = mpsc::unbounded_channel();
    let printer = Printer { json: args.json };
    let mut peer = std::pin::pin!(signalroom_peer::run(config, taken, reported));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut reading = true;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut stopping = false;
    loop {
        tokio::select! {
            ran = &mut peer => {
                // What it reported before it returned.
                while let Ok(reported) = reports.try_recv() {
                    printer.print(&reported.report);
                }
                return Ok(ran?);
            }
            Some(reported) = reports.recv() => printer.print(&reported.report),
            line = lines.next_line(), if reading => match line {
                Ok(Some(line)) => {
                    let _ = commands.send(Command::Say(line));
                }
                // Standard input ended: the calls go on until a signal stops them.
                Ok(None) | Err(_) => reading = false,
            },
            _ = tokio::signal::ctrl_c(), if !stopping => {
                stopping = true;
                let _ = commands.send(Command::Stop);
            }
            _ = terminate.recv(), if !stopping => {
                stopping = true;
                let _ = commands.send(Command::Stop);
            }
        }
    }
}
