//! Memory: the address space is planned here (pure: which mappings to
//! make, which pages to write, where the temporary areas go) and built by
//! system calls injected into the stub: the stub's memory is replaced by
//! the trampoline and the kernel's vdso moved (layout.rs), the mappings are
//! made (vmas.rs), the saved pages written (pages.rs) with UFFDIO_COPY
//! (uffd.rs) or through huge pages (hugefill.rs), then the final
//! protections set. Private memory a child still shared copy-on-write with
//! its parent is premapped and filled by the restorer before the stubs are
//! forked, and moved into place by each process sharing it (cow.rs).

pub(crate) mod aio;
pub(crate) mod chain;
pub(crate) mod cow;
pub(crate) mod hugefill;
pub(crate) mod hugetlb;
pub(crate) mod layout;
pub(crate) mod lazy;
pub(crate) mod pages;
pub(crate) mod uffd;
pub(crate) mod vmas;

pub use pages::PageWrite;
pub use vmas::{Backing, MapStep, RecreatedFile};

use crate::fds::{self, KeepReq};
use ckpt_image::{FileKind, Image, MemoryRun, Process, ShmKind, VmaBacking};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;

/// The mappings and page writes of a process.
#[derive(Debug, Clone, Default)]
pub struct MemPlan {
    pub steps: Vec<MapStep>,
    pub writes: Vec<PageWrite>,
    /// Deleted files made again for their mappings.
    pub recreate: Vec<RecreatedFile>,
    /// Guard regions (MADV_GUARD_INSTALL) to install: [start, end).
    pub guards: Vec<(u64, u64)>,
    /// Files mapped by path: (what, identity) for existence checks.
    pub files: Vec<(String, ckpt_image::FileIdentity)>,
    /// The paths of those mapped private somewhere (their pages that are
    /// not in the image come from the file: it must be the saved one).
    pub private_files: std::collections::BTreeSet<Vec<u8>>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Plan the mappings and page writes of `proc`.
pub fn plan_memory(image: &Image, proc: &Process, page: u64) -> MemPlan {
    plan_memory_shared(image, proc, page, &BTreeMap::new())
}

/// [`plan_memory`], the memory objects several processes map being the
/// fds `shared` gives (shared memory id -> fd number, kept open by the
/// stubs): each process maps that one object; its pages are written by the
/// process whose runs hold them (the first to map it when it was saved).
pub fn plan_memory_shared(
    image: &Image,
    proc: &Process,
    page: u64,
    shared: &BTreeMap<u64, i32>,
) -> MemPlan {
    let mut plan = MemPlan::default();
    let rules = vmas::plan_vmas(image, proc, shared, &mut plan);
    pages::plan_writes(proc, page, &rules, &mut plan);
    plan
}

/// The memory objects that must be one object for several processes of
/// the image (shared anonymous memory and memfds mapped by more than one,
/// a memfd mapped by a process that has no fd of it while another has),
/// for the stubs to make or keep ([`crate::fds::FdPlan::keep`]).
pub fn shared_objects(image: &Image) -> Vec<KeepReq> {
    // id -> (kind, name, size, pids mapping it)
    let mut objs: BTreeMap<u64, (ShmKind, Vec<u8>, u64, BTreeSet<i32>)> = BTreeMap::new();
    // Shared hugetlb anonymous memory, always kept (one object however
    // many map it): id -> page size.
    let mut huge: BTreeMap<u64, u64> = BTreeMap::new();
    for p in &image.processes {
        for v in &p.vmas {
            let VmaBacking::SharedMemory(sm) = &v.backing else {
                continue;
            };
            let unlinked_posix = sm.kind == ShmKind::PosixShm && sm.name.ends_with(b" (deleted)");
            if !v.shared
                || !(matches!(sm.kind, ShmKind::AnonymousShared | ShmKind::Memfd) || unlinked_posix)
            {
                continue;
            }
            let e = objs
                .entry(sm.id)
                .or_insert_with(|| (sm.kind, sm.name.clone(), 0, BTreeSet::new()));
            e.2 = e.2.max(sm.size).max(sm.offset + v.len());
            e.3.insert(p.pid);
            if sm.kind == ShmKind::AnonymousShared && v.huge_page_size != 0 {
                huge.insert(sm.id, v.huge_page_size);
            }
        }
    }
    // Memfds held by an fd: (file id, holder pids).
    let mut held: BTreeMap<u64, (u32, BTreeSet<i32>)> = BTreeMap::new();
    for p in &image.processes {
        for fd in &p.fds {
            if let Some(FileKind::MemFd(m)) = image.file(fd.file).map(|f| &f.kind) {
                let e = held
                    .entry(m.id)
                    .or_insert_with(|| (fd.file, BTreeSet::new()));
                e.1.insert(p.pid);
            }
        }
    }
    let mut out = Vec::new();
    for (id, (kind, name, size, pids)) in objs {
        match (kind, held.get(&id)) {
            (ShmKind::Memfd, Some((file, holders))) => {
                if !pids.is_subset(holders) {
                    out.push(KeepReq::File { file: *file, id });
                }
            }
            (ShmKind::AnonymousShared, _) if huge.contains_key(&id) => {
                out.push(KeepReq::SharedAnon {
                    id,
                    size,
                    huge: huge[&id],
                });
            }
            _ if pids.len() < 2 => {}
            (ShmKind::Memfd, None) => {
                let raw = fds::strip_deleted(&name);
                let n = raw.strip_prefix(b"/memfd:").unwrap_or(raw);
                out.push(KeepReq::NewMemfd {
                    id,
                    name: CString::new(n.to_vec()).unwrap_or_else(|_| c"ckpt".to_owned()),
                    size,
                });
            }
            _ => out.push(KeepReq::SharedAnon { id, size, huge: 0 }),
        }
    }
    out
}

/// [start, end) of a run.
pub fn run_range(run: &MemoryRun, page: u64) -> (u64, u64) {
    (run.start, run.start + u64::from(run.pages) * page)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ckpt_image::*;

    pub(crate) fn vma(start: u64, end: u64, prot: u32, backing: VmaBacking) -> Vma {
        Vma {
            start,
            end,
            prot,
            backing,
            ..Default::default()
        }
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
                    ..Default::default()
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
    fn runs_outside_vmas_and_unknown_sysv_shm_are_errors() {
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
        assert!(plan.errors[0].contains("SysV"), "{:?}", plan.errors);
        assert!(plan.errors[1].contains("50000-51000"));
    }
}
