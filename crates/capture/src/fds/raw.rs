//! Raw IP sockets (SOCK_RAW) and ping sockets (ICMP datagram sockets):
//! protocol, bound address (a ping socket's identifier is its port),
//! connected peer, options (IP_HDRINCL, ICMP_FILTER, classic BPF
//! filters, ...). Their queued packets are not saved (a raw socket's queue
//! can only be peeked at its head, and putting packets back would deliver
//! them to every other matching raw socket): they are dropped, which the
//! image says (`droppedQueue`) and the log warns about.

use super::net::{dup, options, proto_name, sys_fd};
use super::{Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, InetSocket};
use ckpt_sys::fds::socket::{
    getsockopt_bytes, inet_addr, ip_bytes, peer_name, sock_name, SO_MEMINFO,
};
use std::os::fd::AsRawFd;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

/// Bytes of kernel memory the socket's receive queue holds (SO_MEMINFO).
pub(super) fn queued_bytes(fd: i32) -> u32 {
    getsockopt_bytes(fd, libc::SOL_SOCKET, SO_MEMINFO, 4)
        .ok()
        .and_then(|b| {
            b.get(..4)
                .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        })
        .unwrap_or(0)
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let name = proto_name(cx.pid, f.fd);
    if !matches!(name.as_str(), "RAW" | "RAWv6" | "PING" | "PINGv6") {
        return Ok(None);
    }
    let sock = dup(cx, f.fd)?;
    let fd = sock.as_raw_fd();
    let sys = |what: &'static str| move |e| sys_fd(f.fd, what, e);
    let kind = ckpt_sys::fds::sockopt::kind_of(fd).map_err(sys("reading its kind"))?;
    let local = inet_addr(&sock_name(fd).map_err(sys("reading its address"))?);
    let peer = peer_name(fd)
        .map_err(sys("reading its peer"))?
        .and_then(|p| inet_addr(&p));
    let dropped = queued_bytes(fd);
    if dropped > 0 {
        tracing::warn!(
            fd = f.fd,
            bytes = dropped,
            "packets queued on a {} socket are not saved",
            name
        );
    }
    let mut s = InetSocket {
        family: kind.family as u32,
        sock_type: kind.ty as u32,
        protocol: kind.protocol as u32,
        state: if peer.is_some() { 1 } else { 7 },
        options: options(fd, &kind, f.fd)?,
        dropped_queue: dropped,
        ..Default::default()
    };
    if let Some(l) = local {
        // A raw socket's "port" is its protocol; a ping socket's its identifier.
        if !l.ip().is_unspecified() || (kind.ty == libc::SOCK_DGRAM && l.port() != 0) {
            s.local_addr = ip_bytes(&l.ip());
            s.local_port = if kind.ty == libc::SOCK_DGRAM {
                l.port()
            } else {
                0
            };
        }
    }
    if let Some(p) = peer {
        s.remote_addr = ip_bytes(&p.ip());
        s.remote_port = p.port();
    }
    tracing::debug!(fd = f.fd, kind = %name, protocol = kind.protocol, "raw socket saved");
    Ok(Some(FileKind::InetSocket(s)))
}
