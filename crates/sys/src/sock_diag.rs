//! NETLINK_SOCK_DIAG: what the kernel tells about unix sockets and
//! listening TCP sockets. The socket and its I/O are nix's; the messages
//! are built and parsed here (nix has no sock_diag).

use crate::{os_errno, OsResult, Result};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use std::os::fd::{AsRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;

fn diag_err(errno: i32) -> crate::Error {
    os_errno("sock_diag", 0, errno)
}

/// A NETLINK_SOCK_DIAG socket with one request sent on it: a netlink
/// header (SOCK_DIAG_BY_FAMILY, `flags`, sequence 1) and `body`.
fn request(flags: i32, body: &[u8]) -> Result<OwnedFd> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .op("socket(NETLINK_SOCK_DIAG)")?;
    let mut req = Vec::with_capacity(16 + body.len());
    req.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(flags as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(body);
    nix::sys::socket::send(fd.as_raw_fd(), &req, MsgFlags::empty()).op("send(sock_diag)")?;
    Ok(fd)
}

/// One datagram of the reply into `buf`: its length.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize> {
    nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty()).op("recv(sock_diag)")
}

/// The errno of an NLMSG_ERROR message at `o` (EPROTO when it makes no sense).
fn nlmsg_errno(b: &[u8], o: usize) -> i32 {
    let e = b
        .get(o + 16..o + 20)
        .map_or(0, |s| i32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
    if e < 0 {
        -e
    } else {
        libc::EPROTO
    }
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
    const UDIAG_SHOW_NAME: u32 = 1;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    let ino32 = u32::try_from(ino).map_err(|_| diag_err(libc::EOVERFLOW))?;
    // struct unix_diag_req
    let mut body = Vec::with_capacity(24);
    body.push(libc::AF_UNIX as u8); // sdiag_family
    body.push(0); // sdiag_protocol
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    body.extend_from_slice(&ino32.to_ne_bytes());
    body.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]); // no cookie
    let fd = request(libc::NLM_F_REQUEST, &body)?;
    let mut buf = vec![0u8; 8192];
    let n = receive(&fd, &mut buf)?;
    parse_unix_diag(&buf[..n])
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
        if b.len() < 20 {
            return Err(diag_err(libc::EPROTO));
        }
        return Err(diag_err(nlmsg_errno(b, 0)));
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
    const TCP_LISTEN: u32 = 10;
    // struct inet_diag_req_v2
    let mut body = Vec::with_capacity(56);
    body.push(family as u8);
    body.push(libc::IPPROTO_TCP as u8);
    body.push(0); // no extensions
    body.push(0);
    body.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    body.extend_from_slice(&[0u8; 48]); // any socket id
    let fd = request(libc::NLM_F_REQUEST | libc::NLM_F_DUMP, &body)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = receive(&fd, &mut buf)?;
        if n == 0 || parse_tcp_listeners(&buf[..n], &mut out)? {
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
            libc::NLMSG_ERROR => return Err(diag_err(nlmsg_errno(b, o))),
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
