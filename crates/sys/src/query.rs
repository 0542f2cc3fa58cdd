//! Safe wrappers for capture-side queries that need `unsafe` (kcmp, tee,
//! pipe sizes, FIONREAD, waitid without reaping, ...).
//!
//! Owned by ckpt-capture's authors. Every function here touches only fds the
//! caller owns (or plain integers), so none of them can break memory safety.

use crate::{last_os, Pid, Result};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const KCMP_FILE: libc::c_int = 0;

/// Whether fd `fd1` of `pid1` and fd `fd2` of `pid2` are the same open file
/// description (kcmp(KCMP_FILE)). Needs ptrace access to both processes.
/// An `ENOSYS` error means the kernel has no kcmp.
pub fn kcmp_same_file(pid1: Pid, pid2: Pid, fd1: i32, fd2: i32) -> Result<bool> {
    // SAFETY: kcmp takes only integer arguments and touches no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE as libc::c_long,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(last_os("kcmp(KCMP_FILE)", pid1));
    }
    Ok(r == 0)
}

/// A new pipe, both ends O_NONBLOCK | O_CLOEXEC: (read end, write end).
pub fn pipe_nonblock() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(last_os("pipe2", 0));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// tee(2): duplicate up to `len` bytes buffered in pipe `from` into pipe
/// `to` without consuming them. Non-blocking (SPLICE_F_NONBLOCK). Returns the
/// number of bytes duplicated (0 when `from` is empty).
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<usize> {
    // SAFETY: integer fds and flags only; the fds are borrowed, hence open.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(0);
        }
        return Err(crate::Error::Os {
            op: "tee",
            tid: 0,
            source: e,
        });
    }
    Ok(r as usize)
}

/// F_GETPIPE_SZ: the capacity of a pipe, bytes.
pub fn pipe_capacity(fd: BorrowedFd<'_>) -> Result<usize> {
    // SAFETY: integer arguments only; the fd is borrowed, hence open.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if r < 0 {
        return Err(last_os("fcntl(F_GETPIPE_SZ)", 0));
    }
    Ok(r as usize)
}

/// F_SETPIPE_SZ: resize a pipe; returns the new capacity.
pub fn set_pipe_capacity(fd: BorrowedFd<'_>, size: usize) -> Result<usize> {
    // SAFETY: integer arguments only; the fd is borrowed, hence open.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    if r < 0 {
        return Err(last_os("fcntl(F_SETPIPE_SZ)", 0));
    }
    Ok(r as usize)
}

/// FIONREAD: bytes ready to read (buffered in a pipe).
pub fn bytes_readable(fd: BorrowedFd<'_>) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(last_os("ioctl(FIONREAD)", 0));
    }
    Ok(n.max(0) as usize)
}

/// F_GET_SEALS of a memfd (or any shmem file).
pub fn get_seals(fd: BorrowedFd<'_>) -> Result<u32> {
    // SAFETY: integer arguments only; the fd is borrowed, hence open.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(last_os("fcntl(F_GET_SEALS)", 0));
    }
    Ok(r as u32)
}

/// System page size.
pub fn page_size() -> u32 {
    // SAFETY: sysconf takes an integer and reads no user memory.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if r <= 0 {
        4096
    } else {
        r as u32
    }
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Exited(i32),
    Killed(i32),
    /// Not an exit: the child stopped or continued (not reported with WEXITED only).
    Other,
}

/// Wait until `pid` (a child or tracee of ours) has exited, WITHOUT reaping it
/// (waitid with WEXITED | WNOWAIT | __WALL): it stays a zombie for whoever reaps it.
pub fn wait_exit_nowait(pid: Pid) -> Result<Exit> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (plain integers).
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `si` is a live, correctly sized out-parameter.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut si,
                libc::WEXITED | libc::WNOWAIT | libc::__WALL,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(crate::Error::Os {
                op: "waitid(WNOWAIT)",
                tid: pid,
                source: e,
            });
        }
        // SAFETY: waitid filled `si` for an exited child: si_status is valid.
        let status = unsafe { si.si_status() };
        return Ok(match si.si_code {
            libc::CLD_EXITED => Exit::Exited(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Killed(status),
            _ => Exit::Other,
        });
    }
}

/// getxattr(2) on a path (following symlinks), e.g. "system.sockprotoname"
/// of /proc/PID/fd/N, which names a socket's protocol ("TCP", "UNIX", ...).
pub fn getxattr(path: &std::path::Path, name: &str) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| crate::Error::Os {
        op: "getxattr",
        tid: 0,
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    let n = std::ffi::CString::new(name).map_err(|_| crate::Error::Os {
        op: "getxattr",
        tid: 0,
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
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

/// open_by_handle_at(2) with O_PATH: the file a handle from
/// /proc/PID/fdinfo (inotify "f_handle:") refers to, on the filesystem of
/// `mount` (any fd on that filesystem, not O_PATH). Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(mount: BorrowedFd<'_>, handle_type: i32, handle: &[u8]) -> Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; },
    // built in a u32 buffer so that the header fields are aligned.
    let words = 2 + handle.len().div_ceil(4);
    let mut buf = vec![0u32; words];
    buf[0] = handle.len() as u32;
    buf[1] = handle_type as u32;
    // SAFETY: `buf` has room for 8 header bytes plus handle.len() bytes; we
    // copy exactly that many bytes into it, after the header.
    unsafe {
        std::ptr::copy_nonoverlapping(
            handle.as_ptr(),
            buf.as_mut_ptr().add(2).cast::<u8>(),
            handle.len(),
        );
    }
    // SAFETY: `buf` holds a valid struct file_handle for the duration of the
    // call; the kernel only reads it. The fd is borrowed, hence open.
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

/// lseek(2) with SEEK_DATA (`hole == false`) or SEEK_HOLE: the next offset
/// at or after `off` that holds data (or is a hole). `None` when there is no
/// more data (ENXIO: at or past the end).
pub fn seek_data_or_hole(fd: BorrowedFd<'_>, off: u64, hole: bool) -> Result<Option<u64>> {
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    // SAFETY: integer arguments only; the fd is borrowed, hence open.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(crate::Error::Os {
            op: "lseek(SEEK_DATA/SEEK_HOLE)",
            tid: 0,
            source: e,
        });
    }
    Ok(Some(r as u64))
}
