//! The address space of the stub before the image's mappings are made:
//! where the trampoline (and its scratch pages) and the temporary areas go,
//! how the kernel's vdso is moved to the saved address (planned here,
//! pure), and the injected calls that do it.

use crate::error::{Error, SysContext};
use crate::remote::{Allow, Remote};
use ckpt_image::{Process, ShmKind, SpecialMapping, Vma, VmaBacking, PROT_READ, PROT_WRITE};
use ckpt_sys::inject::{find_syscall_insn, TRAMPOLINE_CODE};
use std::collections::BTreeMap;

const PROT_EXEC: u64 = 4;
pub(crate) const MREMAP_MAYMOVE: u64 = 1;
pub(crate) const MREMAP_FIXED: u64 = 2;

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
    /// Sorted by start.
    used: Vec<(u64, u64)>,
    /// Where the last range was found: the next search starts there (the
    /// temporary areas are placed one after the other), then from the
    /// bottom when nothing fits above it.
    hint: u64,
}

impl FreeSpace {
    pub fn new(used: impl IntoIterator<Item = (u64, u64)>) -> FreeSpace {
        let mut v: Vec<(u64, u64)> = used.into_iter().collect();
        v.sort();
        // Overlapping ranges merged: ends then grow with starts.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match merged.last_mut() {
                Some(l) if a <= l.1 => l.1 = l.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        FreeSpace {
            used: merged,
            hint: 0,
        }
    }

    /// The first 2 MiB-aligned range of `len` bytes at least GUARD away
    /// from everything in use, at or above `lo`.
    fn find(&self, lo: u64, len: u64) -> Option<(u64, usize)> {
        let align = |a: u64| a.checked_add(GUARD - 1).map(|x| x & !(GUARD - 1));
        let mut cand = align(lo)?;
        // The ranges that end (with their guard) after the candidate.
        let mut j = self
            .used
            .partition_point(|&(_, e)| e.saturating_add(GUARD) <= cand);
        loop {
            let end = cand.checked_add(len)?.checked_add(GUARD)?;
            if end > TASK_SIZE {
                return None;
            }
            match self.used.get(j) {
                Some(&(s, e)) if s < end => {
                    cand = align(cand.max(e.saturating_add(GUARD)))?;
                    j += 1;
                }
                _ => return Some((cand, j)),
            }
        }
    }

    /// A 2 MiB-aligned range of `len` bytes at least GUARD away from
    /// everything in use; it is in use from now on.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let mut starts = vec![self.hint.max(LOW), LOW, 1 << 24];
        starts.dedup();
        for lo in starts {
            if let Some((at, j)) = self.find(lo, len) {
                self.used.insert(j, (at, at + len));
                self.hint = at + len;
                return Some(at);
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
    /// Temporary address of each SysV shared memory segment mapped (by
    /// id), and its size: the segment is attached there, and its mappings
    /// duplicated from there.
    pub sysv_temp: BTreeMap<u64, (u64, u64)>,
    /// Temporary address (2 MiB-aligned) of each huge-page fill area, in
    /// the order of the `huge` lengths given to [`plan_layout`].
    pub huge_temp: Vec<u64>,
    /// Address of the premap area the stub inherited (mem/cow.rs; 0: none).
    pub premap: u64,
}

/// The premap area (mem/cow.rs) in a stub: where it is, and the slots
/// this process keeps (absolute ranges); the rest is unmapped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Premap {
    pub base: u64,
    pub size: u64,
    pub kept: Vec<(u64, u64)>,
}

impl Layout {
    /// Where the batch code is (after `syscall; int3` in the trampoline page).
    pub fn batch_ip(&self) -> u64 {
        self.tramp + 16
    }
}

/// Pair the image's vdso-like mappings with the stub's (the same kernel's
/// as ours): same names, sizes and relative layout, or an error saying how
/// they differ. The stub's that the image lacks (the process unmapped
/// them) are left unpaired: the restore unmaps them.
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
    // Each of the image's is one of ours by name, in the same order; ours
    // that the process had unmapped are not paired (the stub unmaps them).
    let mut out: Vec<(&MapsEntry, &Vma)> = Vec::new();
    let mut rest = here.iter();
    for v in &img {
        let name = match &v.backing {
            VmaBacking::Special(k) => special_name(*k).unwrap_or(""),
            _ => "",
        };
        let Some(h) = rest.find(|h| h.name == name) else {
            return Err(mismatch());
        };
        let same_place = out.first().is_none_or(|(h0, v0)| {
            h.start.wrapping_sub(h0.start) == v.start.wrapping_sub(v0.start)
        });
        if h.end - h.start != v.len() || !same_place {
            return Err(mismatch());
        }
        out.push((*h, *v));
    }
    Ok(out)
}

/// Plan the stub's address space; `huge` are the lengths of the
/// temporary huge-page fill areas to place (see [`super::hugefill::plan_huge_fills`]).
pub fn plan_layout(
    proc: &Process,
    stub: &[MapsEntry],
    scratch_len: u64,
    page: u64,
    huge: &[u64],
) -> Result<Layout, String> {
    plan_layout_premap(proc, stub, scratch_len, page, huge, &Premap::default())
}

/// [`plan_layout`] in a stub holding the premap area `premap`: nothing
/// temporary goes there, and its kept slots are not unmapped.
pub fn plan_layout_premap(
    proc: &Process,
    stub: &[MapsEntry],
    scratch_len: u64,
    page: u64,
    huge: &[u64],
    premap: &Premap,
) -> Result<Layout, String> {
    let pairs = pair_vdso(&proc.vmas, stub)?;
    let area = (premap.size > 0).then_some((premap.base, premap.base + premap.size));
    let mut space = FreeSpace::new(
        proc.vmas
            .iter()
            .map(|v| (v.start, v.end))
            .chain(
                stub.iter()
                    .filter(|m| is_vdso_like(&m.name))
                    .map(|m| (m.start, m.end)),
            )
            .chain(area),
    );
    let tramp_len = page + scratch_len.div_ceil(page) * page;
    let tramp = space
        .alloc(tramp_len)
        .ok_or("no free address range for the trampoline")?;

    let mut keep: Vec<(u64, u64)> = vec![(tramp, tramp + tramp_len)];
    keep.extend(pairs.iter().map(|(h, _)| (h.start, h.end)));
    keep.extend(premap.kept.iter().copied());
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
    let mut sysv_temp = BTreeMap::new();
    for v in &proc.vmas {
        if let VmaBacking::SharedMemory(sm) = &v.backing {
            let temp = match sm.kind {
                ShmKind::AnonymousShared => &mut shm_temp,
                // A deleted POSIX shm object is made as shared anonymous
                // memory (see vmas.rs).
                ShmKind::PosixShm if sm.name.ends_with(b" (deleted)") => &mut shm_temp,
                ShmKind::SysvShm => &mut sysv_temp,
                _ => continue,
            };
            if let std::collections::btree_map::Entry::Vacant(e) = temp.entry(sm.id) {
                let size = sm.size.max(sm.offset + v.len()).div_ceil(page) * page;
                let at = space
                    .alloc(size)
                    .ok_or("no free address range for a shared memory object")?;
                e.insert((at, size));
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
        sysv_temp,
        huge_temp,
        premap: premap.base,
    })
}

/// The address of a `syscall` instruction in the stub's vdso, to inject
/// the first system calls through (before the trampoline exists).
pub(crate) fn syscall_ip(
    pid: i32,
    mem: &ckpt_sys::mm::ProcMem,
    stub: &[MapsEntry],
) -> crate::Result<u64> {
    let stub_err = |what: &str| Error::Stub {
        pid,
        what: what.into(),
    };
    let vdso = stub
        .iter()
        .find(|m| m.name == "[vdso]")
        .ok_or_else(|| stub_err("has no [vdso] to run system calls from"))?;
    let code = mem
        .read_vec(vdso.start, (vdso.end - vdso.start) as usize)
        .ctx(|| format!("pid {pid}: reading its vdso"))?;
    let at =
        find_syscall_insn(&code).ok_or_else(|| stub_err("no syscall instruction in the vdso"))?;
    Ok(vdso.start + at as u64)
}

/// Map the trampoline and switch injection to it, unmap the stub's
/// memory, move the vdso. `stub_rseq`: the arguments of the rseq call
/// that unregisters the stub's rseq area, if it has one.
/// `reports`: the first and last fd of the stub's report pipes, closed in
/// the first batch (a stub is built as soon as it says it is ready, which
/// may be before it closed them itself).
pub(crate) fn address_space(
    main: &mut Remote,
    l: &Layout,
    page: u64,
    stub_rseq: Option<[u64; 4]>,
    reports: (u64, u64),
) -> crate::Result<()> {
    let pid = main.tid;
    let stub_err = |what: String| Error::Stub { pid, what };
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
    let rw = u64::from(PROT_READ | PROT_WRITE);
    // Mapped read and execute, the code written through /proc/PID/mem
    // (which ignores protections); the scratch after the code page is
    // made writable by the first call of the first batch, which stores its
    // result there only after the call.
    let rx = u64::from(PROT_READ) | PROT_EXEC;
    let got = main.call(
        "mmap of the trampoline",
        libc::SYS_mmap,
        &[l.tramp, l.tramp_len, rx, flags, u64::MAX, 0],
    )?;
    if got != l.tramp {
        return Err(stub_err(format!(
            "trampoline mapped at {got:#x}, not {:#x}",
            l.tramp
        )));
    }
    main.write(l.tramp, &TRAMPOLINE_CODE)?;
    main.write(l.batch_ip(), &ckpt_sys::inject::BATCH_CODE)?;
    main.enable_batch(l.batch_ip(), l.tramp + page, l.tramp_len - page);
    main.inj.set_syscall_ip(l.tramp);
    // The rest in one round trip: the stub's rseq area goes with its
    // memory, so it is unregistered first; MREMAP_FIXED moves to its
    // address or fails.
    let mut b = main.batcher();
    b.push(
        main,
        "mprotect of the trampoline's scratch".into(),
        libc::SYS_mprotect,
        &[l.tramp + page, l.tramp_len - page, rw],
        Allow::Nothing,
    )?;
    b.push(
        main,
        "close_range of the stub's report pipes".into(),
        libc::SYS_close_range,
        &[reports.0, reports.1, 0],
        Allow::Nothing,
    )?;
    if let Some(r) = stub_rseq {
        b.push(
            main,
            "rseq(unregister) of the stub".into(),
            libc::SYS_rseq,
            &r,
            Allow::Nothing,
        )?;
    }
    for &(start, len) in &l.unmap {
        b.push(
            main,
            "munmap of the stub's memory".into(),
            libc::SYS_munmap,
            &[start, len],
            Allow::Nothing,
        )?;
    }
    for m in &l.moves {
        b.push(
            main,
            format!("mremap of {} to {:#x}", m.name, m.to),
            libc::SYS_mremap,
            &[m.from, m.len, m.len, MREMAP_MAYMOVE | MREMAP_FIXED, m.to],
            Allow::Nothing,
        )?;
    }
    b.flush(main)?;
    tracing::debug!(
        trampoline = format_args!("{:#x}", l.tramp),
        unmapped = l.unmap.len(),
        vdso_moves = l.moves.len(),
        "address space ready"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::vma;
    use super::*;

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

    /// A process that unmapped its vdso (zdtm vdso02): the stub's are not
    /// kept, so the restored process has none either.
    #[test]
    fn vdso_the_process_unmapped_is_unmapped() {
        let mut p = image_with_vdso(0x7fff_0000_0000);
        p.vmas
            .retain(|v| !matches!(v.backing, VmaBacking::Special(_)));
        let stub = maps(&[
            (0x7ffe_0000_0000, 0x7ffe_0000_4000, "[vvar]"),
            (0x7ffe_0000_4000, 0x7ffe_0000_5000, "[vvar_vclock]"),
            (0x7ffe_0000_5000, 0x7ffe_0000_7000, "[vdso]"),
        ]);
        let l = plan_layout(&p, &stub, 0x10000, 4096, &[]).unwrap();
        assert!(l.moves.is_empty());
        for m in &stub {
            assert!(
                l.unmap.iter().any(|&(s, n)| s <= m.start && m.end <= s + n),
                "{} is not unmapped: {:x?}",
                m.name,
                l.unmap
            );
        }
        // Only the vdso unmapped: the two others are kept and paired.
        let mut p = image_with_vdso(0x7fff_0000_0000);
        p.vmas
            .retain(|v| v.backing != VmaBacking::Special(SpecialMapping::Vdso));
        let pairs = pair_vdso(&p.vmas, &stub).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1].0.name, "[vvar_vclock]");
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
}
