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
    /// A deleted file no fd holds, made again from its saved contents:
    /// `MemPlan::recreate[file]`.
    Recreated { file: usize, offset: u64 },
    /// A SysV shared memory segment (made again with its saved id, or
    /// still there, before the stub: process/sysv.rs), attached at a
    /// temporary address and duplicated from there.
    SysvShm { id: i32, offset: u64 },
    /// Private anonymous memory the restorer premapped and filled before
    /// forking the stubs (mem/cow.rs): the slot at `offset` in the premap
    /// area, moved here, its `discard` ranges dropped (MADV_DONTNEED: the
    /// slot owner's pages this process does not have).
    Inherited {
        offset: u64,
        discard: Vec<(u64, u64)>,
    },
    /// Private hugetlb memory (MAP_HUGETLB) of pages of this size.
    HugeAnon { page_size: u64 },
    /// The ring of an AIO context, made by io_setup and moved here
    /// (mem/aio.rs).
    AioRing(ckpt_image::AioRing),
    /// The rings of the packet socket at this fd of the process (made
    /// with their saved geometry by fds/packet.rs), mapped from offset 0.
    PacketRing { fd: i32 },
}

/// A deleted file that mappings need, made again by the process being
/// built: created at its old path (when that is free) and unlinked, so
/// that /proc/PID/maps names it as before, else as an O_TMPFILE file in
/// its directory (else /tmp); filled with its saved contents by the
/// restorer through /proc/PID/fd; one file for all its mappings. A
/// deleted POSIX shared memory file (a named semaphore) that only this
/// process maps has no contents here: it is made `size` bytes long, and
/// its pages are written like those of any shared memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RecreatedFile {
    /// Its (dev, inode) at the dump (dev u64::MAX: POSIX shared memory,
    /// by inode).
    pub key: (u64, u64),
    /// Its old path (without " (deleted)").
    pub path: CString,
    /// Where an O_TMPFILE copy may go: its directory, then /tmp.
    pub dirs: Vec<CString>,
    /// Permission bits (without set-id bits).
    pub mode: u32,
    /// The saved contents (None: `size` bytes of zeros, pages written later).
    pub contents: Option<ckpt_image::Blob>,
    pub size: u64,
    /// For messages: the first mapping of it.
    pub what: String,
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
    /// mmap flags the mapping was made with that its VmFlags show:
    /// MAP_NORESERVE ("nr"); MAP_DROPPABLE ("dp") replaces MAP_PRIVATE.
    pub map_flags: u64,
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
    /// Data and zero runs are written past the first `aio::HEADER_LEN`
    /// bytes (an AIO ring: its header is the new context's own).
    AioRing,
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
    use std::fmt::Write;
    let mut s = String::with_capacity(40 + v.name.len());
    let _ = write!(s, "vma {:x}-{:x}", v.start, v.end);
    if !v.name.is_empty() {
        s.push(' ');
        s.push_str(&String::from_utf8_lossy(&v.name));
    }
    s
}

/// fds of the process that hold a file the mappings may need: a deleted
/// file with saved contents by (dev, inode), a memfd by id; and the fds
/// the stubs keep for memory objects several processes map, by id.
pub(super) struct HeldFiles<'a> {
    deleted: BTreeMap<(u64, u64), i32>,
    pub(super) memfds: BTreeMap<u64, i32>,
    /// Packet sockets by their "socket:[INODE]" name.
    packet: BTreeMap<Vec<u8>, i32>,
    pub(super) shared: &'a BTreeMap<u64, i32>,
}

impl<'a> HeldFiles<'a> {
    fn of(image: &Image, proc: &Process, shared: &'a BTreeMap<u64, i32>) -> HeldFiles<'a> {
        let mut h = HeldFiles {
            deleted: BTreeMap::new(),
            memfds: BTreeMap::new(),
            packet: BTreeMap::new(),
            shared,
        };
        for fd in &proc.fds {
            let Some(f) = image.file(fd.file) else {
                continue;
            };
            match &f.kind {
                FileKind::Regular(rf) if rf.has_contents => {
                    h.deleted
                        .entry((rf.file.dev, rf.file.inode))
                        .or_insert(fd.fd);
                }
                FileKind::MemFd(m) => {
                    h.memfds.entry(m.id).or_insert(fd.fd);
                }
                FileKind::PacketSocket(_) => {
                    h.packet.entry(f.path.clone()).or_insert(fd.fd);
                }
                _ => {}
            }
        }
        h
    }
}

/// `/proc/self/fd/N`: a file the process itself holds at fd N.
pub(super) fn own_fd_path(fd: i32) -> CString {
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
            map_flags: map_flags_of(&v.vm_flags),
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
        VmaBacking::Anonymous if v.huge_page_size != 0 => (
            Some(Backing::HugeAnon {
                page_size: v.huge_page_size,
            }),
            PageRule::DataOnly,
        ),
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
        VmaBacking::AioRing(ring) => (Some(Backing::AioRing(*ring)), PageRule::AioRing),
        VmaBacking::PacketRing => match held.packet.get(&v.name) {
            Some(&fd) => (Some(Backing::PacketRing { fd }), PageRule::Nothing),
            None => {
                plan.errors.push(format!(
                    "{what}: the rings of a packet socket no fd of the process holds"
                ));
                (None, PageRule::Nothing)
            }
        },
        other => {
            plan.errors.push(format!(
                "{what}: a mapping backed by {}, which this restore does not know",
                other.name()
            ));
            (None, PageRule::DataOnly)
        }
    }
}

/// Read-write for a shared mapping that is writable or may become so
/// (VmFlags "mw": the file was open for writing when it was mapped, so
/// the process may mprotect it writable later), else read-only.
fn access_of(v: &Vma) -> i32 {
    let may_write = v.vm_flags.iter().any(|f| f == "mw");
    if v.shared && (v.prot & PROT_WRITE != 0 || may_write) {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    }
}

/// A file mapping: the file by path, or a deleted one through the fd of
/// the process that holds its saved contents, or made again from the
/// contents saved with the mapping.
fn file_backing(
    v: &Vma,
    fm: &FileMapping,
    what: &str,
    held: &HeldFiles,
    plan: &mut MemPlan,
) -> Option<Backing> {
    if fm.file.deleted {
        let key = (fm.file.dev, fm.file.inode);
        if let Some(&fd) = held.deleted.get(&key) {
            return Some(Backing::File {
                path: own_fd_path(fd),
                flags: access_of(v),
                offset: fm.offset,
            });
        }
        if !fm.has_contents {
            plan.errors.push(format!(
                "{what}: maps a deleted file whose contents are not in the image"
            ));
            return None;
        }
        return recreated(fm, what, plan).map(|file| Backing::Recreated {
            file,
            offset: fm.offset,
        });
    }
    match CString::new(strip_deleted(&fm.file.path).to_vec()) {
        Ok(path) => {
            plan.files.push((what.to_string(), fm.file.clone()));
            if !v.shared {
                plan.private_files.insert(fm.file.path.clone());
            }
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

/// Mappings the kernel would refuse to make here: ending above the user
/// address limit `task_size`, or starting below vm.mmap_min_addr without
/// CAP_SYS_RAWIO (`rawio`). The kernel's own (vdso, vvar, vsyscall) are
/// not made.
pub(crate) fn check_addresses(
    p: &Process,
    task_size: u64,
    mmap_min: u64,
    rawio: bool,
    r: &mut crate::Report,
) {
    for v in &p.vmas {
        if matches!(
            v.backing,
            VmaBacking::Special(
                SpecialMapping::Vdso
                    | SpecialMapping::Vvar
                    | SpecialMapping::VvarVclock
                    | SpecialMapping::Vsyscall
                    | SpecialMapping::Uprobes
            )
        ) {
            continue;
        }
        let what = vma_what(v);
        if v.end > task_size || v.start >= v.end {
            r.errors.push(format!(
                "{what}: not inside the user address space (it ends at {task_size:#x} here)"
            ));
        } else if v.start < mmap_min && !rawio {
            r.errors.push(format!(
                "{what}: below vm.mmap_min_addr ({mmap_min:#x}); mapping it needs CAP_SYS_RAWIO"
            ));
        }
    }
}

/// The index in `plan.recreate` of the deleted file of `fm` (added on its
/// first mapping).
fn recreated(fm: &FileMapping, what: &str, plan: &mut MemPlan) -> Option<usize> {
    let key = (fm.file.dev, fm.file.inode);
    if let Some(i) = plan.recreate.iter().position(|r| r.key == key) {
        return Some(i);
    }
    let raw = strip_deleted(&fm.file.path);
    let Some(path) = CString::new(raw.to_vec()).ok() else {
        plan.errors.push(format!("{what}: path holds a NUL byte"));
        return None;
    };
    let mut dirs = Vec::new();
    if let Some(pos) = raw.iter().rposition(|&c| c == b'/') {
        let d = if pos == 0 { &raw[..1] } else { &raw[..pos] };
        dirs.extend(CString::new(d.to_vec()).ok());
    }
    dirs.push(CString::new("/tmp").expect("no NUL"));
    let mode = match fm.file.mode & 0o777 {
        0 => 0o600,
        m => m,
    };
    plan.recreate.push(RecreatedFile {
        key,
        path,
        dirs,
        mode,
        contents: Some(fm.contents.clone()),
        size: fm.file.size,
        what: what.to_string(),
    });
    Some(plan.recreate.len() - 1)
}

/// A deleted POSIX shared memory file (`sm`) mapped by this process only:
/// made again at its old name, unlinked (see [`RecreatedFile`]).
fn recreated_shm(sm: &SharedMemory, what: &str, plan: &mut MemPlan) -> Option<usize> {
    let key = (u64::MAX, sm.id);
    if let Some(i) = plan.recreate.iter().position(|r| r.key == key) {
        return Some(i);
    }
    let Some(path) = CString::new(strip_deleted(&sm.name).to_vec()).ok() else {
        plan.errors.push(format!("{what}: path holds a NUL byte"));
        return None;
    };
    plan.recreate.push(RecreatedFile {
        key,
        path,
        dirs: vec![c"/dev/shm".to_owned(), c"/tmp".to_owned()],
        mode: 0o600,
        contents: None,
        size: sm.size,
        what: what.to_string(),
    });
    Some(plan.recreate.len() - 1)
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
    // (A private mapping maps the object too: the pages the process wrote
    // over it are written on top.)
    let kept = held.shared.get(&sm.id).copied();
    if v.huge_page_size != 0 {
        return super::hugetlb::shared_backing(v, sm, what, held, plan);
    }
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
            // This process's alone: made again at its name (a named
            // semaphore keeps its /proc/PID/maps line).
            None => match recreated_shm(sm, what, plan) {
                Some(file) => Backing::Recreated {
                    file,
                    offset: sm.offset,
                },
                None => return (None, PageRule::DataOnly),
            },
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
        other => {
            plan.errors.push(format!(
                "{what}: shared memory of kind {other:?}, which this restore does not know"
            ));
            return (None, PageRule::DataOnly);
        }
    };
    (Some(backing), shm_rule(v))
}

/// The pages written over a mapping of shared memory: all of them for a
/// private mapping (its copy-on-write view), else only the object's data.
pub(super) fn shm_rule(v: &Vma) -> PageRule {
    if v.shared {
        PageRule::DataOnly
    } else {
        PageRule::All
    }
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
/// `recreated`: the fds in the target of the deleted files it maps
/// ([`recreate_files`]), closed here. `exe`: the executable, opened (read
/// only) with the mapped files: its fd in the target, left open.
pub(crate) fn map_all(
    main: &mut Remote,
    steps: &[MapStep],
    recreated: &[u64],
    l: &Layout,
    scratch: u64,
    (as_saved, exe): (Option<&FsSwitch>, Option<&[u8]>),
) -> Result<Option<u64>> {
    let mut made = Made {
        files: open_files(main, steps, scratch, (as_saved, exe))?,
        ..Default::default()
    };
    let exe_fd = exe.and_then(|e| made.files.remove(&(e.to_vec(), EXE_KEY)));
    // The calls go in batches (remote.rs): one round trip for hundreds.
    let mut b = main.batcher();
    for s in steps {
        map_one(main, &mut b, s, l, scratch, recreated, &mut made)?;
        advise(main, &mut b, s)?;
    }
    let made_fds = made.files.into_values().chain(made.memfds.into_values());
    for fd in made_fds.chain(recreated.iter().copied()) {
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
    Ok(exe_fd)
}

/// Make again, in the target, each deleted file its mappings need (see
/// [`RecreatedFile`]), with the saved user's rights where the restore
/// takes them; `load` reads a file's saved contents. Returns their fds in
/// the target, by index.
pub(crate) fn recreate_files(
    main: &mut Remote,
    files: &[RecreatedFile],
    scratch: u64,
    as_saved: Option<&FsSwitch>,
    load: &mut dyn FnMut(&ckpt_image::Blob) -> Result<Vec<u8>>,
) -> Result<Vec<u64>> {
    let mut fds = Vec::with_capacity(files.len());
    if files.is_empty() {
        return Ok(fds);
    }
    let pid = main.tid;
    let made = with_rights(main, as_saved, scratch, |main| {
        for f in files {
            fds.push(create_unlinked(main, f, scratch)?);
        }
        Ok(())
    });
    let filled = made.and_then(|()| {
        for (f, &fd) in files.iter().zip(&fds) {
            match &f.contents {
                Some(blob) => {
                    let contents = load(blob)?;
                    fill(pid, fd, &contents).map_err(|source| Error::Io {
                        context: format!(
                            "{}: writing the saved contents of {} ({} bytes)",
                            f.what,
                            f.path.to_string_lossy(),
                            contents.len()
                        ),
                        error: source,
                    })?;
                }
                None => {
                    main.call(
                        &format!("ftruncate of {}", f.path.to_string_lossy()),
                        libc::SYS_ftruncate,
                        &[fd, f.size],
                    )?;
                }
            }
            main.call(
                &format!("fchmod of the copy of {}", f.path.to_string_lossy()),
                libc::SYS_fchmod,
                &[fd, u64::from(f.mode)],
            )?;
        }
        Ok(())
    });
    if let Err(e) = filled {
        for &fd in &fds {
            let _ = main.raw("close", libc::SYS_close, &[fd]);
        }
        return Err(e);
    }
    tracing::debug!(files = files.len(), "deleted mapped files made again");
    Ok(fds)
}

/// The file of `f`, created unlinked in the target: at its old path
/// (O_EXCL) then unlinked when the path is free, else O_TMPFILE in one of
/// its directories. Its fd there.
fn create_unlinked(main: &mut Remote, f: &RecreatedFile, scratch: u64) -> Result<u64> {
    let pid = main.tid;
    let name = f.path.to_string_lossy().into_owned();
    main.write_cstr(scratch, f.path.as_bytes())?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let r = main.raw(
        &format!("creating {name}"),
        libc::SYS_openat,
        &[libc::AT_FDCWD as u64, scratch, flags as u64, 0o600],
    )?;
    if r >= 0 {
        let fd = r as u64;
        // Unlink the name only if it is still ours.
        let ours = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok();
        let there = std::fs::symlink_metadata(&name).ok();
        use std::os::unix::fs::MetadataExt;
        let same = matches!((&ours, &there), (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino());
        if same {
            main.write_cstr(scratch, f.path.as_bytes())?;
            if main.raw(
                &format!("unlink of {name}"),
                libc::SYS_unlinkat,
                &[libc::AT_FDCWD as u64, scratch, 0],
            )? == 0
            {
                return Ok(fd);
            }
        }
        main.call("close", libc::SYS_close, &[fd])?;
    }
    let mut last = -r;
    for d in &f.dirs {
        main.write_cstr(scratch, d.as_bytes())?;
        let r = main.raw(
            &format!("O_TMPFILE in {}", d.to_string_lossy()),
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as u64,
                scratch,
                (libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC) as u64,
                0o600,
            ],
        )?;
        if r >= 0 {
            return Ok(r as u64);
        }
        last = -r;
    }
    Err(Error::Io {
        context: format!(
            "{}: making the deleted file {name} again (at its path, or unlinked in {})",
            f.what,
            f.dirs
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        error: std::io::Error::from_raw_os_error(last as i32),
    })
}

/// Write `contents` into fd `fd` of process `pid`, from here.
fn fill(pid: i32, fd: u64, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/{fd}"))?;
    f.write_all_at(contents, 0)?;
    f.set_len(contents.len() as u64)
}

/// The mapped files, each (path, flags) opened once, and the executable
/// (`exe`), all together: with the saved user's rights where the restore
/// takes them.
fn open_files(
    main: &mut Remote,
    steps: &[MapStep],
    scratch: u64,
    (as_saved, exe): (Option<&FsSwitch>, Option<&[u8]>),
) -> Result<BTreeMap<(Vec<u8>, i32), u64>> {
    let mut files: BTreeMap<(Vec<u8>, i32), u64> = BTreeMap::new();
    // (key, open flags, what for): each file once; the executable apart.
    let mut opens: Vec<((Vec<u8>, i32), i32, String)> = Vec::new();
    for s in steps {
        let Backing::File { path, flags, .. } = &s.backing else {
            continue;
        };
        let key = (path.as_bytes().to_vec(), *flags);
        if !opens.iter().any(|(k, _, _)| *k == key) {
            let name = format!("open of {} for {}", path.to_string_lossy(), s.what);
            opens.push((key, *flags, name));
        }
    }
    if let Some(exe) = exe {
        let name = format!("open of the executable {}", String::from_utf8_lossy(exe));
        opens.push(((exe.to_vec(), EXE_KEY), libc::O_RDONLY, name));
    }
    if opens.is_empty() {
        return Ok(files);
    }
    // Every open in one round trip (an open that fails stops the batch
    // and names its file).
    let mut keys = Vec::new();
    with_rights(main, as_saved, scratch, |main| {
        let mut b = main.batcher();
        b.keep_results();
        for (key, flags, name) in opens {
            let flags = (flags | libc::O_CLOEXEC) as u64;
            let at = match b.string(main, &key.0) {
                Ok(at) => at,
                Err(_) => {
                    // No batch code (or too long for it): one call.
                    b.flush(main)?;
                    main.write_cstr(scratch, &key.0)?;
                    let args = [libc::AT_FDCWD as u64, scratch, flags];
                    let fd = main.call(&name, libc::SYS_openat, &args)?;
                    files.insert(key, fd);
                    continue;
                }
            };
            let args = [libc::AT_FDCWD as u64, at, flags];
            b.push(main, name, libc::SYS_openat, &args, Allow::Nothing)?;
            keys.push(key);
        }
        let fds = b.results(main)?;
        files.extend(keys.drain(..).zip(fds.into_iter().map(|fd| fd as u64)));
        Ok(())
    })?;
    Ok(files)
}

/// The key of the executable's open among the mapped files' (no mapping
/// has these open flags).
const EXE_KEY: i32 = -1;

/// MAP_DROPPABLE (a mapping type, in place of MAP_PRIVATE).
const MAP_DROPPABLE: u64 = 0x08;

/// The mmap flags that VmFlags `flags` show beyond the sharing type.
fn map_flags_of(flags: &[String]) -> u64 {
    let mut m = 0;
    for f in flags {
        match f.as_str() {
            "nr" => m |= libc::MAP_NORESERVE as u64,
            "dp" => m |= MAP_DROPPABLE,
            _ => {}
        }
    }
    m
}

/// The mmap (or mremap) of one mapping.
fn map_one(
    main: &mut Remote,
    b: &mut Batcher,
    s: &MapStep,
    l: &Layout,
    scratch: u64,
    recreated: &[u64],
    made: &mut Made,
) -> Result<()> {
    let prot = u64::from(s.map_prot);
    let share = if s.shared {
        libc::MAP_SHARED as u64
    } else if s.map_flags & MAP_DROPPABLE != 0 {
        MAP_DROPPABLE
    } else {
        libc::MAP_PRIVATE as u64
    } | (s.map_flags & libc::MAP_NORESERVE as u64);
    let fixed = libc::MAP_FIXED as u64;
    let what = format!("mmap of {}", s.what);
    match &s.backing {
        Backing::Anon => map_anon(main, b, s, what, (prot, share | fixed), 0)?,
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
            map_shared_anon(
                main,
                b,
                (s, share | fixed),
                l,
                (*id, *offset),
                made,
                scratch,
            )?;
        }
        Backing::Recreated { file, offset } => {
            let fd = *recreated.get(*file).ok_or_else(|| Error::Stub {
                pid: main.tid,
                what: format!("{}: its deleted file was not made again", s.what),
            })?;
            b.push(
                main,
                what,
                libc::SYS_mmap,
                &[s.start, s.len, prot, share | fixed, fd, *offset],
                Allow::Nothing,
            )?;
        }
        Backing::Inherited { offset, discard } => {
            map_inherited(main, b, s, l, *offset, discard)?;
        }
        Backing::SysvShm { id, offset } => {
            // Direct calls: what came before first.
            b.flush(main)?;
            map_sysv(main, s, l, (*id, *offset), made)?;
        }
        Backing::HugeAnon { page_size } => {
            map_anon(main, b, s, what, (prot, share | fixed), *page_size)?
        }
        Backing::AioRing(ring) => {
            b.flush(main)?;
            super::aio::make_ring(main, s, *ring, scratch)?;
        }
        Backing::PacketRing { fd } => b.push(
            main,
            what,
            libc::SYS_mmap,
            &[s.start, s.len, prot, share | fixed, *fd as u64, 0],
            Allow::Nothing,
        )?,
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
                &[s.start, s.len, prot, share | fixed, fd, *offset],
                Allow::Nothing,
            )?;
        }
    }
    Ok(())
}

/// Anonymous memory (`huge`: hugetlb memory of pages of that size).
fn map_anon(
    main: &mut Remote,
    b: &mut Batcher,
    s: &MapStep,
    what: String,
    (prot, flags): (u64, u64),
    huge: u64,
) -> Result<()> {
    let mut flags = flags | libc::MAP_ANONYMOUS as u64 | ckpt_sys::mm::hugetlb_flags(huge) as u64;
    if s.grows_down {
        flags |= libc::MAP_GROWSDOWN as u64;
    }
    b.push(
        main,
        what,
        libc::SYS_mmap,
        &[s.start, s.len, prot, flags, u64::MAX, 0],
        Allow::Nothing,
    )
}

/// A premapped slot (mem/cow.rs) moved to its mapping's address, with
/// the protection pages are written with; the pages it must not have
/// dropped.
fn map_inherited(
    main: &mut Remote,
    b: &mut Batcher,
    s: &MapStep,
    l: &Layout,
    offset: u64,
    discard: &[(u64, u64)],
) -> Result<()> {
    let from = l.premap + offset;
    b.push(
        main,
        format!("mremap of its premapped memory to {}", s.what),
        libc::SYS_mremap,
        &[from, s.len, s.len, MREMAP_MAYMOVE | MREMAP_FIXED, s.start],
        Allow::Nothing,
    )?;
    b.push(
        main,
        format!("mprotect of {}", s.what),
        libc::SYS_mprotect,
        &[s.start, s.len, u64::from(s.map_prot)],
        Allow::Nothing,
    )?;
    for &(a, e) in discard {
        b.push(
            main,
            format!("madvise(MADV_DONTNEED) of {} at {a:#x}", s.what),
            libc::SYS_madvise,
            &[a, e - a, libc::MADV_DONTNEED as u64],
            Allow::Nothing,
        )?;
    }
    Ok(())
}

/// A shared anonymous mapping: its object is mapped once at a temporary
/// address, each of its mappings is a duplicate (mremap of size 0) of the
/// range at `offset` there.
fn map_shared_anon(
    main: &mut Remote,
    b: &mut Batcher,
    (s, flags): (&MapStep, u64),
    l: &Layout,
    (id, offset): (u64, u64),
    made: &mut Made,
    scratch: u64,
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
    if !s.shared {
        return map_private_of(main, b, (s, flags), (tmp, size), offset, scratch);
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

/// A private mapping of the shared anonymous object at `tmp` (`size`
/// bytes): the object opened through /proc/self/map_files (as the saved
/// process did), mapped MAP_PRIVATE at `offset`, the fd closed.
fn map_private_of(
    main: &mut Remote,
    b: &mut Batcher,
    (s, flags): (&MapStep, u64),
    (tmp, size): (u64, u64),
    offset: u64,
    scratch: u64,
) -> Result<()> {
    // Its fd is needed now: what came before (the object's mmap) first.
    b.flush(main)?;
    let path = format!("/proc/self/map_files/{tmp:x}-{:x}", tmp + size);
    let fd = main.open(
        &format!("open of shared memory {path} for {}", s.what),
        scratch,
        path.as_bytes(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    )?;
    b.push(
        main,
        format!("mmap of {}", s.what),
        libc::SYS_mmap,
        &[s.start, s.len, u64::from(s.map_prot), flags, fd, offset],
        Allow::Nothing,
    )?;
    b.push(main, "close".into(), libc::SYS_close, &[fd], Allow::Nothing)
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
/// pages in: after the userfaultfd is gone). The protections go into `b`,
/// run with what the caller adds to it unless guards or locks follow.
pub(crate) fn finish(
    main: &mut Remote,
    b: &mut Batcher,
    steps: &[MapStep],
    guards: &[(u64, u64)],
) -> Result<()> {
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
    if guards.is_empty() && steps.iter().all(|s| s.lock.is_none()) {
        return Ok(());
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
                error: std::io::Error::from_raw_os_error(-r as i32),
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
