//! Reading saved memory fast: a frame cache shared by the request threads
//! and a read-ahead thread, where a frame being decoded by one thread is
//! waited for (not decoded again) by the others.
//!
//! Only pages in `Data` runs are read from the cache; every other page
//! (zero runs, pages without a run) goes through `ImageReader::read_memory`
//! so its semantics stay the image crate's, with one addition: pages of
//! file mappings that were not saved are read from the mapped file when it
//! is unchanged since the dump.

use crate::store::{errno_of, find_vma, Failure, FileKey, Loaded};
use crate::tree::ImgId;
use ckpt_image::{Error as ImgError, ImageReader, MemoryRun, Process, RunKind, Vma, VmaBacking};
use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes of decoded frames kept.
const CACHE_BYTES: usize = 96 << 20;

type Key = (ImgId, FileKey, u32);

enum Slot {
    Decoding,
    Ready(Arc<Vec<u8>>, u64),
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Slot>,
    bytes: usize,
    tick: u64,
}

/// Decoded frames of all images, least recently used dropped first.
#[derive(Default)]
pub struct FrameCache {
    inner: Mutex<Inner>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FrameCache {
    /// Frame `index` of this version of the image, decoding it (once) if needed.
    pub fn get(&self, l: &Loaded, r: &ImageReader, index: u32) -> Result<Arc<Vec<u8>>, ImgError> {
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
        drop(g);
        let res = r.read_frame(index).map(Arc::new);
        let mut g = lock(&self.inner);
        match &res {
            Ok(d) => {
                g.tick += 1;
                let t = g.tick;
                g.bytes += d.len();
                g.map.insert(key, Slot::Ready(d.clone(), t));
                while g.bytes > CACHE_BYTES {
                    let oldest = g
                        .map
                        .iter()
                        .filter_map(|(k, s)| match s {
                            Slot::Ready(d, t) if *k != key => Some((*t, *k, d.len())),
                            _ => None,
                        })
                        .min_by_key(|(t, _, _)| *t);
                    let Some((_, k, n)) = oldest else { break };
                    g.map.remove(&k);
                    g.bytes -= n;
                }
            }
            Err(_) => {
                g.map.remove(&key);
            }
        }
        drop(g);
        self.cv.notify_all();
        res
    }
}

fn run_end(r: &MemoryRun, ps: u64) -> u64 {
    r.start + u64::from(r.pages) * ps
}

/// Read `out.len()` bytes of `pid` at `addr`: stops at the first unmapped
/// or unreadable address; an error only when nothing could be read.
pub fn read(
    cache: &FrameCache,
    l: &Loaded,
    pid: i32,
    addr: u64,
    out: &mut [u8],
) -> Result<usize, Failure> {
    if addr == 0 || out.is_empty() {
        return Ok(0); // address 0 is never mapped: end of file
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
    let mut err = None;
    while done < out.len() {
        let a = addr + done as u64;
        let Some(vma) = find_vma(&p.vmas, a) else {
            err = Some(Failure::new(
                libc::EIO,
                format!("pid {pid}: address {a:#x} is not mapped"),
            ));
            break;
        };
        let limit = ((out.len() - done) as u64).min(vma.end - a) as usize;
        let i = p.memory.partition_point(|m| m.start <= a);
        let covering = i
            .checked_sub(1)
            .map(|j| &p.memory[j])
            .filter(|m| a < run_end(m, ps));
        let res = match covering {
            Some(m) if m.kind == RunKind::Data => {
                let n = limit.min((run_end(m, ps) - a) as usize);
                copy_from_frame(cache, l, r, pid, m, a, &mut out[done..done + n]).map(|()| n)
            }
            _ => {
                let next = match covering {
                    Some(m) => run_end(m, ps),
                    None => p.memory.get(i).map(|m| m.start).unwrap_or(u64::MAX),
                };
                let n = limit.min((next - a) as usize);
                slow_read(r, p, vma, pid, a, ps, &mut out[done..done + n])
            }
        };
        match res {
            Ok(n) if n > 0 => done += n,
            Ok(_) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    match (done, err) {
        (0, Some(e)) => Err(e),
        (n, _) => Ok(n),
    }
}

fn copy_from_frame(
    cache: &FrameCache,
    l: &Loaded,
    r: &ImageReader,
    pid: i32,
    m: &MemoryRun,
    a: u64,
    out: &mut [u8],
) -> Result<(), Failure> {
    let frame = cache
        .get(l, r, m.frame)
        .map_err(|e| Failure::new(errno_of(&e), e.to_string()))?;
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

/// Pages not in a data run: through the image crate, then the mapped file.
/// Returns how many bytes were read (fewer on a failing page after the first).
fn slow_read(
    r: &ImageReader,
    p: &Process,
    vma: &Vma,
    pid: i32,
    a: u64,
    ps: u64,
    out: &mut [u8],
) -> Result<usize, Failure> {
    let _ = p;
    match r.read_memory(pid, a, out) {
        Ok(()) => return Ok(out.len()),
        Err(ImgError::NotSaved { .. }) => {}
        Err(e) => return Err(Failure::new(errno_of(&e), e.to_string())),
    }
    // Page by page: some may be saved, the others come from the file.
    let end = a + out.len() as u64;
    let mut pos = a;
    while pos < end {
        let page_end = ((pos / ps + 1) * ps).min(end);
        let s = &mut out[(pos - a) as usize..(page_end - a) as usize];
        let res = match r.read_memory(pid, pos, s) {
            Ok(()) => Ok(()),
            Err(ImgError::NotSaved { .. }) => read_backing(vma, pos, s).map_err(|e| {
                Failure::new(
                    libc::EIO,
                    format!("pid {pid}: page at {pos:#x} was not saved and {e}"),
                )
            }),
            Err(e) => Err(Failure::new(errno_of(&e), e.to_string())),
        };
        if let Err(e) = res {
            return if pos > a {
                Ok((pos - a) as usize)
            } else {
                Err(e)
            };
        }
        pos = page_end;
    }
    Ok(out.len())
}

/// Fill `buf` with the bytes at `addr` of a file mapping from the mapped
/// file, if it is still the file that was mapped (same device, inode, size
/// and modification time). Bytes past the end of the file read as zero.
fn read_backing(vma: &Vma, addr: u64, buf: &mut [u8]) -> Result<(), String> {
    let VmaBacking::File(fm) = &vma.backing else {
        return Err("it is not a file mapping".into());
    };
    let path =
        Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&fm.file.path));
    let f =
        std::fs::File::open(path).map_err(|e| format!("the mapped file cannot be opened: {e}"))?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    if fm.file.deleted
        || m.ino() != fm.file.inode
        || m.dev() != fm.file.dev
        || m.size() != fm.file.size
        || (fm.file.mtime_ns != 0 && mtime_ns != i128::from(fm.file.mtime_ns))
    {
        return Err(format!("{} changed since the dump", path.display()));
    }
    let off = fm.offset + (addr - vma.start);
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// A read-ahead request: decode the frames of `[from, to)` of `pid`.
pub struct Prefetch {
    pub loaded: Arc<Loaded>,
    pub pid: i32,
    pub from: u64,
    pub to: u64,
}

/// The read-ahead thread.
pub fn prefetcher(cache: Arc<FrameCache>, rx: std::sync::mpsc::Receiver<Prefetch>) {
    while let Ok(p) = rx.recv() {
        let Ok(r) = p.loaded.reader.as_ref() else {
            continue;
        };
        let img = r.image();
        let Some(proc_) = img.process(p.pid) else {
            continue;
        };
        let ps = u64::from(img.host.page_size.max(1));
        let first = proc_.memory.partition_point(|m| run_end(m, ps) <= p.from);
        let mut last_frame = None;
        for m in proc_.memory[first..].iter().take_while(|m| m.start < p.to) {
            if m.kind != RunKind::Data || last_frame == Some(m.frame) {
                continue;
            }
            last_frame = Some(m.frame);
            if cache.get(&p.loaded, r, m.frame).is_err() {
                break;
            }
        }
    }
}
