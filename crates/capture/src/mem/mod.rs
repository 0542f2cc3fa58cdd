//! Memory: the areas of the process (vmas.rs: /proc/PID/smaps into the
//! model's `Vma`s) and the contents of the pages that must be saved
//! (pages.rs: which pages, then fast reads; shmem.rs: shared memory
//! objects, holes left untouched; present.rs: the same found fast enough
//! for a short freeze); deleted files it maps, whole (deleted.rs). Guard
//! regions (MADV_GUARD_INSTALL, found with PAGEMAP_SCAN) are saved as runs
//! of kind `guard` and never read.
//!
//! Across a tree ([`TreeMemory`]): the pages of a shared memory object are
//! saved by the first process that maps them, not again by the others; a
//! child's private pages that are still the very pages of its parent at the
//! same address (same page frame in both pagemaps: not written since the
//! fork) are stored once, the child's runs pointing at the parent's. The
//! contents of a deleted file mapped by several processes are saved once.
//!
//! How the pages of one process are taken ([`prepare`] decides, before
//! the freeze):
//!
//! - **frozen**: everything read while the process is stopped (a dump
//!   that kills the process, a tree of processes, or where nothing better
//!   works);
//! - **snapshot** (`--leave-running`): write-protected before the freeze
//!   and copied after it, each page before its first write (snapshot.rs,
//!   snapcopy.rs): the freeze does not grow with memory;
//! - **pre-copy** (`--track`, or a process whose pages are tracked):
//!   copied while the process runs, the pages written meanwhile copied
//!   again, the last ones in the freeze, and the tracking kept for the
//!   next, incremental, dump (tracking.rs, precopy.rs);
//! - **incremental** (`--parent` of the dump the tracking started from):
//!   only the pages written since, the others `parent` runs.

mod aio;
mod deleted;
mod hugetlb;
mod intervals;
mod pages;
pub(crate) mod precopy;
mod present;
mod shmem;
pub(crate) mod snapcopy;
mod snapshot;
pub(crate) mod tracking;
pub(crate) mod vmas;

use crate::error::{Error, Result};
use crate::{procfs, worker, DumpMode, DumpOptions, PageSink};
use ckpt_image::{ImageReader, ParentRef, Vma};
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
    /// The files mapped so far (their metadata and generations).
    files: vmas::FileStats,
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
        let (vma, policy) = vmas::classify_with(pid, &e, &mut tree.files)?;
        out.push(vma);
        areas.push((e, policy));
    }
    deleted::generations(
        pid,
        areas.iter().map(|(e, _)| e),
        &mut out,
        &mut tree.files.generations,
    );
    let guards = present::guard_regions(pid)?;
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

/// How the pages of a dump are taken (see the module doc).
pub(crate) enum Plan {
    Frozen,
    Snapshot(snapshot::Armed),
    PreCopy(precopy::PreCopy),
}

/// What is decided and done before the freeze.
pub(crate) struct Prepared {
    pub plan: Plan,
    pub mode: DumpMode,
    /// ckpt's own fds in the process (dirty tracking): never saved.
    pub own_fds: Vec<i32>,
    /// The parent of an incremental dump.
    pub parent: Option<ParentRef>,
    /// Why the dump is not what was asked for (a full dump instead of an
    /// incremental one, no tracking, ...).
    pub note: Option<String>,
    /// Bytes of pages copied before the freeze.
    pub bytes: u64,
}

impl Prepared {
    /// Everything in the freeze.
    pub fn frozen(pid: Pid) -> Result<Prepared> {
        let found = tracking::find(pid)?;
        Ok(Prepared {
            own_fds: tracking::own_fds(&found),
            ..Prepared::frozen_only()
        })
    }

    /// Everything in the freeze, with no fds of ckpt's to leave out (a
    /// process of a tree other than its root).
    pub fn frozen_only() -> Prepared {
        Prepared {
            plan: Plan::Frozen,
            mode: DumpMode::Frozen,
            own_fds: Vec::new(),
            parent: None,
            note: None,
            bytes: 0,
        }
    }

    /// Whether the pages are all read in the freeze (mem::plan, mem::save).
    pub fn is_frozen(&self) -> bool {
        matches!(self.plan, Plan::Frozen)
    }
}

/// `CKPT_SNAPSHOT=frozen` makes every dump copy its memory in the freeze
/// (for comparisons and tests); `CKPT_SNAPSHOT=precopy` makes a
/// leave-running dump a pre-copy (with tracking) when it would be a
/// snapshot.
fn env_mode() -> Option<String> {
    std::env::var("CKPT_SNAPSHOT").ok()
}

/// Decide how the pages of `pid` are taken and do what comes before the
/// freeze: arm a snapshot, or copy while the process runs (to `sink`).
pub(crate) fn prepare(
    pid: Pid,
    page: u64,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
) -> Result<Prepared> {
    let mut prep = Prepared::frozen(pid)?;
    let env = env_mode();
    if env.as_deref() == Some("frozen") || (opts.no_snapshot && opts.parent.is_none()) {
        return Ok(prep);
    }
    if !opts.no_tree && !procfs::list_children(pid)?.is_empty() {
        // A tree: its processes' pages are planned together and read in
        // the freeze (pages a child shares with its parent stored once).
        if opts.parent.is_some() || opts.track {
            prep.note = Some(
                "a full dump copied in the freeze: dirty tracking and incremental dumps are of one process, and this one has children"
                    .into(),
            );
        }
        return Ok(prep);
    }
    let found = tracking::find(pid)?;
    let usable = found.as_ref().filter(|f| f.since.is_some());
    let mut noop = |_: u64, _: u64| {};
    let progress: &mut dyn FnMut(u64, u64) = match opts.progress.as_mut() {
        Some(p) => p.as_mut(),
        None => &mut noop,
    };
    // An incremental dump, if the tracking goes back to the parent.
    if let Some(path) = &opts.parent {
        let (parent_ref, runs) = read_parent(pid, path)?;
        let since = usable.and_then(|f| f.since.as_ref());
        match precopy::usable_since(since, &parent_ref.image_id) {
            Ok(()) => {
                let t = tracking::Tracking::open(pid, usable.expect("usable tracking"))?;
                let pc = precopy::PreCopy::start(pid, page, t, Some(&runs), sink, progress)?;
                prep.bytes = pc.bytes;
                prep.plan = Plan::PreCopy(pc);
                prep.mode = DumpMode::Incremental;
                prep.parent = Some(parent_ref);
                return Ok(prep);
            }
            Err(why) => prep.note = Some(format!("a full dump, not an incremental one: {why}")),
        }
    }
    if !opts.leave_running {
        return Ok(prep); // the process dies: nothing to track, nothing to protect
    }
    let want_tracking = opts.track
        || opts.parent.is_some()
        || usable.is_some()
        || env.as_deref() == Some("precopy");
    if want_tracking {
        match start_tracking(pid, usable, found.as_ref()) {
            Ok(t) => {
                let pc = precopy::PreCopy::start(pid, page, t, None, sink, progress)?;
                prep.bytes = pc.bytes;
                prep.plan = Plan::PreCopy(pc);
                prep.mode = DumpMode::PreCopy;
                prep.own_fds = tracking::own_fds(&tracking::find(pid)?);
                return Ok(prep);
            }
            Err(e) => {
                let why = format!("no dirty tracking: {e}");
                prep.note = Some(match prep.note.take() {
                    Some(n) => format!("{n}; {why}"),
                    None => why,
                });
            }
        }
    }
    if usable.is_none() && !opts.no_snapshot {
        if let Some(armed) = snapshot::arm(pid, page)? {
            prep.plan = Plan::Snapshot(armed);
            prep.mode = DumpMode::Snapshot;
        }
    }
    Ok(prep)
}

/// The tracking of `pid`: the one it has, or a new one (a short stop).
fn start_tracking(
    pid: Pid,
    usable: Option<&tracking::Found>,
    found: Option<&tracking::Found>,
) -> Result<tracking::Tracking> {
    if let Some(f) = usable {
        return tracking::Tracking::open(pid, f);
    }
    if !present::scan_works(pid) {
        return Err(Error::Worker {
            message: "this kernel has no PAGEMAP_SCAN (Linux 6.7+)".into(),
        });
    }
    let mut frozen = crate::freeze::Frozen::freeze(pid)?;
    let t = tracking::Tracking::arm(&mut frozen, found);
    frozen.release()?;
    t
}

/// The parent image at `path`: its reference for the new image, and its
/// runs of `pid`.
fn read_parent(
    pid: Pid,
    path: &std::path::Path,
) -> Result<(ParentRef, Vec<ckpt_image::MemoryRun>)> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |what: String| Error::Parent {
        path: path.display().to_string(),
        what,
    };
    let r = ImageReader::open(path).map_err(|e| bad(e.to_string()))?;
    let img = r.image();
    if img.image_id.is_empty() {
        return Err(bad(
            "the image has no id (written by an older ckpt): it cannot be a parent".into(),
        ));
    }
    let Some(p) = img.process(pid) else {
        return Err(bad(format!(
            "the image is not of pid {pid} (it holds pid {})",
            img.root_pid
        )));
    };
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok((
        ParentRef {
            image_id: img.image_id.clone(),
            path: abs.as_os_str().as_bytes().to_vec(),
            created_ns: img.created_ns,
        },
        p.memory.clone(),
    ))
}

/// The memory step in the freeze: the model's areas, the bytes saved in
/// the freeze, and, for a snapshot, the copy to finish once the process
/// runs again.
pub(crate) fn save_frozen(
    pid: Pid,
    page: u64,
    prep: &mut Prepared,
    sink: &mut dyn PageSink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<Vma>, u64, Option<snapcopy::Pending>)> {
    match std::mem::replace(&mut prep.plan, Plan::Frozen) {
        Plan::Frozen => {
            let planned = plan(pid, 0, page, &mut TreeMemory::default(), false)?;
            let b = save(pid, &planned, page, sink, progress)?;
            Ok((planned.vmas, b, None))
        }
        plan => {
            for (start, end) in present::guard_regions(pid)? {
                sink.add_guard(pid, start, end - start)?;
            }
            save_unfrozen(plan, prep, sink, progress)
        }
    }
}

/// [`save_frozen`] of a snapshot or a pre-copy.
fn save_unfrozen(
    plan: Plan,
    prep: &mut Prepared,
    sink: &mut dyn PageSink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<Vma>, u64, Option<snapcopy::Pending>)> {
    match plan {
        Plan::Frozen => Ok((Vec::new(), 0, None)),
        Plan::Snapshot(armed) => {
            let (v, b, pending) = armed.freeze_phase(sink, progress)?;
            Ok((v, b, Some(pending)))
        }
        Plan::PreCopy(mut pc) => {
            let r = pc.finish_frozen(sink, progress);
            prep.plan = Plan::PreCopy(pc);
            let (v, b) = r?;
            Ok((v, b, None))
        }
    }
}

/// Before system calls are injected into the frozen process (writing to
/// `regions` of its stacks): a snapshot lets them be written.
pub(crate) fn before_queries(prep: &Prepared, regions: &[(u64, u64)]) {
    if let Plan::Snapshot(armed) = &prep.plan {
        armed.release(regions);
    }
}

/// After the image was committed and the process let go: the tracking
/// now goes back to this image.
pub(crate) fn committed(prep: &Prepared, image_id: &[u8]) -> Result<()> {
    if let Plan::PreCopy(pc) = &prep.plan {
        pc.tracking.set_state(Some(image_id))?;
    }
    Ok(())
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
    deleted::save(
        pid,
        planned.areas.iter().map(|(e, _)| e),
        vmas,
        held,
        &mut tree.deleted,
        sink,
    )
}

/// For the areas of a snapshot or a pre-copy ([`save_frozen`]): the file
/// generations and the deleted files they map, as [`plan`] and
/// [`save_deleted`] do for the others (the process is still frozen).
pub(crate) fn finish_areas(
    pid: Pid,
    vmas: &mut [Vma],
    held: &std::collections::HashSet<(u64, u64)>,
    tree: &mut TreeMemory,
    sink: &mut dyn PageSink,
) -> Result<()> {
    // maps, not smaps (much faster): what these need is in both.
    let maps = procfs::read(pid, &format!("/proc/{pid}/maps"))?;
    let mut by_start: HashMap<u64, vmas::MapEntry> = vmas::parse_smaps(pid, &maps)?
        .into_iter()
        .map(|e| (e.start, e))
        .collect();
    let entries = vmas
        .iter()
        .map(|v| {
            by_start.remove(&v.start).ok_or_else(|| Error::Snapshot {
                pid,
                what: format!("the area at {:#x} changed in the freeze", v.start),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    deleted::generations(pid, &entries, vmas, &mut tree.files.generations);
    deleted::save(pid, &entries, vmas, held, &mut tree.deleted, sink)
}
