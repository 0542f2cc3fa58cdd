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

mod pool;

/// The maximal spans of whole pages (`ps` bytes) of `data` that are all
/// zero or all not: (start, end, zero), in order.
fn page_spans(data: &[u8], ps: usize) -> impl Iterator<Item = (usize, usize, bool)> + '_ {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if i >= data.len() {
            return None;
        }
        let zero = is_zero(&data[i..i + ps]);
        let mut j = i + ps;
        while j < data.len() && is_zero(&data[j..j + ps]) == zero {
            j += ps;
        }
        let span = (i, j, zero);
        i = j;
        Some(span)
    })
}

/// Bytes kept free in front of a frame's payload for its record header, so
/// that header, payload and padding go out in one write.
const HEAD: usize = RECORD_HEADER_LEN as usize;

/// Bytes a buffer handed to [`ImageWriter::add_page_buffer`] keeps free in
/// front of its pages (the room of a frame record's header).
pub const PAGE_BUFFER_HEAD: usize = HEAD;

/// A frame encoded for storage (the editor's interface).
pub(crate) struct Encoded {
    pub stored: Vec<u8>,
    pub codec: Codec,
    pub size: u32,
    pub crc32: u32,
}

/// A frame record ready to be written: header, payload and padding are
/// `bytes()`, in `frame` (stored raw) or in `out` (compressed). Both buffers
/// come back for reuse, each in its role.
pub(crate) struct Record {
    frame: Vec<u8>,
    out: Vec<u8>,
    /// None: stored raw, in `frame`.
    codec: Codec,
    len: usize,
    size: u32,
    stored_size: u32,
    crc32: u32,
}

impl Record {
    fn bytes(&self) -> &[u8] {
        if self.codec != Codec::None {
            &self.out[..self.len]
        } else {
            &self.frame[..self.len]
        }
    }
}

/// Sample pages compressed to decide whether a frame is worth compressing.
const PROBE_PAGES: usize = 8;
const PROBE_PAGE: usize = 4096;
/// Frames smaller than this are compressed without probing.
const PROBE_MIN: usize = 16 * PROBE_PAGES * PROBE_PAGE;

/// Tells cheaply whether a frame is worth compressing: compresses a sample
/// of evenly spread pages with the fastest codec at hand (matches between
/// them count too) and says no when it does not shrink to `keep_32ths`/32.
struct Probe {
    z: Engine,
    sample: Vec<u8>,
    out: Vec<u8>,
    keep_32ths: usize,
}

impl Probe {
    fn new(keep_32ths: usize, lz4: bool) -> Result<Self> {
        Ok(Probe {
            z: if lz4 {
                Engine::Lz4
            } else {
                Engine::Zstd(
                    zstd::bulk::Compressor::new(1).map_err(|e| Error::Compress { source: e })?,
                )
            },
            sample: Vec::with_capacity(PROBE_PAGES * PROBE_PAGE),
            out: vec![0u8; PROBE_PAGES * PROBE_PAGE],
            keep_32ths,
        })
    }

    fn worth_compressing(&mut self, data: &[u8]) -> bool {
        if data.len() < PROBE_MIN {
            return true;
        }
        self.sample.clear();
        let step = (data.len() - PROBE_PAGE) / (PROBE_PAGES - 1);
        for i in 0..PROBE_PAGES {
            let at = i * step;
            self.sample.extend_from_slice(&data[at..at + PROBE_PAGE]);
        }
        let cap = self.sample.len() / 32 * self.keep_32ths;
        self.z
            .compress(&self.sample, &mut self.out, 0, cap)
            .is_some()
    }
}

/// A compressor.
enum Engine {
    Zstd(zstd::bulk::Compressor<'static>),
    Lz4,
}

impl Engine {
    /// Compress `data` into `out[at..]`; the compressed length, or None
    /// when it is more than `cap`. `out` keeps its length, or grows
    /// (zero-filled) to what the codec needs.
    fn compress(&mut self, data: &[u8], out: &mut Vec<u8>, at: usize, cap: usize) -> Option<usize> {
        // zstd stops when the output does not fit; LZ4 insists on room for
        // its worst case and is checked after.
        let room = match self {
            Engine::Zstd(_) => cap,
            Engine::Lz4 => lz4_flex::block::get_maximum_output_size(data.len()),
        };
        if out.len() < at + room {
            out.resize(at + room, 0);
        }
        let n = match self {
            Engine::Zstd(z) => z.compress_to_buffer(data, &mut out[at..at + room]).ok()?,
            Engine::Lz4 => lz4_flex::block::compress_into(data, &mut out[at..at + room]).ok()?,
        };
        (n <= cap).then_some(n)
    }

    fn codec(&self) -> Codec {
        match self {
            Engine::Zstd(_) => Codec::Zstd,
            Engine::Lz4 => Codec::Lz4,
        }
    }
}

/// Compresses frames; falls back to raw when the codec does not shrink
/// them, or when a sample says they will not shrink (enough).
pub(crate) struct FrameCoder {
    engine: Option<Engine>,
    probe: Option<Probe>,
}

impl FrameCoder {
    pub fn new(c: Compression) -> Result<Self> {
        let engine = match c {
            Compression::None => None,
            Compression::Fast => Some(Engine::Lz4),
            Compression::Zstd | Compression::Best => {
                let level = c.zstd_level().expect("a zstd level");
                Some(Engine::Zstd(
                    zstd::bulk::Compressor::new(level)
                        .map_err(|e| Error::Compress { source: e })?,
                ))
            }
        };
        // Fast and zstd: not worth compressing unless the sample shrinks to
        // 7/8. Best (level 19 is slow on everything, ~2 MB/s on random
        // data): skip only frames whose sample does not shrink at all.
        let probe = match c {
            Compression::None => None,
            Compression::Fast => Some(Probe::new(28, true)?),
            Compression::Zstd => Some(Probe::new(28, false)?),
            Compression::Best => Some(Probe::new(31, false)?),
        };
        Ok(FrameCoder { engine, probe })
    }

    /// The codec of the frames this coder compresses.
    fn codec(&self) -> Codec {
        self.engine.as_ref().map_or(Codec::None, Engine::codec)
    }

    /// Compress `data` into `out[at..]`; the compressed length, or None when
    /// the frame is to be stored raw (not compressing, or not smaller).
    /// `out` keeps its length (zero-filled only when it grows).
    fn compress(&mut self, data: &[u8], out: &mut Vec<u8>, at: usize) -> Option<usize> {
        let z = self.engine.as_mut()?;
        if let Some(p) = &mut self.probe {
            if !p.worth_compressing(data) {
                return None;
            }
        }
        // Room for one byte less than the input: the codec fails when the
        // result would not be smaller, and the frame is stored raw.
        let cap = data.len().checked_sub(1).filter(|&c| c > 0)?;
        z.compress(data, out, at, cap)
    }

    /// Encode `input` (moved to `stored` when stored raw); `out` is a buffer
    /// for the compressed bytes.
    pub fn encode(&mut self, input: Vec<u8>, mut out: Vec<u8>) -> Encoded {
        let size = input.len() as u32;
        if let Some(n) = self.compress(&input, &mut out, 0) {
            out.truncate(n);
            let crc32 = crc32fast::hash(&out);
            return Encoded {
                stored: out,
                codec: self.codec(),
                size,
                crc32,
            };
        }
        let crc32 = crc32fast::hash(&input);
        Encoded {
            stored: input,
            codec: Codec::None,
            size,
            crc32,
        }
    }

    /// Encode the payload `frame[HEAD..]` into a complete frame record.
    pub fn encode_record(&mut self, mut frame: Vec<u8>, mut out: Vec<u8>) -> Record {
        let size = frame.len() - HEAD;
        let compressed = self.compress(&frame[HEAD..], &mut out, HEAD);
        let stored = compressed.unwrap_or(size);
        let buf = if compressed.is_some() {
            &mut out
        } else {
            &mut frame
        };
        let crc32 = crc32fast::hash(&buf[HEAD..HEAD + stored]);
        buf[..HEAD].copy_from_slice(&encode_record_header_crc(KIND_FRAME, stored as u64, crc32));
        let len = HEAD + stored + pad8(stored as u64) as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf[HEAD + stored..len].fill(0);
        Record {
            frame,
            out,
            codec: if compressed.is_some() {
                self.codec()
            } else {
                Codec::None
            },
            len,
            size: size as u32,
            stored_size: stored as u32,
            crc32,
        }
    }
}

/// Where frames get encoded: inline, or by a pool of workers (started at
/// the second frame).
enum Coder {
    Inline(FrameCoder),
    Pool {
        compression: Compression,
        threads: usize,
        pool: Option<pool::Pool>,
        /// Encoded frames that arrived before an earlier one, by number.
        ready: BTreeMap<u32, Record>,
    },
}

/// Streaming writer: works on any Write (a pipe or socket too). Writes the
/// header at [`ImageWriter::new`], frames as they fill, and the metadata and
/// commit record at [`ImageWriter::finish`]. Frames are encoded by a worker
/// per CPU (when compressing and there is more than one), at most
/// [`ImageWriter::in_flight_limit`] at a time, and written in order.
pub struct ImageWriter<W: Write> {
    out: W,
    opts: WriteOptions,
    pos: u64,
    bytes_in: u64,
    frames: Vec<Frame>,
    /// Frames submitted for encoding (written or in flight).
    submitted: u32,
    /// The frame being filled: HEAD bytes of room, then the payload.
    buf: Vec<u8>,
    /// Buffers for reuse: frame buffers and compression buffers.
    spare_frames: Vec<Vec<u8>>,
    spare_outs: Vec<Vec<u8>>,
    runs: BTreeMap<i32, PidRuns>,
    /// Guard runs (MADV_GUARD_INSTALL), merged into the resolved runs by
    /// address at the end.
    guards: BTreeMap<i32, Vec<MemoryRun>>,
    coder: Coder,
    max_in_flight: usize,
}

/// Compression workers at most (one per CPU up to this).
const MAX_THREADS: usize = 8;

/// The output is flushed after every this many bytes of frames, so that an
/// output which starts writing back its dirty pages on flush can overlap
/// the disk with the rest of the dump instead of leaving it all to the
/// final fsync (measured: that fsync is a third of a 1 GiB dump).
const FLUSH_EVERY: u64 = 16 << 20;

/// The runs of one process as they were added, and for each whether it
/// came from [`ImageWriter::replace_pages`].
#[derive(Default, Clone)]
struct PidRuns {
    runs: Vec<MemoryRun>,
    /// REPLACE, DROP bits of each run.
    flags: Vec<u8>,
    /// Flags of the pages being added now.
    replacing: u8,
}

/// The run replaces what was added before over its pages.
const REPLACE: u8 = 1;
/// The run only removes what was added before (it holds nothing).
const DROP: u8 = 2;

/// Extend `last` by `run` when it continues it (same kind, contiguous,
/// and for data the next bytes of the same frame).
fn merge_into(last: &mut MemoryRun, run: &MemoryRun, ps: u64) -> bool {
    let contiguous = last.start + u64::from(last.pages) * ps == run.start;
    let same_place = match (last.kind, run.kind) {
        (RunKind::Zero, RunKind::Zero) | (RunKind::Parent, RunKind::Parent) => true,
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
            return true;
        }
    }
    false
}

/// `r` cut to the pages `[from, to)` (inside it).
fn cut_run(r: &MemoryRun, from: u64, to: u64, ps: u64) -> MemoryRun {
    let skip = (from - r.start) / ps;
    MemoryRun {
        start: from,
        pages: ((to - from) / ps) as u32,
        frame_offset: if r.kind == RunKind::Data {
            r.frame_offset + (skip * ps) as u32
        } else {
            r.frame_offset
        },
        ..*r
    }
}

impl PidRuns {
    /// Added in address order, none replacing or dropping another: the
    /// runs as they are are the resolved ones (up to merging).
    fn is_plain(&self, ps: u64) -> bool {
        self.flags.iter().all(|&f| f == 0)
            && self
                .runs
                .windows(2)
                .all(|w| w[0].start + u64::from(w[0].pages) * ps <= w[1].start)
    }

    /// The runs sorted by address, later replacements winning over what
    /// they overlap, neighbours merged. Pages added twice otherwise are an
    /// error.
    fn resolve(self, pid: i32, ps: u64) -> Result<Vec<MemoryRun>> {
        let end = |r: &MemoryRun| r.start + u64::from(r.pages) * ps;
        let mut order: Vec<usize> = (0..self.runs.len()).collect();
        order.sort_by_key(|&i| (self.runs[i].start, i));
        let overlapping = order
            .windows(2)
            .any(|w| end(&self.runs[w[0]]) > self.runs[w[1]].start);
        let mut kept: Vec<MemoryRun> = if !overlapping {
            order
                .iter()
                .filter(|&&i| self.flags[i] & DROP == 0)
                .map(|&i| self.runs[i])
                .collect()
        } else {
            // Latest first: each run keeps the pages no later run took.
            let mut covered: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
            let mut out = Vec::with_capacity(self.runs.len());
            for i in (0..self.runs.len()).rev() {
                let r = &self.runs[i];
                let (s, e) = (r.start, end(r));
                let mut taken: Vec<(u64, u64)> = Vec::new();
                for (&cs, &(ce, replace)) in covered.range(..e).rev() {
                    if ce <= s {
                        break;
                    }
                    if !replace {
                        return Err(Error::InvalidArgument(format!(
                            "pid {pid}: pages at {:#x}..{:#x} were added twice",
                            cs.max(s),
                            ce.min(e)
                        )));
                    }
                    taken.push((cs.max(s), ce.min(e)));
                }
                taken.sort_unstable();
                let mut at = s;
                for (a, b) in taken.into_iter().chain([(e, e)]) {
                    if a > at {
                        if self.flags[i] & DROP == 0 {
                            out.push(cut_run(r, at, a, ps));
                        }
                        covered.insert(at, (a, self.flags[i] & REPLACE != 0));
                    }
                    at = at.max(b);
                }
            }
            out.sort_by_key(|r| r.start);
            out
        };
        let mut merged: Vec<MemoryRun> = Vec::with_capacity(kept.len());
        for r in kept.drain(..) {
            let joined = merged
                .last_mut()
                .is_some_and(|last| merge_into(last, &r, ps));
            if !joined {
                merged.push(r);
            }
        }
        Ok(merged)
    }
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
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cpus.min(MAX_THREADS);
        // Raw frames need only a CRC: worth a thread too, with a CPU to spare.
        let coder = if threads > 1 {
            Coder::Pool {
                compression: opts.compression,
                threads,
                pool: None,
                ready: BTreeMap::new(),
            }
        } else {
            Coder::Inline(FrameCoder::new(opts.compression)?)
        };
        let max_in_flight = if threads > 1 { 2 * threads + 2 } else { 1 };
        // Frames of at most 1 MiB... 64 MiB: in flight, at most ~2 x 16 MiB.
        let max_in_flight = max_in_flight.min(((32 << 20) / opts.frame_size).max(2));
        let mut w = ImageWriter {
            out: w,
            pos: 0,
            bytes_in: 0,
            frames: Vec::new(),
            submitted: 0,
            buf: Vec::new(),
            spare_frames: Vec::new(),
            spare_outs: Vec::new(),
            runs: BTreeMap::new(),
            guards: BTreeMap::new(),
            coder,
            max_in_flight,
            opts,
        };
        w.buf = w.take_frame();
        w.write(&encode_header(FORMAT_MAJOR, FORMAT_MINOR))?;
        Ok(w)
    }

    /// Most frames handed to the encoders and not yet written.
    pub fn in_flight_limit(&self) -> usize {
        self.max_in_flight
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(format!("writing the image at offset {}", self.pos), e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn write_record(&mut self, r: Record) -> Result<()> {
        let offset = self.pos + RECORD_HEADER_LEN;
        self.write(r.bytes())?;
        if self.pos / FLUSH_EVERY != (offset - RECORD_HEADER_LEN) / FLUSH_EVERY {
            // A hint for outputs that can start writing back what they
            // have (see FLUSH_EVERY); a plain File ignores it.
            self.out
                .flush()
                .map_err(|e| Error::io(format!("flushing the image at offset {}", self.pos), e))?;
        }
        self.frames.push(Frame {
            offset,
            stored_size: r.stored_size,
            size: r.size,
            codec: r.codec,
            crc32: r.crc32,
        });
        // Keep a few buffers of each kind for reuse.
        let keep = self.max_in_flight + 1;
        if self.spare_frames.len() < keep {
            self.spare_frames.push(r.frame);
        }
        if self.spare_outs.len() < keep && !r.out.is_empty() {
            self.spare_outs.push(r.out);
        }
        Ok(())
    }

    /// An empty frame buffer (HEAD bytes of room, no payload).
    fn take_frame(&mut self) -> Vec<u8> {
        let mut b = self
            .spare_frames
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(HEAD + self.opts.frame_size + 8));
        b.clear();
        b.resize(HEAD, 0);
        b
    }

    /// Hand a frame buffer to the coder; it gets index `submitted`.
    fn submit(&mut self, frame: Vec<u8>) -> Result<()> {
        let seq = self.submitted;
        self.submitted = seq
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("more than 2^32 frames in one image".into()))?;
        let out = self.spare_outs.pop().unwrap_or_default();
        match &mut self.coder {
            Coder::Inline(c) => {
                let r = c.encode_record(frame, out);
                self.write_record(r)
            }
            Coder::Pool {
                compression,
                threads,
                pool,
                ..
            } => {
                if pool.is_none() {
                    if seq == 0 {
                        // The first frame inline: a small image (most have
                        // one frame) needs no threads.
                        let r = FrameCoder::new(*compression)?.encode_record(frame, out);
                        return self.write_record(r);
                    }
                    *pool = Some(pool::Pool::new(*threads, *compression, self.max_in_flight)?);
                }
                pool.as_ref().expect("started").submit(seq, frame, out)?;
                self.pump(self.max_in_flight)
            }
        }
    }

    /// Write the encoded frames that are next in order; wait for more until
    /// at most `keep` frames are in flight.
    fn pump(&mut self, keep: usize) -> Result<()> {
        loop {
            let written = self.frames.len() as u32;
            let Coder::Pool { pool, ready, .. } = &mut self.coder else {
                return Ok(());
            };
            let Some(p) = pool.as_ref() else {
                return Ok(());
            };
            if let Some(r) = ready.remove(&written) {
                self.write_record(r)?;
                continue;
            }
            let in_flight = (self.submitted - written) as usize;
            let got = if in_flight > keep {
                Some(p.recv()?)
            } else {
                p.try_recv()?
            };
            match got {
                Some((seq, r)) => {
                    ready.insert(seq, r);
                }
                None => return Ok(()),
            }
        }
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.buf.len() == HEAD {
            return Ok(());
        }
        let next = self.take_frame();
        let data = std::mem::replace(&mut self.buf, next);
        self.submit(data)
    }

    fn push_run(&mut self, pid: i32, run: MemoryRun) {
        let ps = u64::from(self.opts.page_size);
        let pr = self.runs.entry(pid).or_default();
        if let Some(last) = pr.runs.last_mut() {
            if pr.flags.last() == Some(&pr.replacing) && merge_into(last, &run, ps) {
                return;
            }
        }
        pr.runs.push(run);
        pr.flags.push(pr.replacing);
    }

    /// Check `addr` and `len` (page multiples, no overflow).
    fn check_range(&self, what: &str, pid: i32, addr: u64, len: u64) -> Result<()> {
        let ps = u64::from(self.opts.page_size);
        if addr % ps != 0 || len % ps != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what}(pid {pid}, {addr:#x}, {len} bytes): address and length must be multiples of the page size {ps}"
            )));
        }
        if addr.checked_add(len).is_none() {
            return Err(Error::InvalidArgument(format!(
                "{what}(pid {pid}, {addr:#x}, {len} bytes): range overflows the address space"
            )));
        }
        Ok(())
    }

    /// Like [`ImageWriter::add_pages`], but these pages replace whatever
    /// was added before for the same addresses (a page copied again
    /// because it changed since: the bytes stored for the older copy stay
    /// in their frame, unreferenced).
    pub fn replace_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        self.runs.entry(pid).or_default().replacing = REPLACE;
        let r = self.add_pages(pid, addr, data);
        self.runs.entry(pid).or_default().replacing = 0;
        r
    }

    /// Forget the pages added so far for `len` bytes at `addr` (an area
    /// that went away since they were copied).
    pub fn drop_pages(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        let ps = u64::from(self.opts.page_size);
        self.check_range("drop_pages", pid, addr, len)?;
        let mut left = len / ps;
        let mut at = addr;
        while left > 0 {
            let n = left.min(u64::from(u32::MAX));
            let pr = self.runs.entry(pid).or_default();
            pr.runs.push(MemoryRun {
                start: at,
                pages: n as u32,
                kind: RunKind::Zero,
                frame: 0,
                frame_offset: 0,
            });
            pr.flags.push(REPLACE | DROP);
            at += n * ps;
            left -= n;
        }
        Ok(())
    }

    /// `pages` pages of `pid` at `addr` whose contents are those of the
    /// same pages in the parent image (an incremental dump; the image's
    /// `parent` must name that image). Nothing is stored.
    pub fn add_parent_run(&mut self, pid: i32, addr: u64, pages: u64) -> Result<()> {
        let ps = u64::from(self.opts.page_size);
        self.check_range("add_parent_run", pid, addr, pages.saturating_mul(ps))?;
        let mut left = pages;
        let mut at = addr;
        while left > 0 {
            let n = left.min(u64::from(u32::MAX));
            self.push_run(
                pid,
                MemoryRun {
                    start: at,
                    pages: n as u32,
                    kind: RunKind::Parent,
                    frame: 0,
                    frame_offset: 0,
                },
            );
            at += n * ps;
            left -= n;
        }
        Ok(())
    }

    /// Saved page contents of process `pid` at page-aligned `addr`;
    /// `data.len()` a multiple of the page size. All-zero pages become Zero
    /// runs (stored nowhere); the rest is packed into frames of about
    /// `frame_size`, compressed per the options (stored raw when compression
    /// does not shrink them). Calls may come in any address order; pages
    /// added twice are an error at [`ImageWriter::finish`] (unless the
    /// later ones came through [`ImageWriter::replace_pages`]).
    pub fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        let ps = self.opts.page_size as usize;
        self.check_range("add_pages", pid, addr, data.len() as u64)?;
        self.bytes_in += data.len() as u64;
        for (i, j, zero) in page_spans(data, ps) {
            if zero {
                self.push_zero_run(pid, addr + i as u64, ((j - i) / ps) as u64);
            } else {
                let mut s = i;
                while s < j {
                    let room = self.opts.frame_size - (self.buf.len() - HEAD);
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
                        frame_offset: (self.buf.len() - HEAD) as u32,
                    };
                    self.buf.extend_from_slice(&data[s..s + n]);
                    self.push_run(pid, run);
                    s += n;
                    if self.buf.len() - HEAD + ps > self.opts.frame_size {
                        self.flush_frame()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Like [`ImageWriter::add_pages`] for each of `pieces` (address,
    /// offset in `buf`, bytes), taking `buf` itself as the frame that holds
    /// them instead of copying them: what a reader fills and hands over
    /// whole. The pieces lie in address order after the first
    /// [`PAGE_BUFFER_HEAD`] bytes of `buf`, which are left as room for the
    /// record header; zero pages are stored as zero runs and the others
    /// moved together. Returns a buffer to fill next (a spare one, empty
    /// when there is none; `buf` itself when it held only zeros). A buffer
    /// larger than a frame is copied the usual way.
    pub fn add_page_buffer(
        &mut self,
        pid: i32,
        mut buf: Vec<u8>,
        pieces: &[(u64, usize, usize)],
    ) -> Result<Vec<u8>> {
        let ps = self.opts.page_size as usize;
        let mut end = HEAD;
        for &(addr, off, len) in pieces {
            self.check_range("add_page_buffer", pid, addr, len as u64)?;
            if off < end || !off.checked_add(len).is_some_and(|e| e <= buf.len()) {
                return Err(Error::InvalidArgument(format!(
                    "add_page_buffer(pid {pid}, {addr:#x}): piece at offset {off} ({len} bytes) out of order or outside the {}-byte buffer",
                    buf.len()
                )));
            }
            end = off + len;
        }
        if end - HEAD > self.opts.frame_size {
            for &(addr, off, len) in pieces {
                self.add_pages(pid, addr, &buf[off..off + len])?;
            }
            return Ok(buf);
        }
        // Data spans moved to the front: (address, offset in buf, bytes).
        let mut spans: Vec<(u64, usize, usize)> = Vec::new();
        let mut w = HEAD;
        for &(addr, off, len) in pieces {
            self.bytes_in += len as u64;
            let classes: Vec<_> = page_spans(&buf[off..off + len], ps).collect();
            for (i, j, zero) in classes {
                if zero {
                    self.push_zero_run(pid, addr + i as u64, ((j - i) / ps) as u64);
                    continue;
                }
                if w != off + i {
                    buf.copy_within(off + i..off + j, w);
                }
                spans.push((addr + i as u64, w, j - i));
                w += j - i;
            }
        }
        if spans.is_empty() {
            return Ok(buf);
        }
        // The frame being filled goes first: this one takes the next number.
        self.flush_frame()?;
        let frame = self.submitted;
        for (addr, at, n) in spans {
            let run = MemoryRun {
                start: addr,
                pages: (n / ps) as u32,
                kind: RunKind::Data,
                frame,
                frame_offset: (at - HEAD) as u32,
            };
            self.push_run(pid, run);
        }
        buf.truncate(w);
        self.submit(buf)?;
        Ok(self.spare_frames.pop().unwrap_or_default())
    }

    /// Zero pages: `pages` at `addr`, in runs whose page count fits a u32.
    fn push_zero_run(&mut self, pid: i32, addr: u64, pages: u64) {
        let ps = u64::from(self.opts.page_size);
        let mut done = 0u64;
        while done < pages {
            let n = (pages - done).min(u64::from(u32::MAX));
            self.push_run(
                pid,
                MemoryRun {
                    start: addr + done * ps,
                    pages: n as u32,
                    kind: RunKind::Zero,
                    frame: 0,
                    frame_offset: 0,
                },
            );
            done += n;
        }
    }

    /// Guard pages (MADV_GUARD_INSTALL) of process `pid` at page-aligned
    /// `addr`, `len` bytes: a run of kind Guard, nothing stored. Calls may
    /// come in any order relative to [`ImageWriter::add_pages`]; the
    /// ranges must not overlap saved pages.
    pub fn add_guard(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        let ps = u64::from(self.opts.page_size);
        let pages = len / ps;
        if addr % ps != 0 || len % ps != 0 || len == 0 || pages > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(format!(
                "add_guard(pid {pid}, {addr:#x}, {len} bytes): not a run of whole pages"
            )));
        }
        self.guards.entry(pid).or_default().push(MemoryRun {
            start: addr,
            pages: pages as u32,
            kind: RunKind::Guard,
            frame: 0,
            frame_offset: 0,
        });
        Ok(())
    }

    /// Pages of process `pid` at page-aligned `addr` (`len` bytes) whose
    /// contents are those of process `from` at the same addresses, added
    /// before (pages still shared copy-on-write after a fork): `pid`'s runs
    /// point at the same frames (or are zero runs where `from`'s are), so
    /// the bytes are stored once. The range must be covered by `from`'s
    /// runs; calls for one pid come in increasing address order, as for
    /// [`ImageWriter::add_pages`].
    pub fn add_pages_from(&mut self, pid: i32, addr: u64, len: u64, from: i32) -> Result<()> {
        let ps = u64::from(self.opts.page_size);
        let bad = |what: String| {
            Error::InvalidArgument(format!(
                "add_pages_from(pid {pid}, {addr:#x}, {len} bytes, from pid {from}): {what}"
            ))
        };
        if addr % ps != 0 || len % ps != 0 {
            return Err(bad(format!("not whole pages of {ps} bytes")));
        }
        let end = addr
            .checked_add(len)
            .ok_or_else(|| bad("range overflows the address space".into()))?;
        if let Some(last) = self.runs.get(&pid).and_then(|r| r.runs.last()) {
            if addr < last.start + u64::from(last.pages) * ps {
                return Err(bad("pages must be added in increasing address order".into()));
            }
        }
        // `from`'s runs by address (resolved when some replaced others).
        let resolved;
        let src: &[MemoryRun] = match self.runs.get(&from) {
            None => &[],
            Some(pr) if pr.is_plain(ps) => &pr.runs,
            Some(pr) => {
                resolved = pr.clone().resolve(from, ps)?;
                &resolved
            }
        };
        let mut i = src.partition_point(|r| r.start + u64::from(r.pages) * ps <= addr);
        let mut at = addr;
        let mut out = Vec::new();
        while at < end {
            let Some(r) = src.get(i).filter(|r| r.start <= at) else {
                return Err(bad(format!("pid {from} has no saved page at {at:#x}")));
            };
            let r_end = r.start + u64::from(r.pages) * ps;
            let stop = r_end.min(end);
            let skip = at - r.start;
            out.push(MemoryRun {
                start: at,
                pages: ((stop - at) / ps) as u32,
                kind: r.kind,
                frame: r.frame,
                frame_offset: match r.kind {
                    RunKind::Data => r.frame_offset + skip as u32,
                    _ => 0,
                },
            });
            at = stop;
            i += 1;
        }
        for run in out {
            self.push_run(pid, run);
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
            let mut b = self.take_frame();
            b.extend_from_slice(chunk);
            self.submit(b)?;
        }
        Ok(blob)
    }

    /// Copy frame `index` of another image (`src`, whose frames are
    /// `frames`) into this one as it is stored: the record is read,
    /// checked (header, CRC) and written unchanged. Returns its index
    /// here. Pages added so far are written out first.
    pub fn copy_frame(
        &mut self,
        src: &dyn crate::ReadAt,
        frames: &[Frame],
        index: u32,
    ) -> Result<u32> {
        use crate::store::{check_frame_record, frame_record};
        self.flush_frame()?;
        self.pump(0)?;
        let (f, rec_off, end) = frame_record(frames, index)?;
        let mut rec = vec![0u8; (end - rec_off) as usize];
        src.read_at(&mut rec, rec_off)?;
        check_frame_record(f, index, rec_off, &rec)?;
        let seq = self.submitted;
        self.submitted = seq
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("more than 2^32 frames in one image".into()))?;
        let offset = self.pos + RECORD_HEADER_LEN;
        self.write(&rec)?;
        self.write(pad_bytes(rec.len() as u64))?;
        self.frames.push(Frame { offset, ..*f });
        Ok(seq)
    }

    /// A run as it is (its frame, for data, one of this image's): used
    /// with [`ImageWriter::copy_frame`]. Runs may overlap nothing else.
    pub fn add_run(&mut self, pid: i32, run: MemoryRun) -> Result<()> {
        let ps = u64::from(self.opts.page_size);
        self.check_range("add_run", pid, run.start, u64::from(run.pages) * ps)?;
        if run.pages == 0 {
            return Ok(());
        }
        self.push_run(pid, run);
        Ok(())
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
        self.pump(0)?;
        // The workers are done: let them go.
        if let Coder::Pool { pool, .. } = &mut self.coder {
            pool.take();
        }
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
        let ps = u64::from(self.opts.page_size);
        let mut guards = std::mem::take(&mut self.guards);
        for p in &mut image.processes {
            p.memory = match runs.remove(&p.pid) {
                Some(r) => r.resolve(p.pid, ps)?,
                None => Vec::new(),
            };
            if let Some(g) = guards.remove(&p.pid) {
                p.memory.extend(g);
                p.memory.sort_by_key(|m| m.start);
            }
        }
        if let Some(pid) = runs.keys().chain(guards.keys()).next() {
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
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_shared_with_another_process_are_stored_once() {
        let opts = WriteOptions {
            page_size: 4096,
            ..Default::default()
        };
        let mut w = ImageWriter::new(Vec::new(), opts).unwrap();
        let mut data = vec![0u8; 3 * 4096];
        data[..4096].fill(1);
        data[2 * 4096..].fill(3);
        w.add_pages(1, 0x10000, &data).unwrap();
        let before = w.bytes_in();
        // The child's copy of the last two pages (one zero, one data).
        w.add_pages_from(2, 0x11000, 2 * 4096, 1).unwrap();
        assert_eq!(w.bytes_in(), before, "nothing stored again");
        assert!(w.add_pages_from(2, 0x20000, 4096, 1).is_err());
        assert!(w.add_pages_from(3, 0x10000, 4096, 9).is_err());
        let vma = Vma {
            start: 0x10000,
            end: 0x13000,
            prot: 3,
            ..Default::default()
        };
        let proc_ = |pid| Process {
            pid,
            vmas: vec![vma.clone()],
            ..Default::default()
        };
        let mut img = Image {
            processes: vec![proc_(1), proc_(2), proc_(3)],
            ..Default::default()
        };
        img.host.page_size = 4096;
        let bytes = w.finish(img).unwrap();
        let r = crate::ImageReader::new(bytes).unwrap();
        let runs = &r.image().processes[1].memory;
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].kind, RunKind::Zero);
        let mut got = vec![0u8; 4096];
        r.read_memory(2, 0x12000, &mut got).unwrap();
        assert!(got.iter().all(|&b| b == 3));
    }

    /// Buffers handed over whole (zero pages among them, pieces with gaps
    /// between them, compressible and not) read back as the same pages as
    /// through add_pages, with add_pages calls in between, through the
    /// worker pool; bad pieces are refused by name.
    #[test]
    fn page_buffers_are_taken_as_frames() {
        let ps = 4096usize;
        // A frame of 4 pages is smaller than the buffers: copied.
        for (compression, frame) in [
            (Compression::None, 16),
            (Compression::Fast, 16),
            (Compression::Zstd, 4),
        ] {
            let opts = WriteOptions {
                page_size: ps as u32,
                frame_size: frame * ps,
                compression,
            };
            let mut w = ImageWriter::new(Vec::new(), opts).unwrap();
            let pages = 64u64;
            let base = 0x100000u64;
            let mut want = vec![0u8; pages as usize * ps];
            let rnd = xorshift(want.len(), 7);
            let txt = text(want.len(), 9);
            for (i, page) in want.chunks_mut(ps).enumerate() {
                match i % 5 {
                    0 | 3 => page.copy_from_slice(&rnd[i * ps..(i + 1) * ps]),
                    1 => page.copy_from_slice(&txt[i * ps..(i + 1) * ps]),
                    _ => {}
                }
            }
            // Every 8-page block: pages 0-2 and 4-7 in a buffer (page 3
            // left to add_pages), with a page of room between the pieces.
            let mut spare = Vec::new();
            for blk in 0..pages / 8 {
                let a = base + blk * 8 * ps as u64;
                let at = |p: u64| ((a - base) as usize) + p as usize * ps;
                let mut buf = std::mem::take(&mut spare);
                buf.resize(PAGE_BUFFER_HEAD + 9 * ps, 0xee);
                let h = PAGE_BUFFER_HEAD;
                buf[h..h + 3 * ps].copy_from_slice(&want[at(0)..at(3)]);
                buf[h + 4 * ps..h + 8 * ps].copy_from_slice(&want[at(4)..at(8)]);
                let pieces = [(a, h, 3 * ps), (a + 4 * ps as u64, h + 4 * ps, 4 * ps)];
                spare = w.add_page_buffer(1, buf, &pieces).unwrap();
                w.add_pages(1, a + 3 * ps as u64, &want[at(3)..at(4)])
                    .unwrap();
            }
            let bad = vec![0u8; PAGE_BUFFER_HEAD + ps];
            let e = w
                .add_page_buffer(1, bad.clone(), &[(0x9000, 0, ps)])
                .unwrap_err();
            assert!(e.to_string().contains("offset 0"), "{e}");
            let e = w
                .add_page_buffer(1, bad, &[(0x9000, PAGE_BUFFER_HEAD + 1, ps)])
                .unwrap_err();
            assert!(e.to_string().contains("outside"), "{e}");
            let vma = Vma {
                start: base,
                end: base + pages * ps as u64,
                prot: 3,
                ..Default::default()
            };
            let mut img = Image {
                processes: vec![Process {
                    pid: 1,
                    vmas: vec![vma],
                    ..Default::default()
                }],
                ..Default::default()
            };
            img.host.page_size = ps as u32;
            let bytes = w.finish(img).unwrap();
            let r = crate::ImageReader::new(bytes).unwrap();
            let mut got = vec![0u8; want.len()];
            r.read_memory(1, base, &mut got).unwrap();
            assert!(got == want, "{compression:?}: the pages read back differ");
            let zero_runs = r.image().processes[0]
                .memory
                .iter()
                .filter(|m| m.kind == RunKind::Zero)
                .count();
            assert!(zero_runs > 0, "zero pages stored as zero runs");
        }
    }

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
        let e = FrameCoder::new(Compression::Zstd)
            .unwrap()
            .encode(vec![7u8; 8192], Vec::new());
        assert_eq!(e.codec, Codec::Zstd);
        assert!(e.stored.len() < 100);
        let mut c = FrameCoder::new(Compression::Fast).unwrap();
        let e = c.encode(vec![7u8; 8192], Vec::new());
        assert_eq!(e.codec, Codec::Lz4);
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
        let e = c.encode(random.clone(), e.stored);
        assert_eq!(e.codec, Codec::None);
        assert_eq!(e.stored, random);
        assert_eq!(e.crc32, crc32fast::hash(&random));
        let mut none = FrameCoder::new(Compression::None).unwrap();
        assert_eq!(none.encode(vec![0u8; 4096], Vec::new()).codec, Codec::None);
    }

    fn xorshift(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(n: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 6] = [b"page ", b"frame ", b"the ", b"of ", b"memory ", b"\n"];
        let mut out = Vec::with_capacity(n + 8);
        for r in xorshift(n, seed) {
            if out.len() >= n {
                break;
            }
            out.extend_from_slice(words[r as usize % 6]);
        }
        out.resize(n, b' ');
        out
    }

    #[test]
    fn probe_skips_incompressible_frames() {
        for (compression, want) in [
            (Compression::Fast, Codec::Lz4),
            (Compression::Zstd, Codec::Zstd),
        ] {
            let mut c = FrameCoder::new(compression).unwrap();
            let mut p = Probe::new(28, want == Codec::Lz4).unwrap();
            let random = xorshift(1 << 20, 7);
            let words = text(1 << 20, 7);
            assert!(!p.worth_compressing(&random));
            assert!(p.worth_compressing(&words));
            // Half and half (pages interleaved): compressed.
            let mixed: Vec<u8> = random
                .chunks(4096)
                .zip(words.chunks(4096))
                .enumerate()
                .flat_map(|(i, (r, t))| if i % 2 == 0 { r } else { t })
                .copied()
                .collect();
            assert!(p.worth_compressing(&mixed));
            // The same random page repeated compresses across pages.
            let repeated: Vec<u8> = random[..4096].repeat(256);
            assert!(p.worth_compressing(&repeated));
            for (data, codec) in [(&random, Codec::None), (&words, want), (&mixed, want)] {
                let mut frame = vec![0u8; HEAD];
                frame.extend_from_slice(data);
                let r = c.encode_record(frame, Vec::new());
                assert_eq!(r.codec, codec);
                let b = r.bytes();
                assert_eq!(b.len() % 8, 0);
                let stored = &b[HEAD..HEAD + r.stored_size as usize];
                assert_eq!(
                    b[..HEAD],
                    encode_record_header_crc(KIND_FRAME, stored.len() as u64, r.crc32)
                );
                assert_eq!(crc32fast::hash(stored), r.crc32);
                assert!(b[HEAD + stored.len()..].iter().all(|&x| x == 0));
                let decoded = match codec {
                    Codec::None => stored.to_vec(),
                    Codec::Zstd => zstd::bulk::decompress(stored, data.len()).unwrap(),
                    Codec::Lz4 => lz4_flex::block::decompress(stored, data.len()).unwrap(),
                };
                assert_eq!(&decoded, data);
            }
        }
    }

    #[test]
    fn many_frames_in_order_through_the_pool() {
        // Frames of very different costs (random, text, raw-only) complete
        // out of order in the pool; the file must have them in order.
        for compression in [Compression::Fast, Compression::Zstd, Compression::None] {
            let ps = 4096usize;
            let opts = WriteOptions {
                compression,
                page_size: ps as u32,
                frame_size: 16 * ps,
            };
            let mut w = ImageWriter::new(Vec::new(), opts).unwrap();
            let base = 0x10_0000_0000u64;
            let mut mem = Vec::new();
            for i in 0..120u64 {
                let chunk = match i % 4 {
                    0 => xorshift(37 * ps, i),
                    1 => text(29 * ps, i),
                    2 => vec![0u8; 11 * ps],
                    _ => [xorshift(5 * ps, i), vec![0u8; ps], text(7 * ps, i)].concat(),
                };
                w.add_pages(1, base + mem.len() as u64, &chunk).unwrap();
                mem.extend_from_slice(&chunk);
            }
            let blob_data = text(300_000, 99);
            let blob = w.add_blob(&blob_data).unwrap();
            let image = Image {
                processes: vec![Process {
                    pid: 1,
                    vmas: vec![Vma {
                        start: base,
                        end: base + mem.len() as u64,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let out = w.finish(image).unwrap();
            let r = crate::ImageReader::new(out).unwrap();
            let frames = &r.image().frames;
            assert!(frames.len() > 100);
            assert!(frames.windows(2).all(|f| f[0].offset < f[1].offset));
            if compression != Compression::None {
                let want = if compression == Compression::Fast {
                    Codec::Lz4
                } else {
                    Codec::Zstd
                };
                assert!(frames.iter().any(|f| f.codec == want));
                assert!(frames.iter().any(|f| f.codec == Codec::None));
                assert!(frames
                    .iter()
                    .all(|f| f.codec == want || f.codec == Codec::None));
            } else {
                assert!(frames.iter().all(|f| f.codec == Codec::None));
            }
            let mut back = vec![0u8; mem.len()];
            r.read_memory(1, base, &mut back).unwrap();
            assert!(back == mem, "{compression:?}: memory differs");
            assert_eq!(r.read_blob(&blob).unwrap(), blob_data);
        }
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
