//! Calls common to every kind of socket: options, names, queues, sending
//! and receiving with control messages.
//!
//! Socket addresses cross this interface as raw `sockaddr` bytes (what the
//! kernel gives and takes), with [`inet_addr`] / [`sockaddr_inet`] for the
//! IPv4/IPv6 ones. Calls that restore's stub makes after its fork
//! ([`setsockopt_bytes`], [`shutdown`], [`bind_raw`], [`connect_raw`],
//! [`listen`], [`accept`]) allocate nothing.

use crate::{last_os, os_errno, OsResult, Result};
use nix::sys::socket::MsgFlags;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// SO_BUF_LOCK (Linux 5.14): which buffer sizes the user fixed (1: send, 2: receive).
pub const SO_BUF_LOCK: i32 = 72;
/// SO_PEEK_OFF: where MSG_PEEK reads from (and moves on).
pub const SO_PEEK_OFF: i32 = 42;
/// SO_MEMINFO: the socket's memory counters (u32 each; 0: receive queue).
pub const SO_MEMINFO: i32 = 55;
/// SIOCINQ: bytes not yet read.
pub const SIOCINQ: libc::c_ulong = 0x541B;
/// SIOCOUTQ: bytes not yet acknowledged (TCP) or not yet sent.
pub const SIOCOUTQ: libc::c_ulong = 0x5411;
/// SIOCOUTQNSD: bytes not yet sent (TCP).
pub const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// The bytes queued for reading on a stream socket, without taking them
/// (recv with MSG_PEEK | MSG_DONTWAIT), at most `max`.
pub fn peek_stream(fd: impl AsRawFd, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, flags) {
        Ok(n) => buf.truncate(n),
        Err(nix::errno::Errno::EAGAIN) => buf.clear(),
        Err(e) => return Err(os_errno("recv(MSG_PEEK)", 0, e as i32)),
    }
    Ok(buf)
}

/// listen(2) with the saved `backlog` (capped at `i32::MAX`; the kernel
/// caps it at net.core.somaxconn). By hand: nix's `Backlog` refuses values
/// above its own SOMAXCONN constant (4096), below what a host may allow.
pub fn listen(fd: impl AsRawFd, backlog: u32) -> Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    // SAFETY: integer arguments only.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(last_os("listen", 0));
    }
    Ok(())
}

/// bind(2) to a socket address nix describes.
pub(crate) fn bind(fd: &OwnedFd, addr: &dyn nix::sys::socket::SockaddrLike) -> Result<()> {
    nix::sys::socket::bind(fd.as_raw_fd(), addr).op("bind")
}

/// socket(2), close-on-exec.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if r < 0 {
        return Err(last_os("socket", 0));
    }
    // SAFETY: a new fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// getsockopt(2) into `buf`; the length the kernel wrote.
pub fn getsockopt_into(fd: impl AsRawFd, level: i32, name: i32, buf: &mut [u8]) -> Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is live and `len` bytes long; the kernel writes at most that.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_os("getsockopt", 0));
    }
    Ok((len as usize).min(buf.len()))
}

/// getsockopt(2) of up to `max` bytes.
pub fn getsockopt_bytes(fd: impl AsRawFd, level: i32, name: i32, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let n = getsockopt_into(fd, level, name, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// getsockopt(2) of an int option.
pub fn getsockopt_int(fd: impl AsRawFd, level: i32, name: i32) -> Result<i32> {
    let mut b = [0u8; 4];
    let n = getsockopt_into(fd, level, name, &mut b)?;
    // A shorter answer (a byte for some IP options) is zero-extended.
    let mut v = [0u8; 4];
    v[..n].copy_from_slice(&b[..n]);
    Ok(i32::from_ne_bytes(v))
}

/// setsockopt(2) of raw bytes (async-signal-safe).
pub fn setsockopt_bytes(fd: impl AsRawFd, level: i32, name: i32, val: &[u8]) -> Result<()> {
    // SAFETY: `val` is live and `val.len()` bytes long; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os("setsockopt", 0));
    }
    Ok(())
}

/// setsockopt(2) of an int option.
pub fn setsockopt_int(fd: impl AsRawFd, level: i32, name: i32, val: i32) -> Result<()> {
    setsockopt_bytes(fd, level, name, &val.to_ne_bytes())
}

/// An int ioctl (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: impl AsRawFd, req: libc::c_ulong) -> Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int to the pointer, a live c_int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v) };
    if r < 0 {
        return Err(last_os("ioctl", 0));
    }
    Ok(v)
}

/// getsockname(2) / getpeername(2) as raw sockaddr bytes.
fn name_of(fd: impl AsRawFd, peer: bool) -> Result<Vec<u8>> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    let p = buf.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: `buf` is a live 128-byte buffer (sockaddr_storage's size) and
    // `len` says so; the kernel writes at most that much.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    if r < 0 {
        return Err(last_os(if peer { "getpeername" } else { "getsockname" }, 0));
    }
    Ok(buf[..(len as usize).min(buf.len())].to_vec())
}

/// getsockname(2): the socket's address, raw.
pub fn sock_name(fd: impl AsRawFd) -> Result<Vec<u8>> {
    name_of(fd, false)
}

/// getpeername(2): the peer's address, raw; None when not connected.
pub fn peer_name(fd: impl AsRawFd) -> Result<Option<Vec<u8>>> {
    match name_of(fd, true) {
        Err(e) if e.errno() == Some(libc::ENOTCONN) => Ok(None),
        r => r.map(Some),
    }
}

/// The name of network interface `index` in this network namespace
/// (if_indextoname), None when there is none.
pub fn interface_name(index: u32) -> Option<Vec<u8>> {
    let list = nix::net::if_::if_nameindex().ok()?;
    list.iter()
        .find(|i| i.index() == index)
        .map(|i| i.name().to_bytes().to_vec())
}

/// bind(2) to a raw sockaddr (async-signal-safe).
pub fn bind_raw(fd: impl AsRawFd, addr: &[u8]) -> Result<()> {
    // SAFETY: `addr` is live and its length is passed; the kernel copies it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os("bind", 0));
    }
    Ok(())
}

/// connect(2) to a raw sockaddr (async-signal-safe); Ok(false) for
/// EINPROGRESS (a non-blocking connect under way).
pub fn connect_raw(fd: impl AsRawFd, addr: &[u8]) -> Result<bool> {
    loop {
        // SAFETY: `addr` is live and its length is passed; the kernel copies it.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                addr.as_ptr().cast(),
                addr.len() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = last_os("connect", 0);
        match e.errno() {
            Some(libc::EINTR) => continue,
            Some(libc::EINPROGRESS) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// shutdown(2) (async-signal-safe).
pub fn shutdown(fd: impl AsRawFd, how: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    if unsafe { libc::shutdown(fd.as_raw_fd(), how) } < 0 {
        return Err(last_os("shutdown", 0));
    }
    Ok(())
}

/// accept4(2) without waiting, close-on-exec; None when nothing waits.
pub fn accept(fd: impl AsRawFd) -> Result<Option<OwnedFd>> {
    loop {
        // SAFETY: null address pointers are allowed; integer arguments.
        let r = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if r >= 0 {
            // SAFETY: a new fd, owned by nothing else.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(r) }));
        }
        let e = last_os("accept4", 0);
        match e.errno() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// send(2) with `flags` (MSG_NOSIGNAL added); the bytes taken.
pub fn send(fd: impl AsRawFd, buf: &[u8], flags: i32) -> Result<usize> {
    loop {
        // SAFETY: `buf` is live and its length is passed; the kernel only reads it.
        let r = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = last_os("send", 0);
        if e.errno() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// sendto(2) of one datagram to a raw sockaddr.
pub fn send_to(fd: impl AsRawFd, buf: &[u8], to: &[u8]) -> Result<usize> {
    // SAFETY: `buf` and `to` are live with their lengths passed.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            to.as_ptr().cast(),
            to.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os("sendto", 0));
    }
    Ok(r as usize)
}

/// One message read with recvmsg(2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its length (with MSG_TRUNC: the whole length, maybe more than read).
    pub len: usize,
    /// The kernel's msg_flags (MSG_TRUNC, MSG_CTRUNC, ...).
    pub flags: i32,
    /// The sender's address, raw (empty: none).
    pub name: Vec<u8>,
    /// Control messages: (level, type, data).
    pub cmsgs: Vec<(i32, i32, Vec<u8>)>,
}

/// recvmsg(2) into `buf` with `flags` (MSG_DONTWAIT added), and up to
/// 4 KiB of control messages.
pub fn recv_msg(fd: impl AsRawFd, buf: &mut [u8], flags: i32) -> Result<Received> {
    let mut name = [0u8; 128];
    let mut cbuf = vec![0u64; 512];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = name.len() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len() * 8;
    // SAFETY: every pointer in `msg` is to a live buffer of the length given.
    let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(last_os("recvmsg", 0));
    }
    let mut out = Received {
        len: r as usize,
        flags: msg.msg_flags,
        name: name[..(msg.msg_namelen as usize).min(name.len())].to_vec(),
        cmsgs: Vec::new(),
    };
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within msg_controllen (which the kernel set to what it wrote).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let hdr = libc::CMSG_LEN(0) as usize;
            let len = ((*c).cmsg_len as usize).saturating_sub(hdr);
            let bytes = std::slice::from_raw_parts(data, len).to_vec();
            out.cmsgs.push(((*c).cmsg_level, (*c).cmsg_type, bytes));
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}

/// sendmsg(2) of `data` with up to 16 fds (SCM_RIGHTS) and credentials
/// (SCM_CREDENTIALS: pid, uid, gid), to `to` (raw sockaddr; empty: the
/// connected peer). Async-signal-safe: the control buffer is on the stack.
pub fn send_msg(
    fd: impl AsRawFd,
    data: &[u8],
    fds: &[i32],
    creds: Option<(i32, u32, u32)>,
    to: &[u8],
) -> Result<usize> {
    const MAX_FDS: usize = 16;
    if fds.len() > MAX_FDS {
        return Err(os_errno("sendmsg", 0, libc::E2BIG));
    }
    // Room for both messages, 8-byte aligned.
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !to.is_empty() {
        msg.msg_name = to.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = to.len() as libc::socklen_t;
    }
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe {
        (if fds.is_empty() {
            0
        } else {
            libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32)
        }) + if creds.is_some() {
            libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32)
        } else {
            0
        }
    } as usize;
    if space > 0 {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer (128 bytes) holds both messages
        // (16 fds: 80 bytes, credentials: 32); the CMSG macros stay within
        // msg_controllen, which is what was reserved.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            if !fds.is_empty() {
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(c),
                    std::mem::size_of_val(fds),
                );
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if let Some((pid, uid, gid)) = creds {
                let u = libc::ucred { pid, uid, gid };
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_CREDENTIALS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>(), u);
            }
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers with their lengths.
        let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = last_os("sendmsg", 0);
        if e.errno() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// The classic BPF program attached to the socket (SO_GET_FILTER), as
/// its `struct sock_filter` instructions (8 bytes each); empty: none.
pub fn get_filter(fd: impl AsRawFd) -> Result<Vec<u8>> {
    let fd = fd.as_raw_fd();
    // With a length of 0 the kernel says how many instructions there are.
    let mut len: libc::socklen_t = 0;
    // SAFETY: a zero length: the kernel writes no data, only `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_os("getsockopt(SO_GET_FILTER)", 0));
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; len as usize * 8];
    let mut n = len;
    // SAFETY: `buf` holds `len` instructions of 8 bytes; the kernel writes
    // at most `n` (counted in instructions) of them.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            buf.as_mut_ptr().cast(),
            &mut n,
        )
    };
    if r < 0 {
        return Err(last_os("getsockopt(SO_GET_FILTER)", 0));
    }
    buf.truncate((n as usize).min(len as usize) * 8);
    Ok(buf)
}

/// Attach a classic BPF program (`struct sock_filter` instructions).
pub fn attach_filter(fd: impl AsRawFd, insns: &[u8]) -> Result<()> {
    if insns.is_empty() || !insns.len().is_multiple_of(8) || insns.len() / 8 > u16::MAX as usize {
        return Err(os_errno("setsockopt(SO_ATTACH_FILTER)", 0, libc::EINVAL));
    }
    let prog = libc::sock_fprog {
        len: (insns.len() / 8) as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at the live instructions; the kernel copies them.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os("setsockopt(SO_ATTACH_FILTER)", 0));
    }
    Ok(())
}

/// An inet address from raw sockaddr bytes (AF_INET or AF_INET6).
pub fn inet_addr(raw: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]));
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope = raw
                .get(24..28)
                .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
            let mut sa = std::net::SocketAddrV6::new(Ipv6Addr::from(a), port, 0, scope);
            sa.set_flowinfo(0);
            Some(SocketAddr::V6(sa))
        }
        _ => None,
    }
}

/// Raw sockaddr bytes of an inet address.
pub fn sockaddr_inet(a: &SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(v4) => {
            let mut b = vec![0u8; 16];
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            b
        }
        SocketAddr::V6(v6) => {
            let mut b = vec![0u8; 28];
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            b[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            b
        }
    }
}

/// An inet address from the image's form: 4 or 16 address bytes and a port.
pub fn ip_port(addr: &[u8], port: u16) -> Option<SocketAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(addr) {
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
    } else if let Ok(a) = <[u8; 16]>::try_from(addr) {
        Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
    } else {
        None
    }
}

/// The image's form of an address: its bytes (4 or 16).
pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Inode number of the socket behind `fd` (as in "socket:\[INODE\]").
pub fn inode(fd: impl AsRawFd) -> Result<u64> {
    let fd = super::borrow("fstat", fd)?;
    nix::sys::stat::fstat(&*fd).map(|st| st.st_ino).op("fstat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_addresses_round_trip() {
        for s in [
            "127.0.0.1:80",
            "[::1]:443",
            "[::ffff:127.0.0.1]:8080",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(inet_addr(&sockaddr_inet(&a)), Some(a), "{s}");
        }
        assert_eq!(inet_addr(&[1, 0]), None);
        assert_eq!(
            ip_port(&[10, 0, 0, 1], 5),
            Some("10.0.0.1:5".parse().unwrap())
        );
        assert_eq!(ip_port(&[1, 2, 3], 5), None);
    }

    #[test]
    fn options_names_and_filters_on_real_sockets() {
        let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, 1).unwrap();
        assert_eq!(
            getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST).unwrap(),
            1
        );
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        bind_raw(s.as_raw_fd(), &sockaddr_inet(&a)).unwrap();
        let name = inet_addr(&sock_name(s.as_raw_fd()).unwrap()).unwrap();
        assert_eq!(name.ip(), a.ip());
        assert_ne!(name.port(), 0);
        assert_eq!(peer_name(s.as_raw_fd()).unwrap(), None);
        assert!(get_filter(s.as_raw_fd()).unwrap().is_empty());
        // ret #-1 (accept everything): one instruction.
        let insn = [6u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        attach_filter(s.as_raw_fd(), &insn).unwrap();
        assert_eq!(get_filter(s.as_raw_fd()).unwrap(), insn);
        // A datagram to itself, peeked with its source and then read.
        let c = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        assert_eq!(
            send_to(c.as_raw_fd(), b"hi", &sockaddr_inet(&name)).unwrap(),
            2
        );
        let mut buf = [0u8; 8];
        let t = std::time::Instant::now();
        let r = loop {
            match recv_msg(s.as_raw_fd(), &mut buf, libc::MSG_PEEK) {
                Ok(r) => break r,
                Err(e) if e.errno() == Some(libc::EAGAIN) && t.elapsed().as_secs() < 2 => {}
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(r.len, 2);
        let from = inet_addr(&r.name).unwrap();
        assert_eq!(
            from.port(),
            inet_addr(&sock_name(c.as_raw_fd()).unwrap())
                .unwrap()
                .port()
        );
    }
}
