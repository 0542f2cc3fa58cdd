//! Memory: the areas of the process (vmas.rs: /proc/PID/smaps into the
//! model's `Vma`s) and the contents of the pages that must be saved
//! (pages.rs: pagemap, then fast reads; shmem.rs: shared memory objects,
//! holes left untouched); deleted files it maps, whole (deleted.rs).
//! Guard regions (MADV_GUARD_INSTALL, found with PAGEMAP_SCAN) are saved
//! as runs of kind `guard` and never read.

mod deleted;
mod pages;
mod shmem;
mod vmas;

use crate::error::Result;
use crate::{procfs, worker, PageSink};
use ckpt_image::Vma;
use ckpt_sys::Pid;
use std::collections::HashSet;
use std::time::Instant;

/// Every memory area of `pid`, with its saved pages written to `sink`
/// (`progress` is called with bytes saved so far and bytes to save), and
/// the contents of the deleted files it maps that no fd of it holds
/// (`held`: (dev, inode) of the deleted files its fds hold).
/// Returns the model's areas and the bytes of pages saved.
pub(crate) fn save(
    pid: Pid,
    page: u64,
    held: &HashSet<(u64, u64)>,
    sink: &mut dyn PageSink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<Vma>, u64)> {
    let t = Instant::now();
    let smaps = procfs::read(pid, &format!("/proc/{pid}/smaps"))?;
    let entries = vmas::parse_smaps(pid, &smaps)?;
    let mut out = Vec::with_capacity(entries.len());
    let mut areas = Vec::with_capacity(entries.len());
    for e in entries {
        let (vma, policy) = vmas::classify(pid, &e)?;
        out.push(vma);
        areas.push((e, policy));
    }
    let entries: Vec<vmas::MapEntry> = areas.iter().map(|(e, _)| e.clone()).collect();
    deleted::save(pid, &entries, &mut out, held, sink)?;
    deleted::generations(pid, &entries, &mut out);
    let guards = ckpt_sys::mm::guard_regions(pid).map_err(|source| crate::Error::Sys {
        pid,
        what: "finding its guard regions (PAGEMAP_SCAN)".into(),
        source,
    })?;
    let ranges = pages::cut_guards(pages::plan(pid, &areas, page)?, &guards);
    for &(start, end) in &guards {
        sink.add_guard(pid, start, end - start)?;
    }
    tracing::debug!(
        areas = areas.len(),
        ranges = ranges.len(),
        bytes = ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
        elapsed = ?t.elapsed(),
        "pages to save"
    );
    worker::test_delay();
    let t = Instant::now();
    let bytes = pages::save(pid, &areas, &ranges, page, sink, progress)?;
    tracing::debug!(bytes, elapsed = ?t.elapsed(), "pages read and written");
    Ok((out, bytes))
}
