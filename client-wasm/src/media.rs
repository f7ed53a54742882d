//! The local camera and microphone, the devices to choose them from, and the screen.

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{MediaStream, MediaStreamConstraints, MediaStreamTrack};

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
        if let Ok(track) = track.dyn_into::<MediaStreamTrack>() {
            track.stop();
        }
    }
}

fn media_devices() -> Option<web_sys::MediaDevices> {
    web_sys::window()?.navigator().media_devices().ok()
}

/// The tracks of `kind` (`"audio"` or `"video"`) in `stream`.
pub fn tracks(stream: &MediaStream, kind: &str) -> Vec<MediaStreamTrack> {
    let tracks = match kind {
        "audio" => stream.get_audio_tracks(),
        _ => stream.get_video_tracks(),
    };
    tracks.iter().filter_map(|t| t.dyn_into().ok()).collect()
}

/// The first track of `kind` in `stream`, if any.
pub fn track(stream: Option<&MediaStream>, kind: &str) -> Option<MediaStreamTrack> {
    tracks(stream?, kind).into_iter().next()
}

/// A track of `kind` from the device `id` (a `deviceId` from [`devices`]).
pub async fn device_track(kind: &str, id: &str) -> Result<MediaStreamTrack, JsValue> {
    let exact = js_sys::Object::new();
    js_sys::Reflect::set(&exact, &"exact".into(), &id.into())?;
    let wanted = js_sys::Object::new();
    js_sys::Reflect::set(&wanted, &"deviceId".into(), &exact)?;
    let constraints = MediaStreamConstraints::new();
    if kind == "audio" {
        constraints.set_audio(&wanted);
    } else {
        constraints.set_video(&wanted);
    }
    let devices = media_devices().ok_or("no media devices")?;
    let stream = JsFuture::from(devices.get_user_media_with_constraints(&constraints)?).await?;
    track(Some(&stream.unchecked_into()), kind).ok_or_else(|| "no track".into())
}

/// A screen, window or tab the user picks, as a video track.
pub async fn screen() -> Result<MediaStreamTrack, JsValue> {
    let devices = media_devices().ok_or("no media devices")?;
    let stream = JsFuture::from(devices.get_display_media()?).await?;
    track(Some(&stream.unchecked_into()), "video").ok_or_else(|| "no track".into())
}

/// The devices present, as `MediaDeviceInfo`s (`kind`, `deviceId`, `label`).
pub async fn devices() -> js_sys::Array {
    let listed = media_devices().map(|d| d.enumerate_devices());
    match listed {
        Some(Ok(listed)) => JsFuture::from(listed)
            .await
            .map(Into::into)
            .unwrap_or_default(),
        _ => js_sys::Array::new(),
    }
}

/// Calls `changed` whenever a device is plugged in or out.
pub fn on_device_change(changed: impl FnMut() + 'static) {
    if let Some(devices) = media_devices() {
        let handler = Closure::<dyn FnMut()>::new(changed);
        devices.set_ondevicechange(Some(handler.as_ref().unchecked_ref()));
        // The page's devices live as long as the page.
        handler.forget();
    }
}
