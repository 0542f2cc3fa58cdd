//! Private memory still shared copy-on-write between a parent and its
//! children since a fork (planned here, pure; made by build.rs).
//!
//! Capture stores a page a child still shares with its parent once: the
//! child's run points at the parent's bytes (the same frame and offset at
//! the same address). Such a mapping of the child (private anonymous, at
//! the same addresses as one of its parent's) is given a slot of the
//! premap area: the restorer maps the slot and writes the slot owner's
//! (the topmost process of the chain sharing it) pages into it before it
//! forks the stubs, which all inherit it copy-on-write. Each process
//! sharing the slot then moves it to the mapping's address (mremap)
//! instead of mapping fresh memory, writes only its pages that differ from
//! the owner's, and drops (MADV_DONTNEED) the owner's pages it does not
//! have; the other stubs unmap the slot with the rest of their memory. A
//! page shared in the image is so one physical page again after restore.

use super::layout::{parse_maps, FreeSpace};
use super::pages::{write_pages, PageWrite, Redirect, Target};
use super::vmas::Backing;
use super::MemPlan;
use crate::error::{Error, Result, SysContext};
use ckpt_image::{ImageReader, MemoryRun, ReadAt, RunKind};
use ckpt_sys::mm::{FixedArea, ProcMem};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

/// Slots are placed so that their offset in the area is their mapping's
/// address modulo this (huge pages stay aligned when moved).
const ALIGN: u64 = 2 << 20;

/// One mapping's memory, made and filled by the restorer.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Creation index of the process whose pages fill it.
    pub owner: usize,
    /// The mapping's address and length (in every process sharing it).
    pub start: u64,
    pub len: u64,
    /// Offset in the premap area.
    pub offset: u64,
    /// The owner's page writes over the mapping (its runs).
    pub writes: Vec<PageWrite>,
    /// A private file mapping: the file's path and the mapping's offset
    /// in it (None: anonymous memory).
    pub file: Option<(CString, u64)>,
}

/// The slots of a tree, and which each process keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CowPlan {
    /// Bytes of the premap area (0: nothing shared).
    pub size: u64,
    pub slots: Vec<Slot>,
    /// By creation index: (offset, len) of the slots it keeps.
    pub kept: Vec<Vec<(u64, u64)>>,
}

/// The contents of a piece of memory: zeros, or frame bytes from an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zero,
    Data { frame: u32, off: u64 },
}

/// [a, b) with contents `c` at a (Data advances with the address).
#[derive(Debug, Clone, Copy)]
struct Seg {
    a: u64,
    b: u64,
    c: Content,
}

fn segs(writes: &[PageWrite], runs: &[MemoryRun], start: u64, end: u64) -> Vec<Seg> {
    writes
        .iter()
        .filter(|w| w.addr < end && w.addr + w.len > start)
        .filter_map(|w| {
            let (a, b) = (w.addr.max(start), (w.addr + w.len).min(end));
            let c = if w.zero {
                Content::Zero
            } else {
                let r = runs.get(w.run)?;
                if r.kind != RunKind::Data {
                    return None;
                }
                Content::Data {
                    frame: r.frame,
                    off: u64::from(r.frame_offset) + (a - r.start),
                }
            };
            Some(Seg { a, b, c })
        })
        .collect()
}

/// Where `x` and `y` (sorted) hold the same contents.
fn same(x: &[Seg], y: &[Seg]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        let (p, q) = (x[i], y[j]);
        let (a, b) = (p.a.max(q.a), p.b.min(q.b));
        if a < b {
            let eq = match (p.c, q.c) {
                (Content::Zero, Content::Zero) => true,
                (Content::Data { frame: f, off: o }, Content::Data { frame: g, off: r }) => {
                    f == g && o + (a - p.a) == r + (a - q.a)
                }
                _ => false,
            };
            if eq {
                match out.last_mut() {
                    Some(l) if l.1 == a => l.1 = b,
                    _ => out.push((a, b)),
                }
            }
        }
        if p.b <= q.b {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `x` without `y` (both sorted, each without overlaps).
fn minus(x: &[(u64, u64)], y: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(a, b) in x {
        let mut at = a;
        while j < y.len() && y[j].1 <= at {
            j += 1;
        }
        let mut k = j;
        while at < b {
            match y.get(k) {
                Some(&(s, e)) if s < b => {
                    if s > at {
                        out.push((at, s));
                    }
                    at = at.max(e);
                    k += 1;
                }
                _ => {
                    out.push((at, b));
                    break;
                }
            }
        }
    }
    out
}

/// Whether a mapping of a plan may be premapped: private anonymous memory
/// that does not grow down, or (with `files`) a private mapping of a file
/// by its path (not one the process reaches through its own fds).
fn eligible(p: &MemPlan, i: usize, files: bool) -> bool {
    let s = &p.steps[i];
    if s.shared || s.grows_down {
        return false;
    }
    match &s.backing {
        Backing::Anon => true,
        Backing::File { path, .. } => files && !path.as_bytes().starts_with(b"/proc/self/fd/"),
        _ => false,
    }
}

/// The file and offset of a file mapping's step (None: anonymous).
fn file_of(s: &super::vmas::MapStep) -> Option<(CString, u64)> {
    match &s.backing {
        Backing::File { path, offset, .. } => Some((path.clone(), *offset)),
        _ => None,
    }
}

/// The process of each creation index: its parent (creation index), its
/// memory plan and runs (None: a zombie, or runs spread over a chain of
/// incremental images, which are not shared).
pub struct Member<'a> {
    pub parent: Option<usize>,
    pub plan: Option<&'a MemPlan>,
    pub runs: &'a [MemoryRun],
}

/// Which mappings share a slot with the parent's (see the module
/// documentation): (creation index, step index) -> slot index.
fn assign(
    members: &[Member<'_>],
    files: bool,
    slots: &mut Vec<Slot>,
) -> BTreeMap<(usize, usize), usize> {
    let mut slot_of: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (c, m) in members.iter().enumerate() {
        let (Some(plan), Some(q)) = (m.plan, m.parent) else {
            continue;
        };
        let Some(pplan) = members.get(q).and_then(|p| p.plan) else {
            continue;
        };
        for (si, s) in plan.steps.iter().enumerate() {
            if !eligible(plan, si, files) {
                continue;
            }
            let Ok(pi) = pplan.steps.binary_search_by_key(&s.start, |t| t.start) else {
                continue;
            };
            let ps = &pplan.steps[pi];
            if ps.len != s.len || !eligible(pplan, pi, files) || file_of(ps) != file_of(s) {
                continue;
            }
            let end = s.start + s.len;
            // The slot's contents: its owner's when the parent has one.
            let existing = slot_of.get(&(q, pi)).copied();
            let owner = existing.map_or(q, |k| slots[k].owner);
            let o = &members[owner];
            let Some(oplan) = o.plan else { continue };
            let mine = segs(&plan.writes, m.runs, s.start, end);
            let theirs = segs(&oplan.writes, o.runs, s.start, end);
            if same(&mine, &theirs).is_empty() {
                continue;
            }
            let k = match existing {
                Some(k) => k,
                None => {
                    slots.push(Slot {
                        owner: q,
                        start: s.start,
                        len: s.len,
                        offset: 0,
                        writes: oplan
                            .writes
                            .iter()
                            .filter(|w| w.addr >= s.start && w.addr < end)
                            .copied()
                            .collect(),
                        file: file_of(s),
                    });
                    slot_of.insert((q, pi), slots.len() - 1);
                    slots.len() - 1
                }
            };
            slot_of.insert((c, si), k);
        }
    }
    slot_of
}

/// Plan the slots of the tree and change each sharing process's plan: its
/// mapping comes from its slot, with only its own pages written. `files`:
/// private file mappings may be premapped too (the restorer opens their
/// files with its own rights: not when the restore opens the image's
/// paths with the saved user's).
pub fn plan_cow(members: &[Member<'_>], files: bool) -> (CowPlan, BTreeMap<usize, MemPlan>) {
    let mut cow = CowPlan {
        kept: vec![Vec::new(); members.len()],
        ..Default::default()
    };
    let slot_of = assign(members, files, &mut cow.slots);
    let mut at = 0u64;
    for s in &mut cow.slots {
        let r = s.start % ALIGN;
        at += (r + ALIGN - at % ALIGN) % ALIGN;
        s.offset = at;
        at += s.len;
    }
    cow.size = at.next_multiple_of(ALIGN);
    let mut changed: BTreeMap<usize, MemPlan> = BTreeMap::new();
    for (&(c, si), &k) in &slot_of {
        let m = &members[c];
        let Some(orig) = m.plan else { continue };
        let slot = &cow.slots[k];
        let plan = changed.entry(c).or_insert_with(|| orig.clone());
        cow.kept[c].push((slot.offset, slot.len));
        let (start, end) = (slot.start, slot.start + slot.len);
        let o = &members[slot.owner];
        let owner_segs = segs(&slot.writes, o.runs, start, end);
        let mine = segs(&orig.writes, m.runs, start, end);
        let same_ranges = same(&mine, &owner_segs);
        let ranges = |v: &[Seg]| -> Vec<(u64, u64)> { v.iter().map(|s| (s.a, s.b)).collect() };
        let discard = minus(&ranges(&owner_segs), &ranges(&mine));
        plan.steps[si].backing = Backing::Inherited {
            offset: slot.offset,
            discard,
        };
        // Its writes over the mapping: only where it differs from the slot.
        let mut writes = Vec::with_capacity(plan.writes.len());
        for w in plan.writes.drain(..) {
            if w.addr >= end || w.addr + w.len <= start {
                writes.push(w);
                continue;
            }
            for (a, b) in minus(&[(w.addr, w.addr + w.len)], &same_ranges) {
                writes.push(PageWrite {
                    addr: a,
                    len: b - a,
                    ..w
                });
            }
        }
        plan.writes = writes;
    }
    for k in &mut cow.kept {
        k.sort_unstable();
    }
    (cow, changed)
}

/// The premap area made and filled in the restorer (before it forks the
/// stubs, which inherit it): its mappings (unmapped when dropped, once the
/// stubs exist) and its address. `runs`: each process's runs, by creation
/// index. None when nothing is shared.
pub(crate) fn premap<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    cow: &CowPlan,
    runs: &[&[MemoryRun]],
) -> Result<Option<(FixedArea, u64)>> {
    if cow.size == 0 {
        return Ok(None);
    }
    let t = std::time::Instant::now();
    let me = ckpt_sys::proc::getpid();
    // Another thread of the restorer may map memory between the look at
    // its maps and the mappings (they never replace anything): try again.
    let mut tries = 0;
    let (area, base) = loop {
        let base = free_base(reader, cow.size, me)?;
        match map_slots(cow, base) {
            Ok(area) => break (area, base),
            Err(Error::Sys { source, .. }) if tries < 3 && source.errno() == Some(libc::EEXIST) => {
                tracing::debug!(error = %source, "premap area taken meanwhile; trying again");
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let mem = ProcMem::open(me).ctx(|| "opening the restorer's own memory".into())?;
    let mut owners: BTreeMap<usize, Vec<&Slot>> = BTreeMap::new();
    for s in &cow.slots {
        owners.entry(s.owner).or_default().push(s);
    }
    let mut bytes = 0;
    for (owner, mut slots) in owners {
        slots.sort_by_key(|s| s.start);
        let redirects: Vec<Redirect> = slots
            .iter()
            .map(|s| Redirect {
                start: s.start,
                end: s.start + s.len,
                to: base + s.offset,
            })
            .collect();
        let writes: Vec<PageWrite> = slots
            .iter()
            .flat_map(|s| s.writes.iter().copied())
            .collect();
        let target = Target {
            pid: me,
            mem: &mem,
            redirects: &redirects,
            copy: None,
        };
        let owner_runs = runs.get(owner).copied().unwrap_or(&[]);
        bytes += write_pages(reader, owner_runs, &writes, &target, &mut |_, _| {})?;
    }
    tracing::info!(
        elapsed = ?t.elapsed(),
        slots = cow.slots.len(),
        bytes,
        "premapped the memory shared copy-on-write"
    );
    Ok(Some((area, base)))
}

/// A free range of `size` bytes for the premap area: clear of every
/// mapping of the image's processes and of the restorer's own.
fn free_base<R: ReadAt>(reader: &ImageReader<R>, size: u64, me: i32) -> Result<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .ctx(|| "reading the restorer's own /proc/self/maps".into())?;
    let image_vmas = reader
        .image()
        .processes
        .iter()
        .flat_map(|p| p.vmas.iter().map(|v| (v.start, v.end)));
    let own = parse_maps(&maps).into_iter().map(|m| (m.start, m.end));
    FreeSpace::new(image_vmas.chain(own))
        .alloc(size)
        .ok_or_else(|| Error::Stub {
            pid: me,
            what: format!(
                "no free address range of {size} bytes for the memory the processes share"
            ),
        })
}

/// Each slot mapped at `base` + its offset (anonymous memory, or its file
/// privately), not yet filled.
fn map_slots(cow: &CowPlan, base: u64) -> Result<FixedArea> {
    let mut area = FixedArea::new();
    for s in &cow.slots {
        let at = base + s.offset;
        match &s.file {
            None => area
                .map(at, s.len, None, 0)
                .ctx(|| format!("premapping {} bytes at {at:#x}", s.len))?,
            Some((path, offset)) => {
                let f = std::fs::File::open(std::ffi::OsStr::from_bytes(path.as_bytes()))
                    .ctx(|| format!("opening {} to premap it", path.to_string_lossy()))?;
                area.map(at, s.len, Some(f.as_raw_fd()), *offset)
                    .ctx(|| format!("premapping {} at {at:#x}", path.to_string_lossy()))?;
            }
        }
    }
    Ok(area)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::vmas::MapStep;

    const P: u64 = 4096;

    fn step(start: u64, len: u64) -> MapStep {
        MapStep {
            start,
            len,
            prot: 3,
            map_prot: 3,
            shared: false,
            grows_down: false,
            map_flags: 0,
            backing: Backing::Anon,
            advice: Vec::new(),
            anon_name: None,
            lock: None,
            what: String::new(),
        }
    }

    fn run(start: u64, pages: u32, frame: u32, off: u32) -> MemoryRun {
        MemoryRun {
            start,
            pages,
            kind: RunKind::Data,
            frame,
            frame_offset: off,
        }
    }

    fn plan(steps: Vec<MapStep>, runs: &[MemoryRun]) -> MemPlan {
        MemPlan {
            steps,
            writes: runs
                .iter()
                .enumerate()
                .map(|(i, r)| PageWrite {
                    addr: r.start,
                    len: u64::from(r.pages) * P,
                    run: i,
                    zero: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_child_keeps_its_parents_pages_and_writes_its_own() {
        // Parent: 8 pages at 0x100000 from frame 0; a mapping only it has.
        let pr = [run(0x100000, 8, 0, 0), run(0x900000, 1, 0, 0x8000)];
        let pp = plan(vec![step(0x100000, 8 * P), step(0x900000, P)], &pr);
        // Child: pages 0-1 and 4-5 shared, 2 its own (frame 1), 3 and 6-7
        // gone (zero now).
        let cr = [
            run(0x100000, 2, 0, 0),
            run(0x102000, 1, 1, 0),
            run(0x104000, 2, 0, 0x4000),
        ];
        let cp = plan(vec![step(0x100000, 8 * P), step(0x900000, P)], &cr);
        // A second child sharing nothing (it wrote every page).
        let dr = [run(0x100000, 8, 2, 0)];
        let dp = plan(vec![step(0x100000, 8 * P)], &dr);
        let members = [
            Member {
                parent: None,
                plan: Some(&pp),
                runs: &pr,
            },
            Member {
                parent: Some(0),
                plan: Some(&cp),
                runs: &cr,
            },
            Member {
                parent: Some(0),
                plan: Some(&dp),
                runs: &dr,
            },
        ];
        let (cow, changed) = plan_cow(&members, true);
        assert_eq!(cow.slots.len(), 1);
        let s = &cow.slots[0];
        assert_eq!((s.owner, s.start, s.len), (0, 0x100000, 8 * P));
        assert_eq!(s.offset % ALIGN, 0x100000 % ALIGN);
        assert_eq!(s.writes.len(), 1);
        assert_eq!(cow.kept[0], vec![(s.offset, 8 * P)]);
        assert_eq!(cow.kept[1], vec![(s.offset, 8 * P)]);
        assert!(cow.kept[2].is_empty());
        // The parent writes nothing there any more; its other mapping stays.
        let p0 = &changed[&0];
        assert_eq!(
            p0.writes.iter().map(|w| w.addr).collect::<Vec<_>>(),
            [0x900000]
        );
        assert_eq!(
            p0.steps[0].backing,
            Backing::Inherited {
                offset: s.offset,
                discard: Vec::new()
            }
        );
        assert_eq!(p0.steps[1].backing, Backing::Anon);
        // The child writes its own page and drops pages 3, 6 and 7.
        let p1 = &changed[&1];
        assert_eq!(
            p1.writes
                .iter()
                .map(|w| (w.addr, w.len, w.run))
                .collect::<Vec<_>>(),
            [(0x102000, P, 1)]
        );
        assert_eq!(
            p1.steps[0].backing,
            Backing::Inherited {
                offset: s.offset,
                discard: vec![(0x103000, 0x104000), (0x106000, 0x108000)]
            }
        );
        assert!(!changed.contains_key(&2));
    }

    #[test]
    fn a_grandchild_shares_the_topmost_owners_slot() {
        let r = [run(0x200000, 4, 0, 0)];
        let p = plan(vec![step(0x200000, 4 * P)], &r);
        // The middle process rewrote page 1 (frame 1); its child shares
        // that page with it, and the rest with the root.
        let mr = [
            run(0x200000, 1, 0, 0),
            run(0x201000, 1, 1, 0),
            run(0x202000, 2, 0, 0x2000),
        ];
        let m = plan(vec![step(0x200000, 4 * P)], &mr);
        let members = [
            Member {
                parent: None,
                plan: Some(&p),
                runs: &r,
            },
            Member {
                parent: Some(0),
                plan: Some(&m),
                runs: &mr,
            },
            Member {
                parent: Some(1),
                plan: Some(&m),
                runs: &mr,
            },
        ];
        let (cow, changed) = plan_cow(&members, true);
        assert_eq!(cow.slots.len(), 1);
        assert_eq!(cow.kept.iter().filter(|k| !k.is_empty()).count(), 3);
        for c in [1, 2] {
            let w: Vec<(u64, u64)> = changed[&c].writes.iter().map(|w| (w.addr, w.len)).collect();
            assert_eq!(w, [(0x201000, P)]);
        }
    }

    #[test]
    fn private_file_mappings_share_with_the_same_file_and_offset_only() {
        let file = |start: u64, offset: u64| MapStep {
            backing: Backing::File {
                path: c"/lib/x.so".to_owned(),
                flags: libc::O_RDONLY,
                offset,
            },
            ..step(start, 2 * P)
        };
        let r = [run(0x300000, 1, 0, 0), run(0x400000, 1, 0, 0x1000)];
        let p = plan(vec![file(0x300000, 0), file(0x400000, 0)], &r);
        let c = plan(vec![file(0x300000, 0), file(0x400000, 0x2000)], &r);
        let members = [
            Member {
                parent: None,
                plan: Some(&p),
                runs: &r,
            },
            Member {
                parent: Some(0),
                plan: Some(&c),
                runs: &r,
            },
        ];
        let (cow, changed) = plan_cow(&members, true);
        assert_eq!(cow.slots.len(), 1);
        assert_eq!(cow.slots[0].file, Some((c"/lib/x.so".to_owned(), 0)));
        assert_eq!(changed[&1].writes.len(), 1);
        assert_eq!(changed[&1].steps[1].backing, c.steps[1].backing);
        let (cow, _) = plan_cow(&members, false);
        assert!(cow.slots.is_empty());
    }

    #[test]
    fn intervals() {
        assert_eq!(
            minus(&[(0, 10), (20, 30)], &[(2, 4), (8, 22), (25, 26)]),
            [(0, 2), (4, 8), (22, 25), (26, 30)]
        );
        assert_eq!(minus(&[(0, 10)], &[]), [(0, 10)]);
        assert!(minus(&[(5, 6)], &[(0, 10)]).is_empty());
    }
}
