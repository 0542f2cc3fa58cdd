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
