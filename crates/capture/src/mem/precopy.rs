//! Pre-copy: most pages copied while the process runs, the freeze copying
//! only what was written since, with the dirty tracking of tracking.rs.
//! It makes two kinds of dumps:
//!
//! - **incremental** (`--parent`, tracking since that parent's instant):
//!   the pages not written since are `parent` runs (nothing stored); the
//!   written ones are copied, in rounds while the process runs, then the
//!   last ones in the freeze;
//! - **full with tracking** (`--track`, or a process tracked already):
//!   every page copied while the process runs, then, in rounds, the pages
//!   written since the last round, the last ones in the freeze.
//!
//! Each scan reports the written pages and protects them again in the same
//! walk, so nothing written between two rounds is missed; a page copied
//! in an earlier round is replaced by its later copy (the older bytes stay
//! in their frame, unreferenced). At the freeze the areas are read again:
//! pages copied for addresses that are no longer mapped are dropped, and an
//! area that is not tracked (new since, moved, or of a kind that is not
//! tracked: shared memory, private file mappings) is saved whole there.
//! The tracking then goes on from the freeze (it is the next dump's
//! parent), its state pending until the image is committed.

use super::pages::{self, Range};
use super::present;
use super::tracking::{Since, Tracking};
use super::vmas::{self, MapEntry, Policy};
use crate::error::{Result, SysCtx};
use crate::{procfs, worker, PageSink};
use ckpt_image::{MemoryRun, Vma};
use ckpt_sys::mm::{page_is, PageRegion, Pagemap};
use ckpt_sys::Pid;
use std::time::Instant;

/// Rounds while the process runs, at most; the last round's pages are
/// copied in the freeze when they are this few or stop shrinking.
const MAX_ROUNDS: usize = 4;
const FEW_PAGES: u64 = 1024;

/// A pre-copy in progress (the process running, its pages being tracked).
pub(crate) struct PreCopy {
    pid: Pid,
    page: u64,
    pub tracking: Tracking,
    /// smaps read before the copy (the VmFlags of the areas at the freeze).
    before: Vec<MapEntry>,
    /// Bytes copied so far.
    pub bytes: u64,
    pub rounds: usize,
    /// Pages of the last round (copied again in the freeze if written).
    pub last_round: u64,
}

/// Pages to read (present or swapped) and to save as zeros (discarded).
fn written_ranges(regs: &[PageRegion], idx: usize) -> Vec<Range> {
    regs.iter()
        .map(|r| Range {
            start: r.start,
            end: r.end,
            may_skip: false,
            zero: r.categories & (page_is::PRESENT | page_is::SWAPPED) == 0
                || r.categories & page_is::PFNZERO != 0,
            parent: 0,
            vma: idx,
        })
        .collect()
}

/// Copies go through `replace_pages`: a later copy of a page wins.
struct Replacing<'a>(&'a mut dyn PageSink);

impl PageSink for Replacing<'_> {
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        self.0.replace_pages(pid, addr, data)
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<ckpt_image::Blob> {
        self.0.add_blob(data)
    }
}

fn pages_of(ranges: &[Range], page: u64) -> u64 {
    ranges.iter().map(|r| (r.end - r.start) / page).sum()
}

impl PreCopy {
    /// Start a pre-copy of `pid` with `tracking` (armed or found): with
    /// `parent` (the parent's runs of this process) an incremental one,
    /// else a full one. The process runs; pages go to `sink`.
    pub fn start(
        pid: Pid,
        page: u64,
        tracking: Tracking,
        parent: Option<&[MemoryRun]>,
        sink: &mut dyn PageSink,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PreCopy> {
        let t = Instant::now();
        let before = vmas::parse_smaps(pid, &procfs::read(pid, &format!("/proc/{pid}/smaps"))?)?;
        let mut pc = PreCopy {
            pid,
            page,
            tracking,
            before,
            bytes: 0,
            rounds: 0,
            last_round: 0,
        };
        // From here on the tracking is re-armed: no earlier image is its
        // origin any more until this one is committed.
        pc.tracking.set_state(None)?;
        let pm = Pagemap::open(pid).ctx(pid, || "opening its pagemap".into())?;
        let areas: Vec<(MapEntry, Policy)> = pc
            .before
            .iter()
            .filter_map(|e| vmas::classify(pid, e).ok().map(|(_, p)| (e.clone(), p)))
            .collect();
        let mut first: Vec<Range> = Vec::new();
        for (idx, (e, pol)) in areas.iter().enumerate() {
            if *pol != Policy::Anon || !super::tracking::worth_tracking(e) {
                continue;
            }
            let w = match pc.tracking.written(&pm, e.start, e.end, true)? {
                Some(w) => w,
                None if parent.is_none() && pc.tracking.track(e.start, e.end) => Vec::new(),
                None => continue, // not tracked: saved whole in the freeze
            };
            match parent {
                Some(runs) => {
                    emit_parent_runs(pid, page, runs, e.start, e.end, sink)?;
                    first.extend(written_ranges(&w, idx));
                }
                None => {
                    for (a, b) in present::saved_regions(&pm, pid, e.start, e.end, *pol)? {
                        first.push(Range {
                            start: a,
                            end: b,
                            may_skip: false,
                            zero: false,
                            parent: 0,
                            vma: idx,
                        });
                    }
                }
            }
        }
        worker::check(pid)?;
        pc.copy(&areas, &first, sink, progress)?;
        tracing::debug!(pages = pages_of(&first, page), elapsed = ?t.elapsed(), "pre-copy: first pass");
        pc.rounds(&areas, &pm, sink, progress)?;
        tracing::info!(bytes = pc.bytes, rounds = pc.rounds, elapsed = ?t.elapsed(), "pre-copy");
        Ok(pc)
    }

    fn copy(
        &mut self,
        areas: &[(MapEntry, Policy)],
        ranges: &[Range],
        sink: &mut dyn PageSink,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let mut rep = Replacing(sink);
        let base = self.bytes;
        // Guard pages look swapped out (PTE markers): never read.
        let guards = present::guard_regions(self.pid)?;
        let ranges = &pages::cut_guards(ranges.to_vec(), &guards);
        let n = pages::save(self.pid, areas, ranges, self.page, &mut rep, &mut |d, t| {
            progress(base + d, base + t)
        })?;
        self.bytes += n;
        Ok(())
    }

    /// Rounds while the process runs: the pages written since the last.
    fn rounds(
        &mut self,
        areas: &[(MapEntry, Policy)],
        pm: &Pagemap,
        sink: &mut dyn PageSink,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let mut prev = u64::MAX;
        while self.rounds < MAX_ROUNDS {
            let mut ranges = Vec::new();
            for (idx, (e, pol)) in areas.iter().enumerate() {
                if *pol != Policy::Anon {
                    continue;
                }
                if let Some(w) = self.tracking.written(pm, e.start, e.end, true)? {
                    ranges.extend(written_ranges(&w, idx));
                }
            }
            let n = pages_of(&ranges, self.page);
            self.rounds += 1;
            self.last_round = n;
            worker::check(self.pid)?;
            self.copy(areas, &ranges, sink, progress)?;
            tracing::debug!(round = self.rounds, pages = n, "pre-copy round");
            if n <= FEW_PAGES || n * 2 > prev {
                break;
            }
            prev = n;
        }
        Ok(())
    }

    /// In the freeze: the areas now, the pages written since the last
    /// round, untracked areas whole, pages of addresses no longer mapped
    /// dropped. Returns the areas with their policies and the bytes
    /// copied in the freeze.
    pub fn finish_frozen(
        &mut self,
        sink: &mut dyn PageSink,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Vec<Vma>, u64)> {
        let pid = self.pid;
        let entries = present::areas_now(pid, &self.before)?;
        let mut out = Vec::with_capacity(entries.len());
        let mut areas = Vec::with_capacity(entries.len());
        for e in entries {
            let (vma, policy) = vmas::classify(pid, &e)?;
            out.push(vma);
            areas.push((e, policy));
        }
        let pm = Pagemap::open(pid).ctx(pid, || "opening its pagemap".into())?;
        let mut tracked = vec![false; areas.len()];
        let mut ranges: Vec<Range> = Vec::new();
        for (idx, (e, pol)) in areas.iter().enumerate() {
            if *pol != Policy::Anon {
                continue;
            }
            if let Some(w) = self.tracking.written(&pm, e.start, e.end, true)? {
                tracked[idx] = true;
                ranges.extend(written_ranges(&w, idx));
            }
        }
        // Whatever was copied outside the areas of now goes; an area that
        // is not tracked is saved whole (replacing any copy of it).
        // (Nothing is ever copied at or above the top of the user address
        // space of 4-level paging: only [vsyscall] is there.)
        let top = 1u64 << 47;
        let mut at = 0u64;
        for (idx, (e, _)) in areas.iter().enumerate() {
            if e.start > at && at < top {
                sink.drop_pages(pid, at, e.start.min(top) - at)?;
            }
            if !tracked[idx] && e.end <= top {
                sink.drop_pages(pid, e.start, e.end - e.start)?;
            }
            at = at.max(e.end);
        }
        if at < top {
            sink.drop_pages(pid, at, top - at)?;
        }
        ranges.extend(present::plan(pid, &areas, self.page, &|i| tracked[i])?);
        ranges.sort_by_key(|r| r.start);
        let before = self.bytes;
        self.copy(&areas, &ranges, sink, progress)?;
        // Areas saved whole now are tracked from now on when worth it.
        for (idx, (e, pol)) in areas.iter().enumerate() {
            if !tracked[idx] && *pol == Policy::Anon && super::tracking::worth_tracking(e) {
                self.tracking.track(e.start, e.end);
            }
        }
        Ok((out, self.bytes - before))
    }
}

/// The parent's runs of `[start, end)` as `parent` runs of this image.
fn emit_parent_runs(
    pid: Pid,
    page: u64,
    runs: &[MemoryRun],
    start: u64,
    end: u64,
    sink: &mut dyn PageSink,
) -> Result<()> {
    let first = runs.partition_point(|r| r.start + u64::from(r.pages) * page <= start);
    // Guard runs are saved anew (mod.rs), not taken from the parent.
    let runs = runs[first..].iter().take_while(|r| r.start < end);
    for r in runs.filter(|r| r.kind != ckpt_image::RunKind::Guard) {
        let (a, b) = (
            r.start.max(start),
            (r.start + u64::from(r.pages) * page).min(end),
        );
        if a < b {
            sink.add_parent_run(pid, a, (b - a) / page)?;
        }
    }
    Ok(())
}

/// Whether the tracking `since` makes a dump against the parent with
/// imageId `parent_id` incremental, or why not.
pub(crate) fn usable_since(
    since: Option<&Since>,
    parent_id: &[u8],
) -> std::result::Result<(), String> {
    match since {
        Some(Since::Image(id)) if id.as_slice() == parent_id => Ok(()),
        Some(Since::Image(id)) => Err(format!(
            "the process's pages are tracked since dump {}, not since the parent {}",
            ckpt_image::chain::id_hex(id),
            ckpt_image::chain::id_hex(parent_id)
        )),
        Some(Since::Pending) => Err(
            "a dump of this process that re-armed its dirty tracking did not finish".into(),
        ),
        None => Err(
            "the process's pages are not tracked (dump the parent with --track, or --parent, and --leave-running)"
                .into(),
        ),
    }
}
