//! Paths: the working directory, extended attributes, unlinking a name
//! only while it is still a given file.

use crate::{last_os, os_errno, OsResult, Result};
use std::ffi::CStr;

/// chdir(2).
pub fn chdir(path: &CStr) -> Result<()> {
    nix::unistd::chdir(path).op("chdir")
}

/// Unlink `path` if it is still the file open in `fd` (same device and
/// inode; a symlink there is not followed): true when it was. Allocates
/// nothing (the stub calls it after its fork).
pub fn unlink_if_same(path: &CStr, fd: impl std::os::fd::AsRawFd) -> Result<bool> {
    let fd = crate::fds::borrow("fstat", fd)?;
    let ours = nix::sys::stat::fstat(&*fd).op("fstat")?;
    let there = match nix::sys::stat::lstat(path) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(os_errno("lstat", 0, e as i32)),
    };
    if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino) {
        return Ok(false);
    }
    nix::unistd::unlink(path).op("unlink")?;
    Ok(true)
}

/// The inode generation of the file open in `fd` (ioctl
/// FS_IOC_GETVERSION: ext2/3/4, btrfs, xfs, ...). By hand: nix's ioctl
/// macros make unsafe functions of their own. ENOTTY where the filesystem
/// has none (tmpfs, overlayfs, ...).
pub fn inode_generation(fd: impl std::os::fd::AsRawFd) -> Result<u64> {
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    let mut v: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one long at the pointer, a live
    // local of that type.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETVERSION,
            &mut v as *mut libc::c_long,
        )
    };
    if r < 0 {
        return Err(last_os("ioctl(FS_IOC_GETVERSION)", 0));
    }
    Ok(v as u32 as u64)
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
