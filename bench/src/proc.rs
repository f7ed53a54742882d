//! What `/proc` says: a process's CPU time and resident memory, the machine's TCP segments.

use anyhow::{bail, Context, Result};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / TICKS_PER_SEC)
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("odd VmRSS")?
        .parse()?)
}

/// TCP segments this machine has sent (its network namespace, so loopback here): all of
/// them, and those that carried new data. The difference is mostly pure ACKs.
#[derive(Debug, Clone, Copy)]
pub struct Segments {
    pub sent: u64,
    pub with_data: u64,
}

impl Segments {
    pub fn now() -> Result<Self> {
        Ok(Self {
            sent: counter("/proc/net/snmp", "Tcp:", "OutSegs")?,
            with_data: counter("/proc/net/netstat", "TcpExt:", "TCPOrigDataSent")?,
        })
    }

    /// Segments sent since `before`.
    pub fn since(self, before: Self) -> Self {
        Self {
            sent: self.sent.saturating_sub(before.sent),
            with_data: self.with_data.saturating_sub(before.with_data),
        }
    }
}

/// A counter from a `/proc/net` table, which is a line of names and then a line of values,
/// both starting with the table's name.
fn counter(path: &str, table: &str, name: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines().filter(|l| l.starts_with(table));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(at) = names.split_whitespace().position(|n| n == name) {
            let value = values.split_whitespace().nth(at).context("short row")?;
            return Ok(value.parse()?);
        }
    }
    bail!("no {name} in {path}")
}

/// The processes whose parent is `pid` (nginx's workers under its master).
pub fn children(pid: u32) -> Result<Vec<u32>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
        let parent: Option<u32> = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    Ok(children)
}

/// The file descriptors `pid` holds.
pub fn descriptors(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
