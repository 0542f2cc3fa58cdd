//! NETLINK_SOCK_DIAG: what the kernel tells about unix, inet (TCP, UDP,
//! raw) and packet sockets that their fds do not: a TCP connection's
//! destination in SYN-SENT, shutdown bits, a listener's backlog and the
//! connections waiting in its accept queue, a unix socket's file and its
//! pending clients, a packet socket's memberships and rings. The socket
//! and its I/O are nix's; the messages are built and parsed here (nix has
//! no sock_diag).

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
    /// The socket file of a path name: (inode, device) as the kernel
    /// encodes it (old_encode_dev); None when unbound or abstract.
    pub vfs: Option<(u32, u32)>,
    /// Listening: the inodes of the clients whose connections wait in the
    /// accept queue, in order (0: a client already closed).
    pub icons: Vec<u64>,
}

const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// sock_diag of the unix socket of inode `ino` in the caller's network
/// namespace (NETLINK_SOCK_DIAG, one exact lookup).
pub fn unix_diag(ino: u64) -> Result<UnixDiag> {
    const UDIAG_SHOW_NAME: u32 = 1;
    const UDIAG_SHOW_VFS: u32 = 2;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UDIAG_SHOW_ICONS: u32 = 8;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    let ino32 = u32::try_from(ino).map_err(|_| diag_err(libc::EOVERFLOW))?;
    // struct unix_diag_req
    let mut body = Vec::with_capacity(24);
    body.push(libc::AF_UNIX as u8); // sdiag_family
    body.push(0); // sdiag_protocol
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    body.extend_from_slice(&ino32.to_ne_bytes());
    let show =
        UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    body.extend_from_slice(&show.to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]); // no cookie
    let fd = request(libc::NLM_F_REQUEST, &body)?;
    // Room for a long accept queue's client list.
    let mut buf = vec![0u8; 256 << 10];
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
            UNIX_DIAG_VFS if data.len() >= 8 => {
                let w =
                    |i: usize| u32::from_ne_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                d.vfs = Some((w(0), w(4)));
            }
            UNIX_DIAG_ICONS => {
                d.icons = data
                    .chunks_exact(4)
                    .map(|c| u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                    .collect();
            }
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

/// An inet socket (TCP, UDP, UDP-Lite, raw) as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InetDiag {
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// TCP state number (UDP: 1 connected, 7 not).
    pub state: u8,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// Listening TCP: connections in the accept queue; else bytes unread.
    pub rqueue: u32,
    /// Listening TCP: the backlog; else bytes not acknowledged or sent.
    pub wqueue: u32,
    pub uid: u32,
    /// 0 for a connection not accepted yet (no file).
    pub inode: u64,
    /// sk_shutdown bits (1: no more receiving, 2: no more sending).
    pub shutdown: u8,
}

/// Every inet socket of `family` and `protocol` (IPPROTO_TCP, _UDP,
/// _UDPLITE) in one of `states` (a bit mask of 1 << state), in the
/// caller's network namespace.
pub fn inet_sockets(family: i32, protocol: i32, states: u32) -> Result<Vec<InetDiag>> {
    // struct inet_diag_req_v2 (56 bytes): family, protocol, ext, pad,
    // states, then a wildcard socket id.
    let mut body = Vec::with_capacity(56);
    body.push(family as u8);
    body.push(protocol as u8);
    body.push(0); // no extensions: INET_DIAG_SHUTDOWN comes anyway
    body.push(0);
    body.extend_from_slice(&states.to_ne_bytes());
    body.extend_from_slice(&[0u8; 48]);
    let fd = request(libc::NLM_F_REQUEST | libc::NLM_F_DUMP, &body)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = receive(&fd, &mut buf)?;
        if n == 0 || parse_inet(&buf[..n], &mut out)? {
            return Ok(out);
        }
    }
}

/// The inet socket of `protocol` with inode `ino`, in either family.
pub fn inet_by_inode(protocol: i32, ino: u64) -> Result<Option<InetDiag>> {
    for family in [libc::AF_INET, libc::AF_INET6] {
        match inet_sockets(family, protocol, u32::MAX) {
            Ok(v) => {
                if let Some(d) = v.into_iter().find(|d| d.inode == ino) {
                    return Ok(Some(d));
                }
            }
            // A kernel without this protocol's diag module.
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn diag_addr(family: u8, raw: &[u8], port: [u8; 2]) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let port = u16::from_be_bytes(port);
    let ip = if i32::from(family) == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&raw[..16]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    SocketAddr::new(ip, port)
}

/// One datagram of an inet dump; true at its end.
fn parse_inet(b: &[u8], out: &mut Vec<InetDiag>) -> Result<bool> {
    const INET_DIAG_SHUTDOWN: u16 = 8;
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
            .unwrap_or(0)
    };
    let mut o = 0;
    while o + 16 <= b.len() {
        let len = u32_at(o) as usize;
        let ty = u16::from_ne_bytes([b[o + 4], b[o + 5]]);
        if len < 16 || o + len > b.len() {
            return Err(diag_err(libc::EPROTO));
        }
        match ty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => return Err(diag_err(nlmsg_errno(b, o))),
            _ if len >= 16 + 72 => {
                // inet_diag_msg: family, state, timer, retrans, id (sport,
                // dport, src[16], dst[16], if, cookie[2]), expires,
                // rqueue, wqueue, uid, inode; then attributes.
                let m = o + 16;
                let family = b[m];
                let mut d = InetDiag {
                    family,
                    state: b[m + 1],
                    local: diag_addr(family, &b[m + 8..m + 24], [b[m + 4], b[m + 5]]),
                    remote: diag_addr(family, &b[m + 24..m + 40], [b[m + 6], b[m + 7]]),
                    rqueue: u32_at(m + 56),
                    wqueue: u32_at(m + 60),
                    uid: u32_at(m + 64),
                    inode: u64::from(u32_at(m + 68)),
                    shutdown: 0,
                };
                let mut a = m + 72;
                while a + 4 <= o + len {
                    let alen = u16::from_ne_bytes([b[a], b[a + 1]]) as usize;
                    let aty = u16::from_ne_bytes([b[a + 2], b[a + 3]]) & 0x3fff;
                    if alen < 4 || a + alen > o + len {
                        break;
                    }
                    if aty == INET_DIAG_SHUTDOWN && alen >= 5 {
                        d.shutdown = b[a + 4];
                    }
                    a += (alen + 3) & !3;
                }
                out.push(d);
            }
            _ => {}
        }
        o += (len + 3) & !3;
    }
    Ok(false)
}

/// What sock_diag tells of a packet socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketDiag {
    pub sock_type: u8,
    /// The bound protocol (ethertype, host order).
    pub protocol: u16,
    pub ifindex: i32,
    pub version: u32,
    pub reserve: u32,
    pub copy_thresh: u32,
    pub tstamp: u32,
    /// PDI_* flags: running, auxdata, origdev, vnet_hdr, loss.
    pub flags: u32,
    /// Memberships: (ifindex, count, type, address).
    pub mclist: Vec<(i32, u32, u16, Vec<u8>)>,
    /// PACKET_RX_RING / PACKET_TX_RING as set (struct packet_diag_ring:
    /// block size, block count, frame size, frame count, retire timeout,
    /// sizeof_priv, features).
    pub rx_ring: Option<[u32; 7]>,
    pub tx_ring: Option<[u32; 7]>,
    /// PACKET_FANOUT (id | type << 16), when in a group.
    pub fanout: Option<u32>,
}

/// sock_diag of the packet socket of inode `ino`.
pub fn packet_diag(ino: u64) -> Result<Option<PacketDiag>> {
    // struct packet_diag_req: family, protocol, pad, ino, show, cookie[2].
    let mut body = Vec::with_capacity(24);
    body.push(libc::AF_PACKET as u8);
    body.push(0);
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(ino as u32).to_ne_bytes());
    body.extend_from_slice(&(1u32 | 2 | 4 | 8).to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]);
    let fd = request(libc::NLM_F_REQUEST | libc::NLM_F_DUMP, &body)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut found = None;
    loop {
        let n = receive(&fd, &mut buf)?;
        if n == 0 || parse_packet(&buf[..n], ino, &mut found)? {
            return Ok(found);
        }
    }
}

/// One datagram of a packet dump; true at its end.
fn parse_packet(b: &[u8], ino: u64, found: &mut Option<PacketDiag>) -> Result<bool> {
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
            .unwrap_or(0)
    };
    let mut o = 0;
    while o + 16 <= b.len() {
        let len = u32_at(o) as usize;
        let ty = u16::from_ne_bytes([b[o + 4], b[o + 5]]);
        if len < 16 || o + len > b.len() {
            return Err(diag_err(libc::EPROTO));
        }
        match ty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => return Err(diag_err(nlmsg_errno(b, o))),
            _ if len >= 32 && u64::from(u32_at(o + 20)) == ino => {
                // packet_diag_msg: family, type, num (u16), ino, cookie[2].
                let m = o + 16;
                let mut d = PacketDiag {
                    sock_type: b[m + 1],
                    protocol: u16::from_ne_bytes([b[m + 2], b[m + 3]]),
                    ..Default::default()
                };
                let mut a = m + 16;
                while a + 4 <= o + len {
                    let alen = u16::from_ne_bytes([b[a], b[a + 1]]) as usize;
                    let aty = u16::from_ne_bytes([b[a + 2], b[a + 3]]) & 0x3fff;
                    if alen < 4 || a + alen > o + len {
                        break;
                    }
                    let data = &b[a + 4..a + alen];
                    let w = |i: usize| {
                        data.get(i..i + 4)
                            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
                            .unwrap_or(0)
                    };
                    match aty {
                        0 if data.len() >= 24 => {
                            d.ifindex = w(0) as i32;
                            d.version = w(4);
                            d.reserve = w(8);
                            d.copy_thresh = w(12);
                            d.tstamp = w(16);
                            d.flags = w(20);
                        }
                        1 => {
                            for c in data.chunks_exact(44) {
                                let cw = |i: usize| {
                                    u32::from_ne_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]])
                                };
                                let alen = (u16::from_ne_bytes([c[10], c[11]]) as usize).min(32);
                                d.mclist.push((
                                    cw(0) as i32,
                                    cw(4),
                                    u16::from_ne_bytes([c[8], c[9]]),
                                    c[12..12 + alen].to_vec(),
                                ));
                            }
                        }
                        2 | 3 if data.len() >= 28 => {
                            let r = [w(0), w(4), w(8), w(12), w(16), w(20), w(24)];
                            if aty == 2 {
                                d.rx_ring = Some(r);
                            } else {
                                d.tx_ring = Some(r);
                            }
                        }
                        4 if data.len() >= 4 => d.fanout = Some(w(0)),
                        _ => {}
                    }
                    a += (alen + 3) & !3;
                }
                *found = Some(d);
            }
            _ => {}
        }
        o += (len + 3) & !3;
    }
    Ok(false)
}
