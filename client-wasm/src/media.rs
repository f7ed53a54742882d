//! The local camera and microphone.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MediaStream, MediaStreamConstraints};

/// Asks for camera and microphone, then for either alone. `Err` says why the page has
/// neither; the call then runs receive-only.
pub async fn local_stream() -> Result<MediaStream, String> {
    let devices = web_sys::window()
        .and_then(|w| w.navigator().media_devices().ok())
        .ok_or("this browser offers no camera access here (the page needs https or localhost)")?;
    let mut reason = String::new();
    for (video, audio) in [(true, true), (true, false), (false, true)] {
        let constraints = MediaStreamConstraints::new();
        constraints.set_video_bool(video);
        constraints.set_audio_bool(audio);
        let Ok(promise) = devices.get_user_media_with_constraints(&constraints) else {
            continue;
        };
        match JsFuture::from(promise).await {
            Ok(stream) => return stream.dyn_into().map_err(|_| "not a media stream".into()),
            Err(error) => {
                reason = js_sys::Reflect::get(&error, &"name".into())
                    .ok()
                    .and_then(|n| n.as_string())
                    .unwrap_or_else(|| "unknown error".into());
                // Denied is denied for any combination.
                if reason == "NotAllowedError" {
                    break;
                }
            }
        }
    }
    Err(match reason.as_str() {
        "NotAllowedError" => "camera and microphone access was denied".into(),
        "NotFoundError" => "no camera or microphone found".into(),
        other => format!("camera and microphone unavailable ({other})"),
    })
}

/// Stops every track of `stream`, which turns the camera off.
pub fn stop(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        if let Ok(track) = track.dyn_into::<web_sys::MediaStreamTrack>() {
            track.stop();
        }
    }
}
