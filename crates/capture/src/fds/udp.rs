//! UDP and UDP-Lite sockets: bound, connected, shut down, with the
//! datagrams queued for reading (peeked with their source and destination
//! addresses: SO_PEEK_OFF makes each peek move on to the next one, and
//! IP_PKTINFO / IPV6_RECVPKTINFO say where each was sent; both options are
//! put back as they were). Data corked for sending (UDP_CORK, MSG_MORE)
//! is refused by name.

use super::net::{dup, options, proto_name, sys_fd};
use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{Datagram, FileKind, InetSocket};
use ckpt_sys::fds::socket::{
    getsockopt_int, inet_addr, ioctl_int, ip_bytes, peer_name, recv_msg, setsockopt_int, sock_name,
    SIOCOUTQ, SO_PEEK_OFF,
};
use ckpt_sys::fds::sockopt::SockKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// Largest datagram (UDP's limit).
const MAX_DATAGRAM: usize = 65536;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    if !proto_name(cx.pid, f.fd).starts_with("UDP") {
        return Ok(None);
    }
    let sock = dup(cx, f.fd)?;
    let fd = sock.as_raw_fd();
    let sys = |what: &'static str| move |e| sys_fd(f.fd, what, e);
    let kind = ckpt_sys::fds::sockopt::kind_of(fd).map_err(sys("reading its kind"))?;
    if ioctl_int(fd, SIOCOUTQ).map_err(sys("reading its send queue"))? > 0 {
        return Err(unsupported(
            f.fd,
            "UDP socket with corked data waiting to be sent (UDP_CORK or MSG_MORE) cannot be saved",
        ));
    }
    let local = inet_addr(&sock_name(fd).map_err(sys("reading its address"))?);
    let peer = peer_name(fd)
        .map_err(sys("reading its peer"))?
        .and_then(|p| inet_addr(&p));
    let shutdown = ckpt_sys::sock_diag::inet_by_inode(kind.protocol, f.ino())
        .ok()
        .flatten()
        .map_or(0, |d| d.shutdown);
    let opts = options(fd, &kind, f.fd)?;
    let datagrams = peek_queue(fd, &kind).map_err(sys("reading its queued datagrams"))?;
    let mut s = InetSocket {
        family: kind.family as u32,
        sock_type: libc::SOCK_DGRAM as u32,
        protocol: kind.protocol as u32,
        state: if peer.is_some() { 1 } else { 7 },
        options: opts,
        shutdown: u32::from(shutdown),
        datagrams,
        ..Default::default()
    };
    if let Some(l) = local.filter(|l| l.port() != 0) {
        s.local_addr = ip_bytes(&l.ip());
        s.local_port = l.port();
    }
    if let Some(p) = peer {
        s.remote_addr = ip_bytes(&p.ip());
        s.remote_port = p.port();
    }
    tracing::debug!(fd = f.fd, sock = %s.describe(), datagrams = s.datagrams.len(), "UDP socket saved");
    Ok(Some(FileKind::InetSocket(s)))
}

/// Every queued datagram, peeked; the socket's SO_PEEK_OFF and packet
/// info option are put back.
fn peek_queue(fd: i32, kind: &SockKind) -> ckpt_sys::Result<Vec<Datagram>> {
    let (lvl, pk) = if kind.family == libc::AF_INET {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    };
    let old_pk = getsockopt_int(fd, lvl, pk)?;
    let old_off = getsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF)?;
    setsockopt_int(fd, lvl, pk, 1)?;
    let walk = setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0).and_then(|()| walk(fd));
    let a = setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, old_off);
    let b = setsockopt_int(fd, lvl, pk, old_pk);
    let out = walk?;
    a?;
    b?;
    Ok(out)
}

fn walk(fd: i32) -> ckpt_sys::Result<Vec<Datagram>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let r = match recv_msg(fd, &mut buf, libc::MSG_PEEK | libc::MSG_TRUNC) {
            Ok(r) => r,
            Err(e) if e.errno() == Some(libc::EAGAIN) => return Ok(out),
            Err(e) => return Err(e),
        };
        let Some(src) = inet_addr(&r.name) else {
            return Ok(out);
        };
        let mut dst = Vec::new();
        for (level, ty, data) in &r.cmsgs {
            if *level == libc::IPPROTO_IP && *ty == libc::IP_PKTINFO && data.len() >= 12 {
                // struct in_pktinfo: ifindex, spec_dst, addr.
                let a: [u8; 4] = data[8..12].try_into().unwrap_or_default();
                dst = ip_bytes(&IpAddr::V4(Ipv4Addr::from(a)));
            } else if *level == libc::IPPROTO_IPV6 && *ty == libc::IPV6_PKTINFO && data.len() >= 16
            {
                let a: [u8; 16] = data[..16].try_into().unwrap_or_default();
                dst = ip_bytes(&IpAddr::V6(Ipv6Addr::from(a)));
            }
        }
        out.push(Datagram {
            src_addr: ip_bytes(&src.ip()),
            src_port: src.port(),
            dst_addr: dst,
            data: buf[..r.len.min(buf.len())].to_vec(),
        });
        if out.len() > 1 << 20 {
            return Err(ckpt_sys::Error::Tool {
                tool: "recvmsg",
                what: "more than a million queued datagrams".into(),
            });
        }
    }
}
