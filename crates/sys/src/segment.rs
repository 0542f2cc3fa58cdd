//! Packets a restore injects into the local stack: TCP segments that seem
//! to come from a connection's peer (TCP_REPAIR has no way to queue a
//! received FIN, to have our FIN acknowledged, or to put a connection into
//! an accept queue), and UDP datagrams that refill a socket's queue.
//!
//! [`tcp`] and [`udp`] build a whole IP packet (pure); [`RawSender::send`] sends
//! one on an IPPROTO_RAW socket with SO_MARK set to the mark the
//! connection lock lets through. Packets only ever go to an address of
//! this host ([`is_local`]): the caller checks.

use crate::fds::socket::{self, sockaddr_inet};
use crate::{os_errno, Result};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

pub const TH_FIN: u8 = 0x01;
pub const TH_SYN: u8 = 0x02;
pub const TH_RST: u8 = 0x04;
pub const TH_PSH: u8 = 0x08;
pub const TH_ACK: u8 = 0x10;

/// One TCP segment: `src` is the pretended sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The window field as sent (already scaled down).
    pub window: u16,
    /// Encoded options (see [`syn_options`]); padded when built.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The options of a SYN: MSS, SACK permitted, window scale.
pub fn syn_options(mss: u16, sack: bool, wscale: Option<u8>) -> Vec<u8> {
    let mut o = vec![2, 4];
    o.extend_from_slice(&mss.to_be_bytes());
    if sack {
        o.extend_from_slice(&[4, 2]);
    }
    if let Some(ws) = wscale {
        o.extend_from_slice(&[1, 3, 3, ws]);
    }
    o
}

/// The address packets of a socket bound to `ip` carry: a v4-mapped IPv6
/// address is IPv4 on the wire.
pub fn wire_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn add_bytes(mut sum: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [last] = it.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    // Keep it from overflowing on long payloads.
    (sum & 0xffff) + (sum >> 16)
}

/// Prepends the IP header to `l4` and fills its checksum at `csum_at`.
/// None when the addresses are of different families.
fn wrap_ip(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    mut l4: Vec<u8>,
    csum_at: usize,
) -> Option<Vec<u8>> {
    let len = l4.len();
    match (wire_ip(src), wire_ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut sum = add_bytes(add_bytes(0, &s.octets()), &d.octets());
            sum += u32::from(proto) + len as u32;
            let mut c = fold(add_bytes(sum, &l4));
            if c == 0 && proto == libc::IPPROTO_UDP as u8 {
                c = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = fold(add_bytes(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend_from_slice(&l4);
            Some(ip)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut sum = add_bytes(add_bytes(0, &s.octets()), &d.octets());
            sum += len as u32 + u32::from(proto);
            let mut c = fold(add_bytes(sum, &l4));
            if c == 0 {
                c = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            ip.extend_from_slice(&l4);
            Some(ip)
        }
        _ => None,
    }
}

/// The segment as an IP packet (IPv4 or IPv6, from the addresses).
pub fn tcp(seg: &Segment) -> Option<Vec<u8>> {
    let mut opts = seg.options.clone();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let mut t = Vec::with_capacity(20 + opts.len() + seg.payload.len());
    t.extend_from_slice(&seg.src.port().to_be_bytes());
    t.extend_from_slice(&seg.dst.port().to_be_bytes());
    t.extend_from_slice(&seg.seq.to_be_bytes());
    t.extend_from_slice(&seg.ack.to_be_bytes());
    t.push(((5 + opts.len() / 4) as u8) << 4);
    t.push(seg.flags);
    t.extend_from_slice(&seg.window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t.extend_from_slice(&opts);
    t.extend_from_slice(&seg.payload);
    wrap_ip(seg.src.ip(), seg.dst.ip(), libc::IPPROTO_TCP as u8, t, 16)
}

/// A UDP (17) or UDP-Lite (136, whole-datagram checksum) datagram.
pub fn udp(src: SocketAddr, dst: SocketAddr, proto: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let ulen = 8 + payload.len();
    let mut u = Vec::with_capacity(ulen);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    // UDP: the length; UDP-Lite: the checksum coverage, 0 = everything.
    let lenfield = if proto == libc::IPPROTO_UDP as u8 {
        u16::try_from(ulen).ok()?
    } else {
        0
    };
    u.extend_from_slice(&lenfield.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    wrap_ip(src.ip(), dst.ip(), proto, u, 6)
}

/// Whether `ip` is an address of this host (in the caller's network
/// namespace): a UDP socket can be bound to it.
pub fn is_local(ip: IpAddr) -> bool {
    let ip = wire_ip(ip);
    let domain = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let Ok(s) = socket::socket(domain, libc::SOCK_DGRAM, 0) else {
        return false;
    };
    socket::bind_raw(s.as_raw_fd(), &sockaddr_inet(&SocketAddr::new(ip, 0))).is_ok()
}

/// A raw socket to send whole IP packets of `ip`'s family, with SO_MARK
/// `mark` (CAP_NET_RAW and CAP_NET_ADMIN).
pub struct RawSender {
    v4: Option<std::os::fd::OwnedFd>,
    v6: Option<std::os::fd::OwnedFd>,
    mark: u32,
}

impl RawSender {
    pub fn new(mark: u32) -> RawSender {
        RawSender {
            v4: None,
            v6: None,
            mark,
        }
    }

    /// Send one packet (built by [`tcp`] or [`udp`]) to `dst`.
    pub fn send(&mut self, packet: &[u8], dst: IpAddr) -> Result<()> {
        let dst = wire_ip(dst);
        let (slot, domain) = if dst.is_ipv4() {
            (&mut self.v4, libc::AF_INET)
        } else {
            (&mut self.v6, libc::AF_INET6)
        };
        if slot.is_none() {
            let s = socket::socket(domain, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            if self.mark != 0 {
                socket::setsockopt_int(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    self.mark as i32,
                )?;
            }
            *slot = Some(s);
        }
        let fd = slot.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1);
        // The port of a raw socket's destination must be 0.
        let n = socket::send_to(fd, packet, &sockaddr_inet(&SocketAddr::new(dst, 0)))?;
        if n != packet.len() {
            return Err(os_errno("sendto(raw)", 0, libc::EMSGSIZE));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(p: &[u8], l4_at: usize, proto: u32) {
        // The IPv4 header sums to zero, and so does the pseudo header + L4.
        assert_eq!(fold(add_bytes(0, &p[..20])), 0);
        let mut sum = add_bytes(0, &p[12..20]);
        sum += proto + (p.len() - l4_at) as u32;
        assert_eq!(fold(add_bytes(sum, &p[l4_at..])), 0);
    }

    #[test]
    fn checksums_verify() {
        let seg = Segment {
            src: "127.0.0.1:1000".parse().unwrap(),
            dst: "127.0.0.2:2000".parse().unwrap(),
            seq: 1,
            ack: 2,
            flags: TH_ACK | TH_FIN,
            window: 100,
            options: syn_options(1460, true, Some(7)),
            payload: vec![1, 2, 3],
        };
        let p = tcp(&seg).unwrap();
        assert_eq!(p.len(), 20 + 20 + 12 + 3);
        verify(&p, 20, 6);
        let d = udp(seg.src, seg.dst, 17, b"hello").unwrap();
        assert_eq!(d.len(), 20 + 8 + 5);
        verify(&d, 20, 17);
    }

    #[test]
    fn mapped_addresses_are_ipv4_on_the_wire() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        let b: SocketAddr = "[::ffff:127.0.0.1]:2".parse().unwrap();
        assert_eq!(udp(a, b, 17, b"").unwrap()[0] >> 4, 4);
        let v6: SocketAddr = "[::1]:2".parse().unwrap();
        assert_eq!(udp(v6, v6, 17, b"").unwrap()[0] >> 4, 6);
        assert!(udp(a, v6, 17, b"").is_none());
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.77".parse().unwrap()));
    }
}
