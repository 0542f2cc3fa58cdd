//! Packet sockets (AF_PACKET): type, bound protocol and interface,
//! PACKET_VERSION, fanout group, memberships (promiscuous, multicast...),
//! options and filter, and its RX and TX rings' geometry
//! (PACKET_RX_RING / PACKET_TX_RING), from sock_diag and getsockopt. A
//! mapping of the rings is saved by the memory capture (mem/vmas.rs,
//! `VmaBacking::PacketRing`). Queued packets, and the frames in the rings,
//! are dropped (`droppedQueue`, and a warning).

use super::net::{dup, options, proto_name, sys_fd};
use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, PacketMembership, PacketRing, PacketSocket};
use std::os::fd::AsRawFd;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

fn ring(r: [u32; 7]) -> PacketRing {
    PacketRing {
        block_size: r[0],
        block_nr: r[1],
        frame_size: r[2],
        frame_nr: r[3],
        retire_tmo: r[4],
        sizeof_priv: r[5],
        features: r[6],
    }
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
    let sock = dup(cx, f.fd)?;
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
        rx_ring: d.rx_ring.map(ring),
        tx_ring: d.tx_ring.map(ring),
    };
    tracing::debug!(fd = f.fd, ifindex = s.ifindex, "packet socket saved");
    Ok(Some(FileKind::PacketSocket(s)))
}
