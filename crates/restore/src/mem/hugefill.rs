//! Filling large private anonymous mappings through transparent huge
//! pages: where THP is in madvise mode, dense 2 MiB blocks are written into
//! a temporary MADV_HUGEPAGE area (one fault per 2 MiB instead of 512) and
//! their pages then moved into the mapping with UFFDIO_MOVE (Linux 6.8), so
//! that the mapping keeps exactly its saved flags. Off by default where
//! free huge pages are reported to a hypervisor (see [`huge_fill_mode`]).

use super::layout::Layout;
use super::pages::Redirect;
use super::uffd::{
    remote_userfaultfd, UFFDIO_MOVE, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, UFFDIO_REGISTER,
    UFFDIO_REGISTER_MODE_MISSING, UFFDIO_UNREGISTER, UFFD_FEATURE_MOVE,
};
use super::vmas::{Backing, MapStep};
use super::{run_range, MemPlan};
use crate::error::{Error, Result};
use crate::remote::{u64s, Remote};
use ckpt_image::{Process, RunKind, PROT_WRITE};
use std::collections::BTreeMap;

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
    /// Parse "always \[madvise\] never".
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

/// The THP mode huge-page fills are planned for: the system's, unless
/// the option or CKPT_HUGE_FILL=0/1 says otherwise or free huge pages are
/// handed back to a hypervisor (virtio-balloon free page reporting of 2 MiB
/// blocks). Then a fresh huge page is backed by the host only as it is
/// cleared, one host fault per 4 KiB, which made huge-page fills 2-3 times
/// slower than 4 KiB faults on pages the dumped process just freed
/// (measured on such a VM); on bare metal they cut the fault cost by far.
pub(crate) fn huge_fill_mode(opt: Option<bool>) -> ThpMode {
    let sys = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|s| ThpMode::parse(&s))
        .unwrap_or(ThpMode::Never);
    let env = match std::env::var("CKPT_HUGE_FILL").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    };
    match opt.or(env) {
        Some(false) => return ThpMode::Never,
        Some(true) => return sys,
        None => {}
    }
    if sys == ThpMode::Madvise && free_huge_pages_reported() {
        return ThpMode::Never;
    }
    sys
}

/// Free page reporting to a hypervisor is on for blocks of 2 MiB or less.
fn free_huge_pages_reported() -> bool {
    const VIRTIO_BALLOON_F_REPORTING: usize = 5;
    let order =
        std::fs::read_to_string("/sys/module/page_reporting/parameters/page_reporting_order")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
    match order {
        Some(o) if o <= 9 => {}
        _ => return false,
    }
    let Ok(dir) = std::fs::read_dir("/sys/bus/virtio/drivers/virtio_balloon") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("features"))
            .is_ok_and(|f| f.as_bytes().get(VIRTIO_BALLOON_F_REPORTING) == Some(&b'1'))
    })
}

/// Temporary huge-page areas for the `huge` fills, and a userfaultfd
/// able to UFFDIO_MOVE their pages into place afterwards. Without one
/// (an older kernel, no permission) the pages are written directly.
pub(crate) fn huge_setup(
    main: &mut Remote,
    steps: &[MapStep],
    l: &Layout,
    huge: &[HugeFill],
    scratch: u64,
) -> Result<(Vec<Redirect>, Option<u64>)> {
    if huge.is_empty() {
        return Ok((Vec::new(), None));
    }
    let Some((fd, api_ok)) = remote_userfaultfd(main, scratch, UFFD_FEATURE_MOVE)? else {
        return Ok((Vec::new(), None));
    };
    let mut made = Vec::new();
    let mut ok = api_ok;
    for (h, &tmp) in huge.iter().zip(&l.huge_temp) {
        if !ok {
            break;
        }
        let s = &steps[h.step];
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        let got = main.raw(
            "mmap of a huge-page fill area",
            libc::SYS_mmap,
            &[tmp, h.len, u64::from(s.map_prot), flags, u64::MAX, 0],
        )?;
        if got as u64 != tmp {
            ok = false;
            break;
        }
        made.push((tmp, h.len));
        ok = main.raw(
            "madvise(MADV_HUGEPAGE) of a fill area",
            libc::SYS_madvise,
            &[tmp, h.len, libc::MADV_HUGEPAGE as u64],
        )? == 0;
    }
    if !ok {
        for (a, n) in made {
            main.call("munmap of a fill area", libc::SYS_munmap, &[a, n])?;
        }
        main.call("close", libc::SYS_close, &[fd])?;
        return Ok((Vec::new(), None));
    }
    let mut redirects: Vec<Redirect> = huge
        .iter()
        .zip(&l.huge_temp)
        .map(|(h, &to)| Redirect {
            start: h.start,
            end: h.start + h.len,
            to,
        })
        .collect();
    redirects.sort_by_key(|r| r.start);
    tracing::debug!(areas = huge.len(), "pages filled through huge-page areas");
    Ok((redirects, Some(fd)))
}

/// Move the filled huge-page areas into their mappings (registered with
/// the userfaultfd only meanwhile: the mappings keep their flags).
pub(crate) fn huge_finish(
    main: &mut Remote,
    steps: &[MapStep],
    l: &Layout,
    huge: &[HugeFill],
    fd: u64,
    scratch: u64,
) -> Result<()> {
    let mut used: Vec<usize> = huge.iter().map(|h| h.step).collect();
    used.dedup();
    for &i in &used {
        let s = &steps[i];
        main.write(
            scratch,
            &u64s(&[s.start, s.len, UFFDIO_REGISTER_MODE_MISSING, 0]),
        )?;
        main.call(
            &format!("ioctl(UFFDIO_REGISTER) of {}", s.what),
            libc::SYS_ioctl,
            &[fd, UFFDIO_REGISTER, scratch],
        )?;
    }
    for (h, &tmp) in huge.iter().zip(&l.huge_temp) {
        main.write(
            scratch,
            &u64s(&[h.start, tmp, h.len, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, 0]),
        )?;
        let r = main.raw(
            "ioctl(UFFDIO_MOVE)",
            libc::SYS_ioctl,
            &[fd, UFFDIO_MOVE, scratch],
        )?;
        let moved = i64::from_ne_bytes(main.read(scratch + 32, 8)?.try_into().expect("8 bytes"));
        if r != 0 || moved != h.len as i64 {
            return Err(Error::Io {
                context: format!(
                    "thread {}: ioctl(UFFDIO_MOVE) of {:#x}..{:#x} ({} of {} bytes moved)",
                    main.tid,
                    h.start,
                    h.start + h.len,
                    moved.max(0),
                    h.len
                ),
                error: std::io::Error::from_raw_os_error(if r < 0 { -r as i32 } else { libc::EIO }),
            });
        }
        main.call("munmap of a fill area", libc::SYS_munmap, &[tmp, h.len])?;
    }
    for &i in &used {
        let s = &steps[i];
        main.write(scratch, &u64s(&[s.start, s.len]))?;
        main.call(
            &format!("ioctl(UFFDIO_UNREGISTER) of {}", s.what),
            libc::SYS_ioctl,
            &[fd, UFFDIO_UNREGISTER, scratch],
        )?;
    }
    main.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan_memory;
    use super::super::tests::vma;
    use super::*;
    use ckpt_image::*;

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
