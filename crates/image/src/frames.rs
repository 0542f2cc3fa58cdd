//! Reading many page frames fast, for a restore that writes every saved
//! page: neighbouring frames are read together with one read (sequential
//! for the kernel's readahead when the image is not in the page cache),
//! and each is checked (record header, CRC, size) and decoded into buffers
//! kept from one frame to the next. Where frames lie in the file, their
//! record headers and checksums stay inside this crate.

use crate::container::{MAX_FRAME, RECORD_HEADER_LEN};
use crate::store::{check_frame_record, frame_record, PayloadDecoder};
use crate::{Frame, ImageReader, ReadAt, Result};
use std::ops::Range;

/// Most bytes read at once (larger batches fall out of the caches before
/// they are decoded and used: 8 MiB cost a restore 25% more CPU than
/// 2 MiB, and did not read a cold image faster), and the most bytes
/// between two frames read through rather than in two reads.
const BATCH_BYTES: u64 = 2 << 20;
const BATCH_GAP: u64 = 64 << 10;

/// Frames read together: positions `items()` of the list of frame indices
/// given to [`ImageReader::frame_batches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameBatch {
    items: Range<usize>,
    /// The batch's records lie in `[start, end)` of the image (empty: each
    /// frame is read alone).
    start: u64,
    end: u64,
}

impl FrameBatch {
    /// Positions in the list given to [`ImageReader::frame_batches`].
    pub fn items(&self) -> Range<usize> {
        self.items.clone()
    }
}

/// Group the frames `order` (frame indices, in the order they are wanted)
/// into batches of neighbours in the file.
fn batches(frames: &[Frame], order: &[u32]) -> Vec<FrameBatch> {
    let range = |index: u32| {
        let f = frames.get(index as usize)?;
        if u64::from(f.stored_size) > MAX_FRAME {
            return None;
        }
        let s = f.offset.checked_sub(RECORD_HEADER_LEN)?;
        Some((s, f.offset.checked_add(u64::from(f.stored_size))?))
    };
    let mut out: Vec<FrameBatch> = Vec::new();
    for (i, &index) in order.iter().enumerate() {
        let r = range(index);
        if let (Some(b), Some((s, e))) = (out.last_mut(), r) {
            if b.end > b.start && s >= b.end && s - b.end <= BATCH_GAP && e - b.start <= BATCH_BYTES
            {
                b.items.end = i + 1;
                b.end = e;
                continue;
            }
        }
        let (start, end) = r.unwrap_or((0, 0));
        out.push(FrameBatch {
            items: i..i + 1,
            start,
            end,
        });
    }
    out
}

/// Reads and decodes frames into buffers it keeps: a batch of neighbours
/// loaded with [`FrameBatchReader::load`], or one frame at a time. One per
/// thread; each holds a batch and a decoded frame.
pub struct FrameBatchReader<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    frames: &'a [Frame],
    /// Bytes of the image at `[loaded, loaded + read.len())`.
    read: Vec<u8>,
    loaded: u64,
    payload: PayloadDecoder,
}

impl<'a, R: ReadAt + ?Sized> FrameBatchReader<'a, R> {
    pub(crate) fn new(src: &'a R, frames: &'a [Frame]) -> Self {
        FrameBatchReader {
            src,
            frames,
            read: Vec::new(),
            loaded: 0,
            payload: PayloadDecoder::default(),
        }
    }

    /// Read the records of batch `b` with one read. On failure nothing is
    /// loaded (each frame is then read alone, and its error is the frame's).
    pub fn load(&mut self, b: &FrameBatch) {
        if b.end <= b.start {
            return;
        }
        self.read.resize((b.end - b.start) as usize, 0);
        self.loaded = b.start;
        if self.src.read_at(&mut self.read, b.start).is_err() {
            self.read.clear();
        }
    }

    /// The decoded bytes of frame `index`, with the checks of
    /// [`ImageReader::read_frame`] (record header, CRC, size): from the
    /// loaded batch, or read now.
    pub fn frame(&mut self, index: u32) -> Result<&[u8]> {
        let (f, rec_off, end) = frame_record(self.frames, index)?;
        if rec_off < self.loaded || end > self.loaded + self.read.len() as u64 {
            self.read.resize((end - rec_off) as usize, 0);
            self.loaded = rec_off;
            if let Err(e) = self.src.read_at(&mut self.read, rec_off) {
                self.read.clear();
                return Err(e);
            }
        }
        let rec = &self.read[(rec_off - self.loaded) as usize..(end - self.loaded) as usize];
        let stored = check_frame_record(f, index, rec_off, rec)?;
        self.payload.decode(index, f, stored)
    }
}

impl<R: ReadAt> ImageReader<R> {
    /// The frames `order` (frame indices, in the order they are wanted)
    /// grouped into batches of neighbours in the file, each read by one
    /// [`FrameBatchReader::load`] (at most 2 MiB, small gaps read through).
    pub fn frame_batches(&self, order: &[u32]) -> Vec<FrameBatch> {
        batches(&self.image().frames, order)
    }

    /// A reader of this image's frames in batches (one per thread).
    pub fn frame_batch_reader(&self) -> FrameBatchReader<'_, R> {
        FrameBatchReader::new(self.source(), &self.image().frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Compression, Frame, Image, ImageWriter, Process, Vma, WriteOptions};

    #[test]
    fn decoder_matches_read_frame() {
        for (c, codec) in [
            (Compression::Fast, Codec::Lz4),
            (Compression::Zstd, Codec::Zstd),
        ] {
            decoder_matches_read_frame_with(c, codec);
        }
    }

    fn decoder_matches_read_frame_with(compression: Compression, codec: Codec) {
        let opts = WriteOptions {
            compression,
            ..Default::default()
        };
        let mut w = ImageWriter::new(Vec::new(), opts).unwrap();
        // Compressible text and incompressible bytes: both codecs.
        let text: Vec<u8> = b"checkpoint restore "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        let mut x = 1u64;
        let random: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        w.add_pages(1, 0x10_0000, &text).unwrap();
        w.add_pages(1, 0x20_0000, &random).unwrap();
        let img = Image {
            processes: vec![Process {
                pid: 1,
                vmas: vec![Vma {
                    start: 0x10_0000,
                    end: 0x30_0000,
                    prot: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = w.finish(img).unwrap();
        let reader = ImageReader::new(bytes.clone()).unwrap();
        let frames = &reader.image().frames;
        assert!(frames.iter().any(|f| f.codec == codec));
        assert!(frames.iter().any(|f| f.codec == Codec::None));
        let mut d = reader.frame_batch_reader();
        for i in 0..frames.len() as u32 {
            let want = reader.read_frame(i).unwrap();
            assert_eq!(d.frame(i).unwrap(), &want[..], "frame {i}");
        }
        // Into reused buffers (each frame's bytes where the range says,
        // whatever the buffer held before), twice over.
        let (mut scratch, mut out) = (crate::FrameScratch::default(), vec![7u8; 3 << 20]);
        for _ in 0..2 {
            for i in 0..frames.len() as u32 {
                let want = reader.read_frame(i).unwrap();
                let r = reader.decode_frame_into(i, &mut scratch, &mut out).unwrap();
                assert_eq!(&out[r], &want[..], "frame {i}");
            }
        }
        // A damaged frame is an error, not a panic or a wrong frame.
        for i in 0..frames.len() as u32 {
            let mut bad = bytes.clone();
            let f = &frames[i as usize];
            bad[(f.offset + u64::from(f.stored_size) / 2) as usize] ^= 0x55;
            let e = crate::store::decode_frame_into(&&bad[..], frames, i, &mut scratch, &mut out);
            assert!(e.is_err(), "frame {i} ({:?}) damaged decoded", f.codec);
        }
        // Read as one batch.
        let order: Vec<u32> = (0..frames.len() as u32).collect();
        let b = reader.frame_batches(&order);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].items, 0..frames.len());
        let mut d = reader.frame_batch_reader();
        d.load(&b[0]);
        assert_eq!(d.read.len() as u64, b[0].end - b[0].start);
        for i in 0..frames.len() as u32 {
            let want = reader.read_frame(i).unwrap();
            assert_eq!(d.frame(i).unwrap(), &want[..], "frame {i}");
        }
        // A batch that cannot be read falls back to frame by frame.
        d.load(&FrameBatch {
            end: bytes.len() as u64 + 1,
            ..b[0].clone()
        });
        assert!(d.read.is_empty());
        let want = reader.read_frame(1).unwrap();
        assert_eq!(d.frame(1).unwrap(), &want[..]);
        assert!(d.frame(frames.len() as u32).is_err());
        // A flipped byte is a checksum error.
        let mut bad = bytes.clone();
        bad[frames[0].offset as usize] ^= 1;
        let mut d = FrameBatchReader::new(&bad, frames);
        let e = d.frame(0).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn decode_errors_name_their_codec() {
        let mut d = PayloadDecoder::default();
        for (codec, name) in [(Codec::Lz4, "lz4"), (Codec::Zstd, "zstd")] {
            let f = Frame {
                codec,
                size: 4096,
                stored_size: 4,
                ..Default::default()
            };
            let e = d.decode(3, &f, &[0xff; 4]).unwrap_err().to_string();
            assert!(e.starts_with("frame 3 "), "{e}");
            assert!(e.contains(&format!(": {name}: ")), "{e}");
            assert!(
                !e.contains(if name == "lz4" { "zstd" } else { "lz4" }),
                "{e}"
            );
        }
    }
}
