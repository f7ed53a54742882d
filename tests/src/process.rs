//! Processes: the relay binary run on its own, waiting for a server to listen, signals,
//! free ports and temporary directories.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::net::TcpStream;

use crate::PATIENCE;

/// A directory of the test's own under the system's temporary one, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "signalroom-{name}-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The relay binary (`signalroom`, built beside the tests by `cargo test --workspace`) run
/// as a process of its own, for tests that kill it; killed when dropped.
pub struct RelayProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl RelayProcess {
    pub async fn start(args: &[String]) -> Result<Self> {
        Self::start_with(args, &[("RUST_LOG", "warn")], None).await
    }

    /// [`RelayProcess::start`] with more environment variables, its standard output and
    /// error both written to `log` when given.
    pub async fn start_with(
        args: &[String],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Result<Self> {
        let binary = relay_binary()?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut command = std::process::Command::new(binary);
        command
            .arg("--addr")
            .arg(addr.to_string())
            .args(args)
            .envs(env.iter().copied());
        if let Some(log) = log {
            let out = std::fs::File::create(log)?;
            command.stdout(out.try_clone()?).stderr(out);
        }
        let child = command.spawn().context("starting the relay")?;
        let relay = Self { addr, child };
        listening(addr, "the relay").await?;
        Ok(relay)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the relay with kill(1).
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(self.child.id(), signal)
    }

    /// SIGKILL: the relay stops without a word to anyone.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The relay binary beside the test binaries.
pub fn relay_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("signalroom"))
        .context("the target directory")?;
    ensure!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p signalroom-server`",
        binary.display()
    );
    Ok(binary)
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections at `addr` (`what`, for the error).
pub async fn listening(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not start on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends `signal` to process `pid` with kill(1).
pub(crate) fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// A port free on loopback just now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
