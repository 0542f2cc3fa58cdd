//! Packet sockets (AF_PACKET): type, bound protocol and interface,
//! PACKET_VERSION, fanout group, memberships (promiscuous, multicast...),
//! options and filter, from sock_diag and getsockopt. A socket with an
//! RX or TX ring (PACKET_RX_RING / PACKET_TX_RING, mapped into the
//! process) is refused by name: the mapping is not restored. Queued
//! packets are dropped (`droppedQueue`, and a warning).

use super::net::{dup, options, proto_name, sys_fd};
use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, PacketMembership, PacketSocket};
use std::os::fd::AsRawFd;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    if proto_name(cx.pid, f.fd) != "PACKET" {
        return Ok(None);
    }
    let d = ckpt_sys::sock_diag::packet_diag(f.ino())
        .map_err(|e| sys_fd(f.fd, "reading the packet socket (sock_diag)", e))?
        .ok_or_else(|| {
            unsupported(
                f.fd,
                "packet socket not found by sock_diag (another network namespace?)",
            )
        })?;
    if d.rx_ring || d.tx_ring {
        return Err(unsupported(
            f.fd,
            format!(
                "packet socket with a mapped {} ring (PACKET_{}_RING) cannot be saved: its mapping is not restored",
                if d.rx_ring { "receive" } else { "transmit" },
                if d.rx_ring { "RX" } else { "TX" }
            ),
        ));
    }
    let sock = dup(cx.pid, f.fd)?;
    let fd = sock.as_raw_fd();
    let kind =
        ckpt_sys::fds::sockopt::kind_of(fd).map_err(|e| sys_fd(f.fd, "reading its kind", e))?;
    let dropped = super::raw::queued_bytes(fd);
    if dropped > 0 {
        tracing::warn!(
            fd = f.fd,
            bytes = dropped,
            "packets queued on a packet socket are dropped"
        );
    }
    let s = PacketSocket {
        sock_type: u32::from(d.sock_type),
        protocol: d.protocol.to_be(),
        ifindex: d.ifindex,
        version: d.version,
        fanout: d.fanout.unwrap_or(0),
        memberships: d
            .mclist
            .iter()
            .map(|(ifindex, _count, ty, addr)| PacketMembership {
                ifindex: *ifindex,
                mr_type: *ty,
                address: addr.clone(),
            })
            .collect(),
        options: options(fd, &kind, f.fd)?,
        dropped_queue: dropped,
    };
    tracing::debug!(fd = f.fd, ifindex = s.ifindex, "packet socket saved");
    Ok(Some(FileKind::PacketSocket(s)))
}
