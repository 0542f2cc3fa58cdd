//! Regular files (deleted ones with their contents) and directories; and
//! the identity of a file (path, device, inode, size, mtime, ...) that
//! other kinds and memory mappings record too.

use super::{read_all, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileIdentity, FileKind, RegularFile};
use std::os::unix::fs::MetadataExt;

pub(super) fn matches(f: &RawFd) -> bool {
    f.path_type().is_some_and(|t| t.is_file() || t.is_dir())
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else { return Ok(None) };
    let (path, deleted_suffix) = strip_deleted(&f.link);
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
        let contents = read_all(cx.pid, f.fd)?;
        r.contents = cx.sink.add_blob(&contents)?;
        r.has_contents = true;
    }
    Ok(Some(FileKind::Regular(r)))
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
