//! The HTTP surface: the WebSocket at `/ws`, counts at `/stats`, the page at `/`.

use std::path::PathBuf;

use tokio::sync::watch;
use warp::Filter;

use crate::connection;
use crate::rooms::Rooms;

/// What the routes need besides the rooms.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Folder served at `/`.
    pub static_dir: PathBuf,
    /// Largest frame a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Outbox length per connection, in frames.
    pub outbox_frames: usize,
}

/// Every route of the relay.
pub fn routes<R: Rooms>(
    rooms: R,
    config: RouteConfig,
    shutdown: watch::Receiver<bool>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let with_rooms = {
        let rooms = rooms.clone();
        warp::any().map(move || rooms.clone())
    };
    let max_frame = config.max_frame_bytes;
    let outbox_frames = config.outbox_frames;
    let ws = warp::path(signalroom_protocol::WS_PATH)
        .and(warp::path::end())
        .and(warp::ws())
        .and(with_rooms.clone())
        .map(move |ws: warp::ws::Ws, rooms: R| {
            let shutdown = shutdown.clone();
            ws.max_message_size(max_frame)
                .max_frame_size(max_frame)
                .on_upgrade(move |socket| connection::serve(socket, rooms, outbox_frames, shutdown))
        });
    let stats = warp::path("stats")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_rooms)
        .map(|rooms: R| warp::reply::json(&rooms.stats()));
    let page = warp::get().and(warp::fs::dir(config.static_dir));
    ws.or(stats).or(page).with(warp::trace::request())
}
