//! TCP and UDP sockets.

use super::socket::{bind, listen};
use crate::{os_errno, OsResult, Result};
use nix::sys::socket::{
    sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

/// A listening TCP socket on `addr` (4 bytes: IPv4, 16: IPv6, network
/// order) and `port`: socket(2) with `flags` (SOCK_NONBLOCK...),
/// SO_REUSEADDR (the saved process's socket may have left connections in
/// TIME_WAIT), bind(2), listen(2). The fd, or the first failing step's
/// error (e.g. bind: EADDRINUSE).
pub fn tcp_listen(addr: &[u8], port: u16, backlog: u32, flags: i32) -> Result<OwnedFd> {
    let family = match addr.len() {
        4 => AddressFamily::Inet,
        16 => AddressFamily::Inet6,
        _ => return Err(os_errno("socket", 0, libc::EAFNOSUPPORT)),
    };
    let fd = nix::sys::socket::socket(
        family,
        SockType::Stream,
        SockFlag::from_bits_retain(flags),
        SockProtocol::Tcp,
    )
    .op("socket")?;
    nix::sys::socket::setsockopt(&fd, sockopt::ReuseAddr, &true).op("setsockopt(SO_REUSEADDR)")?;
    if let Ok(a) = <[u8; 4]>::try_from(addr) {
        bind(
            &fd,
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::from(a), port)),
        )?;
    } else if let Ok(a) = <[u8; 16]>::try_from(addr) {
        let sa = SocketAddrV6::new(Ipv6Addr::from(a), port, 0, 0);
        bind(&fd, &SockaddrIn6::from(sa))?;
    }
    listen(fd.as_raw_fd(), backlog)?;
    Ok(fd)
}
