//! Page contents: which pages to save (pagemap), and reading them fast
//! (process_vm_readv in big batches, /proc/PID/mem where that fails).

use super::shmem::shmem_ranges;
use super::vmas::{MapEntry, Policy};
use crate::error::{Error, IoCtx, Result, SysCtx};
use crate::procfs;
use crate::PageSink;
use ckpt_sys::mm::{read_vm, ProcMem, RemoteRange};
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Pagemap entries read at once (8 bytes each).
const PAGEMAP_CHUNK: usize = 64 * 1024;
/// Bytes read from the target per batch (a process_vm_readv series): small
/// enough to stay in the L2 cache, which makes the kernel's copy much
/// cheaper (measured on 1 GiB: 0.55-0.65 s of system time with 256 KiB
/// batches, 0.86-0.90 s with 2 MiB, 0.93 s with 16 MiB) and lets the sink
/// find the batch still cached.
const BATCH: usize = 256 << 10;
/// Room left in front of each batch read (see `PageSink::add_page_buffer`).
const HEAD: usize = ckpt_image::PAGE_BUFFER_HEAD;
/// Batch buffers: one being filled, the others read ahead or being consumed.
const BUFFERS: usize = 8;
/// Up to this many bytes, memory is read without a reader thread.
const INLINE_MAX: usize = 4 << 20;

/// A range of pages to save. `may_skip`: pages that cannot be read are left
/// out instead of failing (beyond the end of a shared object). `zero`: known
/// zero (a hole of a shared memory object): saved as zeros, not read.
/// `parent`: not read either, the very pages of that process (the parent,
/// saved before) at the same addresses (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: u64,
    pub end: u64,
    pub may_skip: bool,
    pub zero: bool,
    pub parent: Pid,
    /// Index of the vma, for error messages.
    pub vma: usize,
}

impl Range {
    /// All of area `e` (vma `idx`), read as it is.
    pub(crate) fn whole(e: &MapEntry, idx: usize, may_skip: bool) -> Range {
        Range {
            start: e.start,
            end: e.end,
            may_skip,
            zero: false,
            parent: 0,
            vma: idx,
        }
    }
}

/// The parent of the process being saved, saved before it: its pages that
/// the child still shares copy-on-write are not saved again.
pub(crate) struct Cow<'a> {
    pub parent: Pid,
    pub areas: &'a [(MapEntry, Policy)],
}

const PFN_MASK: u64 = (1 << 55) - 1;

/// The page frame of a present page (0: not present, or frames hidden from
/// us: they are shown only with CAP_SYS_ADMIN).
fn pfn(pm: u64) -> u64 {
    if pm & PM_PRESENT != 0 {
        pm & PFN_MASK
    } else {
        0
    }
}

/// Whether [start, end) of shared memory object `id` is saved already;
/// records it as saved from now on.
fn shm_seen(saved: &mut HashMap<u64, Vec<(u64, u64)>>, id: u64, start: u64, end: u64) -> bool {
    let v = saved.entry(id).or_default();
    let mut covered = start;
    let mut sorted = v.clone();
    sorted.sort_unstable();
    for &(a, b) in &sorted {
        if a <= covered && b > covered {
            covered = b;
        }
    }
    v.push((start, end));
    covered >= end
}

/// Which pages to save, in increasing address order. `cow`: the parent's
/// areas, for pages still shared with it; `shm_saved`: shared memory the
/// tree saved already (not saved again).
pub(crate) fn plan(
    pid: Pid,
    areas: &[(MapEntry, Policy)],
    page: u64,
    cow: Option<&Cow<'_>>,
    shm_saved: &mut HashMap<u64, Vec<(u64, u64)>>,
) -> Result<Vec<Range>> {
    let mut pm = Pagemaps {
        pid,
        own: None,
        parent: None,
        ents: Vec::new(),
        parent_ents: Vec::new(),
    };
    let mut out: Vec<Range> = Vec::new();
    for (idx, (e, pol)) in areas.iter().enumerate() {
        let whole = Range::whole(e, idx, false);
        let want: fn(u64) -> bool = match pol {
            Policy::Nothing => continue,
            Policy::Whole => {
                out.push(Range::whole(e, idx, true));
                continue;
            }
            Policy::Shmem => {
                let (start, end) = (e.offset, e.offset + (e.end - e.start));
                if e.inode != 0 && shm_seen(shm_saved, e.inode, start, end) {
                    continue; // saved by a process before this one
                }
                shmem_ranges(pid, idx, e, page, &mut out);
                continue;
            }
            Policy::HugeShared { page_size } => {
                let (start, end) = (e.offset, e.offset + (e.end - e.start));
                if e.inode != 0 && shm_seen(shm_saved, e.inode, start, end) {
                    continue; // saved by a process before this one
                }
                super::hugetlb::shared_ranges(pid, idx, e, *page_size, &mut out);
                continue;
            }
            Policy::Anon | Policy::HugePrivate { file: false } => {
                |pm| pm & (PM_PRESENT | PM_SWAPPED) != 0
            }
            Policy::PrivateFile | Policy::HugePrivate { file: true } => {
                |pm| (pm & PM_PRESENT != 0 && pm & PM_FILE == 0) || pm & PM_SWAPPED != 0
            }
        };
        let huge = matches!(pol, Policy::HugePrivate { .. });
        if e.rss_kb == 0 && e.swap_kb == 0 && !huge {
            continue; // nothing resident or swapped: nothing to save
        }
        if matches!(pol, Policy::PrivateFile) && e.anon_kb == Some(0) && e.swap_kb == 0 && !huge {
            // A file mapping never written to: all its pages are the
            // file's, nothing to save (and no pagemap to walk).
            continue;
        }
        // The parent's private areas of the same kind over this one (its
        // anonymous memory, or the written pages of its private file
        // mappings): pages still shared with it are found by their page
        // frames.
        let shared_with: Vec<(u64, u64)> = match (pol, cow) {
            (Policy::Anon | Policy::PrivateFile, Some(c)) => c
                .areas
                .iter()
                .filter(|(pe, pp)| pp == pol && pe.start < e.end && e.start < pe.end)
                .map(|(pe, _)| (pe.start.max(e.start), pe.end.min(e.end)))
                .collect(),
            _ => Vec::new(),
        };
        if matches!(pol, Policy::Anon)
            && shared_with.is_empty()
            && (e.rss_kb + e.swap_kb) * 1024 >= e.end - e.start
        {
            // Every page resident or swapped: all of it, without reading
            // its pagemap (which walks every page table entry).
            out.push(whole);
            continue;
        }
        let parent = cow.map_or(0, |c| c.parent);
        match sparse_regions(pid, e, *pol) {
            // Only the populated parts' pagemap entries.
            Some(regions) => {
                for (start, end) in regions {
                    let sub = MapEntry {
                        start,
                        end,
                        ..e.clone()
                    };
                    pm.walk(&sub, idx, page, want, &shared_with, parent, &mut out)?;
                }
            }
            None => pm.walk(e, idx, page, want, &shared_with, parent, &mut out)?,
        }
    }
    Ok(out)
}

/// Areas at least this large whose resident and swapped pages are at most
/// an eighth of them are looked at through PAGEMAP_SCAN first.
const SPARSE_MIN: u64 = 64 << 20;

/// The populated parts of a large, sparsely populated area (a heap
/// reserved with MAP_NORESERVE, a sanitizer's shadow): PAGEMAP_SCAN skips
/// the holes, where reading /proc/PID/pagemap gives 8 bytes for every page
/// (16 GiB of entries for a reservation of 8 TiB). None: read the whole
/// area's pagemap (small or dense areas, or a kernel without PAGEMAP_SCAN).
fn sparse_regions(pid: Pid, e: &MapEntry, pol: Policy) -> Option<Vec<(u64, u64)>> {
    let len = e.end - e.start;
    let used = (e.rss_kb + e.swap_kb).saturating_mul(1024);
    if !matches!(pol, Policy::Anon | Policy::PrivateFile)
        || len < SPARSE_MIN
        || used.saturating_mul(8) > len
    {
        return None;
    }
    let pm = ckpt_sys::mm::Pagemap::open(pid).ok()?;
    super::present::saved_regions(&pm, pid, e.start, e.end, pol).ok()
}

/// The pagemaps read by [`plan`]: the process's, and its parent's for pages
/// still shared with it.
struct Pagemaps {
    pid: Pid,
    own: Option<File>,
    parent: Option<File>,
    ents: Vec<u8>,
    parent_ents: Vec<u64>,
}

impl Pagemaps {
    fn open(pid: Pid, f: &mut Option<File>) -> Result<&File> {
        let path = format!("/proc/{pid}/pagemap");
        match f {
            Some(f) => Ok(f),
            None => Ok(f.insert(File::open(&path).map_err(|err| procfs::io_err(pid, &path, err))?)),
        }
    }

    /// The pages of area `e` that `want` says to save, as ranges into
    /// `out`; those at the same page frame as in the parent (within
    /// `shared_with`) as ranges from the parent.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        e: &MapEntry,
        idx: usize,
        page: u64,
        want: fn(u64) -> bool,
        shared_with: &[(u64, u64)],
        parent: Pid,
        out: &mut Vec<Range>,
    ) -> Result<()> {
        let pid = self.pid;
        let path = format!("/proc/{pid}/pagemap");
        let npages = (e.end - e.start) / page;
        // Only as much as the largest chunk read: zeroing the whole
        // chunk size for each small process cost more than its reads.
        let need = npages.min(PAGEMAP_CHUNK as u64) as usize * 8;
        if self.ents.len() < need {
            self.ents.resize(need, 0);
        }
        let mut i = 0u64;
        // (start address, from the parent) of the current run.
        let mut run: Option<(u64, bool)> = None;
        let mut close = |run: &mut Option<(u64, bool)>, end: u64| {
            if let Some((s, from_parent)) = run.take() {
                out.push(Range {
                    start: s,
                    end,
                    may_skip: false,
                    zero: false,
                    parent: if from_parent { parent } else { 0 },
                    vma: idx,
                });
            }
        };
        while i < npages {
            let n = (npages - i).min(PAGEMAP_CHUNK as u64) as usize;
            let first = e.start / page + i;
            let chunk_start = e.start + i * page;
            let buf = &mut self.ents[..n * 8];
            Self::open(pid, &mut self.own)?
                .read_exact_at(buf, first * 8)
                .map_err(|err| procfs::io_err(pid, &path, err))?;
            self.parent_frames(parent, chunk_start, n, page, shared_with)?;
            for k in 0..n {
                let v =
                    u64::from_ne_bytes(self.ents[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
                let addr = chunk_start + k as u64 * page;
                let class = if !want(v) {
                    None
                } else {
                    let f = pfn(v);
                    Some(f != 0 && self.parent_ents.get(k).is_some_and(|&p| pfn(p) == f))
                };
                match (class, run) {
                    (None, Some(_)) => close(&mut run, addr),
                    (Some(c), Some((_, r))) if c != r => {
                        close(&mut run, addr);
                        run = Some((addr, c));
                    }
                    (Some(c), None) => run = Some((addr, c)),
                    _ => {}
                }
            }
            i += n as u64;
        }
        close(&mut run, e.end);
        Ok(())
    }

    /// The parent's pagemap entries for the `n` pages from `start`, where
    /// they lie in `shared_with` (else 0).
    fn parent_frames(
        &mut self,
        parent: Pid,
        start: u64,
        n: usize,
        page: u64,
        shared_with: &[(u64, u64)],
    ) -> Result<()> {
        self.parent_ents.clear();
        self.parent_ents.resize(n, 0);
        let end = start + n as u64 * page;
        let path = format!("/proc/{parent}/pagemap");
        let mut raw = Vec::new();
        for &(a, b) in shared_with {
            let (a, b) = (a.max(start), b.min(end));
            if a >= b {
                continue;
            }
            let count = ((b - a) / page) as usize;
            raw.resize(count * 8, 0);
            Self::open(parent, &mut self.parent)?
                .read_exact_at(&mut raw, a / page * 8)
                .map_err(|err| procfs::io_err(parent, &path, err))?;
            let at = ((a - start) / page) as usize;
            for (k, c) in raw.chunks_exact(8).enumerate() {
                self.parent_ents[at + k] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            }
        }
        Ok(())
    }
}

/// `ranges` (sorted) without the guard regions `guards` (sorted, not
/// overlapping): guard pages have no contents, and reading them faults.
pub(crate) fn cut_guards(ranges: Vec<Range>, guards: &[(u64, u64)]) -> Vec<Range> {
    if guards.is_empty() {
        return ranges;
    }
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let mut start = r.start;
        let first = guards.partition_point(|g| g.1 <= r.start);
        for &(gs, ge) in &guards[first..] {
            if gs >= r.end {
                break;
            }
            if start < gs {
                out.push(Range {
                    start,
                    end: gs,
                    ..r
                });
            }
            start = start.max(ge);
        }
        if start < r.end {
            out.push(Range { start, ..r });
        }
    }
    out
}

/// Read every planned page and hand contiguous runs to the sink, in order.
/// Returns the number of bytes saved. A reader thread fills buffers ahead
/// while the sink consumes them.
pub(crate) fn save(
    pid: Pid,
    areas: &[(MapEntry, Policy)],
    ranges: &[Range],
    page: u64,
    sink: &mut dyn PageSink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let total: u64 = ranges
        .iter()
        .filter(|r| r.parent == 0)
        .map(|r| r.end - r.start)
        .sum();
    if total == 0 {
        // Nothing to read (at most pages shared with the parent).
        progress(0, 0);
        for r in ranges.iter().filter(|r| r.parent != 0) {
            sink.add_parent_pages(pid, r.start, r.end - r.start, r.parent)?;
        }
        return Ok(0);
    }
    progress(0, total);
    let mem = ProcMem::open(pid).ctx(pid, || "opening its memory".into())?;
    // Split the ranges into batches of at most BATCH bytes.
    let mut batches: Vec<(Vec<Range>, usize)> = vec![(Vec::new(), 0)];
    for r in ranges {
        if r.parent != 0 {
            // Read nothing: a marker in the batch, handed to the sink in
            // address order with the pages around it.
            batches.last_mut().expect("one batch").0.push(*r);
            continue;
        }
        let mut a = r.start;
        while a < r.end {
            let (batch, len) = batches.last_mut().expect("one batch");
            let n = ((r.end - a) as usize).min(BATCH - *len);
            batch.push(Range {
                start: a,
                end: a + n as u64,
                ..*r
            });
            *len += n;
            a += n as u64;
            if *len == BATCH {
                batches.push((Vec::new(), 0));
            }
        }
    }
    batches.retain(|(b, _)| !b.is_empty());
    // Each buffer keeps room in front (see PageSink::add_page_buffer).
    let buf_len = HEAD + BATCH.min(total as usize);
    let mut done = 0u64;
    let mut saved = 0u64;
    // Hand a filled buffer to the sink; a buffer to fill next.
    let mut emit = |buf: Vec<u8>, pieces: Vec<Piece>, len: usize| -> Result<Vec<u8>> {
        let (parents, pieces): (Vec<Piece>, Vec<Piece>) =
            pieces.into_iter().partition(|p| from_parent(p.1).is_some());
        for (addr, off, n) in parents {
            let parent = from_parent(off).expect("partitioned");
            sink.add_parent_pages(pid, addr, n as u64, parent)?;
        }
        saved += pieces.iter().map(|p| p.2 as u64).sum::<u64>();
        let mut buf = sink.add_page_buffer(pid, buf, &pieces)?;
        buf.resize(buf_len, 0);
        done += len as u64;
        progress(done, total);
        Ok(buf)
    };
    if total <= INLINE_MAX as u64 {
        // Little to read: no reader thread (starting one costs more).
        let mut buf = vec![0u8; buf_len];
        for (batch, len) in &batches {
            let pieces = fill(pid, areas, &mem, batch, &mut buf, *len, page)?;
            buf = emit(buf, pieces, *len)?;
        }
        return Ok(saved);
    }
    type Filled = Result<(Vec<u8>, Vec<Piece>, usize)>;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Filled>(BUFFERS);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..BUFFERS.min(batches.len()) {
        free_tx.send(vec![0u8; buf_len]).expect("receiver alive");
    }
    std::thread::scope(|s| {
        // Owned by this closure: dropped when it returns (also on an error),
        // before the scope joins the reader, which then stops.
        let full_rx = full_rx;
        let free_tx = free_tx;
        let batches = &batches;
        let mem = &mem;
        std::thread::Builder::new()
            .name("ckpt-read".into())
            .spawn_scoped(s, move || {
                for (batch, len) in batches {
                    let Ok(mut buf) = free_rx.recv() else { return };
                    let r =
                        fill(pid, areas, mem, batch, &mut buf, *len, page).map(|p| (buf, p, *len));
                    let failed = r.is_err();
                    if full_tx.send(r).is_err() || failed {
                        return;
                    }
                }
            })
            .ctx(pid, || "starting the memory reader thread".into())?;
        for _ in 0..batches.len() {
            let (buf, pieces, len) = full_rx.recv().expect("reader sends every batch")?;
            let _ = free_tx.send(emit(buf, pieces, len)?);
        }
        Ok::<(), Error>(())
        // On an error, dropping full_rx/free_tx makes the reader stop.
    })?;
    Ok(saved)
}

/// A contiguous piece of a filled buffer: (address, offset in buffer, bytes);
/// or pages of the parent: (address, PARENT_PIECE + its pid, bytes).
type Piece = (u64, usize, usize);

/// Offsets of pieces that are pages of the parent (see [`Piece`]).
const PARENT_PIECE: usize = 1 << 62;

fn from_parent(off: usize) -> Option<Pid> {
    (off >= PARENT_PIECE).then(|| (off - PARENT_PIECE) as Pid)
}

/// Read one batch (`len` bytes) into `buf` after its first HEAD bytes;
/// returns the readable pieces (offsets in `buf`), merged where
/// contiguous, in address order.
fn fill(
    pid: Pid,
    areas: &[(MapEntry, Policy)],
    mem: &ProcMem,
    batch: &[Range],
    buf: &mut [u8],
    len: usize,
    page: u64,
) -> Result<Vec<Piece>> {
    let page = page as usize;
    let buf = &mut buf[..HEAD + len];
    // Pieces that are valid in `buf`: (addr, offset in buf, len).
    let mut pieces: Vec<Piece> = Vec::with_capacity(batch.len());
    let mut off = HEAD;
    let mut i = 0usize;
    while i < batch.len() {
        if batch[i].parent != 0 {
            let r = &batch[i];
            let len = (r.end - r.start) as usize;
            pieces.push((r.start, PARENT_PIECE + r.parent as usize, len));
            i += 1;
            continue;
        }
        if batch[i].zero {
            let len = (batch[i].end - batch[i].start) as usize;
            buf[off..off + len].fill(0);
            pieces.push((batch[i].start, off, len));
            off += len;
            i += 1;
            continue;
        }
        // A segment of ranges to read: one process_vm_readv series.
        let k = (i..batch.len())
            .find(|&k| batch[k].zero || batch[k].parent != 0)
            .unwrap_or(batch.len());
        let seg = &batch[i..k];
        let remote: Vec<RemoteRange> = seg
            .iter()
            .map(|r| RemoteRange {
                addr: r.start,
                len: (r.end - r.start) as usize,
            })
            .collect();
        let seg_len: usize = remote.iter().map(|r| r.len).sum();
        // A failure of the very first page makes the call fail: 0 bytes read.
        let got = read_vm(pid, &mut buf[off..off + seg_len], &remote).unwrap_or(0);
        let mut soff = 0usize;
        for r in seg {
            let len = (r.end - r.start) as usize;
            let ok = got.saturating_sub(soff).min(len) / page * page;
            let at = off + soff;
            if ok > 0 {
                pieces.push((r.start, at, ok));
            }
            if ok < len {
                // Through /proc/PID/mem (ignores protections), page by page
                // where a bigger read fails.
                let rest_addr = r.start + ok as u64;
                let rest = &mut buf[at + ok..at + len];
                if mem.read(rest_addr, rest).is_ok() {
                    pieces.push((rest_addr, at + ok, len - ok));
                } else {
                    for p in (0..rest.len()).step_by(page) {
                        let addr = rest_addr + p as u64;
                        match mem.read(addr, &mut rest[p..p + page]) {
                            Ok(()) => pieces.push((addr, at + ok + p, page)),
                            Err(_) if r.may_skip => {}
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
                    }
                }
            }
            soff += len;
        }
        off += seg_len;
        i = k;
    }
    // Merge adjacent pieces (contiguous in memory and in buf).
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match merged.last_mut() {
            Some(m)
                if m.0 + m.2 as u64 == p.0
                    && m.1 + m.2 == p.1
                    && from_parent(m.1).is_none()
                    && from_parent(p.1).is_none() =>
            {
                m.2 += p.2
            }
            _ => merged.push(p),
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::Blob;

    /// Keeps every add_pages call.
    #[derive(Default)]
    struct Collect {
        pages: Vec<(u64, Vec<u8>)>,
    }

    impl PageSink for Collect {
        fn add_pages(&mut self, _pid: i32, addr: u64, data: &[u8]) -> Result<()> {
            self.pages.push((addr, data.to_vec()));
            Ok(())
        }
        fn add_blob(&mut self, _data: &[u8]) -> Result<Blob> {
            unreachable!("no blobs here")
        }
    }

    #[test]
    fn guard_regions_are_cut_out_of_the_ranges() {
        let r = |start, end| Range {
            start,
            end,
            may_skip: false,
            zero: false,
            parent: 0,
            vma: 0,
        };
        let ranges = vec![r(0x1000, 0x5000), r(0x8000, 0x9000), r(0xa000, 0xc000)];
        let guards = [(0x2000, 0x3000), (0x4000, 0x9000), (0xb000, 0xc000)];
        let got: Vec<(u64, u64)> = cut_guards(ranges, &guards)
            .iter()
            .map(|x| (x.start, x.end))
            .collect();
        assert_eq!(
            got,
            vec![(0x1000, 0x2000), (0x3000, 0x4000), (0xa000, 0xb000)]
        );
    }

    /// save() over `bytes` of this process's own memory: data, a known-zero
    /// range (saved as zeros, not read), data.
    fn save_own_memory(bytes: usize) {
        let page = 4096usize;
        let mut v = vec![0u8; bytes + page];
        let off = (page - v.as_ptr() as usize % page) % page;
        let region = &mut v[off..off + bytes];
        for (i, p) in region.chunks_mut(page).enumerate() {
            if i % 3 != 0 {
                p.fill((i % 251) as u8 + 1);
                p[0] = i as u8;
            }
        }
        let region = &*region;
        let start = region.as_ptr() as u64;
        let end = start + bytes as u64;
        let entry = MapEntry {
            start,
            end,
            perms: *b"rw-p",
            ..Default::default()
        };
        let areas = vec![(entry, Policy::Anon)];
        let third = (bytes / 3 / page * page) as u64;
        let range = |a: u64, b: u64, zero: bool| Range {
            start: a,
            end: b,
            may_skip: false,
            zero,
            parent: 0,
            vma: 0,
        };
        let ranges = [
            range(start, start + third, false),
            range(start + third, start + 2 * third, true),
            range(start + 2 * third, end, false),
        ];
        let mut sink = Collect::default();
        let mut last = 0;
        let saved = save(
            std::process::id() as Pid,
            &areas,
            &ranges,
            page as u64,
            &mut sink,
            &mut |done, total| {
                assert!(done >= last && done <= total && total == bytes as u64);
                last = done;
            },
        )
        .unwrap();
        assert_eq!(saved, bytes as u64);
        assert_eq!(last, bytes as u64);
        let mut expect = region.to_vec();
        expect[third as usize..2 * third as usize].fill(0);
        let mut at = start;
        let mut got = Vec::with_capacity(bytes);
        for (a, d) in &sink.pages {
            assert_eq!(*a, at, "pieces in address order, contiguous");
            at += d.len() as u64;
            got.extend_from_slice(d);
        }
        assert!(got == expect, "saved bytes differ");
    }

    #[test]
    fn save_small_inline() {
        save_own_memory(1 << 20);
    }

    #[test]
    fn save_big_through_the_reader_thread() {
        const { assert!(12 << 20 > INLINE_MAX) };
        save_own_memory(12 << 20);
    }
}
