//! Processes: the relay binary run on its own, waiting for a server to listen, signals,
//! free ports and temporary directories.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
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

/// The relay binary (`signalroom`, see [`relay_binary`]) run as a process of its own, for
/// tests that kill it; killed when dropped.
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
        // The first call may build the relay: off this thread, so that whatever the test
        // already runs on it (an in-process relay renewing its liveness in Redis, a proxy)
        // keeps running meanwhile.
        let binary = tokio::task::spawn_blocking(relay_binary).await??;
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

    /// Waits, up to `patience`, for the relay to exit; returns how long it took.
    pub async fn exited(&mut self, patience: std::time::Duration) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        while self.child.try_wait()?.is_none() {
            anyhow::ensure!(
                started.elapsed() < patience,
                "the relay did not exit in {patience:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }

    /// SIGKILL: the relay stops without a word to anyone.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The relay binary, `signalroom`, built from the sources under test.
///
/// Cargo tells an integration test where its own package's binaries are
/// (`CARGO_BIN_EXE_<name>`, built before the test runs), but these tests are a package of
/// their own, and depending on another package's binary (an artifact dependency) needs a
/// nightly Cargo. Running `target/debug/signalroom` when it is there would run whatever was
/// built last: stale after a change, or missing. Moving the process tests into the
/// server's package, or building a copy of `main.rs` here, would test something else than
/// the package's own binary or split the tests.
///
/// So the first test that needs the binary asks Cargo for it: `cargo build -p
/// signalroom-server --bin signalroom --message-format=json`, in this build's target
/// directory and profile. Cargo rebuilds it if any source it depends on changed (nothing
/// to do takes a fraction of a second), and the path is the one Cargo reports for the
/// artifact, never a guess. `cargo test` no longer holds the build lock while the tests
/// run, so the nested build cannot wait for it. Built once per test binary.
pub fn relay_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    binary(&BINARY, "signalroom-server", "signalroom")
}

/// The native WebRTC peer, `signalroom-peer`, built as [`relay_binary`] is.
pub fn peer_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    binary(&BINARY, "signalroom-peer", "signalroom-peer")
}

/// Binary `name` of `package`, built once per test binary (see [`relay_binary`]).
fn binary(
    built: &'static OnceLock<Result<PathBuf, String>>,
    package: &str,
    name: &str,
) -> Result<PathBuf> {
    built
        .get_or_init(|| build(package, name).map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// See [`relay_binary`].
fn build(package: &str, name: &str) -> Result<PathBuf> {
    // This test binary is <target dir>/<profile dir>/deps/<name>.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary is not in a target directory")?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("no profile directory above {}", exe.display()),
    };
    // Cargo gives its own path to what it runs; a test binary run by hand finds `cargo`
    // on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(&cargo)
        .args(["build", "--quiet", "--message-format=json"])
        .args(["-p", package, "--bin", name])
        .args(["--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let messages: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if !output.status.success() {
        // The compiler's diagnostics come as JSON on stdout with --message-format=json.
        let diagnostics: String = messages
            .iter()
            .filter(|m| m["reason"] == "compiler-message")
            .filter_map(|m| m["message"]["rendered"].as_str())
            .collect();
        bail!(
            "building {name} failed ({}):\n{diagnostics}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for message in &messages {
        let target = &message["target"];
        if message["reason"] == "compiler-artifact"
            && target["name"] == name
            && target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        {
            let binary = message["executable"]
                .as_str()
                .with_context(|| format!("cargo named no executable for {name}"))?;
            return Ok(binary.into());
        }
    }
    bail!("cargo built no {name} binary:\n{stdout}")
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

/// A port free on loopback just now, never one this test binary was handed before.
pub fn free_port() -> Result<u16> {
    // The kernel may hand out a port again once its listener is closed; tests running side
    // by side, or one asking for two ports before starting either, would then share it.
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return Ok(port);
        }
    }
}
