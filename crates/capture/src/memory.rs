//! Page contents: which pages to save (pagemap), and reading them fast
//! (process_vm_readv in big batches, /proc/PID/mem where that fails).

use crate::error::{Error, Result, SysCtx};
use crate::procfs;
use crate::vmas::{MapEntry, Policy};
use crate::PageSink;
use ckpt_sys::remote::{read_vm, ProcMem, RemoteRange};
use ckpt_sys::Pid;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Pagemap entries read at once (8 bytes each).
const PAGEMAP_CHUNK: usize = 64 * 1024;
/// Bytes read from the target per process_vm_readv batch.
const BATCH: usize = 16 << 20;

/// A range of pages to save. `may_skip`: pages that cannot be read are left
/// out instead of failing (beyond the end of a shared object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: u64,
    pub end: u64,
    pub may_skip: bool,
    /// Index of the vma, for error messages.
    pub vma: usize,
}

/// Which pages to save, in increasing address order.
pub(crate) fn plan(pid: Pid, areas: &[(MapEntry, Policy)], page: u64) -> Result<Vec<Range>> {
    let path = format!("/proc/{pid}/pagemap");
    let mut pagemap: Option<File> = None;
    let mut out: Vec<Range> = Vec::new();
    let mut ents = vec![0u8; PAGEMAP_CHUNK * 8];
    for (idx, (e, pol)) in areas.iter().enumerate() {
        let want: fn(u64) -> bool = match pol {
            Policy::Nothing => continue,
            Policy::Whole => {
                out.push(Range {
                    start: e.start,
                    end: e.end,
                    may_skip: true,
                    vma: idx,
                });
                continue;
            }
            Policy::Anon => |pm| pm & (PM_PRESENT | PM_SWAPPED) != 0,
            Policy::PrivateFile => {
                |pm| (pm & PM_PRESENT != 0 && pm & PM_FILE == 0) || pm & PM_SWAPPED != 0
            }
        };
        if e.rss_kb == 0 && e.swap_kb == 0 {
            continue; // nothing resident or swapped: nothing to save
        }
        let pm = match &pagemap {
            Some(f) => f,
            None => {
                pagemap.insert(File::open(&path).map_err(|err| procfs::io_err(pid, &path, err))?)
            }
        };
        let npages = (e.end - e.start) / page;
        let mut i = 0u64;
        let mut run: Option<u64> = None; // start address of the current run
        while i < npages {
            let n = (npages - i).min(PAGEMAP_CHUNK as u64) as usize;
            let first = e.start / page + i;
            let buf = &mut ents[..n * 8];
            pm.read_exact_at(buf, first * 8)
                .map_err(|err| procfs::io_err(pid, &path, err))?;
            for k in 0..n {
                let v = u64::from_ne_bytes(buf[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
                let addr = e.start + (i + k as u64) * page;
                match (want(v), run) {
                    (true, None) => run = Some(addr),
                    (false, Some(s)) => {
                        out.push(Range {
                            start: s,
                            end: addr,
                            may_skip: false,
                            vma: idx,
                        });
                        run = None;
                    }
                    _ => {}
                }
            }
            i += n as u64;
        }
        if let Some(s) = run {
            out.push(Range {
                start: s,
                end: e.end,
                may_skip: false,
                vma: idx,
            });
        }
    }
    Ok(out)
}

/// Read every planned page and hand contiguous runs to the sink, in order.
/// Returns the number of bytes saved.
pub(crate) fn save(
    pid: Pid,
    areas: &[(MapEntry, Policy)],
    ranges: &[Range],
    page: u64,
    sink: &mut dyn PageSink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    progress(0, total);
    if total == 0 {
        return Ok(0);
    }
    let mem = ProcMem::open(pid).ctx(pid, || "opening its memory".into())?;
    let mut buf = vec![0u8; BATCH.min(total as usize)];
    let mut done = 0u64;
    let mut saved = 0u64;
    // Split the ranges into batches of at most BATCH bytes.
    let mut batch: Vec<Range> = Vec::new();
    let mut batch_len = 0usize;
    let mut flush =
        |batch: &mut Vec<Range>, batch_len: &mut usize, buf: &mut Vec<u8>| -> Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            saved += read_batch(pid, areas, &mem, batch, &mut buf[..*batch_len], page, sink)?;
            done += *batch_len as u64;
            progress(done, total);
            batch.clear();
            *batch_len = 0;
            Ok(())
        };
    for r in ranges {
        let mut a = r.start;
        while a < r.end {
            let room = BATCH - batch_len;
            let n = ((r.end - a) as usize).min(room);
            batch.push(Range {
                start: a,
                end: a + n as u64,
                ..*r
            });
            batch_len += n;
            a += n as u64;
            if batch_len == BATCH {
                flush(&mut batch, &mut batch_len, &mut buf)?;
            }
        }
    }
    flush(&mut batch, &mut batch_len, &mut buf)?;
    Ok(saved)
}

/// Read one batch into `buf` and emit it. Returns bytes emitted.
fn read_batch(
    pid: Pid,
    areas: &[(MapEntry, Policy)],
    mem: &ProcMem,
    batch: &[Range],
    buf: &mut [u8],
    page: u64,
    sink: &mut dyn PageSink,
) -> Result<u64> {
    let remote: Vec<RemoteRange> = batch
        .iter()
        .map(|r| RemoteRange {
            addr: r.start,
            len: (r.end - r.start) as usize,
        })
        .collect();
    // A failure of the very first page makes the whole call fail: treat as 0 read.
    let got = read_vm(pid, buf, &remote).unwrap_or(0);
    // Pieces that are valid in `buf`: (addr, offset in buf, len).
    let mut pieces: Vec<(u64, usize, usize)> = Vec::with_capacity(batch.len());
    let mut off = 0usize;
    for r in batch {
        let len = (r.end - r.start) as usize;
        let ok = got.saturating_sub(off).min(len) / page as usize * page as usize;
        if ok > 0 {
            pieces.push((r.start, off, ok));
        }
        if ok < len {
            // Through /proc/PID/mem (ignores protections), page by page where
            // a bigger read fails.
            let rest_addr = r.start + ok as u64;
            let rest = &mut buf[off + ok..off + len];
            if mem.read(rest_addr, rest).is_ok() {
                pieces.push((rest_addr, off + ok, len - ok));
            } else {
                let mut p = 0usize;
                while p < rest.len() {
                    let chunk = &mut rest[p..p + page as usize];
                    let addr = rest_addr + p as u64;
                    match mem.read(addr, chunk) {
                        Ok(()) => pieces.push((addr, off + ok + p, page as usize)),
                        Err(e) if r.may_skip => {
                            let _ = e;
                        }
                        Err(e) => {
                            let (me, _) = &areas[r.vma];
                            return Err(Error::Vma {
                                pid,
                                start: me.start,
                                end: me.end,
                                name: String::from_utf8_lossy(&me.name).into_owned(),
                                what: format!("cannot read the page at {addr:#x}: {e}"),
                            });
                        }
                    }
                    p += page as usize;
                }
            }
        }
        off += len;
    }
    // Merge adjacent pieces (contiguous in memory and in buf) and emit.
    let mut emitted = 0u64;
    let mut i = 0;
    while i < pieces.len() {
        let (addr, boff, mut len) = pieces[i];
        let mut j = i + 1;
        while j < pieces.len() && pieces[j].0 == addr + len as u64 && pieces[j].1 == boff + len {
            len += pieces[j].2;
            j += 1;
        }
        sink.add_pages(pid, addr, &buf[boff..boff + len])?;
        emitted += len as u64;
        i = j;
    }
    Ok(emitted)
}
