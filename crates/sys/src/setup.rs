//! Safe wrappers for restore-side setup that needs `unsafe`.
//!
//! Most of these run in the freshly forked restore stub, before it is
//! seized, possibly in a child of a multi-threaded restorer: they only make
//! the one system call, never allocate, and work on raw fd numbers (the stub
//! arranges its fd table by number, so owned fd types would get in the way).
//! Errors are [`Error::Os`] with the operation's name and the errno.

use crate::{Error, Pid, Result};
use std::ffi::CStr;

fn os(op: &'static str) -> Error {
    Error::Os {
        op,
        tid: 0,
        source: std::io::Error::last_os_error(),
    }
}

fn check_fd(op: &'static str, r: libc::c_long) -> Result<i32> {
    if r < 0 {
        Err(os(op))
    } else {
        Ok(r as i32)
    }
}

/// open(2), retrying on EINTR.
pub fn open(path: &CStr, flags: i32, mode: u32) -> Result<i32> {
    loop {
        // SAFETY: `path` is a valid NUL-terminated string for the call.
        let r = unsafe { libc::open(path.as_ptr(), flags, mode as libc::c_uint) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return check_fd("open", r as libc::c_long);
    }
}

/// close(2).
pub fn close(fd: i32) -> Result<()> {
    // SAFETY: closing an fd number is memory-safe.
    let r = unsafe { libc::close(fd) };
    check_fd("close", r as libc::c_long).map(drop)
}

/// dup3(2): make `new` refer to the open file description of `old`.
pub fn dup3(old: i32, new: i32, cloexec: bool) -> Result<()> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: integer arguments only.
    let r = unsafe { libc::dup3(old, new, flags) };
    check_fd("dup3", r as libc::c_long).map(drop)
}

/// fcntl(F_DUPFD_CLOEXEC): a duplicate of `fd` at the lowest free number >= `min`.
pub fn dup_at_least(fd: i32, min: i32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    check_fd("fcntl(F_DUPFD_CLOEXEC)", r as libc::c_long)
}

/// fcntl(F_GETFL).
pub fn get_fl(fd: i32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    check_fd("fcntl(F_GETFL)", r as libc::c_long)
}

/// fcntl(F_SETFL): status flags (O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME).
pub fn set_fl(fd: i32, flags: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    check_fd("fcntl(F_SETFL)", r as libc::c_long).map(drop)
}

/// lseek(fd, off, SEEK_SET).
pub fn seek(fd: i32, off: u64) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_SET) };
    check_fd("lseek", r as libc::c_long).map(drop)
}

/// pipe2(2): (read end, write end).
pub fn pipe2(flags: i32) -> Result<(i32, i32)> {
    let mut p = [0i32; 2];
    // SAFETY: `p` has room for the two fds.
    let r = unsafe { libc::pipe2(p.as_mut_ptr(), flags) };
    check_fd("pipe2", r as libc::c_long)?;
    Ok((p[0], p[1]))
}

/// fcntl(F_GETPIPE_SZ).
pub fn pipe_size(fd: i32) -> Result<u32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    check_fd("fcntl(F_GETPIPE_SZ)", r as libc::c_long).map(|n| n as u32)
}

/// fcntl(F_SETPIPE_SZ).
pub fn set_pipe_size(fd: i32, size: u32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int) };
    check_fd("fcntl(F_SETPIPE_SZ)", r as libc::c_long).map(drop)
}

/// Write all of `data` at `off` (pwrite(2), retrying short writes and EINTR).
pub fn pwrite_all(fd: i32, data: &[u8], off: u64) -> Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        // SAFETY: pointer and length describe a live slice.
        let r = unsafe {
            libc::pwrite(
                fd,
                data[done..].as_ptr().cast(),
                data.len() - done,
                (off + done as u64) as libc::off_t,
            )
        };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os("pwrite"));
        }
        done += r as usize;
    }
    Ok(())
}

/// eventfd(2) with count 0 (add the count with a write of 8 bytes).
pub fn eventfd(flags: i32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::eventfd(0, flags) };
    check_fd("eventfd", r as libc::c_long)
}

/// timerfd_create(2).
pub fn timerfd_create(clock: i32, flags: i32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::timerfd_create(clock, flags) };
    check_fd("timerfd_create", r as libc::c_long)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// timerfd_settime(2) with a value and an interval in nanoseconds.
pub fn timerfd_settime(fd: i32, flags: i32, value_ns: u64, interval_ns: u64) -> Result<()> {
    let its = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(value_ns),
    };
    // SAFETY: `its` is a valid itimerspec; the old value is not requested.
    let r = unsafe { libc::timerfd_settime(fd, flags, &its, std::ptr::null_mut()) };
    check_fd("timerfd_settime", r as libc::c_long).map(drop)
}

/// ioctl(TFD_IOC_SET_TICKS): set the number of expirations not yet read.
pub fn timerfd_set_ticks(fd: i32, ticks: u64) -> Result<()> {
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from the pointer, which is live.
    let r = unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &ticks as *const u64) };
    check_fd("ioctl(TFD_IOC_SET_TICKS)", r as libc::c_long).map(drop)
}

/// signalfd(2) for a new fd with the mask (bit signo-1).
pub fn signalfd(mask: u64, flags: i32) -> Result<i32> {
    // SAFETY: the kernel reads exactly 8 bytes (the size passed) of the mask.
    let r = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) };
    check_fd("signalfd", r)
}

/// epoll_create1(2).
pub fn epoll_create1(flags: i32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::epoll_create1(flags) };
    check_fd("epoll_create1", r as libc::c_long)
}

/// epoll_ctl(EPOLL_CTL_ADD).
pub fn epoll_add(epfd: i32, fd: i32, events: u32, data: u64) -> Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event for the call.
    let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    check_fd("epoll_ctl(EPOLL_CTL_ADD)", r as libc::c_long).map(drop)
}

/// inotify_init1(2).
pub fn inotify_init1(flags: i32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::inotify_init1(flags) };
    check_fd("inotify_init1", r as libc::c_long)
}

/// inotify_add_watch(2): the watch descriptor.
pub fn inotify_add_watch(fd: i32, path: &CStr, mask: u32) -> Result<i32> {
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    let r = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
    check_fd("inotify_add_watch", r as libc::c_long)
}

/// socketpair(AF_UNIX, `sock_type`), close-on-exec.
pub fn socketpair(sock_type: i32) -> Result<(i32, i32)> {
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` has room for the two fds.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            sock_type | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check_fd("socketpair", r as libc::c_long)?;
    Ok((fds[0], fds[1]))
}

fn sockaddr_un(name: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() > sa.sun_path.len() {
        return Err(Error::Os {
            op: "bind",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
        });
    }
    for (d, s) in sa.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    Ok((sa, len as libc::socklen_t))
}

/// Make room for a unix socket to be bound at `path`: a socket file there
/// is removed (the caller made sure nobody listens on it: see the
/// restore's check). Nothing there: nothing to do. Fails with EEXIST when
/// it is not a socket.
pub fn clear_stale_socket(path: &CStr) -> Result<()> {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated, `st` a valid out buffer.
    if unsafe { libc::lstat(path.as_ptr(), &mut st) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(os("lstat"));
    }
    let err = |errno| Error::Os {
        op: "bind",
        tid: 0,
        source: std::io::Error::from_raw_os_error(errno),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(err(libc::EEXIST));
    }
    // SAFETY: `path` is NUL-terminated.
    if unsafe { libc::unlink(path.as_ptr()) } < 0 {
        return Err(os("unlink"));
    }
    Ok(())
}

/// A unix socket of `sock_type`; with a `name` (abstract: a leading NUL
/// byte) bound to it, and listening when `backlog` > 0.
pub fn unix_socket(sock_type: i32, name: &[u8], backlog: u32) -> Result<i32> {
    // SAFETY: integer arguments only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, sock_type | libc::SOCK_CLOEXEC, 0) };
    let fd = check_fd("socket", fd as libc::c_long)?;
    let fail = |op| {
        let e = os(op);
        let _ = close(fd);
        Err(e)
    };
    if !name.is_empty() {
        let (sa, len) = match sockaddr_un(name) {
            Ok(x) => x,
            Err(e) => {
                let _ = close(fd);
                return Err(e);
            }
        };
        // SAFETY: `sa` is a valid sockaddr_un; `len` covers the family and the name.
        let r = unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_un).cast(), len) };
        if r < 0 {
            return fail("bind");
        }
    }
    if backlog > 0 {
        // SAFETY: integer arguments only.
        if unsafe { libc::listen(fd, backlog.min(i32::MAX as u32) as i32) } < 0 {
            return fail("listen");
        }
    }
    Ok(fd)
}

/// A listening TCP socket on `addr` (4 bytes: IPv4, 16: IPv6, network
/// order) and `port`: socket(2) with `flags` (SOCK_NONBLOCK...),
/// SO_REUSEADDR (the saved process's socket may have left connections in
/// TIME_WAIT), bind(2), listen(2). The fd, or the first failing step's
/// error (e.g. bind: EADDRINUSE).
pub fn tcp_listen(addr: &[u8], port: u16, backlog: u32, flags: i32) -> Result<i32> {
    let family = match addr.len() {
        4 => libc::AF_INET,
        16 => libc::AF_INET6,
        _ => {
            return Err(Error::Os {
                op: "socket",
                tid: 0,
                source: std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT),
            })
        }
    };
    // SAFETY: integer arguments only.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | flags, libc::IPPROTO_TCP) };
    let fd = check_fd("socket", fd as libc::c_long)?;
    let fail = |op| {
        let e = os(op);
        let _ = close(fd);
        Err(e)
    };
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return fail("setsockopt(SO_REUSEADDR)");
    }
    let r = if family == libc::AF_INET {
        // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes(addr.try_into().expect("4 bytes"));
        // SAFETY: `sa` is a valid sockaddr_in for the length given.
        unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    } else {
        // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        sa.sin6_addr.s6_addr.copy_from_slice(addr);
        // SAFETY: `sa` is a valid sockaddr_in6 for the length given.
        unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    };
    if r < 0 {
        return fail("bind");
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::listen(fd, backlog.min(i32::MAX as u32) as i32) } < 0 {
        return fail("listen");
    }
    Ok(fd)
}

/// memfd_create(2).
pub fn memfd_create(name: &CStr, flags: u32) -> Result<i32> {
    // SAFETY: `name` is NUL-terminated.
    let r = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) };
    check_fd("memfd_create", r)
}

/// ftruncate(2).
pub fn ftruncate(fd: i32, len: u64) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::ftruncate(fd, len as libc::off_t) };
    check_fd("ftruncate", r as libc::c_long).map(drop)
}

/// fchmod(2).
pub fn fchmod(fd: i32, mode: u32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fchmod(fd, mode as libc::mode_t) };
    check_fd("fchmod", r as libc::c_long).map(drop)
}

/// fcntl(F_ADD_SEALS).
pub fn add_seals(fd: i32, seals: u32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals as libc::c_int) };
    check_fd("fcntl(F_ADD_SEALS)", r as libc::c_long).map(drop)
}

/// chdir(2).
pub fn chdir(path: &CStr) -> Result<()> {
    // SAFETY: `path` is NUL-terminated.
    let r = unsafe { libc::chdir(path.as_ptr()) };
    check_fd("chdir", r as libc::c_long).map(drop)
}

/// getppid(2).
pub fn getppid() -> Pid {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::getppid() }
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if r <= 0 {
        4096
    } else {
        r as u64
    }
}

/// A resource limit: (soft, hard); `u64::MAX` is unlimited.
pub type Limit = (u64, u64);

/// prlimit(2) of another process (pid 0: the caller): read the limit and,
/// with `new`, set it. Returns the old limit.
pub fn prlimit(pid: Pid, resource: u32, new: Option<Limit>) -> Result<Limit> {
    let newl = new.map(|(s, h)| libc::rlimit64 {
        rlim_cur: s,
        rlim_max: h,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let newp = newl
        .as_ref()
        .map_or(std::ptr::null(), |l| l as *const libc::rlimit64);
    // SAFETY: both pointers are null or point at live rlimit64 values.
    let r = unsafe { libc::prlimit64(pid, resource as _, newp, &mut old) };
    if r < 0 {
        return Err(Error::Os {
            op: "prlimit",
            tid: pid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// sched_setaffinity(2) of a thread; `mask` is a bitmap, 64 cpus per word.
pub fn sched_setaffinity(tid: Pid, mask: &[u64]) -> Result<()> {
    // SAFETY: the kernel reads `len` bytes from the live slice.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid,
            std::mem::size_of_val(mask),
            mask.as_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::Os {
            op: "sched_setaffinity",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// sched_getaffinity(2) of a thread, 64 cpus per word.
pub fn sched_getaffinity(tid: Pid) -> Result<Vec<u64>> {
    let mut mask = vec![0u64; 16];
    // SAFETY: the kernel writes at most `len` bytes into the live buffer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            mask.len() * 8,
            mask.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::Os {
            op: "sched_getaffinity",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    mask.truncate((r as usize).div_ceil(8));
    Ok(mask)
}

/// sched_setscheduler(2) of a thread.
pub fn sched_setscheduler(tid: Pid, policy: u32, priority: u32) -> Result<()> {
    let p = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: `p` is a valid sched_param.
    let r = unsafe { libc::sched_setscheduler(tid, policy as i32, &p) };
    if r < 0 {
        return Err(Error::Os {
            op: "sched_setscheduler",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// (policy, rt priority) of a thread.
pub fn sched_getscheduler(tid: Pid) -> Result<(u32, u32)> {
    let mut p = libc::sched_param { sched_priority: 0 };
    // SAFETY: integer argument / valid out-pointer.
    let pol = unsafe { libc::sched_getscheduler(tid) };
    // SAFETY: `p` is a valid out-pointer.
    let r = unsafe { libc::sched_getparam(tid, &mut p) };
    if pol < 0 || r < 0 {
        return Err(Error::Os {
            op: "sched_getscheduler",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((pol as u32, p.sched_priority as u32))
}

/// setpriority(PRIO_PROCESS, tid, nice): the nice value of one thread.
pub fn set_nice(tid: Pid, nice: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r < 0 {
        return Err(Error::Os {
            op: "setpriority",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The nice value of one thread (getpriority(2)).
pub fn get_nice(tid: Pid) -> Result<i32> {
    // getpriority can legitimately return -1: use the raw syscall, which
    // returns 20 - nice.
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if r < 0 {
        return Err(Error::Os {
            op: "getpriority",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(20 - r as i32)
}

/// waitpid(pid, WNOHANG | __WALL) for a child that is not (or no longer) traced
/// by us: reaps it if it is gone. Returns true when something was reaped.
pub fn reap_nohang(pid: Pid) -> bool {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
    r == pid
}

/// waitpid(pid, __WALL), blocking until the child (or traced thread) ends.
/// Stops are skipped. Errors (ECHILD) end the wait.
pub fn reap_blocking(pid: Pid) {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return;
        }
    }
}

/// read(2) into `buf`, retrying on EINTR; 0 at end of file.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    loop {
        // SAFETY: pointer and length describe a live, writable slice.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os("read"));
        }
        return Ok(r as usize);
    }
}

/// A duplicate of fd `fd` of process `pid` in this process
/// (pidfd_open + pidfd_getfd; needs ptrace access to `pid`).
pub fn fd_of(pid: Pid, fd: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let err = |op| Error::Os {
        op,
        tid: pid,
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: integer arguments only.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(err("pidfd_open"));
    }
    // SAFETY: the fd was just returned to us and is owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: integer arguments only.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(err("pidfd_getfd"));
    }
    // SAFETY: a new fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}

/// A range of another process's memory, laid out as a `struct iovec`
/// (the remote side of [`vm_writev`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteIov {
    pub addr: u64,
    pub len: usize,
}

const _: () = {
    assert!(std::mem::size_of::<RemoteIov>() == std::mem::size_of::<libc::iovec>());
    assert!(std::mem::align_of::<RemoteIov>() == std::mem::align_of::<libc::iovec>());
};

/// process_vm_writev(2) of the local slices to the remote ranges of `pid`
/// (at most IOV_MAX of each; the lengths need not match piece by piece).
/// Returns the bytes written, short when a remote page fails.
pub fn vm_writev(pid: Pid, local: &[std::io::IoSlice<'_>], remote: &[RemoteIov]) -> Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix and
    // each points into a live buffer the caller borrows for the call, which
    // the kernel only reads; `RemoteIov` has the layout of `struct iovec`
    // (checked above) and names addresses of the other process, which the
    // kernel validates.
    let n = unsafe {
        libc::process_vm_writev(
            pid,
            local.as_ptr().cast::<libc::iovec>(),
            local.len() as libc::c_ulong,
            remote.as_ptr().cast::<libc::iovec>(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(Error::Os {
            op: "process_vm_writev",
            tid: pid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(n as usize)
}

/// UFFDIO_COPY_MODE_DONTWAKE: do not wake threads waiting on the range.
pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;

/// ioctl(UFFDIO_COPY) on userfaultfd `fd`: copy `src` to `dst` in the
/// address space the userfaultfd belongs to (`dst` and the length
/// page-aligned, the range registered with it). Returns the bytes copied
/// (the kernel may copy part of it, even on failure) and the result of the
/// call (EAGAIN: try the rest again).
pub fn uffd_copy(fd: i32, dst: u64, src: &[u8], mode: u64) -> (u64, Result<()>) {
    const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
    #[repr(C)]
    struct UffdioCopy {
        dst: u64,
        src: u64,
        len: u64,
        mode: u64,
        copy: i64,
    }
    let mut c = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode,
        copy: 0,
    };
    // SAFETY: `c` is a valid uffdio_copy the kernel reads and updates; its
    // source range is `src`, a live slice the kernel only reads; `dst` is
    // in the userfaultfd's address space, validated by the kernel.
    let r = unsafe { libc::ioctl(fd, UFFDIO_COPY, &mut c as *mut UffdioCopy) };
    let result = if r < 0 {
        Err(os("ioctl(UFFDIO_COPY)"))
    } else {
        Ok(())
    };
    (c.copy.max(0) as u64, result)
}
