//! Ogg Opus (RFC 7845): the container the peer records a member's audio into, beside its
//! video. One Opus packet per Ogg page, each page's granule position the sample (48 kHz)
//! its packet ends on, counted by the packets' own durations (RFC 6716's table of
//! contents byte): a packet lost on the way shortens the recording, it leaves no gap.

use std::io::{self, Write};

/// Samples per second of Opus's granule positions.
const RATE: u32 = 48_000;
/// What a decoder drops at the start (the encoder's look-ahead; 3.75 ms is typical).
const PRE_SKIP: u16 = 312;
/// An Opus recording being written. Each packet waits for the next, so that the last can
/// be marked as the stream's end by [`Recorder::finish`].
#[derive(Debug)]
pub struct Recorder<W> {
    out: W,
    serial: u32,
    sequence: u32,
    /// Samples in the packets written or held.
    samples: u64,
    /// The packet not yet written, and the sample it ends on.
    held: Option<(u64, Vec<u8>)>,
    packets: u32,
}

impl<W: Write> Recorder<W> {
    /// Starts a recording of `channels` channels, with the stream's `serial` number.
    pub fn start(out: W, channels: u8, serial: u32) -> io::Result<Self> {
        let mut recorder = Self {
            out,
            serial,
            sequence: 0,
            samples: 0,
            held: None,
            packets: 0,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&RATE.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        recorder.page(&head, 0, BEGINNING)?;
        let vendor = concat!("signalroom-peer ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes());
        recorder.page(&tags, 0, 0)?;
        Ok(recorder)
    }

    /// Appends an Opus packet; one that is not (no table of contents) is skipped.
    pub fn packet(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(samples) = samples(data) else {
            return Ok(());
        };
        if let Some((end, held)) = self.held.take() {
            self.page(&held, end, 0)?;
        }
        self.samples += samples;
        self.held = Some((self.samples, data.to_vec()));
        Ok(())
    }

    /// Writes the last packet, marking the end of the stream, and flushes; the count of
    /// packets written.
    pub fn finish(mut self) -> io::Result<u32> {
        if let Some((end, held)) = self.held.take() {
            self.page(&held, end, END)?;
        }
        self.out.flush()?;
        Ok(self.packets.saturating_sub(2))
    }

    /// Writes one page holding `packet`, ending on sample `granule`.
    fn page(&mut self, packet: &[u8], granule: u64, flags: u8) -> io::Result<()> {
        // Lacing: 255s, then the rest (a 0 when the length is a multiple of 255).
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        let segments = u8::try_from(lacing.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut page = Vec::with_capacity(27 + lacing.len() + packet.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(segments);
        page.extend_from_slice(&lacing);
        page.extend_from_slice(packet);
        let crc = crc32(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&page)?;
        self.sequence += 1;
        self.packets += 1;
        Ok(())
    }
}

/// The samples (48 kHz) an Opus packet holds, from its table of contents (RFC 6716,
/// section 3.1); `None` for an empty packet or a code 3 packet without its frame count.
fn samples(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        // SILK only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(packet.get(1)? & 0x3f),
    };
    Some(frame * frames)
}

const BEGINNING: u8 = 0x02;
const END: u8 = 0x04;

/// Ogg's CRC-32: polynomial 0x04c11db7, most significant bit first, no reflection, starting
/// at zero, over the page with its checksum field zero.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages of an Ogg stream: (flags, granule, sequence, packet), checksums checked.
    fn pages(mut bytes: &[u8]) -> Vec<(u8, u64, u32, Vec<u8>)> {
        let mut pages = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(&bytes[..4], b"OggS");
            let segments = usize::from(bytes[26]);
            let lacing = &bytes[27..27 + segments];
            let size: usize = lacing.iter().map(|&l| usize::from(l)).sum();
            let len = 27 + segments + size;
            let mut page = bytes[..len].to_vec();
            let crc = u32::from_le_bytes(page[22..26].try_into().expect("4 bytes"));
            page[22..26].copy_from_slice(&[0; 4]);
            assert_eq!(crc32(&page), crc, "checksum");
            let granule = u64::from_le_bytes(page[6..14].try_into().expect("8 bytes"));
            let sequence = u32::from_le_bytes(page[18..22].try_into().expect("4 bytes"));
            pages.push((page[5], granule, sequence, page[27 + segments..].to_vec()));
            bytes = &bytes[len..];
        }
        pages
    }

    #[test]
    fn the_checksum_is_ogg_s() {
        // The CRC-32/MPEG-2 check value without its final inversion and initial ones:
        // "123456789" under polynomial 0x04c11db7, init 0, no reflection, no xor out.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn packets_go_one_a_page_timed_by_rtp_and_the_last_ends_the_stream() {
        let mut bytes = Vec::new();
        let mut recorder = Recorder::start(&mut bytes, 2, 7).expect("memory");
        // 20 ms of CELT (config 31, one frame); 20 ms of SILK in two 10 ms frames (config
        // 0, code 1); 3 x 20 ms of CELT (code 3, three frames).
        let big = [&[0x01u8][..], &[0xab; 599][..]].concat();
        recorder.packet(&[0xf8, 2, 3]).expect("memory");
        recorder.packet(&big).expect("memory");
        recorder
            .packet(&[&[0xfb, 0x03][..], &[9; 253][..]].concat())
            .expect("memory");
        recorder.packet(&[]).expect("not Opus: skipped");
        assert_eq!(recorder.finish().expect("memory"), 3);

        let pages = pages(&bytes);
        assert_eq!(pages.len(), 5);
        let (flags, granule, sequence, head) = &pages[0];
        assert_eq!((*flags, *granule, *sequence), (BEGINNING, 0, 0));
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[9], 2, "channels");
        assert_eq!(&pages[1].3[..8], b"OpusTags");
        let audio: Vec<_> = pages[2..]
            .iter()
            .map(|(flags, granule, sequence, packet)| (*flags, *granule, *sequence, packet.len()))
            .collect();
        assert_eq!(
            audio,
            vec![(0, 960, 2, 3), (0, 1920, 3, 600), (END, 4800, 4, 255)]
        );
        assert_eq!(pages[3].3, big);
    }
}
