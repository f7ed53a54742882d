//! `signalroom-peer` run as a process: its `--json` reports read as typed values, lines
//! written to its standard input.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use signalroom_protocol::PeerId;
use tokio::sync::mpsc;

use crate::{peer_binary, send_signal};

/// One line of the peer's `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PeerReport {
    Entered {
        room: String,
        peer: PeerId,
        peers: Vec<PeerId>,
    },
    Relayed {
        server: std::net::SocketAddr,
        relayed: std::net::SocketAddr,
    },
    Join {
        peer: PeerId,
    },
    Left {
        peer: PeerId,
    },
    Connected {
        peer: PeerId,
    },
    ChannelOpen {
        peer: PeerId,
    },
    Disconnected {
        peer: PeerId,
    },
    Repairing {
        peer: PeerId,
    },
    Chat {
        from: PeerId,
        text: String,
        via: String,
    },
    CallEnded {
        peer: PeerId,
        reason: String,
    },
    Recording {
        peer: PeerId,
        path: String,
        width: u16,
        height: u16,
    },
    RecordingAudio {
        peer: PeerId,
        path: String,
    },
    Recorded {
        peer: PeerId,
        path: String,
        frames: u32,
    },
    Reconnecting {
        reason: String,
    },
    Resumed {
        incomplete: bool,
    },
}

/// A running `signalroom-peer --json`; killed when dropped.
pub struct PeerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    reports: mpsc::UnboundedReceiver<Result<PeerReport, String>>,
}

/// How long a peer may take to report something expected: a call over loopback
/// connects in well under a second, and a debug build of str0m is slow to start.
pub const PEER_PATIENCE: Duration = Duration::from_secs(15);

impl PeerProcess {
    /// Starts a peer that joins `room` on the relay at `relay`, with `args` more.
    pub async fn start(relay: SocketAddr, room: &str, args: &[&str]) -> Result<Self> {
        let binary = tokio::task::spawn_blocking(peer_binary).await??;
        let mut child = Command::new(binary)
            .arg("--relay")
            .arg(format!("ws://{relay}"))
            .arg("--json")
            .args(args)
            .arg(room)
            .env("RUST_LOG", "signalroom_peer=info,warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting signalroom-peer")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let (tx, reports) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let report = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"));
                if tx.send(report).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            reports,
        })
    }

    /// Types `line` into the peer.
    pub fn say(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("standard input closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The next report.
    pub async fn next(&mut self) -> Result<PeerReport> {
        self.next_within(PEER_PATIENCE).await
    }

    /// The next report, within `patience`.
    pub async fn next_within(&mut self, patience: Duration) -> Result<PeerReport> {
        match tokio::time::timeout(patience, self.reports.recv()).await {
            Ok(Some(Ok(report))) => Ok(report),
            Ok(Some(Err(line))) => bail!("the peer printed something else: {line}"),
            Ok(None) => bail!("the peer's output ended"),
            Err(_) => bail!("the peer reported nothing in {patience:?}"),
        }
    }

    /// Reads reports until one `matches`, and returns it; the others are returned too,
    /// in order, for the test to look at.
    pub async fn until(
        &mut self,
        matches: impl Fn(&PeerReport) -> bool,
    ) -> Result<(PeerReport, Vec<PeerReport>)> {
        self.until_within(PEER_PATIENCE, matches).await
    }

    /// [`PeerProcess::until`], each report within `patience`.
    pub async fn until_within(
        &mut self,
        patience: Duration,
        matches: impl Fn(&PeerReport) -> bool,
    ) -> Result<(PeerReport, Vec<PeerReport>)> {
        let mut before = Vec::new();
        loop {
            let report = self
                .next_within(patience)
                .await
                .with_context(|| format!("after {before:?}"))?;
            if matches(&report) {
                return Ok((report, before));
            }
            before.push(report);
        }
    }

    /// Sends `signal` (`TERM`, `STOP`, ...) to the peer.
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(self.child.id(), signal)
    }

    /// Waits for the peer to exit; its exit status.
    pub async fn exit_code(&mut self) -> Result<i32> {
        let deadline = tokio::time::Instant::now() + PEER_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return status.code().context("the peer died of a signal");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the peer did not exit in {PEER_PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
