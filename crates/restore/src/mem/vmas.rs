//! The mappings of the image: how each one is made (planned here, pure:
//! anonymous memory, a file by path or through an fd of the process, shared
//! anonymous memory, a memfd, a SysV segment) and the injected calls that
//! make them, with their advice and names; their final protections, guard
//! regions and locks (mlock, MLOCK_ONFAULT) are set once the pages are
//! written.

use super::layout::{Layout, MREMAP_FIXED, MREMAP_MAYMOVE};
use super::MemPlan;
use crate::error::{Error, Result};
use crate::fds::strip_deleted;
use crate::process::creds::with_rights;
use crate::remote::{Allow, Batcher, Remote};
use ckpt_image::{
    madvise, FileKind, FileMapping, Image, Process, SharedMemory, ShmKind, SpecialMapping, Vma,
    VmaBacking, PROT_READ, PROT_WRITE,
};
use ckpt_sys::creds::FsSwitch;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ffi::CString;

const PR_SET_VMA: u64 = 0x5356_4d41;
const MLOCK_ONFAULT: u32 = 1;
const MADV_GUARD_INSTALL: u64 = 102;

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
    /// A SysV shared memory segment (made again with its saved id, or
    /// still there, before the stub: process/sysv.rs), attached at a
    /// temporary address and duplicated from there.
    SysvShm { id: i32, offset: u64 },
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
    /// mlock2() flags once the pages are written: None (not locked),
    /// Some(0) (mlock), Some(MLOCK_ONFAULT).
    pub lock: Option<u32>,
    /// For messages: "vma 7f..-7f.. /usr/lib/libc.so.6".
    pub what: String,
}

/// What happens to saved pages over a vma.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PageRule {
    /// Data runs are written, zero runs need nothing (fresh anonymous memory).
    DataOnly,
    /// Data and zero runs are written (private file mappings).
    All,
    /// Nothing is written (shared file mappings: the file holds the data; specials).
    Nothing,
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

/// fds of the process that hold a file the mappings may need: a deleted
/// file with saved contents by (dev, inode), a memfd by id; and the fds
/// the stubs keep for memory objects several processes map, by id.
struct HeldFiles<'a> {
    deleted: BTreeMap<(u64, u64), i32>,
    memfds: BTreeMap<u64, i32>,
    shared: &'a BTreeMap<u64, i32>,
}

impl<'a> HeldFiles<'a> {
    fn of(image: &Image, proc: &Process, shared: &'a BTreeMap<u64, i32>) -> HeldFiles<'a> {
        let mut h = HeldFiles {
            deleted: BTreeMap::new(),
            memfds: BTreeMap::new(),
            shared,
        };
        for fd in &proc.fds {
            match image.file(fd.file).map(|f| &f.kind) {
                Some(FileKind::Regular(rf)) if rf.has_contents => {
                    h.deleted
                        .entry((rf.file.dev, rf.file.inode))
                        .or_insert(fd.fd);
                }
                Some(FileKind::MemFd(m)) => {
                    h.memfds.entry(m.id).or_insert(fd.fd);
                }
                _ => {}
            }
        }
        h
    }
}

/// `/proc/self/fd/N`: a file the process itself holds at fd N.
fn own_fd_path(fd: i32) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

/// The mapping steps of `proc` (into `plan`), and what happens to the
/// saved pages over each of its vmas. `shared`: the fds of memory objects
/// several processes map (id -> fd).
pub(super) fn plan_vmas(
    image: &Image,
    proc: &Process,
    shared: &BTreeMap<u64, i32>,
    plan: &mut MemPlan,
) -> Vec<PageRule> {
    let held = HeldFiles::of(image, proc, shared);
    let mut rules = Vec::with_capacity(proc.vmas.len());
    for v in &proc.vmas {
        let what = vma_what(v);
        let (backing, rule) = backing_of(image, v, &what, &held, plan);
        let onfault = v.madvise & (1 << madvise::LOCK_ON_FAULT) != 0;
        let lock = (v.madvise & (1 << madvise::LOCKED) != 0).then_some(if onfault {
            MLOCK_ONFAULT
        } else {
            0
        });
        rules.push(rule);
        let Some(backing) = backing else {
            continue;
        };
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
            lock,
            what,
        });
    }
    rules
}

/// How vma `v` is made (None: it is not, the kernel's own or refused),
/// and what happens to its saved pages.
fn backing_of(
    image: &Image,
    v: &Vma,
    what: &str,
    held: &HeldFiles,
    plan: &mut MemPlan,
) -> (Option<Backing>, PageRule) {
    match &v.backing {
        VmaBacking::Anonymous => (Some(Backing::Anon), PageRule::DataOnly),
        VmaBacking::Special(SpecialMapping::Heap | SpecialMapping::Stack) => {
            (Some(Backing::Anon), PageRule::DataOnly)
        }
        VmaBacking::Special(SpecialMapping::Other) => {
            plan.errors.push(format!(
                "{what}: an unknown special mapping cannot be restored"
            ));
            (None, PageRule::DataOnly)
        }
        VmaBacking::Special(_) => (None, PageRule::Nothing),
        VmaBacking::File(fm) => {
            let rule = if v.shared {
                PageRule::Nothing
            } else {
                PageRule::All
            };
            (file_backing(v, fm, what, held, plan), rule)
        }
        VmaBacking::SharedMemory(sm) if sm.kind == ShmKind::SysvShm => {
            (sysv_backing(image, sm, what, plan), PageRule::Nothing)
        }
        VmaBacking::SharedMemory(sm) => shm_backing(v, sm, what, held, plan),
    }
}

/// Read-write for a writable shared mapping, else read-only.
fn access_of(v: &Vma) -> i32 {
    if v.shared && v.prot & PROT_WRITE != 0 {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    }
}

/// A file mapping: the file by path, or a deleted one through the fd of
/// the process that holds its saved contents.
fn file_backing(
    v: &Vma,
    fm: &FileMapping,
    what: &str,
    held: &HeldFiles,
    plan: &mut MemPlan,
) -> Option<Backing> {
    if fm.file.deleted {
        return match held.deleted.get(&(fm.file.dev, fm.file.inode)) {
            Some(&fd) => Some(Backing::File {
                path: own_fd_path(fd),
                flags: access_of(v),
                offset: fm.offset,
            }),
            None => {
                plan.errors.push(format!(
                    "{what}: maps a deleted file whose contents are not in the image"
                ));
                None
            }
        };
    }
    match CString::new(strip_deleted(&fm.file.path).to_vec()) {
        Ok(path) => {
            plan.files.push((what.to_string(), fm.file.clone()));
            Some(Backing::File {
                path,
                flags: access_of(v),
                offset: fm.offset,
            })
        }
        Err(_) => {
            plan.errors.push(format!("{what}: path holds a NUL byte"));
            None
        }
    }
}

/// Shared memory: anonymous, a memfd (through the fd of the process that
/// holds it, else made again), POSIX shm by path; System V is refused.
fn shm_backing(
    v: &Vma,
    sm: &SharedMemory,
    what: &str,
    held: &HeldFiles,
    plan: &mut MemPlan,
) -> (Option<Backing>, PageRule) {
    let anon = Backing::SharedAnon {
        id: sm.id,
        offset: sm.offset,
    };
    let through = |fd: i32| Backing::File {
        path: own_fd_path(fd),
        flags: libc::O_RDWR,
        offset: sm.offset,
    };
    let kept = held.shared.get(&sm.id).copied().filter(|_| v.shared);
    let backing = match sm.kind {
        ShmKind::AnonymousShared => match kept {
            Some(fd) => through(fd),
            None => anon,
        },
        ShmKind::Memfd => match held.memfds.get(&sm.id).copied().or(kept) {
            Some(fd) => through(fd),
            None => {
                let raw = strip_deleted(&sm.name);
                let name = raw.strip_prefix(b"/memfd:").unwrap_or(raw);
                Backing::NewMemfd {
                    id: sm.id,
                    name: CString::new(name.to_vec())
                        .unwrap_or_else(|_| CString::new("ckpt").expect("no NUL")),
                    size: sm.size.max(sm.offset + v.len()),
                    offset: sm.offset,
                }
            }
        },
        ShmKind::PosixShm if sm.name.ends_with(b" (deleted)") => match kept.or_else(|| {
            // Held open by the process too: its fd, a deleted file made
            // again from its saved contents, is the object.
            held.deleted
                .iter()
                .find(|((_, ino), _)| *ino == sm.id)
                .map(|(_, &fd)| fd)
        }) {
            // Mapped by several processes: one object for all of them.
            Some(fd) => through(fd),
            None => {
                plan.warnings.push(format!(
                    "{what}: the POSIX shared memory file was deleted; restored as private shared memory"
                ));
                anon
            }
        },
        ShmKind::PosixShm => {
            let path = strip_deleted(&sm.name).to_vec();
            plan.files.push((
                what.to_string(),
                ckpt_image::FileIdentity {
                    path: path.clone(),
                    ..Default::default()
                },
            ));
            let b = Backing::File {
                path: CString::new(path).unwrap_or_default(),
                flags: access_of(v),
                offset: sm.offset,
            };
            return (Some(b), PageRule::Nothing);
        }
        ShmKind::SysvShm => {
            plan.errors.push(format!(
                "{what}: SysV shared memory planned as another kind"
            ));
            return (None, PageRule::DataOnly);
        }
    };
    (Some(backing), PageRule::DataOnly)
}

/// A SysV segment: the image must hold it (its contents, its id).
fn sysv_backing(
    image: &Image,
    sm: &SharedMemory,
    what: &str,
    plan: &mut MemPlan,
) -> Option<Backing> {
    let id = i32::try_from(sm.id).ok();
    match id.filter(|id| image.sysv_shm.iter().any(|s| s.perm.id == *id)) {
        Some(id) => Some(Backing::SysvShm {
            id,
            offset: sm.offset,
        }),
        None => {
            plan.errors.push(format!(
                "{what}: maps SysV shared memory segment {} that the image does not hold",
                sm.id
            ));
            None
        }
    }
}

/// Objects made while mapping, closed or unmapped at the end.
#[derive(Default)]
struct Made {
    /// The mapped files by (path, flags): their fd in the target.
    files: BTreeMap<(Vec<u8>, i32), u64>,
    /// Memfds made again, by id: their fd in the target.
    memfds: BTreeMap<u64, u64>,
    /// Shared anonymous objects, by id: their temporary address.
    shm: BTreeMap<u64, u64>,
    /// SysV segments attached, by id: their temporary address.
    sysv: BTreeMap<u64, u64>,
}

/// Make every mapping of the image, writable where pages will be written.
pub(crate) fn map_all(
    main: &mut Remote,
    steps: &[MapStep],
    l: &Layout,
    scratch: u64,
    as_saved: Option<&FsSwitch>,
) -> Result<()> {
    let mut made = Made {
        files: open_files(main, steps, scratch, as_saved)?,
        ..Default::default()
    };
    // The calls go in batches (remote.rs): one round trip for hundreds.
    let mut b = main.batcher();
    for s in steps {
        map_one(main, &mut b, s, l, scratch, &mut made)?;
        advise(main, &mut b, s)?;
    }
    for fd in made.files.into_values().chain(made.memfds.into_values()) {
        b.push(main, "close".into(), libc::SYS_close, &[fd], Allow::Nothing)?;
    }
    for (id, tmp) in made.shm {
        b.push(
            main,
            "munmap of a temporary shared mapping".into(),
            libc::SYS_munmap,
            &[tmp, l.shm_temp[&id].1],
            Allow::Nothing,
        )?;
    }
    for (id, tmp) in made.sysv {
        b.push(
            main,
            "munmap of a temporary SysV attach".into(),
            libc::SYS_munmap,
            &[tmp, l.sysv_temp[&id].1],
            Allow::Nothing,
        )?;
    }
    b.flush(main)?;
    tracing::debug!(mappings = steps.len(), "mappings made");
    Ok(())
}

/// The mapped files, each (path, flags) opened once, all together: with
/// the saved user's rights where the restore takes them.
fn open_files(
    main: &mut Remote,
    steps: &[MapStep],
    scratch: u64,
    as_saved: Option<&FsSwitch>,
) -> Result<BTreeMap<(Vec<u8>, i32), u64>> {
    let mut files: BTreeMap<(Vec<u8>, i32), u64> = BTreeMap::new();
    if !steps
        .iter()
        .any(|s| matches!(s.backing, Backing::File { .. }))
    {
        return Ok(files);
    }
    with_rights(main, as_saved, scratch, |main| {
        for s in steps {
            let Backing::File { path, flags, .. } = &s.backing else {
                continue;
            };
            let key = (path.as_bytes().to_vec(), *flags);
            if files.contains_key(&key) {
                continue;
            }
            main.write_cstr(scratch, path.as_bytes())?;
            let fd = main.call(
                &format!("open of {} for {}", path.to_string_lossy(), s.what),
                libc::SYS_openat,
                &[
                    libc::AT_FDCWD as u64,
                    scratch,
                    (*flags | libc::O_CLOEXEC) as u64,
                ],
            )?;
            files.insert(key, fd);
        }
        Ok(())
    })?;
    Ok(files)
}

/// The mmap (or mremap) of one mapping.
fn map_one(
    main: &mut Remote,
    b: &mut Batcher,
    s: &MapStep,
    l: &Layout,
    scratch: u64,
    made: &mut Made,
) -> Result<()> {
    let prot = u64::from(s.map_prot);
    let share = if s.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    } as u64;
    let fixed = libc::MAP_FIXED as u64;
    let what = format!("mmap of {}", s.what);
    match &s.backing {
        Backing::Anon => {
            let mut flags = share | fixed | libc::MAP_ANONYMOUS as u64;
            if s.grows_down {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
            b.push(
                main,
                what,
                libc::SYS_mmap,
                &[s.start, s.len, prot, flags, u64::MAX, 0],
                Allow::Nothing,
            )?;
        }
        Backing::File {
            path,
            flags,
            offset,
        } => {
            let key = (path.as_bytes().to_vec(), *flags);
            let fd = *made.files.get(&key).ok_or_else(|| Error::Stub {
                pid: main.tid,
                what: format!("{}: its file was not opened", s.what),
            })?;
            b.push(
                main,
                what,
                libc::SYS_mmap,
                &[s.start, s.len, prot, share | fixed, fd, *offset],
                Allow::Nothing,
            )?;
        }
        Backing::SharedAnon { id, offset } => {
            map_shared_anon(main, b, s, l, (*id, *offset), made)?;
        }
        Backing::SysvShm { id, offset } => {
            // Direct calls: what came before first.
            b.flush(main)?;
            map_sysv(main, s, l, (*id, *offset), made)?;
        }
        Backing::NewMemfd {
            id,
            name,
            size,
            offset,
        } => {
            let fd = match made.memfds.get(id) {
                Some(&fd) => fd,
                None => {
                    // Its fd is needed now: what came before first.
                    b.flush(main)?;
                    let fd = new_memfd(main, s, name, *size, scratch)?;
                    made.memfds.insert(*id, fd);
                    fd
                }
            };
            b.push(
                main,
                what,
                libc::SYS_mmap,
                &[
                    s.start,
                    s.len,
                    prot,
                    libc::MAP_SHARED as u64 | fixed,
                    fd,
                    *offset,
                ],
                Allow::Nothing,
            )?;
        }
    }
    Ok(())
}

/// A shared anonymous mapping: its object is mapped once at a temporary
/// address, each of its mappings is a duplicate (mremap of size 0) of the
/// range at `offset` there.
fn map_shared_anon(
    main: &mut Remote,
    b: &mut Batcher,
    s: &MapStep,
    l: &Layout,
    (id, offset): (u64, u64),
    made: &mut Made,
) -> Result<()> {
    let (tmp, size) = *l.shm_temp.get(&id).ok_or_else(|| Error::Stub {
        pid: main.tid,
        what: format!("{}: no room was planned for shared memory {id}", s.what),
    })?;
    if let Entry::Vacant(e) = made.shm.entry(id) {
        let flags = (libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        b.push(
            main,
            format!("mmap of shared memory {id}"),
            libc::SYS_mmap,
            &[
                tmp,
                size,
                u64::from(PROT_READ | PROT_WRITE),
                flags,
                u64::MAX,
                0,
            ],
            Allow::Nothing,
        )?;
        e.insert(tmp);
    }
    b.push(
        main,
        format!("mmap of {}", s.what),
        libc::SYS_mremap,
        &[
            tmp + offset,
            0,
            s.len,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            s.start,
        ],
        Allow::Nothing,
    )?;
    b.push(
        main,
        format!("mprotect of {}", s.what),
        libc::SYS_mprotect,
        &[s.start, s.len, u64::from(s.map_prot)],
        Allow::Nothing,
    )
}

/// A SysV segment mapping: the segment is attached once at its temporary
/// address (shmat), each of its mappings is a duplicate (mremap of size
/// 0) of the range at `offset` there; the attach goes at the end. The
/// mappings keep the segment's attach count and its shmdt() address.
fn map_sysv(
    main: &mut Remote,
    s: &MapStep,
    l: &Layout,
    (id, offset): (i32, u64),
    made: &mut Made,
) -> Result<()> {
    let key = id as u64;
    let (tmp, _) = *l.sysv_temp.get(&key).ok_or_else(|| Error::Stub {
        pid: main.tid,
        what: format!("{}: no temporary place for SysV segment {id}", s.what),
    })?;
    if let Entry::Vacant(e) = made.sysv.entry(key) {
        main.call(
            &format!("shmat of SysV shared memory segment {id}"),
            libc::SYS_shmat,
            &[id as u64, tmp, 0],
        )?;
        e.insert(tmp);
    }
    main.call(
        &format!("mmap of {}", s.what),
        libc::SYS_mremap,
        &[
            tmp + offset,
            0,
            s.len,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            s.start,
        ],
    )?;
    main.call(
        &format!("mprotect of {}", s.what),
        libc::SYS_mprotect,
        &[s.start, s.len, u64::from(s.map_prot)],
    )?;
    Ok(())
}

/// A memfd that no fd holds any more, made in the target: its fd there.
fn new_memfd(
    main: &mut Remote,
    s: &MapStep,
    name: &std::ffi::CStr,
    size: u64,
    scratch: u64,
) -> Result<u64> {
    main.write_cstr(scratch, name.to_bytes())?;
    let fd = main.call(
        &format!("memfd_create for {}", s.what),
        libc::SYS_memfd_create,
        &[scratch, libc::MFD_CLOEXEC as u64],
    )?;
    main.call(
        &format!("ftruncate of memfd for {}", s.what),
        libc::SYS_ftruncate,
        &[fd, size],
    )?;
    Ok(fd)
}

/// The mapping's madvise() advice and its `[anon:NAME]`.
fn advise(main: &mut Remote, b: &mut Batcher, s: &MapStep) -> Result<()> {
    for &adv in &s.advice {
        let optional = matches!(
            adv,
            libc::MADV_MERGEABLE | libc::MADV_HUGEPAGE | libc::MADV_NOHUGEPAGE
        );
        b.push(
            main,
            format!("madvise({adv}) of {}", s.what),
            libc::SYS_madvise,
            &[s.start, s.len, adv as u64],
            if optional {
                Allow::Errno(libc::EINVAL)
            } else {
                Allow::Nothing
            },
        )?;
    }
    if let Some(name) = &s.anon_name {
        // Naming is cosmetic (needs CONFIG_ANON_VMA_NAME): errors are ignored.
        let at = match b.string(main, name.as_bytes()) {
            Ok(at) => at,
            Err(_) => return Ok(()),
        };
        b.push(
            main,
            "prctl(PR_SET_VMA_ANON_NAME)".into(),
            libc::SYS_prctl,
            &[PR_SET_VMA, 0, s.start, s.len, at],
            Allow::Any,
        )?;
    }
    Ok(())
}

/// Once the pages are written: the final protections (where pages were
/// written through added PROT_WRITE), the guard regions (which may not be
/// installed in locked memory), then the locks (mlock2, which faults the
/// pages in: after the userfaultfd is gone).
pub(crate) fn finish(main: &mut Remote, steps: &[MapStep], guards: &[(u64, u64)]) -> Result<()> {
    let mut b = main.batcher();
    for s in steps {
        if s.map_prot != s.prot {
            b.push(
                main,
                format!("mprotect of {}", s.what),
                libc::SYS_mprotect,
                &[s.start, s.len, u64::from(s.prot)],
                Allow::Nothing,
            )?;
        }
    }
    b.flush(main)?;
    for &(start, end) in guards {
        let r = main.raw(
            "madvise(MADV_GUARD_INSTALL)",
            libc::SYS_madvise,
            &[start, end - start, MADV_GUARD_INSTALL],
        )?;
        if r < 0 {
            let why = if r == -(libc::EINVAL as i64) {
                " (a kernel without guard regions, Linux < 6.13?)"
            } else {
                ""
            };
            return Err(Error::Io {
                context: format!(
                    "thread {}: installing the guard pages at {start:#x}-{end:#x}{why}",
                    main.tid
                ),
                source: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
    }
    for s in steps {
        if let Some(flags) = s.lock {
            main.call(
                &format!("mlock2 of {}", s.what),
                libc::SYS_mlock2,
                &[s.start, s.len, u64::from(flags)],
            )?;
        }
    }
    Ok(())
}
