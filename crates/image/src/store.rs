//! Reading page frames, blobs and process memory, shared by the reader and
//! the editor.

use crate::container::{encode_record_header_crc, KIND_FRAME, MAX_FRAME, RECORD_HEADER_LEN};
use crate::model::*;
use crate::{Error, ReadAt, Result};
use std::sync::{Arc, Mutex};

/// Decoded frames kept for repeated small reads (bytes).
const CACHE_BYTES: usize = 64 << 20;
const CACHE_ENTRIES: usize = 16;

/// A small LRU cache of decoded frames.
#[derive(Default)]
pub struct FrameCache {
    entries: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
}

/// The cache key of frame `index` of the image `level` steps up a chain.
fn key(level: usize, index: u32) -> u64 {
    (level as u64) << 32 | u64::from(index)
}

impl FrameCache {
    fn get(&self, index: u64) -> Option<Arc<Vec<u8>>> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let pos = e.iter().position(|(i, _)| *i == index)?;
        let item = e.remove(pos);
        let v = item.1.clone();
        e.push(item);
        Some(v)
    }
    fn put(&self, index: u64, data: Arc<Vec<u8>>) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|(i, _)| *i != index);
        e.push((index, data));
        while e.len() > CACHE_ENTRIES
            || (e.len() > 1 && e.iter().map(|(_, d)| d.len()).sum::<usize>() > CACHE_BYTES)
        {
            e.remove(0);
        }
    }
}

/// Where the record of frame `index` lies in the image: the frame, the
/// record's offset (its header) and its end (end of the stored bytes).
/// Fails on an index out of range, sizes over the frame limit, or an offset
/// inside the file header.
pub fn frame_record(frames: &[Frame], index: u32) -> Result<(&Frame, u64, u64)> {
    let f = frames.get(index as usize).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "frame index {index} out of range (the image has {} frames)",
            frames.len()
        ))
    })?;
    let err = |what: String| Error::Frame {
        index,
        offset: f.offset,
        what,
    };
    if u64::from(f.stored_size) > MAX_FRAME || u64::from(f.size) > MAX_FRAME {
        return Err(err(format!(
            "stored size {} / size {} over the frame limit of {MAX_FRAME}",
            f.stored_size, f.size
        )));
    }
    let rec_off = f
        .offset
        .checked_sub(RECORD_HEADER_LEN)
        .ok_or_else(|| err("offset is inside the file header".into()))?;
    Ok((f, rec_off, f.offset + u64::from(f.stored_size)))
}

/// The stored bytes of frame `index` (`f`) from its whole record `rec`
/// (header and payload, as read at `rec_off`), once the record header
/// agrees with the metadata and the payload with its CRC.
pub fn check_frame_record<'a>(
    f: &Frame,
    index: u32,
    rec_off: u64,
    rec: &'a [u8],
) -> Result<&'a [u8]> {
    let hl = RECORD_HEADER_LEN as usize;
    let expected = encode_record_header_crc(KIND_FRAME, u64::from(f.stored_size), f.crc32);
    if rec.len() != hl + f.stored_size as usize || rec[..hl] != expected {
        return Err(Error::Frame {
            index,
            offset: f.offset,
            what: format!(
                "the frame record header at offset {rec_off} does not match the metadata (kind 1, {} bytes, crc {:#010x})",
                f.stored_size, f.crc32
            ),
        });
    }
    let stored = &rec[hl..];
    let actual = crc32fast::hash(stored);
    if actual != f.crc32 {
        return Err(Error::Checksum {
            what: format!("frame {index} ({} bytes stored)", f.stored_size),
            offset: f.offset,
            stored: f.crc32,
            actual,
        });
    }
    Ok(stored)
}

/// Decode frame `index`: read its record (header and stored bytes, in one
/// read), check both, decompress with the output bounded by `Frame.size`.
pub fn decode_frame(src: &dyn ReadAt, frames: &[Frame], index: u32) -> Result<Vec<u8>> {
    let (f, rec_off, end) = frame_record(frames, index)?;
    let mut rec = vec![0u8; (end - rec_off) as usize];
    src.read_at(&mut rec, rec_off)?;
    let mut d = PayloadDecoder::default();
    let stored = check_frame_record(f, index, rec_off, &rec)?;
    d.decode(index, f, stored)?;
    if f.codec == Codec::None {
        // The payload itself: drop the record header in place.
        rec.drain(..RECORD_HEADER_LEN as usize);
        return Ok(rec);
    }
    Ok(d.out)
}

/// Buffers and decoder state kept by one thread from one frame to the
/// next for [`ImageReader::decode_frame_into`](crate::ImageReader::decode_frame_into):
/// no allocation or zeroing per frame once they have grown.
#[derive(Default)]
pub struct FrameScratch {
    rec: Vec<u8>,
    payload: PayloadDecoder,
}

impl FrameScratch {
    /// Free the buffers when they have grown past `max` bytes (for a rare
    /// large frame), so that a thread does not keep them.
    pub fn trim(&mut self, max: usize) {
        if self.rec.capacity() > max {
            self.rec = Vec::new();
        }
        if self.payload.out.capacity() > max {
            self.payload.out = Vec::new();
        }
    }
}

/// Make `v` exactly `n` bytes long, zeroing only bytes it never had (an
/// empty buffer is allocated zeroed: fresh memory from the allocator is
/// not written, so it is not faulted in before it is filled).
fn set_len(v: &mut Vec<u8>, n: usize) {
    if v.len() >= n {
        v.truncate(n);
    } else if v.capacity() == 0 {
        *v = vec![0u8; n];
    } else {
        v.resize(n, 0);
    }
}

/// Decode frame `index` into `out` (its old contents are overwritten) with
/// the checks of [`decode_frame`]; returns where in `out` the frame's bytes
/// are. A raw frame's record is read straight into `out` (one copy: its
/// bytes follow the record header); a compressed one is read into
/// `scratch` and decompressed into `out`.
pub fn decode_frame_into(
    src: &dyn ReadAt,
    frames: &[Frame],
    index: u32,
    scratch: &mut FrameScratch,
    out: &mut Vec<u8>,
) -> Result<std::ops::Range<usize>> {
    let (f, rec_off, end) = frame_record(frames, index)?;
    let len = (end - rec_off) as usize;
    if f.codec == Codec::None {
        let at = src.read_into(out, rec_off, len)?;
        let stored = check_frame_record(f, index, rec_off, &out[at.clone()])?;
        scratch.payload.decode(index, f, stored)?;
        let start = at.start + RECORD_HEADER_LEN as usize;
        return Ok(start..start + f.size as usize);
    }
    let at = src.read_into(&mut scratch.rec, rec_off, len)?;
    let stored = check_frame_record(f, index, rec_off, &scratch.rec[at])?;
    scratch.payload.decode_into(index, f, stored, out)?;
    Ok(0..f.size as usize)
}

/// Decodes the stored bytes of frames (their CRC already checked) and
/// checks that they decode to the size the metadata gives. Keeps its zstd
/// context and output buffer from one frame to the next.
#[derive(Default)]
pub struct PayloadDecoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    out: Vec<u8>,
}

impl PayloadDecoder {
    /// The decoded bytes of frame `index` (described by `f`) from its
    /// stored bytes: `stored` itself for a raw frame, else a buffer of the
    /// decoder's.
    pub fn decode<'a>(&'a mut self, index: u32, f: &Frame, stored: &'a [u8]) -> Result<&'a [u8]> {
        if f.codec == Codec::None {
            return Self::check_raw(index, f, stored);
        }
        let mut out = std::mem::take(&mut self.out);
        let r = self.decode_into(index, f, stored, &mut out);
        self.out = out;
        r?;
        Ok(&self.out)
    }

    fn check_raw<'a>(index: u32, f: &Frame, stored: &'a [u8]) -> Result<&'a [u8]> {
        if f.stored_size != f.size || stored.len() != f.size as usize {
            return Err(Error::Frame {
                index,
                offset: f.offset,
                what: format!(
                    "raw frame with stored size {} != size {}",
                    f.stored_size, f.size
                ),
            });
        }
        Ok(stored)
    }

    /// Decode a compressed frame into `out` (exactly its decoded size
    /// afterwards); a raw one is only checked and not copied.
    pub fn decode_into(
        &mut self,
        index: u32,
        f: &Frame,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let err = |what: String| Error::Frame {
            index,
            offset: f.offset,
            what,
        };
        let dec_err = |codec, source| Error::Decompress {
            index,
            offset: f.offset,
            codec,
            source,
        };
        let size = f.size as usize;
        match f.codec {
            Codec::None => {
                Self::check_raw(index, f, stored)?;
                set_len(out, size);
                out.copy_from_slice(stored);
            }
            Codec::Zstd => {
                if self.zstd.is_none() {
                    self.zstd =
                        Some(zstd::bulk::Decompressor::new().map_err(|e| dec_err("zstd", e))?);
                }
                let d = self.zstd.as_mut().expect("just made");
                out.clear();
                out.reserve(size);
                d.decompress_to_buffer(stored, out)
                    .map_err(|e| dec_err("zstd", e))?;
            }
            Codec::Lz4 => {
                // Room for exactly the size the metadata gives: a block that
                // decodes to more fails instead of growing the buffer. (The
                // old bytes are overwritten: no need to zero them first.)
                set_len(out, size);
                let n = lz4_flex::block::decompress_into(stored, out)
                    .map_err(|e| dec_err("lz4", std::io::Error::other(e)))?;
                out.truncate(n);
            }
        }
        if out.len() != size {
            return Err(err(format!(
                "decoded to {} bytes, the metadata says {}",
                out.len(),
                f.size
            )));
        }
        Ok(())
    }
}

/// Frame decoding with the cache (`level`: where the image is in its
/// chain, 0 for the image itself).
pub fn cached_frame(
    src: &dyn ReadAt,
    frames: &[Frame],
    cache: &FrameCache,
    level: usize,
    index: u32,
) -> Result<Arc<Vec<u8>>> {
    if let Some(d) = cache.get(key(level, index)) {
        return Ok(d);
    }
    let d = Arc::new(decode_frame(src, frames, index)?);
    cache.put(key(level, index), d.clone());
    Ok(d)
}

/// The images of a chain, from an image (level 0) through its parents:
/// where pages of `parent` runs are found.
pub trait Chain {
    /// The image `level` steps up the chain and its source, or why it is
    /// not available.
    fn level(&self, level: usize) -> std::result::Result<(&dyn ReadAt, &Image), String>;
    /// Decoded frames of every level.
    fn cache(&self) -> &FrameCache;
}

/// One image on its own: `parent` runs cannot be read.
pub struct Single<'a> {
    pub src: &'a dyn ReadAt,
    pub image: &'a Image,
    pub cache: &'a FrameCache,
}

impl Chain for Single<'_> {
    fn level(&self, level: usize) -> std::result::Result<(&dyn ReadAt, &Image), String> {
        if level == 0 {
            Ok((self.src, self.image))
        } else {
            Err("the parent image is not open here".into())
        }
    }
    fn cache(&self) -> &FrameCache {
        self.cache
    }
}

/// The error for pages of a `parent` run whose parent is not available.
pub fn parent_error(pid: i32, addr: u64, why: &str) -> Error {
    Error::Chain(format!(
        "pid {pid}: the page at {addr:#x} is saved in the parent image, which cannot be read: {why}"
    ))
}

pub fn read_blob(src: &dyn ReadAt, frames: &[Frame], blob: &Blob) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for &i in &blob.frames {
        if out.len() as u64 >= blob.size {
            break;
        }
        let d = decode_frame(src, frames, i)?;
        let want = (blob.size - out.len() as u64).min(d.len() as u64) as usize;
        out.extend_from_slice(&d[..want]);
    }
    if (out.len() as u64) < blob.size {
        return Err(Error::Invalid(format!(
            "blob of {} bytes but its {} frames hold only {} bytes",
            blob.size,
            blob.frames.len(),
            out.len()
        )));
    }
    Ok(out)
}

pub fn process(image: &Image, pid: i32) -> Result<&Process> {
    image.process(pid).ok_or(Error::NoSuchProcess { pid })
}

/// The VMA containing `addr` (VMAs sorted by start).
pub fn find_vma(p: &Process, addr: u64) -> Option<&Vma> {
    let i = p.vmas.partition_point(|v| v.start <= addr);
    let v = p.vmas.get(i.checked_sub(1)?)?;
    v.contains(addr).then_some(v)
}

pub fn run_bytes(r: &MemoryRun, page_size: u32) -> u64 {
    u64::from(r.pages) * u64::from(page_size)
}

/// Index of the run containing `addr`, or Err(index of the first run after it).
pub fn find_run(p: &Process, addr: u64, page_size: u32) -> std::result::Result<usize, usize> {
    let i = p.memory.partition_point(|r| r.start <= addr);
    if i > 0 {
        let r = &p.memory[i - 1];
        if addr.wrapping_sub(r.start) < run_bytes(r, page_size) {
            return Ok(i - 1);
        }
    }
    Err(i)
}

/// Whether pages of this VMA that have no run read as zeros.
pub fn unsaved_is_zero(v: &Vma) -> bool {
    match &v.backing {
        VmaBacking::Anonymous => true,
        VmaBacking::Special(SpecialMapping::Heap | SpecialMapping::Stack) => true,
        VmaBacking::SharedMemory(s) => s.kind == ShmKind::AnonymousShared,
        VmaBacking::AioRing(_) => true,
        VmaBacking::File(_) | VmaBacking::Special(_) | VmaBacking::PacketRing => false,
    }
}

/// Read saved memory of `pid` at `addr` (see `ImageReader::read_memory`),
/// of one image on its own.
pub fn read_memory(
    src: &dyn ReadAt,
    image: &Image,
    cache: &FrameCache,
    pid: i32,
    addr: u64,
    buf: &mut [u8],
) -> Result<()> {
    let one = Single { src, image, cache };
    read_memory_chain(&one, 0, pid, addr, buf)
}

/// Read saved memory of `pid` at `addr` from the image `level` of `chain`,
/// pages of `parent` runs from the levels above.
pub fn read_memory_chain(
    chain: &dyn Chain,
    level: usize,
    pid: i32,
    addr: u64,
    buf: &mut [u8],
) -> Result<()> {
    let (src, image) = chain
        .level(level)
        .map_err(|why| parent_error(pid, addr, &why))?;
    let p = process(image, pid)?;
    let ps = image.host.page_size;
    let mut done = 0usize;
    while done < buf.len() {
        let cur = addr.checked_add(done as u64).ok_or(Error::Unmapped {
            pid,
            addr: u64::MAX,
        })?;
        let vma = find_vma(p, cur).ok_or(Error::Unmapped { pid, addr: cur })?;
        let left = (buf.len() - done) as u64;
        let mut n = left.min(vma.end - cur);
        let out_start = done;
        match find_run(p, cur, ps) {
            Ok(ri) => {
                let r = &p.memory[ri];
                let in_run = cur - r.start;
                n = n.min(run_bytes(r, ps) - in_run);
                let out = &mut buf[out_start..out_start + n as usize];
                match r.kind {
                    RunKind::Zero => out.fill(0),
                    RunKind::Guard => {
                        return Err(Error::Invalid(format!(
                            "pid {pid}: {cur:#x} is a guard page (MADV_GUARD_INSTALL): reading it faults"
                        )))
                    }
                    RunKind::Parent => {
                        chain
                            .level(level + 1)
                            .map_err(|why| parent_error(pid, cur, &why))?;
                        read_memory_chain(chain, level + 1, pid, cur, out)?;
                    }
                    RunKind::Data => {
                        let frame =
                            cached_frame(src, &image.frames, chain.cache(), level, r.frame)?;
                        let off = u64::from(r.frame_offset) + in_run;
                        let data = usize::try_from(off)
                            .ok()
                            .and_then(|o| frame.get(o..o.checked_add(n as usize)?))
                            .ok_or_else(|| {
                                Error::Invalid(format!(
                                    "pid {pid}: run at {:#x} reaches past the end of frame {} ({} bytes)",
                                    r.start,
                                    r.frame,
                                    frame.len()
                                ))
                            })?;
                        out.copy_from_slice(data);
                    }
                }
            }
            Err(next) => {
                if let Some(r) = p.memory.get(next) {
                    if r.start > cur {
                        n = n.min(r.start - cur);
                    }
                }
                if !unsaved_is_zero(vma) {
                    return Err(Error::NotSaved {
                        pid,
                        addr: cur,
                        why: vma.unsaved_reason(),
                    });
                }
                buf[out_start..out_start + n as usize].fill(0);
            }
        }
        done += n as usize;
    }
    Ok(())
}

/// Call `f` for every run of `pid` in address order with its bytes (None for
/// Zero runs), decoding each frame once for consecutive runs.
pub fn for_each_run(
    src: &dyn ReadAt,
    image: &Image,
    cache: &FrameCache,
    pid: i32,
    mut f: impl FnMut(&MemoryRun, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    let p = process(image, pid)?;
    let ps = image.host.page_size;
    let mut current: Option<(u32, Arc<Vec<u8>>)> = None;
    for r in &p.memory {
        match r.kind {
            RunKind::Zero | RunKind::Guard => f(r, None)?,
            RunKind::Parent => {
                return Err(Error::Invalid(format!(
                    "pid {pid}: run at {:#x} is saved in the parent image, which this reader does not open",
                    r.start
                )))
            }
            RunKind::Data => {
                let frame = match &current {
                    Some((i, d)) if *i == r.frame => d.clone(),
                    _ => {
                        // Sequential: decode without filling the cache.
                        let d = match cache.get(key(0, r.frame)) {
                            Some(d) => d,
                            None => Arc::new(decode_frame(src, &image.frames, r.frame)?),
                        };
                        current = Some((r.frame, d.clone()));
                        d
                    }
                };
                let start = u64::from(r.frame_offset);
                let data = usize::try_from(start)
                    .ok()
                    .and_then(|s| {
                        frame.get(s..s.checked_add(usize::try_from(run_bytes(r, ps)).ok()?)?)
                    })
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "pid {pid}: run at {:#x} reaches past the end of frame {}",
                            r.start, r.frame
                        ))
                    })?;
                f(r, Some(data))?;
            }
        }
    }
    Ok(())
}
