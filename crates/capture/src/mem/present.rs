//! Which pages a process has, fast enough for a short freeze: the areas
//! from /proc/PID/maps (smaps walks every page table to count them: 40-70
//! ms per GiB here) with the VmFlags of an smaps read before the freeze,
//! and the pages from PAGEMAP_SCAN (one walk that returns ranges, ~1 ms
//! per GiB) instead of /proc/PID/pagemap (8 bytes a page).

use super::pages::Range;
use super::shmem::shmem_ranges;
use super::vmas::{parse_smaps, MapEntry, Policy};
use crate::error::{Result, SysCtx};
use crate::procfs;
use ckpt_sys::mm::{page_is, PageRegion, Pagemap, ScanQuery};
use ckpt_sys::Pid;

/// The areas of `pid` now: /proc/PID/maps, each line that `before` (an
/// smaps read earlier) has exactly (same range, permissions, offset, file
/// and name) with its VmFlags from there. When some area is new or
/// changed, smaps is read again (slower, but right).
pub(crate) fn areas_now(pid: Pid, before: &[MapEntry]) -> Result<Vec<MapEntry>> {
    let path = format!("/proc/{pid}/maps");
    let now = parse_smaps(pid, &procfs::read(pid, &path)?)?;
    let same = |a: &MapEntry, b: &MapEntry| {
        a.start == b.start
            && a.end == b.end
            && a.perms == b.perms
            && a.offset == b.offset
            && a.dev == b.dev
            && a.inode == b.inode
            && a.name == b.name
    };
    let mut out = Vec::with_capacity(now.len());
    let mut j = 0usize;
    for mut e in now {
        while j < before.len() && before[j].start < e.start {
            j += 1;
        }
        match before.get(j) {
            Some(b) if same(b, &e) => {
                e.vm_flags = b.vm_flags.clone();
                (e.rss_kb, e.swap_kb, e.anon_kb) = (b.rss_kb, b.swap_kb, b.anon_kb);
                out.push(e);
            }
            _ => {
                tracing::debug!(
                    start = format_args!("{:#x}", e.start),
                    "an area changed since smaps was read: reading it again"
                );
                let smaps = procfs::read(pid, &format!("/proc/{pid}/smaps"))?;
                return parse_smaps(pid, &smaps);
            }
        }
    }
    Ok(out)
}

/// Whether PAGEMAP_SCAN works here (Linux 6.7+).
pub(crate) fn scan_works(pid: Pid) -> bool {
    let Ok(pm) = Pagemap::open(pid) else {
        return false;
    };
    let q = ScanQuery {
        anyof: page_is::PRESENT,
        returned: page_is::PRESENT,
        ..Default::default()
    };
    // An empty range: only the ioctl itself is tried.
    pm.scan(0, 0, &q, &mut Vec::new()).is_ok() && pm.scan(0, 4096, &q, &mut Vec::new()).is_ok()
}

/// The present or swapped pages of `[start, end)` that need saving for
/// `policy` (Anon: all but zero pages mapped by a read; PrivateFile: the
/// copied-on-write ones), in address order.
pub(crate) fn saved_regions(
    pm: &Pagemap,
    pid: Pid,
    start: u64,
    end: u64,
    policy: Policy,
) -> Result<Vec<(u64, u64)>> {
    let q = ScanQuery {
        anyof: page_is::PRESENT | page_is::SWAPPED,
        returned: page_is::PRESENT | page_is::SWAPPED | page_is::FILE | page_is::PFNZERO,
        ..Default::default()
    };
    let mut regs: Vec<PageRegion> = Vec::new();
    pm.scan(start, end, &q, &mut regs)
        .ctx(pid, || format!("PAGEMAP_SCAN of {start:#x}-{end:#x}"))?;
    let keep = |c: u64| match policy {
        Policy::PrivateFile => {
            c & page_is::SWAPPED != 0 || (c & page_is::PRESENT != 0 && c & page_is::FILE == 0)
        }
        _ => c & page_is::SWAPPED != 0 || (c & page_is::PFNZERO == 0),
    };
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(regs.len());
    for r in regs.iter().filter(|r| keep(r.categories)) {
        match out.last_mut() {
            Some(l) if l.1 == r.start => l.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
    }
    Ok(out)
}

/// Which pages to save, as [`super::pages::plan`] decides, with the pages
/// of anonymous and private file areas found by PAGEMAP_SCAN (for areas
/// read from /proc/PID/maps, which has no page counts). `skip` tells
/// areas whose pages are saved some other way.
pub(crate) fn plan(
    pid: Pid,
    areas: &[(MapEntry, Policy)],
    page: u64,
    skip: &dyn Fn(usize) -> bool,
) -> Result<Vec<Range>> {
    let pm = Pagemap::open(pid).ctx(pid, || "opening its pagemap".into())?;
    let mut out = Vec::new();
    for (idx, (e, pol)) in areas.iter().enumerate() {
        if skip(idx) {
            continue;
        }
        let range = |start, end, may_skip| Range {
            start,
            end,
            may_skip,
            zero: false,
            parent: 0,
            vma: idx,
        };
        match pol {
            Policy::Nothing => {}
            Policy::Whole => out.push(range(e.start, e.end, true)),
            Policy::Shmem => shmem_ranges(pid, idx, e, page, &mut out),
            Policy::HugeShared { page_size } => {
                super::hugetlb::shared_ranges(pid, idx, e, *page_size, &mut out)
            }
            Policy::Anon | Policy::PrivateFile | Policy::HugePrivate { .. } => {
                let pol = match pol {
                    Policy::HugePrivate { file: true } => Policy::PrivateFile,
                    Policy::HugePrivate { file: false } => Policy::Anon,
                    p => *p,
                };
                for (a, b) in saved_regions(&pm, pid, e.start, e.end, pol)? {
                    out.push(range(a, b, false));
                }
            }
        }
    }
    // Guard pages are saved as guard runs (mod.rs), never read.
    Ok(super::pages::cut_guards(out, &guard_regions(pid)?))
}

/// The guard regions (MADV_GUARD_INSTALL) of `pid`.
pub(crate) fn guard_regions(pid: Pid) -> Result<Vec<(u64, u64)>> {
    ckpt_sys::mm::guard_regions(pid).map_err(|source| crate::Error::Sys {
        pid,
        what: "finding its guard regions (PAGEMAP_SCAN)".into(),
        source,
    })
}
