//! The saved pages: which pieces of the saved runs are written where
//! (planned here, pure), and writing them into the target.
//!
//! Frames are independent, so each of a few workers (one per core, the
//! calling thread being one) takes the next batch of neighbouring frames
//! not yet taken and has ckpt-image's [`ckpt_image::FrameBatchReader`]
//! read it with one read (up to 2 MiB) and check and decode each frame
//! into its own reused buffers; it writes its pieces straight from there: with UFFDIO_COPY into
//! private anonymous mappings registered for it (see [`CopyTarget`],
//! mem/uffd.rs), else
//! with process_vm_writev, up to IOV_MAX pieces a call (falling back to
//! /proc/PID/mem where that fails). The target's page faults thus happen on
//! every core, there is no copy between decoding and writing, and memory
//! use is a batch and a frame buffer a worker.

use super::run_range;
use super::uffd::{uffd_copy, CopyTarget};
use super::vmas::PageRule;
use super::MemPlan;
use crate::error::{Error, Result, SysContext};
use ckpt_image::{ImageReader, MemoryRun, Process, ReadAt, RunKind, PROT_WRITE};
use ckpt_sys::mm::{self, ProcMem, RemoteRange};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];
const IOV_MAX: usize = 1024;
/// Most workers used (each holds two frame-sized buffers).
const MAX_WORKERS: usize = 4;

/// A piece of a saved run to write into the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWrite {
    pub addr: u64,
    pub len: u64,
    /// Index into Process::memory.
    pub run: usize,
    /// Write zeros (a Zero run over a private file mapping).
    pub zero: bool,
}

/// The page writes of `proc` (into `plan`, whose steps are made): each
/// run cut at vma boundaries, kept where `rules` (one per vma) say its
/// pages are written; the mappings they go to are made writable meanwhile.
pub(super) fn plan_writes(proc: &Process, page: u64, rules: &[PageRule], plan: &mut MemPlan) {
    let step_of: std::collections::BTreeMap<u64, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.start, i))
        .collect();
    for (ri, run) in proc.memory.iter().enumerate() {
        let (rs, re) = run_range(run, page);
        if run.kind == RunKind::Guard {
            // No contents: installed once the pages are written.
            plan.guards.push((rs, re));
            continue;
        }
        let mut covered = 0u64;
        let first = proc.vmas.partition_point(|v| v.end <= rs);
        for (vi, v) in proc.vmas.iter().enumerate().skip(first) {
            if v.start >= re {
                break;
            }
            let (mut s, e) = (rs.max(v.start), re.min(v.end));
            covered += e - s;
            let zero = run.kind == RunKind::Zero;
            let write = match rules[vi] {
                PageRule::Nothing => false,
                PageRule::DataOnly => !zero,
                PageRule::All => true,
                PageRule::AioRing => {
                    s = s.max(v.start + super::aio::HEADER_LEN);
                    s < e
                }
            };
            if !write {
                continue;
            }
            let Some(&si) = step_of.get(&v.start) else {
                continue;
            };
            let step = &mut plan.steps[si];
            step.map_prot |= PROT_WRITE;
            plan.writes.push(PageWrite {
                addr: s,
                len: e - s,
                run: ri,
                zero,
            });
        }
        if covered < re - rs {
            plan.errors.push(format!(
                "saved pages at {rs:x}-{re:x} lie outside every mapping of the image"
            ));
        }
    }
}

/// A range of the target that receives bytes of a frame.
#[derive(Debug, Clone, Copy)]
struct Piece {
    addr: u64,
    len: usize,
    /// Offset in the decoded frame.
    off: usize,
}

/// One frame and where its bytes go.
struct FrameWork {
    frame: u32,
    pieces: Vec<Piece>,
}

/// Where the bytes for an address are written: saved addresses inside a
/// temporary fill area go to that area instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect {
    pub start: u64,
    pub end: u64,
    /// Address the bytes of `start` are written to.
    pub to: u64,
}

/// Where the bytes for `addr` go, and how many of the following bytes
/// (up to `len`) go there contiguously.
fn redirect(r: &[Redirect], addr: u64, len: u64) -> (u64, u64) {
    let i = r.partition_point(|x| x.end <= addr);
    match r.get(i) {
        Some(x) if x.start <= addr => (addr - x.start + x.to, len.min(x.end - addr)),
        Some(x) => (addr, len.min(x.start - addr)),
        None => (addr, len),
    }
}

/// process_vm_writev of local slices to remote ranges of equal total
/// length. Returns the bytes written (short when a remote page fails).
fn writev(pid: i32, local: &[IoSlice<'_>], remote: &[RemoteRange]) -> usize {
    mm::vm_writev(pid, local, remote).unwrap_or(0)
}

/// Write `data` at `addr` of `pid`.
fn put(pid: i32, mem: &ProcMem, addr: u64, data: &[u8]) -> Result<()> {
    let local = [IoSlice::new(data)];
    let remote = [RemoteRange {
        addr,
        len: data.len(),
    }];
    let done = if data.is_empty() {
        0
    } else {
        writev(pid, &local, &remote)
    };
    if done < data.len() {
        let a = addr + done as u64;
        mem.write(a, &data[done..])
            .ctx(|| format!("writing saved pages at {a:#x}"))?;
    }
    Ok(())
}

/// Write the pieces of one decoded frame: with UFFDIO_COPY where `copy`
/// covers them, else with process_vm_writev, IOV_MAX at a time.
fn put_pieces(
    pid: i32,
    mem: &ProcMem,
    copy: Option<&CopyTarget<'_>>,
    data: &[u8],
    pieces: &[Piece],
) -> Result<()> {
    let mut rest: Vec<Piece> = Vec::new();
    let pieces = match copy {
        Some(c) => {
            for p in pieces {
                if c.covers(p.addr) {
                    uffd_copy(c.fd, p.addr, &data[p.off..p.off + p.len])?;
                } else {
                    rest.push(*p);
                }
            }
            &rest[..]
        }
        None => pieces,
    };
    let mut local: Vec<IoSlice<'_>> = Vec::with_capacity(pieces.len().min(IOV_MAX));
    let mut remote: Vec<RemoteRange> = Vec::with_capacity(pieces.len().min(IOV_MAX));
    for batch in pieces.chunks(IOV_MAX) {
        local.clear();
        remote.clear();
        for p in batch {
            local.push(IoSlice::new(&data[p.off..p.off + p.len]));
            remote.push(RemoteRange {
                addr: p.addr,
                len: p.len,
            });
        }
        let mut done = writev(pid, &local, &remote);
        // Short: finish piece by piece (put falls back to /proc/PID/mem).
        for p in batch {
            if done >= p.len {
                done -= p.len;
                continue;
            }
            let d = done;
            done = 0;
            put(pid, mem, p.addr + d as u64, &data[p.off + d..p.off + p.len])?;
        }
    }
    Ok(())
}

/// Number of workers: one per core, at most MAX_WORKERS and the frames.
/// Up to this many bytes of pages are written by the calling thread alone.
const SMALL: u64 = 2 << 20;

fn workers(frames: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores.clamp(1, MAX_WORKERS).min(frames.max(1))
}

/// The process the pages go to, and how.
pub struct Target<'a> {
    pub pid: i32,
    pub mem: &'a ProcMem,
    /// Saved ranges written elsewhere first (sorted).
    pub redirects: &'a [Redirect],
    pub copy: Option<CopyTarget<'a>>,
}

/// The pieces to write: frames in the order they are first needed, each
/// with its pieces (at their redirected addresses), the zero ranges, and
/// the bytes in all.
struct Work {
    frames: Vec<FrameWork>,
    zeros: Vec<(u64, u64)>,
    total: u64,
}

/// Cut the writes where a redirect starts or ends and sort them by frame.
fn plan_work(
    pid: i32,
    frames_meta: &[ckpt_image::Frame],
    runs: &[MemoryRun],
    writes: &[PageWrite],
    redirects: &[Redirect],
) -> Result<Work> {
    let mut work = Work {
        frames: Vec::new(),
        zeros: Vec::new(),
        total: 0,
    };
    let mut slot: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    // Pieces cut where a redirect starts or ends.
    let mut cut: Vec<PageWrite> = Vec::with_capacity(writes.len());
    for w in writes {
        let mut a = w.addr;
        while a < w.addr + w.len {
            let (_, n) = redirect(redirects, a, w.addr + w.len - a);
            cut.push(PageWrite {
                addr: a,
                len: n,
                ..*w
            });
            a += n;
        }
    }
    for w in &cut {
        work.total += w.len;
        let to = redirect(redirects, w.addr, w.len).0;
        if w.zero {
            work.zeros.push((to, w.len));
            continue;
        }
        let run = &runs[w.run];
        let f = run.frame;
        let off = run.frame_offset as u64 + (w.addr - run.start);
        let size = frames_meta.get(f as usize).map(|m| m.size).unwrap_or(0);
        if off + w.len > u64::from(size) {
            return Err(Error::Stub {
                pid,
                what: format!(
                    "the image is inconsistent: pages at {:#x} lie past the end of frame {f} ({size} bytes)",
                    w.addr
                ),
            });
        }
        let i = *slot.entry(f).or_insert_with(|| {
            work.frames.push(FrameWork {
                frame: f,
                pieces: Vec::new(),
            });
            work.frames.len() - 1
        });
        work.frames[i].pieces.push(Piece {
            addr: to,
            len: w.len as usize,
            off: off as usize,
        });
    }
    Ok(work)
}

/// Write zeros over `zeros` (a zero run over a private file mapping).
fn write_zeros(to: &Target<'_>, zeros: &[(u64, u64)], done: &AtomicU64) -> Result<()> {
    for &(addr, len) in zeros {
        let mut a = addr;
        let end = addr + len;
        while a < end {
            let n = ((end - a) as usize).min(ZEROS.len());
            match &to.copy {
                Some(c) if c.covers(a) => uffd_copy(c.fd, a, &ZEROS[..n])?,
                _ => put(to.pid, to.mem, a, &ZEROS[..n])?,
            }
            a += n as u64;
        }
        done.fetch_add(len, Ordering::Relaxed);
    }
    Ok(())
}

/// Write every planned piece (to its redirected address). Returns the
/// number of bytes written. `progress` gets (bytes written, total).
pub fn write_pages<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    runs: &[MemoryRun],
    writes: &[PageWrite],
    to: &Target<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let (pid, mem, copy) = (to.pid, to.mem, to.copy.as_ref());
    let work = plan_work(pid, &reader.image().frames, runs, writes, to.redirects)?;
    let total = work.total;
    progress(0, total);
    let done = AtomicU64::new(0);
    write_zeros(to, &work.zeros, &done)?;

    if total <= SMALL {
        // A few pages (a small process of a tree, whose frames hold the
        // pages of others too): here, through the reader's frame cache, so
        // that a frame is decoded once for all the processes it serves.
        for fw in &work.frames {
            let data = reader
                .cached_frame(fw.frame)
                .ctx(|| format!("reading page frame {} of the image", fw.frame))?;
            put_pieces(pid, mem, copy, &data, &fw.pieces)?;
            let n: usize = fw.pieces.iter().map(|p| p.len).sum();
            done.fetch_add(n as u64, Ordering::Relaxed);
        }
        let written = done.load(Ordering::Relaxed);
        progress(written, total);
        return Ok(written);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let order: Vec<u32> = work.frames.iter().map(|w| w.frame).collect();
    let batches = reader.frame_batches(&order);
    let run_worker = |after_frame: &mut dyn FnMut()| {
        let mut frames = reader.frame_batch_reader();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(b) = batches.get(i) else {
                return;
            };
            frames.load(b);
            for fw in &work.frames[b.items()] {
                let r = frames
                    .frame(fw.frame)
                    .ctx(|| format!("reading page frame {} of the image", fw.frame))
                    .and_then(|data| put_pieces(pid, mem, copy, data, &fw.pieces));
                if let Err(e) = r {
                    stop.store(true, Ordering::Relaxed);
                    let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert(e);
                    return;
                }
                let n: usize = fw.pieces.iter().map(|p| p.len).sum();
                done.fetch_add(n as u64, Ordering::Relaxed);
                after_frame();
            }
        }
    };
    let n = workers(batches.len());
    tracing::debug!(
        frames = work.frames.len(),
        batches = batches.len(),
        workers = n,
        bytes = total,
        "writing pages"
    );
    std::thread::scope(|s| {
        for _ in 1..n {
            s.spawn(|| run_worker(&mut || {}));
        }
        run_worker(&mut || progress(done.load(Ordering::Relaxed), total));
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let written = done.load(Ordering::Relaxed);
    progress(written, total);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_only_inside_their_range() {
        let r = [
            Redirect {
                start: 0x1000,
                end: 0x3000,
                to: 0x10_0000,
            },
            Redirect {
                start: 0x5000,
                end: 0x6000,
                to: 0x20_0000,
            },
        ];
        assert_eq!(redirect(&r, 0x0, 0x800), (0x0, 0x800));
        assert_eq!(redirect(&r, 0x0, 0x8000), (0x0, 0x1000));
        assert_eq!(redirect(&r, 0x1000, 0x8000), (0x10_0000, 0x2000));
        assert_eq!(redirect(&r, 0x2fff, 1), (0x10_1fff, 1));
        assert_eq!(redirect(&r, 0x3000, 0x8000), (0x3000, 0x2000));
        assert_eq!(redirect(&r, 0x5800, 0x8000), (0x20_0800, 0x800));
        assert_eq!(redirect(&r, 0x6000, 0x8000), (0x6000, 0x8000));
        assert_eq!(redirect(&[], 0x6000, 5), (0x6000, 5));
    }
}
