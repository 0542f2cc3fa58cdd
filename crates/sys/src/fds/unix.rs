//! Unix sockets: pairs, bound and listening sockets, stale socket files.

use super::socket::{bind, listen};
use crate::{os_errno, OsResult, Result};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrLike, UnixAddr};
use std::ffi::CStr;
use std::os::fd::OwnedFd;

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
        listen(&fd, backlog)?;
    }
    Ok(fd)
}
