//! IVF, the plain container of libvpx: a 32-byte file header, then each frame as its size,
//! its timestamp and its bytes. The peer records VP8 into it and loops a VP8 file from it;
//! ffmpeg and most players open it.

use std::io::{self, Seek, SeekFrom, Write};

/// What is wrong with a file that should be VP8 in IVF.
#[derive(Debug, thiserror::Error)]
pub enum IvfError {
    /// It does not start with IVF's signature.
    #[error("not an IVF file")]
    NotIvf,
    /// It holds another codec.
    #[error("the IVF file holds {0}, not VP8")]
    NotVp8(String),
    /// It ends inside a header or a frame.
    #[error("the IVF file is cut short")]
    Truncated,
    /// It holds no frame.
    #[error("the IVF file holds no frame")]
    Empty,
    /// Its time base is zero.
    #[error("the IVF file's time base is zero")]
    BadTimeBase,
}

const HEADER: usize = 32;
const FRAME_HEADER: usize = 12;
/// Recordings count time in the RTP clock of video: 90 kHz.
const RECORDING_RATE: u32 = 90_000;

/// A VP8 clip read whole: its frames, each with its time from the first in 90 kHz ticks.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The frames in order: (time in 90 kHz ticks from the first frame, bytes).
    pub frames: Vec<(u64, std::sync::Arc<[u8]>)>,
    /// How long one pass lasts, in 90 kHz ticks: the last frame's time plus one frame.
    pub length: u64,
}

impl Clip {
    /// Reads a VP8 IVF file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, IvfError> {
        if bytes.len() < HEADER || &bytes[0..4] != b"DKIF" {
            return Err(IvfError::NotIvf);
        }
        let fourcc = &bytes[8..12];
        if fourcc != b"VP80" {
            return Err(IvfError::NotVp8(
                String::from_utf8_lossy(fourcc).into_owned(),
            ));
        }
        let header_len = usize::from(u16::from_le_bytes([bytes[6], bytes[7]])).max(HEADER);
        let rate = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let scale = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        if rate == 0 || scale == 0 {
            return Err(IvfError::BadTimeBase);
        }
        // A timestamp counts `scale / rate` seconds.
        let ticks = |pts: u64| pts * u64::from(scale) * 90_000 / u64::from(rate);
        let mut frames = Vec::new();
        let mut at = header_len;
        let mut first = None;
        while at < bytes.len() {
            let header = bytes
                .get(at..at + FRAME_HEADER)
                .ok_or(IvfError::Truncated)?;
            let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let mut pts = [0; 8];
            pts.copy_from_slice(&header[4..12]);
            let pts = u64::from_le_bytes(pts);
            let start = at + FRAME_HEADER;
            let data = bytes.get(start..start + size).ok_or(IvfError::Truncated)?;
            let first = *first.get_or_insert(pts);
            frames.push((ticks(pts.saturating_sub(first)), data.into()));
            at = start + size;
        }
        let (last, _) = frames.last().ok_or(IvfError::Empty)?;
        let step = if frames.len() > 1 {
            last / (frames.len() as u64 - 1)
        } else {
            3000
        };
        Ok(Self {
            length: last + step.max(1),
            frames,
        })
    }
}

/// A VP8 recording being written: frames in, the frame count written into the header at
/// [`Recorder::finish`].
#[derive(Debug)]
pub struct Recorder<W> {
    out: W,
    frames: u32,
    first: Option<u64>,
}

impl<W: Write + Seek> Recorder<W> {
    /// Starts a recording of `width` by `height` (the first keyframe's size).
    pub fn start(mut out: W, width: u16, height: u16) -> io::Result<Self> {
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(b"DKIF");
        header[6..8].copy_from_slice(&(HEADER as u16).to_le_bytes());
        header[8..12].copy_from_slice(b"VP80");
        header[12..14].copy_from_slice(&width.to_le_bytes());
        header[14..16].copy_from_slice(&height.to_le_bytes());
        header[16..20].copy_from_slice(&RECORDING_RATE.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        out.write_all(&header)?;
        Ok(Self {
            out,
            frames: 0,
            first: None,
        })
    }

    /// Appends a frame whose RTP time is `time` (90 kHz).
    pub fn frame(&mut self, time: u64, data: &[u8]) -> io::Result<()> {
        let first = *self.first.get_or_insert(time);
        let size = u32::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut header = [0u8; FRAME_HEADER];
        header[0..4].copy_from_slice(&size.to_le_bytes());
        header[4..12].copy_from_slice(&time.saturating_sub(first).to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the frame count into the header and flushes; the recording is complete.
    pub fn finish(mut self) -> io::Result<u32> {
        self.out.seek(SeekFrom::Start(24))?;
        self.out.write_all(&self.frames.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.frames)
    }
}

/// The size of a VP8 keyframe (RFC 6386, section 9.1), or `None` for another frame.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some((
        u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff,
        u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a 320x240 VP8 keyframe: tag (keyframe), start code, sizes.
    const KEYFRAME: [u8; 12] = [
        0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2,
    ];

    #[test]
    fn a_recording_reads_back_as_a_clip_with_its_timing() {
        assert_eq!(keyframe_size(&KEYFRAME), Some((320, 240)));
        assert_eq!(keyframe_size(&[0x51; 12]), None);
        let mut bytes = Vec::new();
        let mut recorder = Recorder::start(io::Cursor::new(&mut bytes), 320, 240).expect("memory");
        // RTP times: the first frame's is arbitrary; the recording starts at zero.
        recorder.frame(1_000_500, &KEYFRAME).expect("memory");
        recorder.frame(1_003_500, &[0x51; 20]).expect("memory");
        assert_eq!(recorder.finish().expect("memory"), 2);
        assert_eq!(&bytes[24..28], &2u32.to_le_bytes(), "the frame count");
        assert_eq!(&bytes[12..16], &[0x40, 0x01, 0xf0, 0x00], "320x240");

        let clip = Clip::parse(&bytes).expect("a clip");
        assert_eq!(clip.frames.len(), 2);
        assert_eq!(clip.frames[0].0, 0);
        assert_eq!(clip.frames[1].0, 3000);
        assert_eq!(&*clip.frames[0].1, &KEYFRAME);
        assert_eq!(clip.length, 6000);
    }

    #[test]
    fn what_is_not_vp8_in_ivf_is_refused() {
        let mut bytes = Vec::new();
        let mut recorder = Recorder::start(io::Cursor::new(&mut bytes), 320, 240).expect("memory");
        recorder.frame(0, &KEYFRAME).expect("memory");
        recorder.finish().expect("memory");

        let mut vp9 = bytes.clone();
        vp9[8..12].copy_from_slice(b"VP90");
        assert!(matches!(Clip::parse(&vp9), Err(IvfError::NotVp8(_))));
        assert!(matches!(Clip::parse(b"RIFF...."), Err(IvfError::NotIvf)));
        assert!(matches!(
            Clip::parse(&bytes[..bytes.len() - 1]),
            Err(IvfError::Truncated)
        ));
        assert!(matches!(Clip::parse(&bytes[..32]), Err(IvfError::Empty)));
        let mut still = bytes.clone();
        still[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(Clip::parse(&still), Err(IvfError::BadTimeBase)));
    }
}
