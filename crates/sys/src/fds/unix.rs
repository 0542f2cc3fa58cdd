//! Unix sockets: pairs, bound and listening sockets, stale socket files.

use super::socket::{bind, listen};
use crate::{os_errno, OsResult, Result};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrLike, UnixAddr};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};

fn sock_type(op: &'static str, t: i32) -> Result<SockType> {
    SockType::try_from(t).op(op)
}

/// socketpair(AF_UNIX, `sock_type`), close-on-exec.
pub fn socketpair(sock_type: i32) -> Result<(OwnedFd, OwnedFd)> {
    const OP: &str = "socketpair";
    nix::sys::socket::socketpair(
        AddressFamily::Unix,
        self::sock_type(OP, sock_type)?,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .op(OP)
}

/// The address of a unix socket named `name`, byte for byte: a path
/// (with the trailing NUL when the kernel reported one) or, with a
/// leading NUL byte, an abstract name. nix's constructors would refuse a
/// NUL inside a path name or add their own byte for an abstract one.
fn unix_addr(name: &[u8]) -> Result<UnixAddr> {
    let mut sa = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    if name.len() > sa.sun_path.len() {
        return Err(os_errno("bind", 0, libc::ENAMETOOLONG));
    }
    for (d, s) in sa.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    // SAFETY: the pointer is to a live sockaddr_un, and `len` (the family
    // and the name) is within it; from_raw copies that much of it.
    let addr = unsafe {
        UnixAddr::from_raw(
            (&sa as *const libc::sockaddr_un).cast(),
            Some(len as libc::socklen_t),
        )
    };
    addr.ok_or_else(|| os_errno("bind", 0, libc::EINVAL))
}

/// Make room for a unix socket to be bound at `path`: a socket file there
/// is removed (the caller made sure nobody listens on it: see the
/// restore's check). Nothing there: nothing to do. Fails with EEXIST when
/// it is not a socket.
pub fn clear_stale_socket(path: &CStr) -> Result<()> {
    let st = match nix::sys::stat::lstat(path) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(os_errno("lstat", 0, e as i32)),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(os_errno("bind", 0, libc::EEXIST));
    }
    nix::unistd::unlink(path).op("unlink")
}

/// A unix socket of `sock_type`, close-on-exec; with a `name` (abstract: a
/// leading NUL byte) bound to it, and listening when `backlog` > 0.
pub fn unix_socket(sock_type: i32, name: &[u8], backlog: u32) -> Result<OwnedFd> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        self::sock_type("socket", sock_type)?,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .op("socket")?;
    if !name.is_empty() {
        let addr = unix_addr(name)?;
        bind(&fd, &addr)?;
    }
    if backlog > 0 {
        listen(fd.as_raw_fd(), backlog)?;
    }
    Ok(fd)
}

/// The raw `sockaddr_un` of `name` (a path, or abstract with a leading
/// NUL byte), for [`super::socket::bind_raw`] and
/// [`super::socket::connect_raw`]; None when too long.
pub fn sockaddr_un(name: &[u8]) -> Option<Vec<u8>> {
    if name.len() > 108 {
        return None;
    }
    let mut b = Vec::with_capacity(2 + name.len() + 1);
    b.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    b.extend_from_slice(name);
    if name.first().is_some_and(|&c| c != 0) && name.len() < 108 {
        // A path: with its terminating NUL, as the kernel reports it.
        b.push(0);
    }
    Some(b)
}

/// The name in a raw `sockaddr_un` (a path without its NUL; abstract with
/// its leading NUL); empty when unnamed.
pub fn name_of_sockaddr(raw: &[u8]) -> Vec<u8> {
    let mut name = raw.get(2..).unwrap_or_default().to_vec();
    if name.first().is_some_and(|&c| c != 0) {
        if let Some(end) = name.iter().position(|&c| c == 0) {
            name.truncate(end);
        }
    }
    name
}

/// One message queued on a unix socket, peeked.
#[derive(Debug)]
pub struct Peeked {
    pub data: Vec<u8>,
    /// The files passed with it (SCM_RIGHTS), now also open here.
    pub fds: Vec<OwnedFd>,
    /// The sender's (pid, uid, gid), as this process's namespaces see them.
    pub creds: Option<(i32, u32, u32)>,
    /// The sender's name (datagrams), raw name bytes; empty: unnamed.
    pub sender: Vec<u8>,
}

/// Largest message [`peek_messages`] reads.
const MAX_PEEK: usize = 4 << 20;

/// Every message queued for reading on `fd`, without taking them: in
/// order, each with its fds and the sender's credentials; a stream
/// socket's bytes come as runs from one writer, cut after each run that
/// carries fds. `stream_bytes` is how many bytes a stream (or seqpacket)
/// socket has queued (the loop stops there); `shut_rd` that reading was
/// shut down (an empty read then ends the queue). SO_PEEK_OFF and
/// SO_PASSCRED are set for the walk and put back after.
pub fn peek_messages(
    fd: impl AsRawFd + Copy,
    stream_bytes: Option<usize>,
    shut_rd: bool,
) -> Result<Vec<Peeked>> {
    use super::socket::{getsockopt_int, setsockopt_int, SO_PEEK_OFF};
    let old_off = getsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF)?;
    let old_pass = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    let walk = setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)
        .and_then(|()| walk_queue(fd, stream_bytes, shut_rd));
    let a = setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, old_off);
    let b = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, old_pass);
    let out = walk?;
    a?;
    b?;
    Ok(out)
}

fn walk_queue(
    fd: impl AsRawFd + Copy,
    stream_bytes: Option<usize>,
    shut_rd: bool,
) -> Result<Vec<Peeked>> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; stream_bytes.map_or(MAX_PEEK, |n| n.clamp(1, MAX_PEEK))];
    loop {
        if stream_bytes.is_some_and(|n| total >= n) {
            return Ok(out);
        }
        let r = match super::socket::recv_msg(fd, &mut buf, libc::MSG_PEEK | libc::MSG_TRUNC) {
            Ok(r) => r,
            Err(e) if e.errno() == Some(libc::EAGAIN) => return Ok(out),
            Err(e) => return Err(e),
        };
        if r.len == 0 && (stream_bytes.is_some() || shut_rd) {
            return Ok(out);
        }
        if r.len > buf.len() || r.flags & libc::MSG_CTRUNC != 0 {
            return Err(os_errno("recvmsg(MSG_PEEK)", 0, libc::EMSGSIZE));
        }
        let mut m = Peeked {
            data: buf[..r.len].to_vec(),
            fds: Vec::new(),
            creds: None,
            sender: name_of_sockaddr(&r.name),
        };
        for (level, ty, data) in &r.cmsgs {
            if *level != libc::SOL_SOCKET {
                continue;
            }
            if *ty == libc::SCM_RIGHTS {
                for c in data.chunks_exact(4) {
                    let n = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                    // SAFETY: the kernel installed this fd for us just now.
                    m.fds
                        .push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) });
                }
            } else if *ty == libc::SCM_CREDENTIALS && data.len() >= 12 {
                let w =
                    |i: usize| u32::from_ne_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                m.creds = Some((w(0) as i32, w(4), w(8)));
            }
        }
        total += r.len;
        out.push(m);
        if out.len() > 1 << 20 {
            return Err(os_errno("recvmsg(MSG_PEEK)", 0, libc::E2BIG));
        }
    }
}
