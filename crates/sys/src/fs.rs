//! Paths: the working directory, extended attributes.

use crate::{last_os, os_errno, OsResult, Result};
use std::ffi::CStr;

/// chdir(2).
pub fn chdir(path: &CStr) -> Result<()> {
    nix::unistd::chdir(path).op("chdir")
}

/// getxattr(2) on a path (following symlinks), e.g. "system.sockprotoname"
/// of /proc/PID/fd/N, which names a socket's protocol ("TCP", "UNIX", ...).
/// At most 256 bytes. By hand: nix has no extended attributes.
pub fn getxattr(path: &std::path::Path, name: &str) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| os_errno("getxattr", 0, libc::EINVAL))?;
    let n = std::ffi::CString::new(name).map_err(|_| os_errno("getxattr", 0, libc::EINVAL))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both names are NUL-terminated C strings that outlive the call;
    // the kernel writes at most buf.len() bytes into `buf`.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(last_os("getxattr", 0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// lchown(2) (async-signal-safe).
pub fn lchown(path: &CStr, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: `path` is a live NUL-terminated string; integer arguments.
    if unsafe { libc::lchown(path.as_ptr(), uid, gid) } < 0 {
        return Err(crate::last_os("lchown", 0));
    }
    Ok(())
}

/// chmod(2) (async-signal-safe).
pub fn chmod(path: &CStr, mode: u32) -> Result<()> {
    // SAFETY: `path` is a live NUL-terminated string; integer arguments.
    if unsafe { libc::chmod(path.as_ptr(), mode) } < 0 {
        return Err(crate::last_os("chmod", 0));
    }
    Ok(())
}

/// unlink(2) (async-signal-safe).
pub fn unlink(path: &CStr) -> Result<()> {
    // SAFETY: `path` is a live NUL-terminated string.
    if unsafe { libc::unlink(path.as_ptr()) } < 0 {
        return Err(crate::last_os("unlink", 0));
    }
    Ok(())
}

/// fcntl(F_SETOWN_EX) and F_SETSIG: who gets the fd's SIGIO (kind:
/// F_OWNER_TID 0, PID 1, PGRP 2) and which signal (0: SIGIO).
/// Async-signal-safe.
pub fn set_owner(fd: i32, kind: i32, pid: i32, signal: i32) -> Result<()> {
    const F_SETOWN_EX: i32 = 15;
    // struct f_owner_ex { int type; pid_t pid; }
    let own: [i32; 2] = [kind, pid];
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex (two ints), a live local.
    if unsafe { libc::fcntl(fd, F_SETOWN_EX, own.as_ptr()) } < 0 {
        return Err(crate::last_os("fcntl(F_SETOWN_EX)", 0));
    }
    const F_SETSIG: i32 = 10;
    // SAFETY: integer arguments only.
    if unsafe { libc::fcntl(fd, F_SETSIG, signal) } < 0 {
        return Err(crate::last_os("fcntl(F_SETSIG)", 0));
    }
    Ok(())
}
