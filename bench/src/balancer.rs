//! A TCP balancer in front of several relays, as an operator puts one: each new connection
//! goes to the next relay that is up, in turn; a relay taken out (its `/readyz` failing,
//! here told directly) gets no new connection, while those it has run until it closes them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};

/// The relays that are up. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Live {
    relays: Arc<Mutex<Vec<SocketAddr>>>,
    turn: Arc<AtomicUsize>,
}

impl Live {
    pub fn new(relays: Vec<SocketAddr>) -> Self {
        Self {
            relays: Arc::new(Mutex::new(relays)),
            turn: Arc::default(),
        }
    }

    /// Takes `relay` out: no new connection goes to it.
    pub fn remove(&self, relay: SocketAddr) {
        self.lock().retain(|r| *r != relay);
    }

    /// Puts `relay` in.
    pub fn add(&self, relay: SocketAddr) {
        self.lock().push(relay);
    }

    /// The relay whose turn it is, if any is up.
    fn next(&self) -> Option<SocketAddr> {
        let relays = self.lock();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        (!relays.is_empty()).then(|| relays[turn % relays.len()])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SocketAddr>> {
        // A panic while holding it leaves a list still usable.
        self.relays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running balancer, on a thread of its own (it copies every byte twice: on the load
/// generator's one thread it would slow the clients it serves); it stops when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a balancer over `live` on a free loopback port.
pub fn start(live: Live) -> Result<Balancer> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stopped => return,
                };
                let Ok((mut client, _)) = accepted else {
                    return;
                };
                let live = live.clone();
                tokio::spawn(async move {
                    // A relay just taken out may refuse: try the next.
                    for _ in 0..3 {
                        let Some(relay) = live.next() else { return };
                        if let Ok(mut upstream) = TcpStream::connect(relay).await {
                            let _ = client.set_nodelay(true);
                            let _ = upstream.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            return;
                        }
                    }
                });
            }
        });
    });
    Ok(Balancer {
        addr,
        stop: Some(stop),
    })
}
