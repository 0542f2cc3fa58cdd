//! Memory areas: /proc/PID/smaps parsed into the model's `Vma`s, each with
//! the policy that says which of its pages must be saved.

use crate::error::{Error, Result};
use crate::fds::{identity, relinked, strip_deleted};
use crate::procfs::{self, makedev};
use ckpt_image::{
    madvise, FileIdentity, FileMapping, SharedMemory, ShmKind, SpecialMapping, Vma, VmaBacking,
};
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

/// Which pages of an area to save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// None: the backing provides every page (shared file, vdso, ...).
    Nothing,
    /// Private anonymous memory: present or swapped pages.
    Anon,
    /// Private file mapping: pages that are no longer the file's (COW'd:
    /// present and not a file page, or swapped).
    PrivateFile,
    /// Every page of the area (private memfd mappings).
    /// Pages that cannot be read (beyond the end of the object) are left out.
    Whole,
    /// Every page of a shared memory object mapped shared: the object's data
    /// ranges (SEEK_DATA) are read, its holes saved as zero pages without
    /// touching them (reading would allocate them). Pages beyond the end of
    /// the object are left out.
    Shmem,
    /// hugetlb memory mapped private: the pages its pagemap shows
    /// (`file`: those that are no longer the file's). Never shared
    /// copy-on-write with a parent's saved pages.
    HugePrivate { file: bool },
    /// A hugetlb object mapped shared, of pages of `page_size` bytes:
    /// its huge pages that are not all zeros (mem/hugetlb.rs).
    HugeShared { page_size: u64 },
}

/// One line of /proc/PID/smaps with the fields we use.
#[derive(Debug, Clone, Default)]
pub(crate) struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev: u64,
    pub inode: u64,
    pub name: Vec<u8>,
    pub vm_flags: Vec<String>,
    pub rss_kb: u64,
    pub swap_kb: u64,
    /// smaps "Anonymous": anonymous (for a file mapping: copied on write)
    /// pages; None when the kernel does not say.
    pub anon_kb: Option<u64>,
    /// smaps "KernelPageSize" (the huge page size of hugetlb memory).
    pub kernel_page_kb: u64,
}

impl MapEntry {
    fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Parse a maps/smaps header line: "start-end perms offset maj:min inode   name".
fn parse_header(line: &[u8]) -> Option<MapEntry> {
    let s = line;
    let mut fields = Vec::new();
    let mut i = 0;
    for _ in 0..5 {
        while i < s.len() && s[i] == b' ' {
            i += 1;
        }
        let st = i;
        while i < s.len() && s[i] != b' ' {
            i += 1;
        }
        if st == i {
            return None;
        }
        fields.push(std::str::from_utf8(&s[st..i]).ok()?);
    }
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let name = s[i..].to_vec();
    let (a, b) = fields[0].split_once('-')?;
    let perms: [u8; 4] = fields[1].as_bytes().try_into().ok()?;
    let (maj, min) = fields[3].split_once(':')?;
    Some(MapEntry {
        start: u64::from_str_radix(a, 16).ok()?,
        end: u64::from_str_radix(b, 16).ok()?,
        perms,
        offset: u64::from_str_radix(fields[2], 16).ok()?,
        dev: makedev(
            u64::from_str_radix(maj, 16).ok()?,
            u64::from_str_radix(min, 16).ok()?,
        ),
        inode: fields[4].parse().ok()?,
        name,
        ..Default::default()
    })
}

fn is_header(line: &[u8]) -> bool {
    let tok = line.split(|&c| c == b' ').next().unwrap_or(b"");
    match tok.iter().position(|&c| c == b'-') {
        Some(p) => {
            p > 0
                && tok[..p].iter().all(u8::is_ascii_hexdigit)
                && tok[p + 1..].iter().all(u8::is_ascii_hexdigit)
        }
        None => false,
    }
}

/// Parse /proc/PID/smaps (read as bytes: a file name may be any bytes).
/// Every line is a mapping's header or a "Key: value" line of it; the
/// values we use must parse.
pub(crate) fn parse_smaps(pid: Pid, text: &[u8]) -> Result<Vec<MapEntry>> {
    let file = format!("/proc/{pid}/smaps");
    let mut out: Vec<MapEntry> = Vec::new();
    for (i, line) in text.split(|&c| c == b'\n').enumerate() {
        let bad = |what: String| procfs::parse_err(pid, &file, i + 1, what);
        if line.is_empty() {
            continue;
        }
        if is_header(line) {
            let e = parse_header(line)
                .ok_or_else(|| bad(format!("bad line {:?}", String::from_utf8_lossy(line))))?;
            out.push(e);
            continue;
        }
        let l = String::from_utf8_lossy(line);
        let (Some(cur), Some((k, v))) = (out.last_mut(), l.split_once(':')) else {
            return Err(bad(format!(
                "{l:?} is neither a mapping nor a \"Key: value\" line"
            )));
        };
        let kb = || {
            match v.split_whitespace().collect::<Vec<_>>()[..] {
                [n, "kB"] => n.parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| bad(format!("{k}: {:?} is not \"N kB\"", v.trim())))
        };
        match k {
            "Rss" => cur.rss_kb = kb()?,
            "Swap" => cur.swap_kb = kb()?,
            "Anonymous" => cur.anon_kb = Some(kb()?),
            "KernelPageSize" => cur.kernel_page_kb = kb()?,
            "VmFlags" => cur.vm_flags = v.split_whitespace().map(str::to_string).collect(),
            _ => {}
        }
    }
    Ok(out)
}

fn madvise_bits(flags: &[String]) -> u64 {
    let mut m = 0u64;
    for f in flags {
        let bit = match f.as_str() {
            "dc" => madvise::DONT_FORK,
            "dd" => madvise::DO_NOT_DUMP,
            "wf" => madvise::WIPE_ON_FORK,
            "hg" => madvise::HUGE_PAGE,
            "nh" => madvise::NO_HUGE_PAGE,
            "mg" => madvise::MERGEABLE,
            "sr" => madvise::SEQUENTIAL,
            "rr" => madvise::RANDOM,
            "lo" => madvise::LOCKED,
            "lf" => madvise::LOCK_ON_FAULT,
            _ => continue,
        };
        m |= 1 << bit;
    }
    m
}

/// What was learned of the files a dump's processes map, by (device,
/// inode): a tree's processes map the same few files (their program, libc)
/// many times over.
#[derive(Default)]
pub(crate) struct FileStats {
    /// Their metadata, read through /proc/PID/map_files (the very inode).
    meta: HashMap<(u64, u64), std::fs::Metadata>,
    /// Their inode generations (deleted.rs).
    pub(super) generations: HashMap<(u64, u64), Option<u64>>,
}

impl FileStats {
    /// The metadata of the file `e` maps, through /proc/PID/map_files.
    fn map_files_meta(&mut self, pid: Pid, e: &MapEntry) -> std::io::Result<std::fs::Metadata> {
        if let Some(m) = self.meta.get(&(e.dev, e.inode)) {
            return Ok(m.clone());
        }
        let m = std::fs::metadata(map_files_path(pid, e))?;
        if m.ino() == e.inode {
            self.meta.insert((e.dev, e.inode), m.clone());
        }
        Ok(m)
    }
}

/// Turn a smaps entry into a model Vma and the policy for its pages.
pub(crate) fn classify(pid: Pid, e: &MapEntry) -> Result<(Vma, Policy)> {
    classify_with(pid, e, &mut FileStats::default())
}

/// [`classify`], with what is known of the files mapped so far.
pub(crate) fn classify_with(
    pid: Pid,
    e: &MapEntry,
    files: &mut FileStats,
) -> Result<(Vma, Policy)> {
    let bit = |i: usize, c: u8, v: u32| if e.perms[i] == c { v } else { 0 };
    let prot = bit(0, b'r', ckpt_image::PROT_READ)
        | bit(1, b'w', ckpt_image::PROT_WRITE)
        | bit(2, b'x', ckpt_image::PROT_EXEC);
    let shared = e.perms[3] == b's';
    let has = |f: &str| e.vm_flags.iter().any(|x| x == f);
    if has("ht") {
        return hugetlb(pid, e, prot, shared);
    }
    let special_name = e.name.starts_with(b"[") && !e.name.starts_with(b"[anon");
    if (has("io") || has("pf")) && !special_name {
        // ([vvar] and friends are PFN maps too; they are recreated, not copied.)
        return Err(reject(
            pid,
            e,
            "device (I/O or PFN) mappings are not supported",
        ));
    }
    let (backing, mut policy) = backing(pid, e, shared, files)?;
    if has("dp") {
        // MAP_DROPPABLE: the kernel may drop its pages at any time; they
        // are not saved (the restored area reads zeros), as if dropped.
        policy = Policy::Nothing;
    }
    let vma = Vma {
        start: e.start,
        end: e.end,
        prot,
        shared,
        grows_down: has("gd"),
        backing,
        madvise: madvise_bits(&e.vm_flags),
        vm_flags: e.vm_flags.clone(),
        name: e.name.clone(),
        huge_page_size: 0,
    };
    Ok((vma, policy))
}

/// A hugetlb area: anonymous (MAP_HUGETLB, private or shared) or a
/// hugetlb memfd's; other hugetlbfs files are refused.
fn hugetlb(pid: Pid, e: &MapEntry, prot: u32, shared: bool) -> Result<(Vma, Policy)> {
    let (path, deleted) = strip_deleted(&e.name);
    // smaps says; /proc/PID/maps (a dump that leaves the process
    // running) does not: then the filesystem's block size says.
    let huge = match e.kernel_page_kb * 1024 {
        0 => ckpt_sys::fs::hugetlb_page_size(std::path::Path::new(&map_files_path(pid, e)))
            .ok()
            .flatten()
            .unwrap_or(0),
        n => n,
    };
    if huge == 0 || !e.start.is_multiple_of(huge) || !e.end.is_multiple_of(huge) {
        return Err(reject(
            pid,
            e,
            &format!("hugetlb memory whose page size is not known (KernelPageSize {huge})"),
        ));
    }
    let (backing, policy) = match (path, deleted, shared) {
        (b"/anon_hugepage", true, false) => {
            (VmaBacking::Anonymous, Policy::HugePrivate { file: false })
        }
        (b"/anon_hugepage", true, true) => (
            shm(pid, e, ShmKind::AnonymousShared),
            Policy::HugeShared { page_size: huge },
        ),
        (p, true, _) if p.starts_with(b"/memfd:") => (
            shm(pid, e, ShmKind::Memfd),
            if shared {
                Policy::HugeShared { page_size: huge }
            } else {
                Policy::HugePrivate { file: true }
            },
        ),
        _ => {
            return Err(reject(
                pid,
                e,
                "hugetlbfs files other than anonymous memory and memfds are not supported",
            ))
        }
    };
    let vma = Vma {
        start: e.start,
        end: e.end,
        prot,
        shared,
        grows_down: false,
        backing,
        madvise: madvise_bits(&e.vm_flags),
        vm_flags: e.vm_flags.clone(),
        name: e.name.clone(),
        huge_page_size: huge,
    };
    Ok((vma, policy))
}

fn reject(pid: Pid, e: &MapEntry, what: &str) -> Error {
    Error::Vma {
        pid,
        start: e.start,
        end: e.end,
        name: e.name_str(),
        what: what.to_string(),
    }
}

/// A shared memory object mapped by `e`.
fn shm(pid: Pid, e: &MapEntry, kind: ShmKind) -> VmaBacking {
    let size = std::fs::metadata(map_files_path(pid, e))
        .map(|m| m.size())
        .unwrap_or(0);
    VmaBacking::SharedMemory(SharedMemory {
        kind,
        id: e.inode,
        offset: e.offset,
        size,
        name: e.name.clone(),
    })
}

/// What backs an area, by its name, and which of its pages to save.
fn backing(
    pid: Pid,
    e: &MapEntry,
    shared: bool,
    files: &mut FileStats,
) -> Result<(VmaBacking, Policy)> {
    let name = e.name.as_slice();
    if name.is_empty() || name.starts_with(b"[anon:") {
        Ok(if shared {
            // A shared anonymous area always has a shmem name; be safe anyway.
            (shm(pid, e, ShmKind::AnonymousShared), Policy::Shmem)
        } else {
            (VmaBacking::Anonymous, Policy::Anon)
        })
    } else if name.starts_with(b"[anon_shmem:") {
        Ok((shm(pid, e, ShmKind::AnonymousShared), Policy::Shmem))
    } else if name.starts_with(b"[") {
        let (sp, policy) = match name {
            b"[heap]" => (SpecialMapping::Heap, Policy::Anon),
            b"[stack]" => (SpecialMapping::Stack, Policy::Anon),
            b"[vdso]" => (SpecialMapping::Vdso, Policy::Nothing),
            b"[vvar]" => (SpecialMapping::Vvar, Policy::Nothing),
            b"[vvar_vclock]" => (SpecialMapping::VvarVclock, Policy::Nothing),
            b"[vsyscall]" => (SpecialMapping::Vsyscall, Policy::Nothing),
            b"[uprobes]" => (SpecialMapping::Uprobes, Policy::Nothing),
            _ => return Err(reject(pid, e, "this special mapping is not supported")),
        };
        Ok((VmaBacking::Special(sp), policy))
    } else if name.starts_with(b"/") {
        path_backing(pid, e, shared, files)
    } else if name.starts_with(b"socket:[") {
        packet_ring(pid, e)
    } else {
        Err(reject(
            pid,
            e,
            "mappings of this kind of object are not supported",
        ))
    }
}

/// The rings of a packet socket mapped into the process (shared or
/// private, as the kernel allows both): restorable when mapped whole,
/// from offset 0, as mmap(2) of the socket makes them (the kernel refuses
/// any other mapping of them); a part left after a munmap is refused. Which fd holds the socket is checked with the fds
/// (`check_ring_holders`). The frames are the socket's, not saved.
fn packet_ring(pid: Pid, e: &MapEntry) -> Result<(VmaBacking, Policy)> {
    let d = ckpt_sys::sock_diag::packet_diag(e.inode)
        .ok()
        .flatten()
        .ok_or_else(|| {
            reject(
                pid,
                e,
                "mappings of sockets other than packet sockets (of this network namespace) are not supported",
            )
        })?;
    let ring_len = |r: Option<[u32; 7]>| r.map_or(0, |r| u64::from(r[0]) * u64::from(r[1]));
    let whole = ring_len(d.rx_ring) + ring_len(d.tx_ring);
    if e.offset != 0 || e.end - e.start != whole {
        return Err(reject(
            pid,
            e,
            &format!(
                "a part of a packet socket's rings ({whole} bytes mapped from offset 0 when whole) cannot be restored"
            ),
        ));
    }
    Ok((VmaBacking::PacketRing, Policy::Nothing))
}

/// Every packet-ring mapping of `p` names a packet socket one of its fds
/// holds (the restore maps the rings through that fd).
pub(crate) fn check_ring_holders(
    pid: Pid,
    p: &ckpt_image::Process,
    files: &[ckpt_image::OpenFile],
) -> Result<()> {
    for v in p
        .vmas
        .iter()
        .filter(|v| v.backing == VmaBacking::PacketRing)
    {
        let held = p.fds.iter().any(|fd| {
            files.iter().any(|f| {
                f.id == fd.file
                    && f.path == v.name
                    && matches!(f.kind, ckpt_image::FileKind::PacketSocket(_))
            })
        });
        if !held {
            return Err(Error::Vma {
                pid,
                start: v.start,
                end: v.end,
                name: String::from_utf8_lossy(&v.name).into_owned(),
                what: "the rings of a packet socket no fd of the process holds cannot be restored"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The backing of an area whose name is a path: shared memory under a
/// path name (/dev/zero, SysV, memfd, /dev/shm), else a file.
fn path_backing(
    pid: Pid,
    e: &MapEntry,
    shared: bool,
    files: &mut FileStats,
) -> Result<(VmaBacking, Policy)> {
    if crate::fds::regular::is_secretmem(&e.name, e.dev) {
        return Err(reject(pid, e, crate::fds::regular::SECRETMEM));
    }
    let (path, deleted) = strip_deleted(&e.name);
    if path == b"/[aio]" && deleted && shared {
        // An AIO context's ring: its header now, all its pages.
        let ring = super::aio::ring(pid, e).map_err(|what| reject(pid, e, &what))?;
        return Ok((VmaBacking::AioRing(ring), Policy::Whole));
    }
    // Unlinked under this name but linked under another one (glibc's
    // sem_open makes /dev/shm/sem.NAME that way): not deleted.
    let live = if deleted && !path.starts_with(b"/SYSV") && !path.starts_with(b"/memfd:") {
        std::fs::metadata(map_files_path(pid, e))
            .ok()
            .filter(|m| m.nlink() > 0)
            .and_then(|m| relinked(path, m.dev(), m.ino()))
    } else {
        None
    };
    let (path, deleted) = match &live {
        Some(p) => (p.as_slice(), false),
        None => (path, deleted),
    };
    if path == b"/dev/zero" {
        return Ok(if shared {
            (shm(pid, e, ShmKind::AnonymousShared), Policy::Shmem)
        } else if deleted && shared_elsewhere(pid, e, false) {
            // A private mapping of shared anonymous memory (opened through
            // /proc/PID/map_files): the object, with the pages the process
            // wrote over it.
            (shm(pid, e, ShmKind::AnonymousShared), Policy::PrivateFile)
        } else {
            (VmaBacking::Anonymous, Policy::Anon)
        });
    }
    if path.starts_with(b"/SYSV") && deleted {
        // The segment's contents are saved once, with the segment
        // (process/sysv.rs), not with each mapping of it.
        return Ok((shm(pid, e, ShmKind::SysvShm), Policy::Nothing));
    }
    if path.starts_with(b"/memfd:") {
        let policy = if shared {
            Policy::Shmem
        } else if shared_elsewhere(pid, e, true) {
            Policy::PrivateFile
        } else {
            Policy::Whole
        };
        return Ok((shm(pid, e, ShmKind::Memfd), policy));
    }
    if path.starts_with(b"/dev/shm/") && shared {
        // A POSIX shm object (sem_open, shm_open); unlinked ones too (a
        // named semaphore glibc unlinked at once): shared memory whose
        // pages are saved, a shmem object whatever its name.
        let mut b = shm(pid, e, ShmKind::PosixShm);
        if let VmaBacking::SharedMemory(s) = &mut b {
            if !deleted {
                s.name = path.to_vec();
            }
        }
        return Ok((b, Policy::Shmem));
    }
    let md = files.map_files_meta(pid, e).or_else(|_| {
        if deleted {
            Err(std::io::Error::from_raw_os_error(libc::ENOENT))
        } else {
            std::fs::metadata(bytes_path(path))
        }
    });
    let file = match md {
        Ok(md) => {
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            if ft.is_char_device() || ft.is_block_device() {
                return Err(reject(pid, e, "device mappings are not supported"));
            }
            identity(path, &md, deleted)
        }
        Err(_) => FileIdentity {
            path: path.to_vec(),
            dev: e.dev,
            inode: e.inode,
            deleted,
            ..Default::default()
        },
    };
    // A deleted file's contents are saved whole (deleted.rs, or with the
    // fd that holds it): its pages are then those of any file.
    let policy = if shared {
        Policy::Nothing
    } else {
        Policy::PrivateFile
    };
    Ok((
        VmaBacking::File(FileMapping {
            file,
            offset: e.offset,
            ..Default::default()
        }),
        policy,
    ))
}

/// Whether the image will hold the contents of the shared memory object a
/// private mapping `e` maps, so that the mapping can be made of the object
/// again with only the pages written over it saved: the process maps every
/// page of it that `e` covers shared, or (`by_fd`: a memfd, saved whole
/// with its fd) holds it at an fd. Otherwise the private mapping is saved
/// whole, as a copy.
fn shared_elsewhere(pid: Pid, e: &MapEntry, by_fd: bool) -> bool {
    let same = |m: &std::fs::Metadata| m.ino() == e.inode && m.dev() == e.dev;
    if by_fd {
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            let held = dir.flatten().any(|d| {
                std::fs::read_link(d.path())
                    .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"))
                    && std::fs::metadata(d.path()).is_ok_and(|m| same(&m))
            });
            if held {
                return true;
            }
        }
    }
    let Ok(maps) = std::fs::read(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let size = std::fs::metadata(map_files_path(pid, e)).map_or(0, |m| m.size());
    // The object's ranges mapped shared, then whether they cover
    // [offset, end) of `e` (within the object).
    let mut covered: Vec<(u64, u64)> = maps
        .split(|&c| c == b'\n')
        .filter_map(parse_header)
        .filter(|m| m.perms[3] == b's' && m.inode == e.inode && m.dev == e.dev)
        .map(|m| (m.offset, m.offset + (m.end - m.start)))
        .collect();
    covered.sort_unstable();
    let (mut at, end) = (e.offset, size.min(e.offset + (e.end - e.start)));
    for (s, t) in covered {
        if s > at {
            break;
        }
        at = at.max(t);
    }
    at >= end
}

pub(crate) fn map_files_path(pid: Pid, e: &MapEntry) -> String {
    format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end)
}

pub(crate) fn bytes_path(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_parsing() {
        let text = b"55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234                       /usr/bin/cat with space\n\
Size:                  8 kB\n\
Rss:                   8 kB\n\
Anonymous:             0 kB\n\
Swap:                  0 kB\n\
VmFlags: rd mr mw me dw sd\n\
7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]\n\
Rss:                   4 kB\n\
VmFlags: rd wr mr mw me gd ac dd lo\n\
7ffd5000-7ffd6000 rw-s 00000000 00:01 99 \n\
VmFlags: rd wr sh\n";
        let v = parse_smaps(1, text).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].start, 0x55d0c0a00000);
        assert_eq!(v[0].name, b"/usr/bin/cat with space");
        assert_eq!(v[0].dev, 0x801);
        assert_eq!(v[0].inode, 1234);
        assert_eq!(v[0].rss_kb, 8);
        assert_eq!(v[1].name, b"[stack]");
        assert_eq!(v[1].vm_flags.len(), 9);
        let (vma, pol) = classify(1, &v[1]).unwrap();
        assert!(vma.grows_down);
        assert_eq!(vma.backing, VmaBacking::Special(SpecialMapping::Stack));
        assert_eq!(pol, Policy::Anon);
        assert_eq!(
            vma.madvise,
            1 << madvise::DO_NOT_DUMP | 1 << madvise::LOCKED
        );
        assert_eq!(vma.prot, 3);
        assert_eq!(v[2].name, b"");
    }

    #[test]
    fn hugetlb_areas() {
        let text = b"7f0000000000-7f0000400000 rw-p 00000000 00:10 3 /anon_hugepage (deleted)\n\
KernelPageSize:     2048 kB\n\
Rss:                   0 kB\n\
VmFlags: rd wr mr mw me de ht\n\
7f0000400000-7f0000600000 rw-p 00000000 00:10 4 /hugepages/file\n\
KernelPageSize:     2048 kB\n\
VmFlags: rd wr mr mw me de ht\n";
        let v = parse_smaps(1, text).unwrap();
        assert_eq!(v[0].kernel_page_kb, 2048);
        let (vma, pol) = classify(1, &v[0]).unwrap();
        assert_eq!(vma.backing, VmaBacking::Anonymous);
        assert_eq!(vma.huge_page_size, 2 << 20);
        assert_eq!(pol, Policy::HugePrivate { file: false });
        let e = classify(1, &v[1]).unwrap_err().to_string();
        assert!(e.contains("hugetlbfs files"), "{e}");
    }
}
