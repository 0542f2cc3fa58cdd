//! Memory: the areas of the process (vmas.rs: /proc/PID/smaps into the
//! model's `Vma`s) and the contents of the pages that must be saved
//! (pages.rs: pagemap, then fast reads; shmem.rs: shared memory objects,
//! holes left untouched); deleted files it maps, whole (deleted.rs).
//! Guard regions (MADV_GUARD_INSTALL, found with PAGEMAP_SCAN) are saved
//! as runs of kind `guard` and never read.
//!
//! Across a tree ([`TreeMemory`]): the pages of a shared memory object are
//! saved by the first process that maps them, not again by the others; a
//! child's private pages that are still the very pages of its parent at the
//! same address (same page frame in both pagemaps: not written since the
//! fork) are stored once, the child's runs pointing at the parent's. The
//! contents of a deleted file mapped by several processes are saved once.

mod deleted;
mod pages;
mod shmem;
mod vmas;

use crate::error::Result;
use crate::{procfs, worker, PageSink};
use ckpt_image::Vma;
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::time::Instant;

/// What the processes of a tree saved so far, for the ones after them.
#[derive(Default)]
pub(crate) struct TreeMemory {
    /// The deleted files mapped so far (see [`save_deleted`]).
    pub deleted: deleted::Saved,
    /// Ranges [start, end) of shared memory objects (by inode) already saved.
    shm_saved: HashMap<u64, Vec<(u64, u64)>>,
    /// Each saved process's areas (for its children's copy-on-write pages).
    areas: HashMap<Pid, Vec<(vmas::MapEntry, vmas::Policy)>>,
}

/// The memory of one process, planned: its areas for the model, and the
/// ranges of pages to save.
pub(crate) struct Planned {
    pub vmas: Vec<Vma>,
    areas: Vec<(vmas::MapEntry, vmas::Policy)>,
    ranges: Vec<pages::Range>,
    /// Guard regions (MADV_GUARD_INSTALL): saved as runs, never read.
    guards: Vec<(u64, u64)>,
}

impl Planned {
    /// Bytes of pages to read (not counting those shared with the parent).
    pub fn bytes(&self) -> u64 {
        self.ranges
            .iter()
            .filter(|r| r.parent == 0)
            .map(|r| r.end - r.start)
            .sum()
    }
}

/// Every memory area of `pid` and which of its pages to save. `parent`:
/// its parent in the tree, planned before (0: none); `shares_pages`: the
/// sink can store pages shared with it once.
///
/// Every process of a tree is planned before any page is read: reading
/// another process's memory (process_vm_readv pins the pages) makes the
/// kernel unshare its copy-on-write pages, which would hide the pages a
/// parent and its child still share.
pub(crate) fn plan(
    pid: Pid,
    parent: Pid,
    page: u64,
    tree: &mut TreeMemory,
    shares_pages: bool,
) -> Result<Planned> {
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
    deleted::generations(pid, &entries, &mut out);
    let guards = ckpt_sys::mm::guard_regions(pid).map_err(|source| crate::Error::Sys {
        pid,
        what: "finding its guard regions (PAGEMAP_SCAN)".into(),
        source,
    })?;
    let cow = match tree.areas.get(&parent) {
        Some(a) if shares_pages => Some(pages::Cow {
            parent,
            areas: a.as_slice(),
        }),
        _ => None,
    };
    let ranges = pages::cut_guards(
        pages::plan(pid, &areas, page, cow.as_ref(), &mut tree.shm_saved)?,
        &guards,
    );
    tree.areas.insert(pid, areas.clone());
    let planned = Planned {
        vmas: out,
        areas,
        ranges,
        guards,
    };
    tracing::debug!(
        areas = planned.areas.len(),
        ranges = planned.ranges.len(),
        bytes = planned.bytes(),
        from_parent = planned
            .ranges
            .iter()
            .filter(|r| r.parent != 0)
            .map(|r| r.end - r.start)
            .sum::<u64>(),
        elapsed = ?t.elapsed(),
        "pages to save"
    );
    Ok(planned)
}

/// Read the planned pages of `pid` and write them to `sink` (`progress`
/// is called with bytes saved so far and bytes to save). Returns the bytes
/// of pages saved.
pub(crate) fn save(
    pid: Pid,
    planned: &Planned,
    page: u64,
    sink: &mut dyn PageSink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    worker::test_delay();
    for &(start, end) in &planned.guards {
        sink.add_guard(pid, start, end - start)?;
    }
    let t = Instant::now();
    let bytes = pages::save(pid, &planned.areas, &planned.ranges, page, sink, progress)?;
    tracing::debug!(bytes, elapsed = ?t.elapsed(), "pages read and written");
    Ok(bytes)
}

/// The contents of the deleted files `pid` maps that none of its fds
/// holds (`held`: (dev, inode) of the deleted files its fds hold), into
/// `vmas` (its planned areas), each file once across the tree; refused
/// by name when they cannot be read, or when another process of the tree
/// maps the same file shared (each would get its own copy).
pub(crate) fn save_deleted(
    pid: Pid,
    planned: &Planned,
    vmas: &mut [Vma],
    held: &std::collections::HashSet<(u64, u64)>,
    tree: &mut TreeMemory,
    sink: &mut dyn PageSink,
) -> Result<()> {
    let entries: Vec<vmas::MapEntry> = planned.areas.iter().map(|(e, _)| e.clone()).collect();
    deleted::save(pid, &entries, vmas, held, &mut tree.deleted, sink)
}
