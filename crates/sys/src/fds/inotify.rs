//! inotify: instances, watches, and the files their handles name.

use super::view;
use crate::{last_os, OsResult, Result};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// inotify_init1(2).
pub fn inotify_init1(flags: i32) -> Result<OwnedFd> {
    let i = Inotify::init(InitFlags::from_bits_retain(flags)).op("inotify_init1")?;
    Ok(i.into())
}

/// inotify_add_watch(2): the watch descriptor.
pub fn inotify_add_watch(fd: impl AsRawFd, path: &CStr, mask: u32) -> Result<i32> {
    const OP: &str = "inotify_add_watch";
    // SAFETY: from_owned_fd's contract (the fd is an inotify instance) only
    // matters to Inotify's system calls, which the kernel checks (EINVAL
    // for another kind of fd).
    let i = view(OP, fd, |o| unsafe { Inotify::from_owned_fd(o) })?;
    let wd = i
        .add_watch(path, AddWatchFlags::from_bits_retain(mask))
        .op(OP)?;
    Ok(wd.as_raw())
}

/// open_by_handle_at(2) with O_PATH (by hand: nix lacks it): the file a
/// handle from /proc/PID/fdinfo (inotify "f_handle:") refers to, on the
/// filesystem of `mount` (any fd on that filesystem, not O_PATH). Needs
/// CAP_DAC_READ_SEARCH.
pub fn open_by_handle(mount: BorrowedFd<'_>, handle_type: i32, handle: &[u8]) -> Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; },
    // built in a u32 buffer so that the header fields are aligned.
    let mut buf = vec![0u32; 2 + handle.len().div_ceil(4)];
    buf[0] = handle.len() as u32;
    buf[1] = handle_type as u32;
    for (i, chunk) in handle.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        buf[2 + i] = u32::from_ne_bytes(word);
    }
    // SAFETY: `buf` holds a valid struct file_handle (header, then
    // handle.len() bytes) for the duration of the call; the kernel only
    // reads it. The fd is borrowed, hence open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(last_os("open_by_handle_at", 0));
    }
    // SAFETY: the call succeeded and returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}
