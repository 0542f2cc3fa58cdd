//! The streaming image writer.

use crate::codec;
use crate::container::*;
use crate::model::*;
use crate::validate::validate;
use crate::{
    Compression, Error, Result, WriteOptions, FORMAT_MAJOR, FORMAT_MINOR, MAX_PAGE_SIZE,
    MIN_PAGE_SIZE,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// True when every byte of `b` is zero. Compares 64-byte blocks as u128
/// words (vectorised by the compiler) and exits at the first non-zero block.
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u128;
        for w in c.chunks_exact(16) {
            let mut a = [0u8; 16];
            a.copy_from_slice(w);
            acc |= u128::from_ne_bytes(a);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

/// A frame encoded for storage.
pub(crate) struct Encoded {
    pub stored: Vec<u8>,
    pub codec: Codec,
    pub size: u32,
    pub crc32: u32,
    /// The input buffer, returned for reuse.
    pub input: Vec<u8>,
}

/// Compresses frames; `compress` falls back to raw when zstd does not shrink.
pub(crate) struct FrameCoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl FrameCoder {
    pub fn new(c: Compression) -> Result<Self> {
        let zstd = match c.zstd_level() {
            None => None,
            Some(level) => Some(
                zstd::bulk::Compressor::new(level).map_err(|e| Error::Compress { source: e })?,
            ),
        };
        Ok(FrameCoder { zstd })
    }

    /// Encode `input` (whose bytes are kept in `Encoded::input` when stored
    /// compressed, or moved to `stored` when raw).
    pub fn encode(&mut self, input: Vec<u8>, mut out: Vec<u8>) -> Encoded {
        let size = input.len() as u32;
        if let Some(z) = &mut self.zstd {
            // Room for one byte less than the input: zstd fails when the
            // result would not be smaller, and the frame is stored raw.
            let cap = input.len().saturating_sub(1);
            out.clear();
            out.reserve_exact(input.len()); // reusable as a page buffer later
            out.resize(cap, 0);
            if let Ok(n) = z.compress_to_buffer(&input[..], &mut out[..]) {
                if n < input.len() {
                    out.truncate(n);
                    let crc32 = crc32fast::hash(&out);
                    return Encoded {
                        stored: out,
                        codec: Codec::Zstd,
                        size,
                        crc32,
                        input,
                    };
                }
            }
        }
        let crc32 = crc32fast::hash(&input);
        out.clear();
        Encoded {
            stored: input,
            codec: Codec::None,
            size,
            crc32,
            input: out,
        }
    }
}

/// Where frames get encoded: inline, or on a worker thread.
enum Coder {
    Inline(FrameCoder),
    Thread {
        tx: Option<SyncSender<(Vec<u8>, Vec<u8>)>>,
        rx: Receiver<Encoded>,
        handle: Option<JoinHandle<()>>,
        in_flight: usize,
    },
}

/// Frames handed to the worker and not yet written, at most.
const MAX_IN_FLIGHT: usize = 2;

/// Streaming writer: works on any Write (a pipe or socket too). Writes the
/// header at [`ImageWriter::new`], frames as they fill, and the metadata and
/// commit record at [`ImageWriter::finish`].
pub struct ImageWriter<W: Write> {
    out: W,
    opts: WriteOptions,
    pos: u64,
    bytes_in: u64,
    frames: Vec<Frame>,
    /// Frames submitted for encoding (written or in flight).
    submitted: u32,
    buf: Vec<u8>,
    spare: Vec<Vec<u8>>,
    runs: BTreeMap<i32, Vec<MemoryRun>>,
    coder: Coder,
}

fn pad_bytes(n: u64) -> &'static [u8] {
    &[0u8; 8][..pad8(n) as usize]
}

impl<W: Write> ImageWriter<W> {
    pub fn new(w: W, opts: WriteOptions) -> Result<Self> {
        let ps = opts.page_size;
        if !ps.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&ps) {
            return Err(Error::InvalidArgument(format!(
                "page size {ps} is not a power of two in {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}"
            )));
        }
        if opts.frame_size < ps as usize || opts.frame_size as u64 > MAX_FRAME {
            return Err(Error::InvalidArgument(format!(
                "frame size {} is not in {ps}..={MAX_FRAME}",
                opts.frame_size
            )));
        }
        let threaded = opts.compression != Compression::None
            && std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
        let coder = if threaded {
            let mut fc = FrameCoder::new(opts.compression)?;
            let (tx, wrx) = sync_channel::<(Vec<u8>, Vec<u8>)>(MAX_IN_FLIGHT);
            let (wtx, rx) = sync_channel::<Encoded>(MAX_IN_FLIGHT + 1);
            let handle = std::thread::Builder::new()
                .name("ckpt-compress".into())
                .spawn(move || {
                    while let Ok((input, out)) = wrx.recv() {
                        if wtx.send(fc.encode(input, out)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io("starting the compression thread", e))?;
            Coder::Thread {
                tx: Some(tx),
                rx,
                handle: Some(handle),
                in_flight: 0,
            }
        } else {
            Coder::Inline(FrameCoder::new(opts.compression)?)
        };
        let mut w = ImageWriter {
            out: w,
            pos: 0,
            bytes_in: 0,
            frames: Vec::new(),
            submitted: 0,
            buf: Vec::with_capacity(opts.frame_size),
            spare: Vec::new(),
            runs: BTreeMap::new(),
            coder,
            opts,
        };
        w.write(&encode_header(FORMAT_MAJOR, FORMAT_MINOR))?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(format!("writing the image at offset {}", self.pos), e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn write_encoded(&mut self, e: Encoded) -> Result<()> {
        let len = e.stored.len() as u64;
        let header = encode_record_header_crc(KIND_FRAME, len, e.crc32);
        let offset = self.pos + RECORD_HEADER_LEN;
        self.write(&header)?;
        self.write(&e.stored)?;
        self.write(pad_bytes(len))?;
        self.frames.push(Frame {
            offset,
            stored_size: len as u32,
            size: e.size,
            codec: e.codec,
            crc32: e.crc32,
        });
        // Keep two buffers for reuse.
        for mut b in [e.stored, e.input] {
            if self.spare.len() < 4 && b.capacity() >= self.opts.frame_size / 2 {
                b.clear();
                self.spare.push(b);
            }
        }
        Ok(())
    }

    fn take_spare(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Hand the current frame buffer to the coder; it gets index `submitted`.
    fn submit(&mut self, data: Vec<u8>) -> Result<()> {
        self.submitted = self
            .submitted
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("more than 2^32 frames in one image".into()))?;
        let out = self.take_spare();
        match &mut self.coder {
            Coder::Inline(c) => {
                let e = c.encode(data, out);
                self.write_encoded(e)
            }
            Coder::Thread { tx, in_flight, .. } => {
                let sent = tx.as_ref().is_some_and(|t| t.send((data, out)).is_ok());
                if !sent {
                    return Err(Error::Compress {
                        source: std::io::Error::other("the compression thread stopped"),
                    });
                }
                *in_flight += 1;
                self.drain(MAX_IN_FLIGHT)
            }
        }
    }

    /// Write encoded frames until at most `keep` are in flight.
    fn drain(&mut self, keep: usize) -> Result<()> {
        loop {
            let e = match &mut self.coder {
                Coder::Thread { rx, in_flight, .. } if *in_flight > keep => {
                    let e = rx.recv().map_err(|_| Error::Compress {
                        source: std::io::Error::other("the compression thread stopped"),
                    })?;
                    *in_flight -= 1;
                    e
                }
                _ => return Ok(()),
            };
            self.write_encoded(e)?;
        }
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut next = self.take_spare();
        next.reserve(self.opts.frame_size);
        let data = std::mem::replace(&mut self.buf, next);
        self.submit(data)
    }

    fn push_run(&mut self, pid: i32, run: MemoryRun) {
        let ps = u64::from(self.opts.page_size);
        let runs = self.runs.entry(pid).or_default();
        if let Some(last) = runs.last_mut() {
            let contiguous = last.start + u64::from(last.pages) * ps == run.start;
            let same_place = match (last.kind, run.kind) {
                (RunKind::Zero, RunKind::Zero) => true,
                (RunKind::Data, RunKind::Data) => {
                    last.frame == run.frame
                        && u64::from(last.frame_offset) + u64::from(last.pages) * ps
                            == u64::from(run.frame_offset)
                }
                _ => false,
            };
            if contiguous && same_place {
                if let Some(p) = last.pages.checked_add(run.pages) {
                    last.pages = p;
                    return;
                }
            }
        }
        runs.push(run);
    }

    /// Saved page contents of process `pid` at page-aligned `addr`;
    /// `data.len()` a multiple of the page size. All-zero pages become Zero
    /// runs (stored nowhere); the rest is packed into frames of about
    /// `frame_size`, compressed per the options (stored raw when compression
    /// does not shrink them). Calls for one pid come in increasing address
    /// order.
    pub fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        let ps = self.opts.page_size as usize;
        if addr % ps as u64 != 0 || data.len() % ps != 0 {
            return Err(Error::InvalidArgument(format!(
                "add_pages(pid {pid}, {addr:#x}, {} bytes): address and length must be multiples of the page size {ps}",
                data.len()
            )));
        }
        if addr.checked_add(data.len() as u64).is_none() {
            return Err(Error::InvalidArgument(format!(
                "add_pages(pid {pid}, {addr:#x}, {} bytes): range overflows the address space",
                data.len()
            )));
        }
        if let Some(last) = self.runs.get(&pid).and_then(|r| r.last()) {
            let end = last.start + u64::from(last.pages) * ps as u64;
            if addr < end {
                return Err(Error::InvalidArgument(format!(
                    "add_pages(pid {pid}, {addr:#x}): pages must be added in increasing address order (already have pages up to {end:#x})"
                )));
            }
        }
        self.bytes_in += data.len() as u64;
        let mut i = 0usize;
        while i < data.len() {
            // A maximal span of pages of one class (zero / data).
            let zero = is_zero(&data[i..i + ps]);
            let mut j = i + ps;
            while j < data.len() && is_zero(&data[j..j + ps]) == zero {
                j += ps;
            }
            if zero {
                // Cap spans so that pages fits in u32.
                let mut s = i;
                while s < j {
                    let n = ((j - s) / ps).min(u32::MAX as usize);
                    self.push_run(
                        pid,
                        MemoryRun {
                            start: addr + s as u64,
                            pages: n as u32,
                            kind: RunKind::Zero,
                            frame: 0,
                            frame_offset: 0,
                        },
                    );
                    s += n * ps;
                }
            } else {
                let mut s = i;
                while s < j {
                    let room = self.opts.frame_size - self.buf.len();
                    let n = ((j - s).min(room) / ps) * ps;
                    if n == 0 {
                        self.flush_frame()?;
                        continue;
                    }
                    let run = MemoryRun {
                        start: addr + s as u64,
                        pages: (n / ps) as u32,
                        kind: RunKind::Data,
                        frame: self.submitted,
                        frame_offset: self.buf.len() as u32,
                    };
                    self.buf.extend_from_slice(&data[s..s + n]);
                    self.push_run(pid, run);
                    s += n;
                    if self.buf.len() + ps > self.opts.frame_size {
                        self.flush_frame()?;
                    }
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Store a byte string (deleted file contents, memfd contents) in frames;
    /// returns the Blob to put in the model.
    pub fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        self.flush_frame()?;
        let mut blob = Blob {
            size: data.len() as u64,
            frames: Vec::new(),
        };
        for chunk in data.chunks(self.opts.frame_size) {
            blob.frames.push(self.submitted);
            let mut b = self.take_spare();
            b.extend_from_slice(chunk);
            self.submit(b)?;
        }
        Ok(blob)
    }

    /// Bytes of page data given so far (before compression).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes written to the output so far.
    pub fn bytes_out(&self) -> u64 {
        self.pos
    }

    /// Fill `image.frames` and each process's `memory` runs from what was
    /// added, set format_major/minor (and host.pageSize when 0), validate,
    /// write metadata + commit, flush. Returns the output.
    pub fn finish(mut self, mut image: Image) -> Result<W> {
        self.flush_frame()?;
        self.drain(0)?;
        self.stop_thread();
        image.format_major = FORMAT_MAJOR;
        image.format_minor = FORMAT_MINOR;
        if image.host.page_size == 0 {
            image.host.page_size = self.opts.page_size;
        } else if image.host.page_size != self.opts.page_size {
            return Err(Error::InvalidArgument(format!(
                "image host.pageSize {} differs from the writer's page size {}",
                image.host.page_size, self.opts.page_size
            )));
        }
        image.frames = std::mem::take(&mut self.frames);
        let mut runs = std::mem::take(&mut self.runs);
        for p in &mut image.processes {
            p.memory = runs.remove(&p.pid).unwrap_or_default();
        }
        if let Some(pid) = runs.keys().next() {
            return Err(Error::InvalidArgument(format!(
                "pages were added for pid {pid}, which is not a process of the image"
            )));
        }
        let meta_offset = self.pos;
        validate(&image, meta_offset)?;
        let msg = codec::encode(&image);
        if msg.len() as u64 > MAX_METADATA {
            return Err(Error::Limit {
                what: "metadata message".into(),
                value: msg.len() as u64,
                limit: MAX_METADATA,
            });
        }
        let header = encode_record_header(KIND_METADATA, &msg);
        self.write(&header)?;
        self.write(&msg)?;
        self.write(pad_bytes(msg.len() as u64))?;
        let commit = Commit {
            metadata_offset: meta_offset,
            metadata_len: msg.len() as u64,
            generation: u64::from(image.generation),
            end: self.pos + COMMIT_RECORD_LEN,
        };
        self.write(&encode_commit_record(&commit))?;
        self.out
            .flush()
            .map_err(|e| Error::io("flushing the image", e))?;
        self.stop_thread();
        Ok(self.out)
    }

    fn stop_thread(&mut self) {
        if let Coder::Thread { tx, handle, .. } = &mut self.coder {
            tx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 4096]));
        for i in [0usize, 1, 15, 16, 63, 64, 100, 4095] {
            let mut p = vec![0u8; 4096];
            p[i] = 1;
            assert!(!is_zero(&p), "byte {i}");
        }
        let mut odd = vec![0u8; 70];
        assert!(is_zero(&odd));
        odd[69] = 0x80;
        assert!(!is_zero(&odd));
    }

    #[test]
    fn frames_are_raw_unless_smaller() {
        let mut c = FrameCoder::new(Compression::Fast).unwrap();
        let e = c.encode(vec![7u8; 8192], Vec::new());
        assert_eq!(e.codec, Codec::Zstd);
        assert!(e.stored.len() < 100);
        assert_eq!(e.size, 8192);
        let mut x = 1u64;
        let random: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let e = c.encode(random.clone(), e.input);
        assert_eq!(e.codec, Codec::None);
        assert_eq!(e.stored, random);
        assert_eq!(e.crc32, crc32fast::hash(&random));
        let mut none = FrameCoder::new(Compression::None).unwrap();
        assert_eq!(none.encode(vec![0u8; 4096], Vec::new()).codec, Codec::None);
    }

    #[test]
    fn writer_types_are_send() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<ImageWriter<std::fs::File>>();
        send::<crate::ImageReader<std::fs::File>>();
        sync::<crate::ImageReader<std::fs::File>>();
        sync::<crate::ImageReader<Vec<u8>>>();
        send::<crate::ImageEditor>();
        send::<crate::AtomicFile>();
    }
}
