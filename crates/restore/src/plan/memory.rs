//! The address space: where the trampoline goes, how the vdso moves, which
//! mappings to create and which pages to write. Pure.

use super::fds::strip_deleted;
use ckpt_image::{
    madvise, FileKind, Image, MemoryRun, Process, RunKind, ShmKind, SpecialMapping, Vma,
    VmaBacking, PROT_WRITE,
};
use std::collections::BTreeMap;
use std::ffi::CString;

/// End of the user address space with 4-level paging (x86_64).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Distance kept between our temporary mappings and anything else.
const GUARD: u64 = 2 << 20;
/// Our temporary mappings go above this address when there is room.
const LOW: u64 = 1 << 32;

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub name: String,
}

/// Parse /proc/PID/maps.
pub fn parse_maps(text: &str) -> Vec<MapsEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(6, ' ');
            let range = it.next()?;
            let perms = it.next()?.to_string();
            let (_off, _dev, _ino) = (it.next()?, it.next()?, it.next()?);
            let name = it.next().unwrap_or("").trim_start().to_string();
            let (a, b) = range.split_once('-')?;
            Some(MapsEntry {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                perms,
                name,
            })
        })
        .collect()
}

/// The vdso-like specials the kernel maps into every process, by name.
pub fn special_name(kind: SpecialMapping) -> Option<&'static str> {
    match kind {
        SpecialMapping::Vdso => Some("[vdso]"),
        SpecialMapping::Vvar => Some("[vvar]"),
        SpecialMapping::VvarVclock => Some("[vvar_vclock]"),
        _ => None,
    }
}

fn is_vdso_like(name: &str) -> bool {
    matches!(name, "[vdso]" | "[vvar]" | "[vvar_vclock]")
}

/// Address ranges in use, to find room for temporary mappings.
#[derive(Debug, Clone, Default)]
pub struct FreeSpace {
    used: Vec<(u64, u64)>,
}

impl FreeSpace {
    pub fn new(used: impl IntoIterator<Item = (u64, u64)>) -> FreeSpace {
        let mut f = FreeSpace {
            used: used.into_iter().collect(),
        };
        f.used.sort();
        f
    }

    /// A 2 MiB-aligned range of `len` bytes at least GUARD away from
    /// everything in use; it is in use from now on.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let align = |a: u64| (a + GUARD - 1) & !(GUARD - 1);
        for lo in [LOW, 1 << 24] {
            let mut cand = align(lo);
            loop {
                if cand + len + GUARD > TASK_SIZE {
                    break;
                }
                let clash = self
                    .used
                    .iter()
                    .find(|&&(s, e)| cand < e + GUARD && s < cand + len + GUARD);
                match clash {
                    Some(&(_, e)) => cand = align(e + GUARD),
                    None => {
                        self.used.push((cand, cand + len));
                        self.used.sort();
                        return Some(cand);
                    }
                }
            }
        }
        None
    }
}

/// A move of one vdso-like mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub name: String,
    pub from: u64,
    pub len: u64,
    pub to: u64,
}

/// Where things go in the stub before the image's mappings are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Trampoline page (`syscall; int3`), followed by scratch pages.
    pub tramp: u64,
    pub tramp_len: u64,
    /// Ranges to munmap in the stub: everything but the trampoline and the vdso-likes.
    pub unmap: Vec<(u64, u64)>,
    /// mremaps of `[vvar]`, `[vvar_vclock]`, `[vdso]` to the image's addresses, in order.
    pub moves: Vec<Move>,
    /// Temporary address of each shared anonymous object (by id), and its size.
    pub shm_temp: BTreeMap<u64, (u64, u64)>,
    /// Temporary address (2 MiB-aligned) of each huge-page fill area, in
    /// the order of the `huge` lengths given to [`plan_layout`].
    pub huge_temp: Vec<u64>,
}

/// Pair the image's vdso-like mappings with the stub's (the same kernel's
/// as ours): same names, sizes and relative layout, or an error saying how
/// they differ.
pub fn pair_vdso<'a>(
    image_vmas: &'a [Vma],
    stub: &'a [MapsEntry],
) -> Result<Vec<(&'a MapsEntry, &'a Vma)>, String> {
    let img: Vec<&Vma> = image_vmas
        .iter()
        .filter(|v| matches!(&v.backing, VmaBacking::Special(k) if special_name(*k).is_some()))
        .collect();
    let here: Vec<&MapsEntry> = stub.iter().filter(|m| is_vdso_like(&m.name)).collect();
    let describe_img = |v: &[&Vma]| -> String {
        v.iter()
            .map(|v| match &v.backing {
                VmaBacking::Special(k) => {
                    format!("{} {} KiB", special_name(*k).unwrap_or("?"), v.len() / 1024)
                }
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let describe_here = |v: &[&MapsEntry]| -> String {
        v.iter()
            .map(|m| format!("{} {} KiB", m.name, (m.end - m.start) / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mismatch = || {
        format!(
            "vdso layout differs: the image has [{}], this kernel maps [{}]",
            describe_img(&img),
            describe_here(&here)
        )
    };
    if img.len() != here.len() {
        return Err(mismatch());
    }
    let mut out = Vec::new();
    for (h, v) in here.iter().zip(img.iter()) {
        let name = match &v.backing {
            VmaBacking::Special(k) => special_name(*k).unwrap_or(""),
            _ => "",
        };
        if name != h.name
            || h.end - h.start != v.len()
            || h.start - here[0].start != v.start - img[0].start
        {
            return Err(mismatch());
        }
        out.push((*h, *v));
    }
    Ok(out)
}

/// Plan the stub's address space; `huge` are the lengths of the
/// temporary huge-page fill areas to place (see [`plan_huge_fills`]).
pub fn plan_layout(
    proc: &Process,
    stub: &[MapsEntry],
    scratch_len: u64,
    page: u64,
    huge: &[u64],
) -> Result<Layout, String> {
    let pairs = pair_vdso(&proc.vmas, stub)?;
    let mut space = FreeSpace::new(
        proc.vmas.iter().map(|v| (v.start, v.end)).chain(
            stub.iter()
                .filter(|m| is_vdso_like(&m.name))
                .map(|m| (m.start, m.end)),
        ),
    );
    let tramp_len = page + scratch_len.div_ceil(page) * page;
    let tramp = space
        .alloc(tramp_len)
        .ok_or("no free address range for the trampoline")?;

    let mut keep: Vec<(u64, u64)> = vec![(tramp, tramp + tramp_len)];
    keep.extend(pairs.iter().map(|(h, _)| (h.start, h.end)));
    keep.sort();
    let mut unmap = Vec::new();
    let mut at = 0u64;
    for (s, e) in &keep {
        if *s > at {
            unmap.push((at, *s - at));
        }
        at = at.max(*e);
    }
    if at < TASK_SIZE {
        unmap.push((at, TASK_SIZE - at));
    }

    let mut moves = Vec::new();
    if let (Some(first), Some(last)) = (pairs.first(), pairs.last()) {
        let (s0, s1) = (first.0.start, last.0.end);
        let (i0, i1) = (first.1.start, last.1.end);
        if s0 != i0 {
            let mut cur: Vec<u64> = pairs.iter().map(|(h, _)| h.start).collect();
            if s0 < i1 && i0 < s1 {
                let tmp = space
                    .alloc(s1 - s0)
                    .ok_or("no free address range to move the vdso through")?;
                for (i, (h, _)) in pairs.iter().enumerate() {
                    let to = tmp + (h.start - s0);
                    moves.push(Move {
                        name: h.name.clone(),
                        from: cur[i],
                        len: h.end - h.start,
                        to,
                    });
                    cur[i] = to;
                }
            }
            for (i, (h, v)) in pairs.iter().enumerate() {
                moves.push(Move {
                    name: h.name.clone(),
                    from: cur[i],
                    len: h.end - h.start,
                    to: v.start,
                });
            }
        }
    }

    let mut shm_temp = BTreeMap::new();
    for v in &proc.vmas {
        if let VmaBacking::SharedMemory(sm) = &v.backing {
            if sm.kind == ShmKind::AnonymousShared && !shm_temp.contains_key(&sm.id) {
                let size = sm.size.max(sm.offset + v.len()).div_ceil(page) * page;
                let at = space
                    .alloc(size)
                    .ok_or("no free address range for a shared memory object")?;
                shm_temp.insert(sm.id, (at, size));
            }
        }
    }
    let mut huge_temp = Vec::with_capacity(huge.len());
    for &len in huge {
        huge_temp.push(
            space
                .alloc(len)
                .ok_or("no free address range for a temporary huge-page area")?,
        );
    }
    Ok(Layout {
        tramp,
        tramp_len,
        unmap,
        moves,
        shm_temp,
        huge_temp,
    })
}

/// Size of a transparent huge page (x86_64 PMD).
pub const HUGE: u64 = 2 << 20;
/// At most this many huge-page fill areas (each costs a few injected calls).
const MAX_HUGE_FILLS: usize = 64;

/// /sys/kernel/mm/transparent_hugepage/enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThpMode {
    Always,
    Madvise,
    Never,
}

impl ThpMode {
    /// Parse "always [madvise] never".
    pub fn parse(s: &str) -> ThpMode {
        match s.split('[').nth(1).and_then(|r| r.split(']').next()) {
            Some("always") => ThpMode::Always,
            Some("madvise") => ThpMode::Madvise,
            _ => ThpMode::Never,
        }
    }
}

/// A range of 2 MiB blocks of an anonymous mapping whose saved pages are
/// written into a temporary MADV_HUGEPAGE area (faulted in as huge pages,
/// 512 times fewer faults) and then moved into the mapping with
/// UFFDIO_MOVE, which moves whole huge pages and leaves the mapping's own
/// flags as saved (no VM_HUGEPAGE for khugepaged to act on later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugeFill {
    /// Index into MemPlan::steps of the mapping.
    pub step: usize,
    /// 2 MiB-aligned range inside it.
    pub start: u64,
    pub len: u64,
}

/// Where huge pages pay: with THP in madvise mode (in "always" mode the
/// mapping gets them anyway, in "never" mode not at all), private
/// anonymous mappings that do not say otherwise (no MADV_HUGEPAGE: it is
/// applied to the mapping itself and they fill directly; no
/// MADV_NOHUGEPAGE or KSM; no THP-disabled process; no stack), in whole
/// 2 MiB blocks with saved data that the saved runs cover at least half of
/// (so huge pages do not make a sparse mapping use much more memory).
pub fn plan_huge_fills(plan: &MemPlan, proc: &Process, page: u64, mode: ThpMode) -> Vec<HugeFill> {
    let mut out = Vec::new();
    if mode != ThpMode::Madvise || proc.thp_disabled {
        return out;
    }
    // Bytes per block: (data written, covered by any run).
    let mut blocks: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut add = |s: u64, e: u64, data: bool| {
        let mut a = s;
        while a < e {
            let b = a & !(HUGE - 1);
            let n = e.min(b + HUGE) - a;
            let v = blocks.entry(b).or_default();
            if data {
                v.0 += n;
            }
            v.1 += n;
            a += n;
        }
    };
    for w in plan.writes.iter().filter(|w| !w.zero) {
        add(w.addr, w.addr + w.len, true);
    }
    for r in proc.memory.iter().filter(|r| r.kind == RunKind::Zero) {
        let (s, e) = run_range(r, page);
        add(s, e, false);
    }
    for (i, st) in plan.steps.iter().enumerate() {
        let eligible = st.backing == Backing::Anon
            && !st.shared
            && !st.grows_down
            && st.map_prot & PROT_WRITE != 0
            && !st.advice.iter().any(|&a| {
                matches!(
                    a,
                    libc::MADV_HUGEPAGE | libc::MADV_NOHUGEPAGE | libc::MADV_MERGEABLE
                )
            });
        if !eligible {
            continue;
        }
        let first = (st.start + HUGE - 1) & !(HUGE - 1);
        let end = (st.start + st.len) & !(HUGE - 1);
        // Runs of dense blocks, looking only at blocks that have pages.
        let mut cur: Option<(u64, u64)> = None;
        for (&b, &(data, covered)) in blocks.range(first..end.max(first)) {
            let dense = data > 0 && covered * 2 >= HUGE;
            cur = match cur {
                Some((s0, e0)) if dense && e0 == b => Some((s0, b + HUGE)),
                prev => {
                    if let Some((s0, e0)) = prev {
                        out.push(HugeFill {
                            step: i,
                            start: s0,
                            len: e0 - s0,
                        });
                    }
                    dense.then_some((b, b + HUGE))
                }
            };
        }
        if let Some((s0, e0)) = cur {
            out.push(HugeFill {
                step: i,
                start: s0,
                len: e0 - s0,
            });
        }
    }
    out.truncate(MAX_HUGE_FILLS);
    out
}

/// How one mapping is made.
#[derive(Debug, Clone, PartialEq)]
pub enum Backing {
    /// Private (or MAP_SHARED|MAP_ANONYMOUS handled as SharedAnon) anonymous memory.
    Anon,
    /// A file opened by path in the target (may be /proc/self/fd/N).
    File {
        path: CString,
        flags: i32,
        offset: u64,
    },
    /// A MAP_SHARED|MAP_ANONYMOUS object, duplicated from its temporary mapping.
    SharedAnon { id: u64, offset: u64 },
    /// A memfd no fd holds any more: created in the target.
    NewMemfd {
        id: u64,
        name: CString,
        size: u64,
        offset: u64,
    },
}

/// One mapping to create, in address order.
#[derive(Debug, Clone, PartialEq)]
pub struct MapStep {
    pub start: u64,
    pub len: u64,
    /// Final protection.
    pub prot: u32,
    /// Protection while pages are written (adds PROT_WRITE where needed).
    pub map_prot: u32,
    pub shared: bool,
    pub grows_down: bool,
    pub backing: Backing,
    /// madvise() advice values to apply.
    pub advice: Vec<i32>,
    /// prctl(PR_SET_VMA_ANON_NAME) for `[anon:NAME]` mappings.
    pub anon_name: Option<CString>,
    /// For messages: "vma 7f..-7f.. /usr/lib/libc.so.6".
    pub what: String,
}

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

#[derive(Debug, Default)]
pub struct MemPlan {
    pub steps: Vec<MapStep>,
    pub writes: Vec<PageWrite>,
    /// Files mapped by path: (what, identity) for existence checks.
    pub files: Vec<(String, ckpt_image::FileIdentity)>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

fn advice_of(bits: u64) -> Vec<i32> {
    let mut v = Vec::new();
    for (bit, adv) in [
        (madvise::DONT_FORK, libc::MADV_DONTFORK),
        (madvise::DO_NOT_DUMP, libc::MADV_DONTDUMP),
        (madvise::WIPE_ON_FORK, 18),
        (madvise::HUGE_PAGE, libc::MADV_HUGEPAGE),
        (madvise::NO_HUGE_PAGE, libc::MADV_NOHUGEPAGE),
        (madvise::MERGEABLE, libc::MADV_MERGEABLE),
        (madvise::SEQUENTIAL, libc::MADV_SEQUENTIAL),
        (madvise::RANDOM, libc::MADV_RANDOM),
    ] {
        if bits & (1 << bit) != 0 {
            v.push(adv);
        }
    }
    v
}

fn vma_what(v: &Vma) -> String {
    let name = String::from_utf8_lossy(&v.name);
    if name.is_empty() {
        format!("vma {:x}-{:x}", v.start, v.end)
    } else {
        format!("vma {:x}-{:x} {name}", v.start, v.end)
    }
}

/// What happens to saved pages over a vma.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PageRule {
    /// Data runs are written, zero runs need nothing (fresh anonymous memory).
    DataOnly,
    /// Data and zero runs are written (private file mappings).
    All,
    /// Nothing is written (shared file mappings: the file holds the data; specials).
    Nothing,
}

/// Plan the mappings and page writes of `proc`.
pub fn plan_memory(image: &Image, proc: &Process, page: u64) -> MemPlan {
    let mut plan = MemPlan::default();
    // fds that hold a file the mappings may need: (dev, inode) -> fd, memfd id -> fd.
    let mut deleted_fd: BTreeMap<(u64, u64), i32> = BTreeMap::new();
    let mut memfd_fd: BTreeMap<u64, i32> = BTreeMap::new();
    for fd in &proc.fds {
        match image.file(fd.file).map(|f| &f.kind) {
            Some(FileKind::Regular(rf)) if rf.has_contents => {
                deleted_fd
                    .entry((rf.file.dev, rf.file.inode))
                    .or_insert(fd.fd);
            }
            Some(FileKind::MemFd(m)) => {
                memfd_fd.entry(m.id).or_insert(fd.fd);
            }
            _ => {}
        }
    }

    let mut rules = Vec::with_capacity(proc.vmas.len());
    for v in &proc.vmas {
        let what = vma_what(v);
        let writable_shared = v.shared && v.prot & PROT_WRITE != 0;
        let acc = if writable_shared {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let mut rule = PageRule::DataOnly;
        let backing = match &v.backing {
            VmaBacking::Anonymous => Some(Backing::Anon),
            VmaBacking::Special(SpecialMapping::Heap | SpecialMapping::Stack) => {
                Some(Backing::Anon)
            }
            VmaBacking::Special(SpecialMapping::Other) => {
                plan.errors.push(format!(
                    "{what}: an unknown special mapping cannot be restored"
                ));
                None
            }
            VmaBacking::Special(_) => {
                rule = PageRule::Nothing;
                None
            }
            VmaBacking::File(fm) => {
                if v.shared {
                    rule = PageRule::Nothing;
                } else {
                    rule = PageRule::All;
                }
                if fm.file.deleted {
                    match deleted_fd.get(&(fm.file.dev, fm.file.inode)) {
                        Some(fd) => Some(Backing::File {
                            path: CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL"),
                            flags: acc,
                            offset: fm.offset,
                        }),
                        None => {
                            plan.errors.push(format!(
                                "{what}: maps a deleted file whose contents are not in the image"
                            ));
                            None
                        }
                    }
                } else {
                    match CString::new(strip_deleted(&fm.file.path).to_vec()) {
                        Ok(path) => {
                            plan.files.push((what.clone(), fm.file.clone()));
                            Some(Backing::File {
                                path,
                                flags: acc,
                                offset: fm.offset,
                            })
                        }
                        Err(_) => {
                            plan.errors.push(format!("{what}: path holds a NUL byte"));
                            None
                        }
                    }
                }
            }
            VmaBacking::SharedMemory(sm) => match sm.kind {
                ShmKind::AnonymousShared => Some(Backing::SharedAnon {
                    id: sm.id,
                    offset: sm.offset,
                }),
                ShmKind::Memfd => match memfd_fd.get(&sm.id) {
                    Some(fd) => Some(Backing::File {
                        path: CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL"),
                        flags: libc::O_RDWR,
                        offset: sm.offset,
                    }),
                    None => {
                        let raw = strip_deleted(&sm.name);
                        let name = raw.strip_prefix(b"/memfd:").unwrap_or(raw);
                        Some(Backing::NewMemfd {
                            id: sm.id,
                            name: CString::new(name.to_vec())
                                .unwrap_or_else(|_| CString::new("ckpt").expect("no NUL")),
                            size: sm.size.max(sm.offset + v.len()),
                            offset: sm.offset,
                        })
                    }
                },
                ShmKind::PosixShm => {
                    let path = strip_deleted(&sm.name).to_vec();
                    if sm.name.ends_with(b" (deleted)") {
                        plan.warnings.push(format!(
                            "{what}: the POSIX shared memory file was deleted; restored as private shared memory"
                        ));
                        Some(Backing::SharedAnon {
                            id: sm.id,
                            offset: sm.offset,
                        })
                    } else {
                        rule = PageRule::Nothing;
                        plan.files.push((
                            what.clone(),
                            ckpt_image::FileIdentity {
                                path: path.clone(),
                                ..Default::default()
                            },
                        ));
                        Some(Backing::File {
                            path: CString::new(path).unwrap_or_default(),
                            flags: acc,
                            offset: sm.offset,
                        })
                    }
                }
                ShmKind::SysvShm => {
                    plan.errors.push(format!(
                        "{what}: System V shared memory cannot be restored by this version"
                    ));
                    None
                }
            },
        };
        if v.madvise & (1 << madvise::LOCKED) != 0 {
            plan.warnings
                .push(format!("{what}: was mlock()ed; restored unlocked"));
        }
        rules.push(rule);
        if let Some(backing) = backing {
            let anon_name = if matches!(backing, Backing::Anon) {
                v.name
                    .strip_prefix(b"[anon:")
                    .and_then(|n| n.strip_suffix(b"]"))
                    .and_then(|n| CString::new(n.to_vec()).ok())
            } else {
                None
            };
            let grows_down =
                v.grows_down || matches!(v.backing, VmaBacking::Special(SpecialMapping::Stack));
            plan.steps.push(MapStep {
                start: v.start,
                len: v.len(),
                prot: v.prot,
                map_prot: v.prot,
                shared: v.shared,
                grows_down,
                backing,
                advice: advice_of(v.madvise),
                anon_name,
                what,
            });
        }
    }

    // Page writes: each run cut at vma boundaries.
    let step_of: BTreeMap<u64, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.start, i))
        .collect();
    for (ri, run) in proc.memory.iter().enumerate() {
        let (rs, re) = run_range(run, page);
        let mut covered = 0u64;
        let first = proc.vmas.partition_point(|v| v.end <= rs);
        for (vi, v) in proc.vmas.iter().enumerate().skip(first) {
            if v.start >= re {
                break;
            }
            let (s, e) = (rs.max(v.start), re.min(v.end));
            covered += e - s;
            let zero = run.kind == RunKind::Zero;
            let write = match rules[vi] {
                PageRule::Nothing => false,
                PageRule::DataOnly => !zero,
                PageRule::All => true,
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
    plan
}

/// [start, end) of a run.
pub fn run_range(run: &MemoryRun, page: u64) -> (u64, u64) {
    (run.start, run.start + u64::from(run.pages) * page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::*;

    fn vma(start: u64, end: u64, prot: u32, backing: VmaBacking) -> Vma {
        Vma {
            start,
            end,
            prot,
            backing,
            ..Default::default()
        }
    }
    fn maps(entries: &[(u64, u64, &str)]) -> Vec<MapsEntry> {
        entries
            .iter()
            .map(|&(s, e, n)| MapsEntry {
                start: s,
                end: e,
                perms: "r--p".into(),
                name: n.into(),
            })
            .collect()
    }

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps(
            "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n\
             7ffd1e5f0000-7ffd1e5f4000 r--p 00000000 00:00 0                          [vvar]\n\
             7f0000000000-7f0000001000 r-xp 00001000 08:01 1234                       /usr/lib/x y.so\n\
             7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].name, "[heap]");
        assert_eq!(m[1].start, 0x7ffd1e5f0000);
        assert_eq!(m[2].name, "/usr/lib/x y.so");
        assert_eq!(m[3].name, "");
    }

    #[test]
    fn free_space_avoids_used_ranges_with_a_guard() {
        let mut f = FreeSpace::new([(LOW, LOW + 0x1000)]);
        let a = f.alloc(0x3000).unwrap();
        assert!(a >= LOW + 0x1000 + GUARD);
        assert_eq!(a % GUARD, 0);
        let b = f.alloc(0x1000).unwrap();
        assert!(b >= a + 0x3000 + GUARD);
    }

    fn image_with_vdso(base: u64) -> Process {
        Process {
            vmas: vec![
                vma(0x400000, 0x401000, 5, VmaBacking::Anonymous),
                vma(
                    base,
                    base + 0x4000,
                    1,
                    VmaBacking::Special(SpecialMapping::Vvar),
                ),
                vma(
                    base + 0x4000,
                    base + 0x5000,
                    1,
                    VmaBacking::Special(SpecialMapping::VvarVclock),
                ),
                vma(
                    base + 0x5000,
                    base + 0x7000,
                    5,
                    VmaBacking::Special(SpecialMapping::Vdso),
                ),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn vdso_moves_directly_or_through_a_temporary_place() {
        let p = image_with_vdso(0x7fff_0000_0000);
        // Far apart: three direct moves.
        let stub = maps(&[
            (0x7ffe_0000_0000, 0x7ffe_0000_4000, "[vvar]"),
            (0x7ffe_0000_4000, 0x7ffe_0000_5000, "[vvar_vclock]"),
            (0x7ffe_0000_5000, 0x7ffe_0000_7000, "[vdso]"),
            (0x5555_0000_0000, 0x5555_0001_0000, "/bin/stub"),
        ]);
        let l = plan_layout(&p, &stub, 0x10000, 4096, &[]).unwrap();
        assert_eq!(l.moves.len(), 3);
        assert_eq!(l.moves[2].to, 0x7fff_0000_5000);
        assert_eq!(l.tramp_len, 0x11000);
        // The stub's own binary is unmapped, the trampoline and vdso kept.
        assert!(l
            .unmap
            .iter()
            .any(|&(s, n)| s <= 0x5555_0000_0000 && s + n >= 0x5555_0001_0000));
        for &(s, n) in &l.unmap {
            assert!(s + n <= l.tramp || s >= l.tramp + l.tramp_len);
            assert!(s + n <= 0x7ffe_0000_0000 || s >= 0x7ffe_0000_7000);
        }
        // Overlapping: through a temporary place.
        let stub = maps(&[
            (0x7fff_0000_2000, 0x7fff_0000_6000, "[vvar]"),
            (0x7fff_0000_6000, 0x7fff_0000_7000, "[vvar_vclock]"),
            (0x7fff_0000_7000, 0x7fff_0000_9000, "[vdso]"),
        ]);
        let l = plan_layout(&p, &stub, 0x10000, 4096, &[]).unwrap();
        assert_eq!(l.moves.len(), 6);
        assert_eq!(l.moves[3].from, l.moves[0].to);
        assert_eq!(l.moves[3].to, 0x7fff_0000_0000);
        // Same place: nothing to move.
        let stub = maps(&[
            (0x7fff_0000_0000, 0x7fff_0000_4000, "[vvar]"),
            (0x7fff_0000_4000, 0x7fff_0000_5000, "[vvar_vclock]"),
            (0x7fff_0000_5000, 0x7fff_0000_7000, "[vdso]"),
        ]);
        assert!(plan_layout(&p, &stub, 0x10000, 4096, &[])
            .unwrap()
            .moves
            .is_empty());
    }

    #[test]
    fn vdso_layout_mismatch_is_explained() {
        let p = image_with_vdso(0x7fff_0000_0000);
        let stub = maps(&[
            (0x7ffe_0000_0000, 0x7ffe_0000_4000, "[vvar]"),
            (0x7ffe_0000_4000, 0x7ffe_0000_6000, "[vdso]"),
        ]);
        let e = plan_layout(&p, &stub, 0x10000, 4096, &[]).unwrap_err();
        assert!(e.contains("vdso layout differs"), "{e}");
        assert!(e.contains("[vvar_vclock] 4 KiB"), "{e}");
    }

    #[test]
    fn pages_are_written_where_the_backing_does_not_hold_them() {
        let file = |shared| {
            let mut v = vma(
                0x20000,
                0x24000,
                1,
                VmaBacking::File(FileMapping {
                    file: FileIdentity {
                        path: b"/lib/x.so".to_vec(),
                        ..Default::default()
                    },
                    offset: 0x1000,
                }),
            );
            v.shared = shared;
            v
        };
        let p = Process {
            vmas: vec![
                vma(0x10000, 0x14000, 3, VmaBacking::Anonymous),
                file(false),
                {
                    let mut v = file(true);
                    v.start = 0x30000;
                    v.end = 0x31000;
                    v
                },
            ],
            memory: vec![
                // data across two vmas? no: the first run covers anon pages 0-1
                MemoryRun {
                    start: 0x10000,
                    pages: 2,
                    kind: RunKind::Data,
                    frame: 0,
                    frame_offset: 0,
                },
                MemoryRun {
                    start: 0x12000,
                    pages: 2,
                    kind: RunKind::Zero,
                    frame: 0,
                    frame_offset: 0,
                },
                MemoryRun {
                    start: 0x20000,
                    pages: 1,
                    kind: RunKind::Zero,
                    frame: 0,
                    frame_offset: 0,
                },
                MemoryRun {
                    start: 0x21000,
                    pages: 1,
                    kind: RunKind::Data,
                    frame: 0,
                    frame_offset: 0x2000,
                },
                MemoryRun {
                    start: 0x30000,
                    pages: 1,
                    kind: RunKind::Data,
                    frame: 0,
                    frame_offset: 0x3000,
                },
            ],
            ..Default::default()
        };
        let plan = plan_memory(&Image::default(), &p, 4096);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let w: Vec<(u64, u64, bool)> = plan
            .writes
            .iter()
            .map(|w| (w.addr, w.len, w.zero))
            .collect();
        assert_eq!(
            w,
            vec![
                (0x10000, 0x2000, false),
                (0x20000, 0x1000, true),
                (0x21000, 0x1000, false)
            ]
        );
        assert_eq!(plan.steps[0].map_prot, 3);
        assert_eq!(plan.steps[1].map_prot, 1 | PROT_WRITE);
        assert_eq!(plan.steps[1].prot, 1);
        assert_eq!(plan.steps[2].map_prot, 1);
        match &plan.steps[1].backing {
            Backing::File {
                path,
                flags,
                offset,
            } => {
                assert_eq!(path.as_bytes(), b"/lib/x.so");
                assert_eq!(*flags, libc::O_RDONLY);
                assert_eq!(*offset, 0x1000);
            }
            b => panic!("{b:?}"),
        }
    }

    #[test]
    fn runs_outside_vmas_and_sysv_shm_are_errors() {
        let p = Process {
            vmas: vec![vma(
                0x10000,
                0x11000,
                3,
                VmaBacking::SharedMemory(SharedMemory {
                    kind: ShmKind::SysvShm,
                    ..Default::default()
                }),
            )],
            memory: vec![MemoryRun {
                start: 0x50000,
                pages: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = plan_memory(&Image::default(), &p, 4096);
        assert_eq!(plan.errors.len(), 2, "{:?}", plan.errors);
        assert!(plan.errors[0].contains("System V"));
        assert!(plan.errors[1].contains("50000-51000"));
    }

    #[test]
    fn huge_fills_cover_dense_aligned_blocks_of_plain_anonymous_memory() {
        let run = |start: u64, pages: u32, kind: RunKind| MemoryRun {
            start,
            pages,
            kind,
            frame: 0,
            frame_offset: 0,
        };
        let mut p = Process {
            // Unaligned start: the first whole block is at 0x200000.
            vmas: vec![vma(0x1ff000, 0xa00000, 3, VmaBacking::Anonymous)],
            memory: vec![
                run(0x1ff000, 0x401, RunKind::Data), // 0x1ff000..0x600000
                run(0x600000, 0x100, RunKind::Zero), // half of block 0x600000
                run(0x700000, 0x100, RunKind::Data), // and its other half
                run(0x800000, 1, RunKind::Data),     // one page: sparse
            ],
            ..Default::default()
        };
        let img = Image::default();
        let plan = plan_memory(&img, &p, 4096);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let fills = plan_huge_fills(&plan, &p, 4096, ThpMode::Madvise);
        assert_eq!(
            fills,
            vec![HugeFill {
                step: 0,
                start: 0x200000,
                len: 0x600000
            }]
        );
        assert!(plan_huge_fills(&plan, &p, 4096, ThpMode::Always).is_empty());
        assert!(plan_huge_fills(&plan, &p, 4096, ThpMode::Never).is_empty());
        p.vmas[0].madvise = 1 << madvise::NO_HUGE_PAGE;
        let plan = plan_memory(&img, &p, 4096);
        assert!(plan_huge_fills(&plan, &p, 4096, ThpMode::Madvise).is_empty());
        p.vmas[0].madvise = 0;
        p.thp_disabled = true;
        let plan = plan_memory(&img, &p, 4096);
        assert!(plan_huge_fills(&plan, &p, 4096, ThpMode::Madvise).is_empty());
    }

    #[test]
    fn thp_modes_parse() {
        assert_eq!(ThpMode::parse("always [madvise] never\n"), ThpMode::Madvise);
        assert_eq!(ThpMode::parse("[always] madvise never"), ThpMode::Always);
        assert_eq!(ThpMode::parse("always madvise [never]"), ThpMode::Never);
        assert_eq!(ThpMode::parse(""), ThpMode::Never);
    }
}
