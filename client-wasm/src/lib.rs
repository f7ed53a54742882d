//! signalroom's browser client, compiled to WASM: asks for a room, talks to the relay, and
//! makes a WebRTC call with whoever else is in the room.
//!
//! Code map: [`config`] reads the page address; [`relay`] is the WebSocket transport;
//! [`codec`] turns frames into text and back; [`room`] is the room logic; [`call`] the
//! WebRTC session, with [`negotiation`] its perfect-negotiation decisions and [`media`] the
//! camera; [`ui`] the page's elements; [`app`] the event loop that ties them together.

pub mod app;
pub mod call;
pub mod codec;
pub mod config;
pub mod media;
pub mod negotiation;
pub mod relay;
pub mod room;
pub mod ui;

use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point: runs when the page loads the WASM.
#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(app::run());
}
