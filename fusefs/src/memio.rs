//! Reading saved memory and saved contents fast, with reasons when it
//! cannot be done.
//!
//! A frame cache is shared by the request threads and a read-ahead
//! thread; a frame being decoded by one thread is waited for (not decoded
//! again) by the others. A page is read by the rules of spec/format.md
//! section 6: its run (data from its frame, or zeros), else by its
//! mapping's backing: zeros for anonymous memory, the mapped file's bytes
//! when the file is unchanged since the dump, a memfd's saved contents.
//! Kernel-provided mappings (`[vdso]`, `[vvar]`, ...) are never in an image.
//!
//! Per loaded image and process, a [`ProcIndex`] says where the data is
//! (for SEEK_DATA/SEEK_HOLE) and how much of each mapping is stored (for
//! st_blocks).

use crate::imagefile::Reader;
use crate::store::{errno_of, Failure, FileKey, Loaded};
use crate::tree::{find_vma, kernel_provided, ImgId};
use ckpt_image::{
    Blob, Error as ImgError, FileKind, FrameScratch, Image, MemoryRun, Process, RunKind, ShmKind,
    Vma, VmaBacking,
};
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes of decoded frames kept.
const CACHE_BYTES: usize = 64 << 20;
/// Buffers of evicted frames kept for the next decodes (no allocation,
/// zeroing or page faults per frame), when not larger than SPARE_MAX (a
/// frame may be up to 64 MiB; the writer's are 1 MiB).
const SPARE_BUFFERS: usize = 8;
const SPARE_MAX: usize = 4 << 20;

type Key = (ImgId, FileKey, u32);

/// One decoded frame: its bytes are `buf[range]` (a raw frame keeps its
/// record header in front: it was read once, straight into `buf`).
pub struct Decoded {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Decoded {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

enum Slot {
    Decoding,
    Ready(Arc<Decoded>, u64),
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Slot>,
    bytes: usize,
    tick: u64,
    spare: Vec<Vec<u8>>,
}

/// Decoded frames of all images, least recently used dropped first. Keys
/// name the version of the image file: a commit (a new generation) or any
/// other change of the file gives new keys, so nothing stale is served.
#[derive(Default)]
pub struct FrameCache {
    inner: Mutex<Inner>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    static SCRATCH: std::cell::RefCell<FrameScratch> = std::cell::RefCell::default();
}

impl FrameCache {
    /// Frame `index` of this version of the image, decoding it (once) if needed.
    pub fn get(&self, l: &Loaded, r: &Reader, index: u32) -> Result<Arc<Decoded>, ImgError> {
        let key = (l.id, l.key, index);
        let mut g = lock(&self.inner);
        loop {
            g.tick += 1;
            let tick = g.tick;
            match g.map.get_mut(&key) {
                Some(Slot::Ready(d, t)) => {
                    *t = tick;
                    return Ok(d.clone());
                }
                Some(Slot::Decoding) => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                None => break,
            }
        }
        g.map.insert(key, Slot::Decoding);
        let mut buf = g.spare.pop().unwrap_or_default();
        drop(g);
        let res = SCRATCH.with_borrow_mut(|s| {
            let res = r.decode_frame_into(index, s, &mut buf);
            s.trim(SPARE_MAX);
            res
        });
        let mut g = lock(&self.inner);
        let res = match res {
            Ok(range) => {
                let d = Arc::new(Decoded { buf, range });
                g.tick += 1;
                let t = g.tick;
                g.bytes += d.buf.len();
                g.map.insert(key, Slot::Ready(d.clone(), t));
                evict(&mut g, key);
                Ok(d)
            }
            Err(e) => {
                g.map.remove(&key);
                if g.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_MAX {
                    g.spare.push(buf);
                }
                Err(e)
            }
        };
        drop(g);
        self.cv.notify_all();
        res
    }

    /// Whether frame `index` of this version is decoded or being decoded.
    fn has(&self, l: &Loaded, index: u32) -> bool {
        lock(&self.inner).map.contains_key(&(l.id, l.key, index))
    }
}

/// Drop the least recently used frames (but `keep`) until the cache fits;
/// their buffers are reused when no reader holds them any more.
fn evict(g: &mut Inner, keep: Key) {
    while g.bytes > CACHE_BYTES {
        let oldest = g
            .map
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready(_, t) if *k != keep => Some((*t, *k)),
                _ => None,
            })
            .min_by_key(|(t, _)| *t);
        let Some((_, k)) = oldest else { break };
        if let Some(Slot::Ready(d, _)) = g.map.remove(&k) {
            g.bytes -= d.buf.len();
            if let Ok(d) = Arc::try_unwrap(d) {
                if g.spare.len() < SPARE_BUFFERS && d.buf.capacity() <= SPARE_MAX {
                    g.spare.push(d.buf);
                }
            }
        }
    }
}

fn run_end(r: &MemoryRun, ps: u64) -> u64 {
    r.start + u64::from(r.pages) * ps
}

/// What a page that no run covers holds, by its mapping's backing.
enum Unsaved<'a> {
    Zero,
    File,
    Memfd(Option<&'a Blob>),
    Missing,
}

fn unsaved<'a>(img: &'a Image, v: &Vma) -> Unsaved<'a> {
    match &v.backing {
        VmaBacking::Anonymous | VmaBacking::Special(_) if !kernel_provided(v) => Unsaved::Zero,
        VmaBacking::File(_) => Unsaved::File,
        VmaBacking::SharedMemory(m) => match m.kind {
            ShmKind::AnonymousShared => Unsaved::Zero,
            ShmKind::Memfd => Unsaved::Memfd(img.files.iter().find_map(|f| match &f.kind {
                FileKind::MemFd(x) if x.id == m.id => Some(&x.contents),
                _ => None,
            })),
            // Not in the image: a read names why (Vma::unsaved_reason).
            _ => Unsaved::Missing,
        },
        _ => Unsaved::Missing,
    }
}

/// The reason no byte of a mapping can be read at `a`, if none can.
fn unreadable(pid: i32, v: &Vma, a: u64) -> Option<Failure> {
    kernel_provided(v).then(|| {
        Failure::new(
            libc::EIO,
            format!(
                "pid {pid}: {a:#x} is in {} ({:#x}-{:#x}), which the kernel provides at restore: no image holds it",
                String::from_utf8_lossy(&v.name),
                v.start,
                v.end
            ),
        )
    })
}

/// Read `out.len()` bytes of `pid` at `addr`. With `short_ok` (mem, read
/// like /proc/PID/mem) a read stops at the first address that cannot be
/// read and returns the count, an error only when nothing could be read;
/// without (map files, served through the page cache, where a short read
/// would shrink the file) any unreadable byte fails the whole read.
pub fn read(
    cache: &FrameCache,
    l: &Loaded,
    pid: i32,
    addr: u64,
    out: &mut [u8],
    short_ok: bool,
) -> Result<usize, Failure> {
    if out.is_empty() {
        return Ok(0);
    }
    let r = l
        .reader
        .as_ref()
        .map_err(|e| Failure::new(libc::EIO, e.clone()))?;
    let img = r.image();
    let p = img
        .process(pid)
        .ok_or_else(|| Failure::new(libc::ENOENT, format!("no pid {pid}")))?;
    let ps = u64::from(img.host.page_size.max(1));
    let mut done = 0usize;
    while done < out.len() {
        let a = addr + done as u64;
        let res = read_chunk(cache, l, r, p, ps, a, &mut out[done..]);
        match res {
            Ok(n) => done += n,
            Err(e) if short_ok && done > 0 => {
                tracing::debug!("short read of pid {pid} at {addr:#x}: {}", e.msg);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Read from `a` up to the end of what one run (or one stretch without a
/// run) of one mapping gives; returns how many bytes (> 0).
fn read_chunk(
    cache: &FrameCache,
    l: &Loaded,
    r: &Reader,
    p: &Process,
    ps: u64,
    a: u64,
    out: &mut [u8],
) -> Result<usize, Failure> {
    let pid = p.pid;
    let Some(vma) = find_vma(&p.vmas, a) else {
        return Err(Failure::new(
            libc::EIO,
            format!("pid {pid}: address {a:#x} is not mapped"),
        ));
    };
    if let Some(f) = unreadable(pid, vma, a) {
        return Err(f);
    }
    let limit = (out.len() as u64).min(vma.end - a) as usize;
    let i = p.memory.partition_point(|m| m.start <= a);
    let covering = i
        .checked_sub(1)
        .map(|j| &p.memory[j])
        .filter(|m| a < run_end(m, ps));
    if let Some(m) = covering {
        let n = limit.min((run_end(m, ps) - a) as usize);
        match m.kind {
            RunKind::Data => copy_from_frame(cache, l, r, pid, m, a, &mut out[..n])?,
            // Guard pages (MADV_GUARD_INSTALL) hold nothing: a hole.
            RunKind::Zero | RunKind::Guard => out[..n].fill(0),
            // Saved in a parent image of an incremental one: read through
            // the chain the reader found (an error when it is incomplete).
            RunKind::Parent => r.read_memory(pid, a, &mut out[..n]).map_err(|e| {
                Failure::new(
                    libc::EIO,
                    format!(
                        "pid {pid}: the page at {a:#x} (saved in a parent image): {}",
                        ckpt_image::error_chain(&e)
                    ),
                )
            })?,
            other => {
                return Err(Failure::new(
                    libc::EIO,
                    format!(
                        "pid {pid}: the page at {a:#x} is in a memory run of kind {other:?}, which this ckptfs does not know"
                    ),
                ))
            }
        }
        return Ok(n);
    }
    let next = p.memory.get(i).map(|m| m.start).unwrap_or(u64::MAX);
    let n = limit.min((next - a) as usize);
    let out = &mut out[..n];
    match unsaved(r.image(), vma) {
        Unsaved::Zero => out.fill(0),
        Unsaved::File => read_backing(l, pid, vma, a, out)?,
        Unsaved::Memfd(blob) => {
            let VmaBacking::SharedMemory(m) = &vma.backing else {
                unreachable!("memfd backing")
            };
            out.fill(0);
            if let Some(b) = blob {
                let off = m.offset + (a - vma.start);
                read_blob(cache, l, r, b, off, out)?;
            }
        }
        Unsaved::Missing => {
            return Err(Failure::new(
                libc::EIO,
                format!(
                    "pid {pid}: the page at {a:#x} is not in the image: {}",
                    vma.unsaved_reason()
                ),
            ))
        }
    }
    Ok(n)
}

/// When `[addr, addr + len)` of `pid` lies in one data run: its frame and
/// the offset of `addr` in it (so a read can be answered from the frame
/// without a copy). None otherwise, or when the frame cannot be decoded
/// (the general path then says why).
pub fn in_one_frame(
    cache: &FrameCache,
    l: &Loaded,
    pid: i32,
    addr: u64,
    len: u64,
) -> Option<(Arc<Decoded>, usize)> {
    let r = l.reader.as_ref().ok()?;
    let img = r.image();
    let p = img.process(pid)?;
    let ps = u64::from(img.host.page_size.max(1));
    let i = p
        .memory
        .partition_point(|m| m.start <= addr)
        .checked_sub(1)?;
    let m = &p.memory[i];
    if m.kind != RunKind::Data || addr.checked_add(len)? > run_end(m, ps) {
        return None;
    }
    // The run lies inside mappings (validated); each byte of it is readable.
    let frame = cache.get(l, r, m.frame).ok()?;
    let off = usize::try_from(u64::from(m.frame_offset) + (addr - m.start)).ok()?;
    (off.checked_add(len as usize)? <= frame.len()).then_some((frame, off))
}

fn copy_from_frame(
    cache: &FrameCache,
    l: &Loaded,
    r: &Reader,
    pid: i32,
    m: &MemoryRun,
    a: u64,
    out: &mut [u8],
) -> Result<(), Failure> {
    let frame = cache.get(l, r, m.frame).map_err(|e| {
        Failure::new(
            errno_of(&e),
            format!(
                "pid {pid}: the page at {a:#x} cannot be read: {}",
                ckpt_image::error_chain(&e)
            ),
        )
    })?;
    let off = u64::from(m.frame_offset) + (a - m.start);
    let src = usize::try_from(off)
        .ok()
        .and_then(|o| frame.get(o..o.checked_add(out.len())?))
        .ok_or_else(|| {
            Failure::new(
                libc::EIO,
                format!(
                    "pid {pid}: run at {:#x} reaches past the end of frame {}",
                    m.start, m.frame
                ),
            )
        })?;
    out.copy_from_slice(src);
    Ok(())
}

/// The open mapped file of a file mapping, checked once per loaded image
/// to be the file that was mapped.
pub type Backing = Result<Arc<std::fs::File>, String>;

/// Fill `buf` with the bytes at `addr` of a file mapping from the mapped
/// file, if it is still the file that was mapped (same device, inode, size
/// and modification time). Bytes past the end of the file read as zero.
fn read_backing(l: &Loaded, pid: i32, vma: &Vma, addr: u64, buf: &mut [u8]) -> Result<(), Failure> {
    let VmaBacking::File(fm) = &vma.backing else {
        unreachable!("file backing")
    };
    let why = |e: String| {
        Failure::new(
            libc::EIO,
            format!("pid {pid}: the page at {addr:#x} was left to the mapped file and {e}"),
        )
    };
    let f = l
        .backing(pid, vma.start, || open_backing(fm))
        .map_err(why)?;
    // Checked again at each read: the file may change while mounted.
    let m = f.metadata().map_err(|e| why(e.to_string()))?;
    if let Err(e) = same_file(fm, &m) {
        return Err(why(e));
    }
    let off = fm.offset + (addr - vma.start);
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(why(format!("reading it failed: {e}"))),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

fn open_backing(fm: &ckpt_image::FileMapping) -> Backing {
    let path =
        Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&fm.file.path));
    if fm.file.deleted {
        return Err(format!("{} was deleted at the dump", path.display()));
    }
    std::fs::File::open(path)
        .map(Arc::new)
        .map_err(|e| format!("{} cannot be opened: {e}", path.display()))
}

/// Whether `m` is the file a mapping mapped at the dump.
fn same_file(fm: &ckpt_image::FileMapping, m: &std::fs::Metadata) -> Result<(), String> {
    let path = String::from_utf8_lossy(&fm.file.path);
    let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    let what = if m.dev() != fm.file.dev || m.ino() != fm.file.inode {
        format!(
            "is another file now (device {:#x} inode {}, was {:#x} {})",
            m.dev(),
            m.ino(),
            fm.file.dev,
            fm.file.inode
        )
    } else if m.size() != fm.file.size {
        format!("has {} bytes now, {} at the dump", m.size(), fm.file.size)
    } else if fm.file.mtime_ns != 0 && mtime_ns != i128::from(fm.file.mtime_ns) {
        "was modified (its mtime differs)".to_string()
    } else {
        return Ok(());
    };
    Err(format!("{path} changed since the dump: it {what}"))
}

/// Read `out.len()` bytes (fewer at its end) of a blob at `off`; returns
/// how many.
pub fn read_blob(
    cache: &FrameCache,
    l: &Loaded,
    r: &Reader,
    blob: &Blob,
    off: u64,
    out: &mut [u8],
) -> Result<usize, Failure> {
    let end = blob.size.min(off.saturating_add(out.len() as u64));
    let mut pos = 0u64; // blob offset of the current frame
    let mut done = 0usize;
    for &i in &blob.frames {
        if off + done as u64 >= end {
            break;
        }
        let size = r
            .image()
            .frames
            .get(i as usize)
            .map(|f| u64::from(f.size))
            .unwrap_or(0);
        let (fs, fe) = (pos, pos + size);
        pos = fe;
        let want = off + done as u64;
        if fe <= want {
            continue;
        }
        let frame = cache.get(l, r, i).map_err(|e| {
            Failure::new(
                errno_of(&e),
                format!(
                    "saved contents (frame {i}) cannot be read: {}",
                    ckpt_image::error_chain(&e)
                ),
            )
        })?;
        let from = (want - fs) as usize;
        let n = ((fe.min(end) - want) as usize).min(frame.len().saturating_sub(from));
        out[done..done + n].copy_from_slice(&frame[from..from + n]);
        done += n;
        if n == 0 {
            break;
        }
    }
    Ok(done)
}

/// Where the data of a process is, and how much of each mapping is stored.
#[derive(Default)]
pub struct ProcIndex {
    /// Sorted, disjoint, merged [start, end) ranges that hold data: saved
    /// pages, and pages a file or memfd gives. The rest (unmapped space,
    /// zero runs, untouched anonymous memory, kernel mappings) is a hole.
    pub extents: Vec<(u64, u64)>,
    /// Bytes stored in frames (data runs) per mapping, by its start.
    pub stored: HashMap<u64, u64>,
}

impl ProcIndex {
    pub fn build(img: &Image, p: &Process) -> ProcIndex {
        let ps = u64::from(img.host.page_size.max(1));
        let mut ix = ProcIndex::default();
        let mut push = |s: u64, e: u64| {
            if s >= e {
                return;
            }
            match ix.extents.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => ix.extents.push((s, e)),
            }
        };
        for v in &p.vmas {
            let backed = !matches!(unsaved(img, v), Unsaved::Zero) && !kernel_provided(v);
            let first = p.memory.partition_point(|m| run_end(m, ps) <= v.start);
            let mut cur = v.start;
            let mut stored = 0u64;
            for m in p.memory[first..].iter().take_while(|m| m.start < v.end) {
                let (s, e) = (m.start.max(v.start), run_end(m, ps).min(v.end));
                if backed {
                    push(cur, s);
                }
                if m.kind == RunKind::Data {
                    stored += e - s;
                }
                if matches!(m.kind, RunKind::Data | RunKind::Parent) {
                    push(s, e);
                }
                cur = e;
            }
            if backed {
                push(cur, v.end);
            }
            ix.stored.insert(v.start, stored);
        }
        ix
    }

    /// SEEK_DATA: the first data offset at or after `a`.
    pub fn next_data(&self, a: u64) -> Option<u64> {
        let i = self.extents.partition_point(|e| e.1 <= a);
        self.extents.get(i).map(|e| e.0.max(a))
    }

    /// SEEK_HOLE: the first hole offset at or after `a`.
    pub fn next_hole(&self, a: u64) -> u64 {
        let i = self.extents.partition_point(|e| e.1 <= a);
        match self.extents.get(i) {
            Some(e) if e.0 <= a => e.1,
            _ => a,
        }
    }
}

/// How far ahead of a sequential reader frames are decoded (bytes of
/// address space), and at most how many frames are queued for that.
const AHEAD_BYTES: u64 = 8 << 20;
const AHEAD_QUEUE: usize = 16;
/// Threads decoding ahead. Frames not in the page cache are read with
/// O_DIRECT (synchronously): the threads mostly wait for the disk, and
/// more of them keep more reads in flight (8: up to the 8 MiB ahead).
const AHEAD_THREADS: usize = 8;
/// A read that starts within this distance of where the last read of the
/// same process ended continues a sequential stream (the kernel sends the
/// page cache's read-ahead requests on several threads, a little out of
/// order).
const STREAM_SLACK: u64 = 4 << 20;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(Arc<Loaded>, u32)>,
    threads: usize,
    /// Where the last read of each (image, process) ended.
    streams: HashMap<(ImgId, i32), u64>,
}

/// Decodes the frames ahead of sequential readers of memory on a small
/// pool of threads, into the shared [`FrameCache`], so that reads find
/// their frames decoded and only copy.
pub struct Prefetcher {
    cache: Arc<FrameCache>,
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Prefetcher {
    pub fn new(cache: Arc<FrameCache>) -> Arc<Prefetcher> {
        Arc::new(Prefetcher {
            cache,
            q: Mutex::default(),
            cv: Condvar::new(),
        })
    }

    /// A read of `[addr, addr + len)` of `pid` was answered: when it
    /// continues a sequential stream (or is large), queue the frames of
    /// the next [`AHEAD_BYTES`] that are not decoded yet.
    pub fn after_read(self: &Arc<Self>, l: &Arc<Loaded>, pid: i32, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        {
            let mut q = lock(&self.q);
            if q.streams.len() > 256 {
                q.streams.clear();
            }
            let last = q.streams.insert((l.id, pid), end);
            let sequential =
                len >= (128 << 10) || last.is_some_and(|e| addr.abs_diff(e) <= STREAM_SLACK);
            if !sequential {
                return;
            }
        }
        let Ok(r) = l.reader.as_ref() else { return };
        let img = r.image();
        let Some(p) = img.process(pid) else { return };
        let ps = u64::from(img.host.page_size.max(1));
        let first = p.memory.partition_point(|m| run_end(m, ps) <= end);
        let mut want: Vec<u32> = Vec::new();
        for m in p.memory[first..]
            .iter()
            .take_while(|m| m.start < end.saturating_add(AHEAD_BYTES))
        {
            if m.kind != RunKind::Data || want.last() == Some(&m.frame) {
                continue;
            }
            if !self.cache.has(l, m.frame) {
                want.push(m.frame);
            }
            if want.len() >= AHEAD_QUEUE {
                break;
            }
        }
        if want.is_empty() {
            return;
        }
        let mut q = lock(&self.q);
        for f in want {
            if !q
                .jobs
                .iter()
                .any(|(jl, jf)| *jf == f && jl.key == l.key && jl.id == l.id)
            {
                q.jobs.push_back((l.clone(), f));
            }
        }
        // The oldest jobs are the ones a reader has passed by now.
        while q.jobs.len() > AHEAD_QUEUE {
            q.jobs.pop_front();
        }
        while q.threads < AHEAD_THREADS {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("ckptfs-ahead".into())
                .spawn(move || me.work());
            if spawned.is_err() {
                break;
            }
            q.threads += 1;
        }
        drop(q);
        self.cv.notify_all();
    }

    fn work(&self) {
        loop {
            let (l, index) = {
                let mut q = lock(&self.q);
                loop {
                    if let Some(j) = q.jobs.pop_front() {
                        break j;
                    }
                    q = self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            if let Ok(r) = l.reader.as_ref() {
                // An error is the reader's to report, when it gets there.
                let _ = self.cache.get(&l, r, index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::{FileMapping, SpecialMapping};

    fn vma(start: u64, end: u64, backing: VmaBacking) -> Vma {
        Vma {
            start,
            end,
            backing,
            ..Default::default()
        }
    }

    fn run(start: u64, pages: u32, kind: RunKind) -> MemoryRun {
        MemoryRun {
            start,
            pages,
            kind,
            frame: 0,
            frame_offset: 0,
        }
    }

    #[test]
    fn data_extents_and_stored_bytes() {
        let img = Image {
            host: ckpt_image::HostInfo {
                page_size: 0x1000,
                ..Default::default()
            },
            ..Default::default()
        };
        let p = Process {
            vmas: vec![
                vma(0x10000, 0x14000, VmaBacking::Anonymous),
                vma(0x14000, 0x18000, VmaBacking::File(FileMapping::default())),
                vma(0x20000, 0x21000, VmaBacking::Special(SpecialMapping::Vvar)),
            ],
            memory: vec![
                run(0x11000, 1, RunKind::Data),
                run(0x12000, 1, RunKind::Zero),
                run(0x13000, 2, RunKind::Data), // spans into the file mapping
                run(0x16000, 1, RunKind::Zero),
            ],
            ..Default::default()
        };
        let ix = ProcIndex::build(&img, &p);
        assert_eq!(
            ix.extents,
            vec![(0x11000, 0x12000), (0x13000, 0x16000), (0x17000, 0x18000)]
        );
        assert_eq!(ix.stored[&0x10000], 0x2000);
        assert_eq!(ix.stored[&0x14000], 0x1000);
        assert_eq!(ix.stored[&0x20000], 0);
        assert_eq!(ix.next_data(0), Some(0x11000));
        assert_eq!(ix.next_data(0x11800), Some(0x11800));
        assert_eq!(ix.next_data(0x12000), Some(0x13000));
        assert_eq!(ix.next_data(0x18000), None);
        assert_eq!(ix.next_hole(0x11000), 0x12000);
        assert_eq!(ix.next_hole(0x12000), 0x12000);
        assert_eq!(ix.next_hole(0x13800), 0x16000);
        // Guard pages are holes; pages in the parent image are data.
        let p = Process {
            vmas: vec![vma(0x30000, 0x34000, VmaBacking::Anonymous)],
            memory: vec![
                run(0x30000, 1, RunKind::Guard),
                run(0x31000, 2, RunKind::Parent),
            ],
            ..Default::default()
        };
        let ix = ProcIndex::build(&img, &p);
        assert_eq!(ix.extents, vec![(0x31000, 0x33000)]);
        assert_eq!(ix.stored[&0x30000], 0);
    }
}
