//! Paths: the working directory, extended attributes, unlinking a name
//! only while it is still a given file.

use crate::{last_os, os_errno, OsResult, Result};
use std::ffi::CStr;

/// The filesystem magic (statfs f_type) of the file `path` leads to.
pub fn fs_magic(path: &std::path::Path) -> Result<i64> {
    let st = nix::sys::statfs::statfs(path).op("statfs")?;
    Ok(st.filesystem_type().0 as i64)
}

/// statfs f_type of hugetlbfs.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The page size of the hugetlbfs file `path` leads to; None when it is on
/// another filesystem.
pub fn hugetlb_page_size(path: &std::path::Path) -> Result<Option<u64>> {
    let st = nix::sys::statfs::statfs(path).op("statfs")?;
    Ok((st.filesystem_type().0 as i64 == HUGETLBFS_MAGIC).then(|| st.block_size() as u64))
}

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

/// How many pages of `[off, off + len)` of the file open in `fd` the page
/// cache holds (cachestat(2), Linux 6.5; ENOSYS before). It reads nothing
/// and starts no read-ahead. By hand: neither nix nor libc wraps it.
pub fn cached_pages(fd: impl std::os::fd::AsRawFd, off: u64, len: u64) -> Result<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off, len };
    let mut st = Stat::default();
    // SAFETY: cachestat reads one cachestat_range at the second pointer and
    // writes one struct cachestat at the third; both are live locals of
    // those layouts (repr(C), five and two u64 fields).
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    if r < 0 {
        return Err(last_os("cachestat", 0));
    }
    Ok(st.nr_cache)
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

/// A file type to create with [`mknod`] (S_IFIFO, S_IFSOCK, S_IFCHR,
/// S_IFBLK, S_IFREG in the `mode` bits) or a directory (S_IFDIR, made
/// with mkdir). The permission bits are those of `mode` (the umask
/// applies; see [`chmod_nofollow`]).
pub fn mknod(path: &CStr, mode: u32, rdev: u64) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    let kind = mode & libc::S_IFMT;
    let perm = Mode::from_bits_retain((mode & 0o7777) as libc::mode_t);
    if kind == libc::S_IFDIR {
        return nix::unistd::mkdir(path, perm).op("mkdir");
    }
    nix::sys::stat::mknod(path, SFlag::from_bits_retain(kind), perm, rdev).op("mknod")
}

/// Make a symlink at `path` to `target`.
pub fn symlink(target: &CStr, path: &CStr) -> Result<()> {
    nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, path).op("symlink")
}

/// The target of the symlink fd `fd` of process `pid` holds (an O_PATH fd
/// on a symlink, deleted ones too): /proc/PID/fd/N opened O_PATH (which
/// gives that symlink itself) and read with readlinkat(fd, "").
pub fn symlink_target_of(pid: crate::Pid, fd: i32) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let path = format!("/proc/{pid}/fd/{fd}");
    let f = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .op("open")?;
    Ok(nix::fcntl::readlinkat(&f, "").op("readlinkat")?.into_vec())
}

/// Remove the directory entry `path`: rmdir for a directory (`dir`),
/// unlink for anything else.
pub fn remove_entry(path: &CStr, dir: bool) -> Result<()> {
    use nix::unistd::UnlinkatFlags;
    let flag = if dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(nix::fcntl::AT_FDCWD, path, flag).op("unlinkat")
}

/// lchown(2): owner and group of `path` itself (not what a symlink
/// points to).
pub fn chown_nofollow(path: &CStr, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .op("lchown")
}

/// chmod(2) of `path` (after a chown, which clears set-id bits).
pub fn chmod_nofollow(path: &CStr, mode: u32) -> Result<()> {
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        nix::sys::stat::Mode::from_bits_retain((mode & 0o7777) as libc::mode_t),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .op("chmod")
}

fn timespec(ns: i64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(
        ns.div_euclid(1_000_000_000) as libc::time_t,
        ns.rem_euclid(1_000_000_000) as libc::c_long,
    )
}

/// utimensat(2) of `path` itself: access and modification times in
/// nanoseconds since the epoch.
pub fn set_times_nofollow(path: &CStr, atime_ns: i64, mtime_ns: i64) -> Result<()> {
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &timespec(atime_ns),
        &timespec(mtime_ns),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .op("utimensat")
}

/// futimens(2): access and modification times of an open file.
pub fn set_times(fd: impl std::os::fd::AsRawFd, atime_ns: i64, mtime_ns: i64) -> Result<()> {
    let fd = crate::fds::borrow("futimens", fd)?;
    nix::sys::stat::futimens(&*fd, &timespec(atime_ns), &timespec(mtime_ns)).op("futimens")
}

/// fchown(2) of an open file.
pub fn fchown(fd: impl std::os::fd::AsRawFd, uid: u32, gid: u32) -> Result<()> {
    let fd = crate::fds::borrow("fchown", fd)?;
    nix::unistd::fchown(
        &*fd,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .op("fchown")
}

/// fstat(2) of an open file: (uid, gid, mode).
pub fn owner_of(fd: impl std::os::fd::AsRawFd) -> Result<(u32, u32, u32)> {
    let fd = crate::fds::borrow("fstat", fd)?;
    let st = nix::sys::stat::fstat(&*fd).op("fstat")?;
    Ok((st.st_uid, st.st_gid, st.st_mode))
}

/// lstat(2) of `path`: (uid, gid, mode).
pub fn owner_of_path(path: &CStr) -> Result<(u32, u32, u32)> {
    let st = nix::sys::stat::lstat(path).op("lstat")?;
    Ok((st.st_uid, st.st_gid, st.st_mode))
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

/// renameat2(RENAME_NOREPLACE) of `from` to `to`; false when nothing is at
/// `from` (ENOENT). Async-signal-safe.
pub fn rename_noreplace(from: &CStr, to: &CStr) -> Result<bool> {
    // SAFETY: both are live NUL-terminated strings; AT_FDCWD dirfds.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r < 0 {
        let e = crate::last_os("renameat2", 0);
        if e.errno() == Some(libc::ENOENT) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(true)
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
