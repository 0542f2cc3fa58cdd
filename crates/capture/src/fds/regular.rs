//! Regular files (deleted ones with their contents) and directories; and
//! the identity of a file (path, device, inode, size, mtime, ...) that
//! other kinds and memory mappings record too.

use super::{fd_io, fd_sys, open_via_proc, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileExtent, FileIdentity, FileKind, RegularFile};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};

pub(super) fn matches(f: &RawFd) -> bool {
    f.path_type().is_some_and(|t| t.is_file() || t.is_dir())
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else { return Ok(None) };
    if is_secretmem(&f.link, md.dev()) {
        return Err(super::unsupported(f.fd, SECRETMEM));
    }
    if libc::major(md.dev()) == 0 && is_mqueue(cx.pid, f.fd) {
        return Err(super::unsupported(
            f.fd,
            format!(
                "POSIX message queue {}: not supported (its messages and attributes cannot be saved)",
                String::from_utf8_lossy(&f.link)
            ),
        ));
    }
    let (path, deleted_suffix) = strip_deleted(&f.link);
    // Unlinked under this name, linked under another (a file written under
    // a temporary name, then linked or renamed: glibc's sem_open).
    let live = (deleted_suffix && md.nlink() > 0 && !md.is_dir())
        .then(|| relinked(path, md.dev(), md.ino()))
        .flatten();
    let (path, deleted_suffix) = match &live {
        Some(p) => (p.as_slice(), false),
        None => (path, deleted_suffix),
    };
    if md.is_dir() {
        return Ok(Some(FileKind::Directory(identity(
            path,
            md,
            deleted_suffix,
        ))));
    }
    let deleted = deleted_suffix || md.nlink() == 0;
    let mut r = RegularFile {
        file: identity(path, md, deleted),
        ..Default::default()
    };
    if deleted {
        let (contents, extents) = read_data(cx.pid, f.fd, md.size())?;
        r.contents = cx.sink.add_blob(&contents)?;
        r.has_contents = true;
        r.extents = extents;
    }
    Ok(Some(FileKind::Regular(r)))
}

/// The data of a file the process has open (a deleted one), without its
/// holes: the bytes of each data range (SEEK_DATA/SEEK_HOLE), in order,
/// and the ranges; no ranges when the file is data from 0 to `size`
/// (or all holes: then no bytes either).
fn read_data(pid: i32, fd: i32, size: u64) -> Result<(Vec<u8>, Vec<FileExtent>)> {
    use std::os::fd::AsFd;
    let f = open_via_proc(pid, fd).map_err(fd_io(fd, "opening it to save its contents"))?;
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let seek = |at, hole| {
            ckpt_sys::fds::regular::seek_data_or_hole(f.as_fd(), at, hole)
                .map_err(fd_sys(fd, "finding its data (SEEK_DATA/SEEK_HOLE)"))
        };
        let Some(start) = seek(pos, false)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = seek(start, true)?.unwrap_or(size).min(size);
        extents.push(FileExtent {
            offset: start,
            length: end - start,
        });
        pos = end.max(start + 1);
    }
    let total: u64 = extents.iter().map(|e| e.length).sum();
    let mut data = vec![0u8; total as usize];
    let mut at = 0usize;
    for e in &extents {
        let buf = &mut data[at..at + e.length as usize];
        f.read_exact_at(buf, e.offset)
            .map_err(fd_io(fd, "reading its contents"))?;
        at += e.length as usize;
    }
    if extents.len() == 1 && extents[0].offset == 0 && extents[0].length == size {
        extents.clear();
    }
    Ok((data, extents))
}

/// The most entries of a directory [`relinked`] looks through.
const RELINK_SCAN: usize = 10_000;

/// Another name of the file (`dev`, `ino`) whose name `path` was unlinked,
/// in the same directory: the file is not deleted, it moved (a file made
/// under a temporary name, then linked under its real one, as glibc's
/// sem_open does in /dev/shm). None when there is none (among the first
/// entries of a big directory).
pub(crate) fn relinked(path: &[u8], dev: u64, ino: u64) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let cut = path.iter().rposition(|&c| c == b'/')?;
    let dir = if cut == 0 { &b"/"[..] } else { &path[..cut] };
    let entries = std::fs::read_dir(std::ffi::OsStr::from_bytes(dir)).ok()?;
    for e in entries.take(RELINK_SCAN).flatten() {
        if e.ino() != ino {
            continue;
        }
        let p = e.path();
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
            return Some(p.as_os_str().as_bytes().to_vec());
        }
    }
    None
}

/// Identity of a file from its metadata.
pub(crate) fn identity(path: &[u8], md: &std::fs::Metadata, deleted: bool) -> FileIdentity {
    FileIdentity {
        path: path.to_vec(),
        dev: md.dev(),
        inode: md.ino(),
        size: md.size(),
        mtime_ns: md
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.mtime_nsec()),
        mode: md.mode(),
        deleted,
        uid: md.uid(),
        gid: md.gid(),
        ctime_ns: md
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.ctime_nsec()),
        atime_ns: md
            .atime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.atime_nsec()),
        ..Default::default()
    }
}

/// Add the inode generation of the open file `f` (what, with ctime, tells
/// whether the file at a path is still the one saved) where its
/// filesystem has one.
pub(crate) fn add_generation(id: &mut FileIdentity, f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    if let Ok(g) = ckpt_sys::fs::inode_generation(f.as_raw_fd()) {
        id.generation = Some(g);
    }
}

/// Strip the kernel's " (deleted)" suffix; true if it was there.
pub(crate) fn strip_deleted(name: &[u8]) -> (&[u8], bool) {
    match name.strip_suffix(b" (deleted)") {
        Some(n) => (n, true),
        None => (name, false),
    }
}

/// statfs f_type of the mqueue filesystem.
const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// Fd `fd` of `pid` is a POSIX message queue (mq_open): its link names the
/// queue ("/name"), not a file of that path.
fn is_mqueue(pid: ckpt_sys::Pid, fd: i32) -> bool {
    let path = format!("/proc/{pid}/fd/{fd}");
    ckpt_sys::fs::fs_magic(std::path::Path::new(&path)).is_ok_and(|m| m == MQUEUE_MAGIC)
}

/// Why secret memory is refused (fds here, mappings in mem/vmas.rs).
pub(crate) const SECRETMEM: &str =
    "secret memory (memfd_secret) cannot be saved: the kernel lets no other process read it";

/// A memfd_secret file: "/secretmem (deleted)" on the kernel's internal
/// mount (major device 0), not a deleted file of that name on a disk.
pub(crate) fn is_secretmem(link: &[u8], dev: u64) -> bool {
    link == b"/secretmem (deleted)" && libc::major(dev) == 0
}
