//! Recordings of the members' media in a directory: each member's video, VP8 in IVF
//! (`peer-<id>.ivf`, from its first keyframe), and its sound, Opus in Ogg
//! (`peer-<id>.opus`), each file started at its own first frame and completed when the
//! member's call ends.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use signalroom_protocol::PeerId;

use crate::report::Report;
use crate::{ivf, ogg};

/// One file being written, and where.
struct Track<R> {
    path: PathBuf,
    recorder: R,
}

/// A member's files.
#[derive(Default)]
struct Files {
    video: Option<Track<ivf::Recorder<BufWriter<File>>>>,
    sound: Option<Track<ogg::Recorder<BufWriter<File>>>>,
}

/// The recordings of every member whose media arrives.
pub struct Recordings {
    dir: PathBuf,
    members: BTreeMap<PeerId, Files>,
}

impl Recordings {
    /// Recordings into `dir`, which exists.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            members: BTreeMap::new(),
        }
    }

    /// Adds a video frame from `peer` whose RTP time is `time` (90 kHz). The recording
    /// starts at a keyframe (earlier frames are dropped): its report, when it starts.
    pub fn video(&mut self, peer: PeerId, time: u64, frame: &[u8]) -> io::Result<Option<Report>> {
        let files = self.members.entry(peer).or_default();
        let mut started = None;
        if files.video.is_none() {
            let Some((width, height)) = ivf::keyframe_size(frame) else {
                return Ok(None);
            };
            let path = path(&self.dir, peer, "ivf");
            let recorder = ivf::Recorder::start(create(&path)?, width, height)?;
            started = Some(Report::Recording {
                peer,
                path: path.display().to_string(),
                width,
                height,
            });
            files.video = Some(Track { path, recorder });
        }
        if let Some(track) = files.video.as_mut() {
            track.recorder.frame(time, frame)?;
        }
        Ok(started)
    }

    /// Adds an Opus packet from `peer`, of `channels` channels: the recording's report,
    /// when it starts.
    pub fn sound(
        &mut self,
        peer: PeerId,
        channels: u8,
        packet: &[u8],
    ) -> io::Result<Option<Report>> {
        let files = self.members.entry(peer).or_default();
        let mut started = None;
        if files.sound.is_none() {
            let path = path(&self.dir, peer, "opus");
            // The stream's serial number: any, unique in its file.
            let serial = peer.get() as u32;
            let recorder = ogg::Recorder::start(create(&path)?, channels, serial)?;
            started = Some(Report::RecordingAudio {
                peer,
                path: path.display().to_string(),
            });
            files.sound = Some(Track { path, recorder });
        }
        if let Some(track) = files.sound.as_mut() {
            track.recorder.packet(packet)?;
        }
        Ok(started)
    }

    /// Completes `peer`'s files: a report for each.
    pub fn finish(&mut self, peer: PeerId) -> Vec<Report> {
        let Some(files) = self.members.remove(&peer) else {
            return Vec::new();
        };
        let video = files.video.map(|t| (t.path, t.recorder.finish()));
        let sound = files.sound.map(|t| (t.path, t.recorder.finish()));
        video
            .into_iter()
            .chain(sound)
            .filter_map(|(path, finished)| match finished {
                Ok(frames) => Some(Report::Recorded {
                    peer,
                    path: path.display().to_string(),
                    frames,
                }),
                Err(error) => {
                    tracing::warn!(%error, %peer, path = %path.display(), "a recording could not be completed");
                    None
                }
            })
            .collect()
    }
}

fn path(dir: &Path, peer: PeerId, extension: &str) -> PathBuf {
    dir.join(format!("peer-{peer}.{extension}"))
}

fn create(path: &Path) -> io::Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path)?))
}
