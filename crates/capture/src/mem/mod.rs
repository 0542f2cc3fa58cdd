//! Memory: the areas of the process (vmas.rs: /proc/PID/smaps into the
//! model's `Vma`s) and the contents of the pages that must be saved
//! (pages.rs: pagemap, then fast reads; shmem.rs: shared memory objects,
//! holes left untouched).
//!
//! Across a tree ([`TreeMemory`]): the pages of a shared memory object are
//! saved by the first process that maps them, not again by the others; a
//! child's private pages that are still the very pages of its parent at the
//! same address (same page frame in both pagemaps: not written since the
//! fork) are stored once, the child's runs pointing at the parent's.

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
    let cow = match tree.areas.get(&parent) {
        Some(a) if shares_pages => Some(pages::Cow {
            parent,
            areas: a.as_slice(),
        }),
        _ => None,
    };
    let ranges = pages::plan(pid, &areas, page, cow.as_ref(), &mut tree.shm_saved)?;
    tree.areas.insert(pid, areas.clone());
    let planned = Planned {
        vmas: out,
        areas,
        ranges,
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
    let t = Instant::now();
    let bytes = pages::save(pid, &planned.areas, &planned.ranges, page, sink, progress)?;
    tracing::debug!(bytes, elapsed = ?t.elapsed(), "pages read and written");
    Ok(bytes)
}
