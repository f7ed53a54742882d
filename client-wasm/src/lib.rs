//! signalroom's browser client, compiled to WASM: asks for a room, talks to the relay, and
//! makes a WebRTC call with whoever else is in the room.
//!
//! Code map: [`config`] reads the page address; [`relay`] is the WebSocket transport;
//! [`codec`] turns frames into text and back; [`room`] is the room logic; [`call`] the
//! WebRTC session, following [`signalroom_protocol::call`]'s rules, and [`media`] the
//! camera, the devices and the screen; [`ui`] the page's elements; [`app`] the event loop
//! that ties them together, and [`inbox`] its queue.
//!
//! [`room`] and [`codec`]'s encoding are plain Rust, and their tests also
//! run natively (`cargo test`); the modules that use the browser's APIs through web-sys and
//! gloo are built for `wasm32` only, and so are those dependencies.

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod call;
pub mod codec;
#[cfg(target_arch = "wasm32")]
pub mod config;
#[cfg(target_arch = "wasm32")]
pub mod inbox;
#[cfg(target_arch = "wasm32")]
pub mod media;
#[cfg(target_arch = "wasm32")]
pub mod relay;
pub mod room;
#[cfg(target_arch = "wasm32")]
pub mod ui;

/// Entry point: runs when the page loads the WASM.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(app::run());
}
