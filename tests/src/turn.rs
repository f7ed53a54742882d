//! coturn: a TURN server of the test's own, and its test client.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::{free_port, listening};

/// A coturn `turnserver` of the test's own on a free loopback port, checking TURN REST
/// credentials against `secret` (coturn's `use-auth-secret`); killed when dropped. Its
/// settings, the secret included, are in a file, so `ps` shows no secret.
pub struct TurnServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

/// What `turnutils_uclient` made of a credential.
#[derive(Debug)]
pub struct TurnCheck {
    /// It allocated a relay and its packets came back through it.
    pub relayed: bool,
    /// Its exit status and output, for assertion messages.
    pub report: String,
}

impl TurnServer {
    pub async fn start(secret: &str) -> Result<Self> {
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("signalroom-turn-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        // Relay ports: 100 of them, away from the ephemeral range the other servers use.
        let relay_base = 10_000 + (port % 200) * 100;
        let settings = format!(
            "use-auth-secret\n\
             static-auth-secret={secret}\n\
             realm=signalroom.test\n\
             listening-ip=127.0.0.1\n\
             listening-port={port}\n\
             relay-ip=127.0.0.1\n\
             min-port={relay_base}\n\
             max-port={}\n\
             allow-loopback-peers\n\
             no-tls\nno-dtls\nno-cli\n\
             fingerprint\n\
             log-file=stdout\nsimple-log\n\
             userdb={}\n\
             pidfile={}\n",
            relay_base + 99,
            dir.join("turndb").display(),
            dir.join("turnserver.pid").display(),
        );
        let conf = dir.join("turnserver.conf");
        std::fs::write(&conf, settings)?;
        let log = std::fs::File::create(dir.join("turnserver.log"))?;
        let child = match std::process::Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error).context(
                    "starting turnserver: run scripts/setup.sh --test, which installs coturn",
                );
            }
        };
        let server = Self { port, dir, child };
        listening(([127, 0, 0, 1], port).into(), "turnserver").await?;
        Ok(server)
    }

    /// Its URL, as `--turn-url` takes it.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }

    /// Allocates a relay on this server with `turnutils_uclient` as `username` with
    /// `password`, and sends a few packets through it to a `turnutils_peer` that echoes them.
    pub async fn check(&self, username: &str, password: &str) -> Result<TurnCheck> {
        let port = self.port;
        let (username, password) = (username.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || uclient(port, &username, &password)).await?
    }
}

/// See [`TurnServer::check`].
fn uclient(port: u16, username: &str, password: &str) -> Result<TurnCheck> {
    use std::process::{Command, Stdio};
    let peer_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting turnutils_peer: run scripts/setup.sh --test, which installs coturn")?;
    std::thread::sleep(Duration::from_millis(200));
    let output = Command::new("timeout")
        .args(["30", "turnutils_uclient"])
        .args(["-p", &port.to_string(), "-u", username, "-w", password])
        .args([
            "-n",
            "1",
            "-m",
            "1",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
        ])
        .arg("127.0.0.1")
        .output();
    let _ = peer.kill();
    let _ = peer.wait();
    let output = output.context("running turnutils_uclient (coturn's test client)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.code() != Some(127),
        "turnutils_uclient is missing: run scripts/setup.sh --test, which installs coturn"
    );
    // Accepted: exit 0, and every packet came back through the relay. Refused: a non-zero
    // exit after "Cannot complete Allocation" (the server answered 401).
    let relayed = output.status.success() && text.contains("Total lost packets 0 (0.000000%)");
    let refused = !output.status.success() && text.contains("Cannot complete Allocation");
    ensure!(
        relayed || refused,
        "turnutils_uclient neither relayed nor was refused ({}):\n{text}",
        output.status
    );
    Ok(TurnCheck {
        relayed,
        report: format!("{}:\n{text}", output.status),
    })
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
