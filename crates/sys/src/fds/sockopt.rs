//! The socket options ckpt saves and sets again: one table for every
//! kind of socket, which says for each option its level and name, how its
//! value is read, to which sockets it applies, whether it must be set
//! before bind(), and what privilege setting it may take.
//!
//! Saved are the options whose value differs from a new socket's of the
//! same kind (read from one made for the comparison), the classic BPF
//! filter, and the buffer sizes the user fixed (SO_BUF_LOCK). A restore
//! sets only options of this table ([`spec`]): an image cannot ask for
//! anything else.

use super::socket::{get_filter, getsockopt_int, getsockopt_into, setsockopt_bytes, SO_BUF_LOCK};
use crate::Result;
use std::os::fd::AsRawFd;

/// What kind of socket an option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockKind {
    pub family: i32,
    pub ty: i32,
    pub protocol: i32,
}

impl SockKind {
    fn inet(&self) -> bool {
        matches!(self.family, libc::AF_INET | libc::AF_INET6)
    }
    fn tcp(&self) -> bool {
        self.inet() && self.ty == libc::SOCK_STREAM
    }
    fn udp(&self) -> bool {
        self.inet()
            && self.ty == libc::SOCK_DGRAM
            && matches!(self.protocol, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE | 0)
    }
    fn udplite(&self) -> bool {
        self.udp() && self.protocol == libc::IPPROTO_UDPLITE
    }
    fn raw(&self) -> bool {
        self.inet() && self.ty == libc::SOCK_RAW
    }
    fn v4(&self) -> bool {
        self.family == libc::AF_INET
    }
    fn v6(&self) -> bool {
        self.family == libc::AF_INET6
    }
}

/// How an option's value is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKind {
    /// An int.
    Int,
    /// Bytes of at most this length (struct linger, timeval, names, filters).
    Bytes(usize),
}

/// One option of the table.
#[derive(Debug, Clone, Copy)]
pub struct OptSpec {
    pub level: i32,
    pub name: i32,
    /// For messages: "SO_REUSEADDR".
    pub label: &'static str,
    pub kind: OptKind,
    pub applies: fn(&SockKind) -> bool,
    /// Set before bind() (it changes what bind allows).
    pub pre_bind: bool,
    /// The capability setting it needs (with a value that is not 0, or
    /// for SO_PRIORITY above 6): restoring it for another user asks that
    /// the saved process had it.
    pub cap: Option<u32>,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_BROADCAST: u32 = 11;

// Levels and names the libc crate lacks.
const SOL_RAW: i32 = 255;
const SOL_NETLINK: i32 = 270;
const SOL_PACKET: i32 = 263;
const IPV6_FREEBIND: i32 = 78;
const TCP_NOTSENT_LOWAT: i32 = 25;
const TCP_INQ: i32 = 36;
const UDP_SEGMENT: i32 = 103;
const UDP_GRO: i32 = 104;
const UDPLITE_SEND_CSCOV: i32 = 10;
const UDPLITE_RECV_CSCOV: i32 = 11;
const ICMP_FILTER: i32 = 1;
const ICMP6_FILTER: i32 = 1;
/// The SO_ATTACH_FILTER entry holds the classic BPF program.
pub const FILTER: (i32, i32) = (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER);
/// The sizes the user fixed: (SOL_SOCKET, SO_SNDBUF / SO_RCVBUF).
pub const SNDBUF: (i32, i32) = (libc::SOL_SOCKET, libc::SO_SNDBUF);
pub const RCVBUF: (i32, i32) = (libc::SOL_SOCKET, libc::SO_RCVBUF);
pub const BUF_LOCK: (i32, i32) = (libc::SOL_SOCKET, SO_BUF_LOCK);

fn any(_: &SockKind) -> bool {
    true
}
fn inet(k: &SockKind) -> bool {
    k.inet()
}
fn v4(k: &SockKind) -> bool {
    k.v4()
}
fn v6(k: &SockKind) -> bool {
    k.v6()
}
fn tcp(k: &SockKind) -> bool {
    k.tcp()
}
fn udp(k: &SockKind) -> bool {
    k.udp()
}
fn udplite(k: &SockKind) -> bool {
    k.udplite()
}
fn dgram_or_raw(k: &SockKind) -> bool {
    k.udp() || k.raw() || (k.inet() && k.ty == libc::SOCK_DGRAM)
}
fn v6_dgram(k: &SockKind) -> bool {
    k.v6() && k.ty != libc::SOCK_STREAM
}
fn raw4(k: &SockKind) -> bool {
    k.raw() && k.v4()
}
fn raw_icmp4(k: &SockKind) -> bool {
    k.raw() && k.v4() && k.protocol == libc::IPPROTO_ICMP
}
fn raw_icmp6(k: &SockKind) -> bool {
    k.raw() && k.v6() && k.protocol == libc::IPPROTO_ICMPV6
}
fn raw6(k: &SockKind) -> bool {
    k.raw() && k.v6()
}
fn unix_or_netlink(k: &SockKind) -> bool {
    matches!(k.family, libc::AF_UNIX | libc::AF_NETLINK)
}
fn peekable(k: &SockKind) -> bool {
    k.family == libc::AF_UNIX || k.tcp() || k.udp()
}
fn netlink(k: &SockKind) -> bool {
    k.family == libc::AF_NETLINK
}
fn packet(k: &SockKind) -> bool {
    k.family == libc::AF_PACKET
}

macro_rules! opt {
    ($level:expr, $name:expr, $label:literal, $kind:expr, $applies:expr) => {
        opt!($level, $name, $label, $kind, $applies, false, None)
    };
    ($level:expr, $name:expr, $label:literal, $kind:expr, $applies:expr, $pre:expr, $cap:expr) => {
        OptSpec {
            level: $level,
            name: $name,
            label: $label,
            kind: $kind,
            applies: $applies,
            pre_bind: $pre,
            cap: $cap,
        }
    };
}

use libc::{IPPROTO_IP as IP, IPPROTO_IPV6 as IP6, IPPROTO_TCP as TCP, SOL_SOCKET as SOL};
use OptKind::{Bytes, Int};

/// Every option saved and restored, in the order a restore sets them.
#[rustfmt::skip]
pub const TABLE: &[OptSpec] = &[
    // Before bind.
    opt!(SOL, libc::SO_REUSEADDR, "SO_REUSEADDR", Int, any, true, None),
    opt!(SOL, libc::SO_REUSEPORT, "SO_REUSEPORT", Int, inet, true, None),
    opt!(SOL, libc::SO_BINDTODEVICE, "SO_BINDTODEVICE", Bytes(16), inet, true, None),
    opt!(SOL, libc::SO_MARK, "SO_MARK", Int, inet, true, Some(CAP_NET_ADMIN)),
    opt!(IP6, libc::IPV6_V6ONLY, "IPV6_V6ONLY", Int, v6, true, None),
    opt!(IP, libc::IP_FREEBIND, "IP_FREEBIND", Int, v4, true, None),
    opt!(IP6, IPV6_FREEBIND, "IPV6_FREEBIND", Int, v6, true, None),
    opt!(IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT", Int, v4, true, Some(CAP_NET_ADMIN)),
    opt!(IP6, libc::IPV6_TRANSPARENT, "IPV6_TRANSPARENT", Int, v6, true, Some(CAP_NET_ADMIN)),
    opt!(IP, libc::IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT", Int, inet, true, None),
    // Generic.
    opt!(SOL, libc::SO_KEEPALIVE, "SO_KEEPALIVE", Int, any),
    opt!(SOL, libc::SO_LINGER, "SO_LINGER", Bytes(8), any),
    opt!(SOL, libc::SO_BROADCAST, "SO_BROADCAST", Int, inet),
    opt!(SOL, libc::SO_OOBINLINE, "SO_OOBINLINE", Int, tcp),
    opt!(SOL, libc::SO_NO_CHECK, "SO_NO_CHECK", Int, any),
    opt!(SOL, libc::SO_DONTROUTE, "SO_DONTROUTE", Int, inet),
    opt!(SOL, libc::SO_PRIORITY, "SO_PRIORITY", Int, any, false, Some(CAP_NET_ADMIN)),
    opt!(SOL, libc::SO_RCVLOWAT, "SO_RCVLOWAT", Int, any),
    opt!(SOL, libc::SO_RCVTIMEO, "SO_RCVTIMEO", Bytes(16), any),
    opt!(SOL, libc::SO_SNDTIMEO, "SO_SNDTIMEO", Bytes(16), any),
    opt!(SOL, libc::SO_TIMESTAMP, "SO_TIMESTAMP", Int, any),
    opt!(SOL, libc::SO_TIMESTAMPNS, "SO_TIMESTAMPNS", Int, any),
    opt!(SOL, libc::SO_TIMESTAMPING, "SO_TIMESTAMPING", Int, any),
    opt!(SOL, libc::SO_PASSCRED, "SO_PASSCRED", Int, unix_or_netlink),
    opt!(SOL, libc::SO_PASSSEC, "SO_PASSSEC", Int, unix_or_netlink),
    opt!(SOL, libc::SO_RXQ_OVFL, "SO_RXQ_OVFL", Int, any),
    opt!(SOL, super::socket::SO_PEEK_OFF, "SO_PEEK_OFF", Int, peekable),
    opt!(SOL, libc::SO_ZEROCOPY, "SO_ZEROCOPY", Int, inet),
    // IPv4 (on IPv6 sockets too: their v4-mapped traffic).
    opt!(IP, libc::IP_TOS, "IP_TOS", Int, inet),
    opt!(IP, libc::IP_TTL, "IP_TTL", Int, inet),
    opt!(IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER", Int, v4),
    opt!(IP, libc::IP_RECVERR, "IP_RECVERR", Int, v4),
    opt!(IP, libc::IP_PKTINFO, "IP_PKTINFO", Int, v4),
    opt!(IP, libc::IP_RECVTTL, "IP_RECVTTL", Int, v4),
    opt!(IP, libc::IP_RECVTOS, "IP_RECVTOS", Int, v4),
    opt!(IP, libc::IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR", Int, v4),
    opt!(IP, libc::IP_MINTTL, "IP_MINTTL", Int, v4),
    opt!(IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL", Int, dgram_or_raw),
    opt!(IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", Int, dgram_or_raw),
    opt!(IP, libc::IP_MULTICAST_ALL, "IP_MULTICAST_ALL", Int, dgram_or_raw),
    opt!(IP, libc::IP_HDRINCL, "IP_HDRINCL", Int, raw4),
    opt!(IP, libc::IP_NODEFRAG, "IP_NODEFRAG", Int, raw4),
    // IPv6.
    opt!(IP6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", Int, v6),
    opt!(IP6, libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", Int, v6_dgram),
    opt!(IP6, libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", Int, v6_dgram),
    opt!(IP6, libc::IPV6_TCLASS, "IPV6_TCLASS", Int, v6),
    opt!(IP6, libc::IPV6_RECVTCLASS, "IPV6_RECVTCLASS", Int, v6),
    opt!(IP6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", Int, v6),
    opt!(IP6, libc::IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT", Int, v6),
    opt!(IP6, libc::IPV6_RECVERR, "IPV6_RECVERR", Int, v6),
    opt!(IP6, libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", Int, v6),
    opt!(IP6, libc::IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR", Int, v6),
    opt!(IP6, libc::IPV6_CHECKSUM, "IPV6_CHECKSUM", Int, raw6),
    // TCP.
    opt!(TCP, libc::TCP_NODELAY, "TCP_NODELAY", Int, tcp),
    opt!(TCP, libc::TCP_CORK, "TCP_CORK", Int, tcp),
    opt!(TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", Int, tcp),
    opt!(TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL", Int, tcp),
    opt!(TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT", Int, tcp),
    opt!(TCP, libc::TCP_SYNCNT, "TCP_SYNCNT", Int, tcp),
    opt!(TCP, libc::TCP_LINGER2, "TCP_LINGER2", Int, tcp),
    opt!(TCP, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", Int, tcp),
    opt!(TCP, libc::TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP", Int, tcp),
    opt!(TCP, libc::TCP_CONGESTION, "TCP_CONGESTION", Bytes(16), tcp),
    opt!(TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", Int, tcp),
    opt!(TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", Int, tcp),
    opt!(TCP, libc::TCP_FASTOPEN, "TCP_FASTOPEN", Int, tcp),
    opt!(TCP, libc::TCP_THIN_LINEAR_TIMEOUTS, "TCP_THIN_LINEAR_TIMEOUTS", Int, tcp),
    opt!(TCP, TCP_INQ, "TCP_INQ", Int, tcp),
    // UDP and UDP-Lite.
    opt!(libc::IPPROTO_UDP, UDP_SEGMENT, "UDP_SEGMENT", Int, udp),
    opt!(libc::IPPROTO_UDP, UDP_GRO, "UDP_GRO", Int, udp),
    opt!(libc::IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, "UDPLITE_SEND_CSCOV", Int, udplite),
    opt!(libc::IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, "UDPLITE_RECV_CSCOV", Int, udplite),
    // Raw sockets.
    opt!(SOL_RAW, ICMP_FILTER, "ICMP_FILTER", Bytes(4), raw_icmp4),
    opt!(libc::IPPROTO_ICMPV6, ICMP6_FILTER, "ICMP6_FILTER", Bytes(32), raw_icmp6),
    // Netlink.
    opt!(SOL_NETLINK, 3, "NETLINK_PKTINFO", Int, netlink),
    opt!(SOL_NETLINK, 4, "NETLINK_BROADCAST_ERROR", Int, netlink),
    opt!(SOL_NETLINK, 5, "NETLINK_NO_ENOBUFS", Int, netlink),
    opt!(SOL_NETLINK, 8, "NETLINK_LISTEN_ALL_NSID", Int, netlink, false, Some(CAP_NET_BROADCAST)),
    opt!(SOL_NETLINK, 10, "NETLINK_CAP_ACK", Int, netlink),
    opt!(SOL_NETLINK, 11, "NETLINK_EXT_ACK", Int, netlink),
    opt!(SOL_NETLINK, 12, "NETLINK_GET_STRICT_CHK", Int, netlink),
    // Packet sockets (PACKET_VERSION is set before bind by the packet code).
    opt!(SOL_PACKET, 8, "PACKET_AUXDATA", Int, packet),
    opt!(SOL_PACKET, 9, "PACKET_ORIGDEV", Int, packet),
    opt!(SOL_PACKET, 15, "PACKET_VNET_HDR", Int, packet),
    opt!(SOL_PACKET, 17, "PACKET_TIMESTAMP", Int, packet),
    opt!(SOL_PACKET, 14, "PACKET_LOSS", Int, packet),
    opt!(SOL_PACKET, 20, "PACKET_QDISC_BYPASS", Int, packet),
    opt!(SOL_PACKET, 12, "PACKET_RESERVE", Int, packet),
    opt!(SOL_PACKET, 23, "PACKET_IGNORE_OUTGOING", Int, packet),
];

/// The table's entry for (level, name), or the special entries (the
/// filter, the buffer sizes and their lock): None for anything else.
pub fn spec(level: i32, name: i32) -> Option<&'static OptSpec> {
    TABLE.iter().find(|o| o.level == level && o.name == name)
}

/// A name for (level, name): the table's label, or "level L option N".
pub fn label(level: i32, name: i32) -> String {
    match (level, name) {
        FILTER => "SO_ATTACH_FILTER".into(),
        SNDBUF => "SO_SNDBUF".into(),
        RCVBUF => "SO_RCVBUF".into(),
        BUF_LOCK => "SO_BUF_LOCK".into(),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => "TCP_MAXSEG".into(),
        _ => spec(level, name).map_or_else(
            || format!("level {level} option {name}"),
            |s| s.label.into(),
        ),
    }
}

/// The MSS of a TCP socket whose user asked for none, not connected.
const TCP_MSS_DEFAULT: i32 = 536;

/// One saved option: (level, name, value).
pub type Saved = (i32, i32, Vec<u8>);

fn read(fd: impl AsRawFd, o: &OptSpec) -> Option<Vec<u8>> {
    let max = match o.kind {
        Int => 4,
        Bytes(n) => n,
    };
    let mut buf = vec![0u8; max];
    let n = getsockopt_into(fd, o.level, o.name, &mut buf).ok()?;
    if o.kind == Int {
        let mut v = [0u8; 4];
        v[..n.min(4)].copy_from_slice(&buf[..n.min(4)]);
        return Some(v.to_vec());
    }
    buf.truncate(n);
    Some(buf)
}

/// The options of `fd` (a socket of `kind`) that differ from those of
/// `reference` (a new socket of the same kind; None: save every one that
/// can be read), its filter, and the buffer sizes the user fixed.
pub fn save(
    fd: impl AsRawFd + Copy,
    kind: &SockKind,
    reference: Option<i32>,
) -> Result<Vec<Saved>> {
    let mut out = Vec::new();
    for o in TABLE.iter().filter(|o| (o.applies)(kind)) {
        let Some(v) = read(fd, o) else { continue };
        if let Some(r) = reference {
            if read(r, o).as_deref() == Some(&v[..]) {
                continue;
            }
        }
        out.push((o.level, o.name, v));
    }
    // TCP_MAXSEG of a listener (inherited by the connections it accepts)
    // is the MSS its user asked for, else TCP_MSS_DEFAULT. Elsewhere it may
    // be the MSS in use (a connection's, which its repair sets; a closed
    // one's).
    let listening = || getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
    if kind.tcp() && listening() {
        let mss =
            getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG).unwrap_or(TCP_MSS_DEFAULT);
        if mss != TCP_MSS_DEFAULT {
            out.push((
                libc::IPPROTO_TCP,
                libc::TCP_MAXSEG,
                mss.to_ne_bytes().to_vec(),
            ));
        }
    }
    let filter = get_filter(fd)?;
    if !filter.is_empty() {
        out.push((FILTER.0, FILTER.1, filter));
    }
    let lock = getsockopt_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK).unwrap_or(0);
    if lock & 1 != 0 {
        let v = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        out.push((SNDBUF.0, SNDBUF.1, v.to_ne_bytes().to_vec()));
    }
    if lock & 2 != 0 {
        let v = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        out.push((RCVBUF.0, RCVBUF.1, v.to_ne_bytes().to_vec()));
    }
    if lock != 0 {
        out.push((BUF_LOCK.0, BUF_LOCK.1, lock.to_ne_bytes().to_vec()));
    }
    Ok(out)
}

/// Which saved options a restore sets at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before bind().
    PreBind,
    /// Once the socket is in its final state (the rest, the filter last).
    Post,
}

/// Set the saved options of `phase` (async-signal-safe: no allocation).
/// The buffer sizes are set with SO_SNDBUFFORCE / SO_RCVBUFFORCE when
/// `force_bufs` (the restorer's own image: the size is what it was), else
/// with SO_SNDBUF / SO_RCVBUF (capped at the system's maximum), and their
/// lock bits after them. On failure: the index of the option that failed.
pub fn apply(
    fd: impl AsRawFd + Copy,
    opts: &[(i32, i32, &[u8])],
    phase: Phase,
    force_bufs: bool,
) -> std::result::Result<(), (usize, crate::Error)> {
    // SO_PRIORITY last: setting IP_TOS sets the priority from the TOS too.
    let prio = |o: &&(i32, i32, &[u8])| (o.0, o.1) == (libc::SOL_SOCKET, libc::SO_PRIORITY);
    let others = opts.iter().enumerate().filter(|(_, o)| !prio(o));
    let last = opts.iter().enumerate().filter(|(_, o)| prio(o));
    for (i, (level, name, v)) in others.chain(last) {
        let pre = spec(*level, *name).is_some_and(|s| s.pre_bind);
        if (phase == Phase::PreBind) != pre {
            continue;
        }
        if matches!((*level, *name), FILTER | SNDBUF | RCVBUF | BUF_LOCK) {
            continue;
        }
        // Already so (a default that differed from the reference socket's
        // only where the dump ran): nothing to set.
        let mut cur = [0u8; 64];
        if v.len() <= cur.len()
            && getsockopt_into(fd, *level, *name, &mut cur).ok() == Some(v.len())
            && cur[..v.len()] == v[..]
        {
            continue;
        }
        setsockopt_bytes(fd, *level, *name, v).map_err(|e| (i, e))?;
    }
    if phase == Phase::PreBind {
        return Ok(());
    }
    let int = |v: &[u8]| {
        v.get(..4)
            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    for (i, (level, name, v)) in opts.iter().enumerate() {
        let r = match (*level, *name) {
            // The kernel doubles what is set: set half of what was read.
            SNDBUF => {
                let n = if force_bufs {
                    libc::SO_SNDBUFFORCE
                } else {
                    libc::SO_SNDBUF
                };
                setsockopt_bytes(fd, libc::SOL_SOCKET, n, &(int(v) / 2).to_ne_bytes())
            }
            RCVBUF => {
                let n = if force_bufs {
                    libc::SO_RCVBUFFORCE
                } else {
                    libc::SO_RCVBUF
                };
                setsockopt_bytes(fd, libc::SOL_SOCKET, n, &(int(v) / 2).to_ne_bytes())
            }
            _ => continue,
        };
        r.map_err(|e| (i, e))?;
    }
    for (i, (level, name, v)) in opts.iter().enumerate() {
        let r = match (*level, *name) {
            BUF_LOCK => setsockopt_bytes(fd, libc::SOL_SOCKET, SO_BUF_LOCK, v),
            FILTER => super::socket::attach_filter(fd, v),
            _ => continue,
        };
        r.map_err(|e| (i, e))?;
    }
    Ok(())
}

/// Problems of saved options for a restore: an option outside the table
/// (the image was crafted), or one needing a capability the saved process
/// did not have (`caps`: its effective set) when `other_user`. Messages.
pub fn check(opts: &[(i32, i32, &[u8])], caps: u64, other_user: bool) -> Vec<String> {
    let mut out = Vec::new();
    let int = |v: &[u8]| {
        v.get(..4)
            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    for (level, name, v) in opts {
        match (*level, *name) {
            FILTER => {
                if v.is_empty() || !v.len().is_multiple_of(8) || v.len() > 4096 * 8 {
                    out.push(format!(
                        "a socket filter of {} bytes is not 1 to 4096 instructions",
                        v.len()
                    ));
                }
            }
            SNDBUF | RCVBUF | BUF_LOCK | (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
                if v.len() != 4 {
                    out.push(format!("{} of {} bytes", label(*level, *name), v.len()));
                }
            }
            _ => match spec(*level, *name) {
                None => out.push(format!(
                    "{} is not an option ckpt restores",
                    label(*level, *name)
                )),
                Some(s) => {
                    let max = match s.kind {
                        Int => 4,
                        Bytes(n) => n,
                    };
                    if v.len() > max {
                        out.push(format!("{} of {} bytes (at most {max})", s.label, v.len()));
                    }
                    let needs = match (s.cap, s.name) {
                        (Some(_), libc::SO_PRIORITY) if s.level == libc::SOL_SOCKET => int(v) > 6,
                        (Some(_), _) => int(v) != 0,
                        (None, _) => false,
                    };
                    if let (true, true, Some(cap)) = (other_user, needs, s.cap) {
                        if caps & (1 << cap) == 0 {
                            out.push(format!(
                                "{} needs a capability (number {cap}) the process did not have",
                                s.label
                            ));
                        }
                    }
                }
            },
        }
    }
    out
}

/// A socket's (family, type, protocol) from SO_DOMAIN, SO_TYPE, SO_PROTOCOL.
pub fn kind_of(fd: impl AsRawFd + Copy) -> Result<SockKind> {
    Ok(SockKind {
        family: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        ty: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
        protocol: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::socket::{setsockopt_int, socket};
    use std::os::fd::AsRawFd;

    #[test]
    fn changed_options_are_saved_and_set_again() {
        let s = socket(libc::AF_INET6, libc::SOCK_STREAM, 0).unwrap();
        let fd = s.as_raw_fd();
        let reference = socket(libc::AF_INET6, libc::SOCK_STREAM, 0).unwrap();
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).unwrap();
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).unwrap();
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 77).unwrap();
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 100_000).unwrap();
        setsockopt_bytes(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &[1, 0, 0, 0, 5, 0, 0, 0],
        )
        .unwrap();
        let kind = kind_of(fd).unwrap();
        assert_eq!(
            (kind.family, kind.ty, kind.protocol),
            (libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP)
        );
        let saved = save(fd, &kind, Some(reference.as_raw_fd())).unwrap();
        let names: Vec<String> = saved.iter().map(|(l, n, _)| label(*l, *n)).collect();
        assert_eq!(
            names,
            [
                "IPV6_V6ONLY",
                "SO_LINGER",
                "TCP_NODELAY",
                "TCP_KEEPIDLE",
                "SO_RCVBUF",
                "SO_BUF_LOCK"
            ],
            "{saved:?}"
        );
        let view: Vec<(i32, i32, &[u8])> = saved.iter().map(|(l, n, v)| (*l, *n, &v[..])).collect();
        assert!(check(&view, 0, true).is_empty());
        let t = socket(libc::AF_INET6, libc::SOCK_STREAM, 0).unwrap();
        let tf = t.as_raw_fd();
        apply(tf, &view, Phase::PreBind, false).unwrap();
        assert_eq!(
            getsockopt_int(tf, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap(),
            1
        );
        assert_eq!(
            getsockopt_int(tf, libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap(),
            0
        );
        apply(tf, &view, Phase::Post, true).unwrap();
        let again = save(tf, &kind, Some(reference.as_raw_fd())).unwrap();
        assert_eq!(again, saved);
        // Crafted: an option outside the table, a mark for another user.
        let bad = [
            (libc::SOL_SOCKET, 999, &[0u8; 4][..]),
            (libc::SOL_SOCKET, libc::SO_MARK, &7i32.to_ne_bytes()[..]),
        ];
        assert_eq!(check(&bad, 0, true).len(), 2);
        assert_eq!(check(&bad, 0, false).len(), 1);
    }
}
