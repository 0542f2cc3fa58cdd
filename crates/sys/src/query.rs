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

/// kcmp(KCMP_FILE) as an ordering of open file descriptions: `Equal` when
/// fd `fd1` of `pid1` and fd `fd2` of `pid2` are the same description, else
/// a total order the kernel keeps stable while both files stay open (it
/// compares the descriptions' obfuscated addresses), so descriptions can be
/// sorted with it. Needs ptrace access to both processes; an `ENOSYS` error
/// means the kernel has no kcmp.
pub fn kcmp_file_order(pid1: Pid, pid2: Pid, fd1: i32, fd2: i32) -> Result<std::cmp::Ordering> {
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
    match r {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        2 => Ok(std::cmp::Ordering::Greater),
        r if r < 0 => Err(last_os("kcmp(KCMP_FILE)", pid1)),
        r => Err(crate::Error::Unexpected {
            tid: pid1,
            what: format!("kcmp(KCMP_FILE) returned {r}"),
        }),
    }
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

/// What the kernel's sock_diag tells about a unix socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnixDiag {
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET.
    pub sock_type: u8,
    /// TCP-like state: 1 established, 7 unconnected, 10 listening.
    pub state: u8,
    /// Bound name (empty when unbound; a leading NUL byte: abstract).
    pub name: Vec<u8>,
    /// Inode of the peer socket (0: none).
    pub peer: u64,
    /// Bytes (stream) or datagrams queued for reading; for a listening
    /// socket, connections waiting in the accept queue.
    pub rqueue: u32,
    /// Send queue; for a listening socket, the listen() backlog.
    pub wqueue: u32,
    /// Shutdown bits (1: no more reading, 2: no more writing).
    pub shutdown: u8,
}

const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// sock_diag of the unix socket of inode `ino` in the caller's network
/// namespace (NETLINK_SOCK_DIAG, one exact lookup).
pub fn unix_diag(ino: u64) -> Result<UnixDiag> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_NAME: u32 = 1;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    let ino32 = u32::try_from(ino).map_err(|_| crate::Error::Os {
        op: "sock_diag",
        tid: 0,
        source: std::io::Error::from_raw_os_error(libc::EOVERFLOW),
    })?;
    // SAFETY: integer arguments only.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(last_os("socket(NETLINK_SOCK_DIAG)", 0));
    }
    // SAFETY: a new fd, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNIX as u8); // sdiag_family
    req.push(0); // sdiag_protocol
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    req.extend_from_slice(&ino32.to_ne_bytes());
    req.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
                                       // SAFETY: `req` is a live buffer of the length given.
    let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(last_os("send(sock_diag)", 0));
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is a live buffer of the length given.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(last_os("recv(sock_diag)", 0));
    }
    parse_unix_diag(&buf[..n as usize])
}

fn diag_err(errno: i32) -> crate::Error {
    crate::Error::Os {
        op: "sock_diag",
        tid: 0,
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// The reply to [`unix_diag`]: one netlink message (or an error message).
fn parse_unix_diag(b: &[u8]) -> Result<UnixDiag> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let len = u32_at(0).ok_or_else(|| diag_err(libc::EPROTO))? as usize;
    let ty = u16_at(4).ok_or_else(|| diag_err(libc::EPROTO))?;
    if len > b.len() || len < 16 {
        return Err(diag_err(libc::EPROTO));
    }
    if ty == libc::NLMSG_ERROR as u16 {
        let e = u32_at(16).ok_or_else(|| diag_err(libc::EPROTO))? as i32;
        return Err(diag_err(if e < 0 { -e } else { libc::EPROTO }));
    }
    // unix_diag_msg: family, type, state, pad, ino, cookie[2].
    let m = 16;
    if len < m + 16 {
        return Err(diag_err(libc::EPROTO));
    }
    let mut d = UnixDiag {
        sock_type: b[m + 1],
        state: b[m + 2],
        ..Default::default()
    };
    let mut o = m + 16;
    while o + 4 <= len {
        let alen = u16_at(o).unwrap_or(0) as usize;
        let aty = u16_at(o + 2).unwrap_or(0) & 0x3fff;
        if alen < 4 || o + alen > len {
            break;
        }
        let data = &b[o + 4..o + alen];
        match aty {
            UNIX_DIAG_NAME => d.name = data.to_vec(),
            UNIX_DIAG_PEER if data.len() >= 4 => {
                d.peer = u64::from(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]))
            }
            UNIX_DIAG_RQLEN if data.len() >= 8 => {
                d.rqueue = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                d.wqueue = u32::from_ne_bytes([data[4], data[5], data[6], data[7]]);
            }
            UNIX_DIAG_SHUTDOWN if !data.is_empty() => d.shutdown = data[0],
            _ => {}
        }
        o += (alen + 3) & !3;
    }
    Ok(d)
}

/// The bytes queued for reading on a stream socket, without taking them
/// (recv with MSG_PEEK | MSG_DONTWAIT), at most `max`.
pub fn peek_stream(fd: BorrowedFd<'_>, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    // SAFETY: `buf` is a live buffer of the length given.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(Vec::new());
        }
        return Err(last_os("recv(MSG_PEEK)", 0));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A listening TCP socket as sock_diag reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpListener {
    pub inode: u64,
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// 4 or 16 bytes, network order.
    pub addr: Vec<u8>,
    pub port: u16,
    /// The listen() backlog.
    pub backlog: u32,
}

/// Every listening TCP socket of `family` (AF_INET, AF_INET6) in the
/// caller's network namespace (NETLINK_SOCK_DIAG dump of the listening
/// state only: it does not walk the established connections, unlike
/// /proc/net/tcp).
pub fn tcp_listeners(family: i32) -> Result<Vec<TcpListener>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const TCP_LISTEN: u32 = 10;
    // SAFETY: integer arguments only.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(last_os("socket(NETLINK_SOCK_DIAG)", 0));
    }
    // SAFETY: a new fd, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes()); // nlmsg_len: 16 + 56
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(family as u8);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(0); // no extensions
    req.push(0);
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req.extend_from_slice(&[0u8; 48]); // any socket id
                                       // SAFETY: `req` is a live buffer of the length given.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(last_os("send(sock_diag)", 0));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: `buf` is a live buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(last_os("recv(sock_diag)", 0));
        }
        if n == 0 {
            return Ok(out);
        }
        if parse_tcp_listeners(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

/// One datagram of a sock_diag dump; true at its end (NLMSG_DONE).
fn parse_tcp_listeners(b: &[u8], out: &mut Vec<TcpListener>) -> Result<bool> {
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut o = 0;
    while o + 16 <= b.len() {
        let len = u32_at(o).unwrap_or(0) as usize;
        let ty = u16::from_ne_bytes([b[o + 4], b[o + 5]]);
        if len < 16 || o + len > b.len() {
            return Err(diag_err(libc::EPROTO));
        }
        match ty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let e = u32_at(o + 16).unwrap_or(0) as i32;
                return Err(diag_err(if e < 0 { -e } else { libc::EPROTO }));
            }
            _ => {
                // inet_diag_msg: family, state, timer, retrans, sockid (48:
                // sport, dport big-endian, src[16], dst[16], if, cookie[2]),
                // expires, rqueue, wqueue, uid, inode.
                let m = o + 16;
                if len >= 16 + 72 {
                    let family = b[m];
                    let sport = u16::from_be_bytes([b[m + 4], b[m + 5]]);
                    let addr_len = if i32::from(family) == libc::AF_INET {
                        4
                    } else {
                        16
                    };
                    out.push(TcpListener {
                        inode: u64::from(u32_at(m + 68).unwrap_or(0)),
                        family,
                        addr: b[m + 8..m + 8 + addr_len].to_vec(),
                        port: sport,
                        backlog: u32_at(m + 60).unwrap_or(0),
                    });
                }
            }
        }
        o += (len + 3) & !3;
    }
    Ok(false)
}
