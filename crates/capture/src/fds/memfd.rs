//! memfds (memfd_create): name, size, seals and contents.

use super::{fd_io, fd_sys, open_via_proc, read_all, strip_deleted, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, MemFd};
use ckpt_sys::fds::memfd::get_seals;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

const PREFIX: &[u8] = b"/memfd:";

pub(super) fn matches(f: &RawFd) -> bool {
    let (path, deleted) = strip_deleted(&f.link);
    f.md.is_some() && path.starts_with(PREFIX) && deleted
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else { return Ok(None) };
    let (path, _) = strip_deleted(&f.link);
    let contents = read_all(cx.pid, f.fd)?;
    let file = open_via_proc(cx.pid, f.fd).map_err(fd_io(f.fd, "opening the memfd"))?;
    let seals = get_seals(file.as_fd()).map_err(fd_sys(f.fd, "reading its seals"))?;
    let blob = cx.sink.add_blob(&contents)?;
    Ok(Some(FileKind::MemFd(MemFd {
        name: path[PREFIX.len()..].to_vec(),
        id: md.ino(),
        size: md.size(),
        seals,
        contents: blob,
        mode: md.mode(),
        huge_page_size: huge_page_size(cx.pid, f.fd)?,
    })))
}

/// The page size of a memfd made with MFD_HUGETLB (0: an ordinary one).
fn huge_page_size(pid: ckpt_sys::Pid, fd: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let size = ckpt_sys::fs::hugetlb_page_size(std::path::Path::new(&path))
        .map_err(fd_sys(fd, "reading its filesystem (statfs)"))?;
    Ok(size.unwrap_or(0))
}
