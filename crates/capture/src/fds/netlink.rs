//! Netlink sockets (route, and any other protocol): bound port id,
//! multicast groups (all of them, NETLINK_LIST_MEMBERSHIPS), connected
//! destination, SOL_NETLINK options. The messages the kernel queued for
//! reading are not saved: they are dropped, which the image says
//! (`droppedQueue`) and the log warns about (a listener like `ip monitor`
//! misses those events; a request's answer would be lost: the process
//! asks again or times out).

use super::net::{dup, options, proto_name, sys_fd};
use super::{Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, NetlinkSocket};
use ckpt_sys::fds::socket::{getsockopt_bytes, peer_name, sock_name};
use std::os::fd::AsRawFd;

const SOL_NETLINK: i32 = 270;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

/// (nl_pid, nl_groups) of a raw sockaddr_nl.
fn nl_addr(raw: &[u8]) -> (u32, u32) {
    let w = |i: usize| {
        raw.get(i..i + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    (w(4), w(8))
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    if proto_name(cx.pid, f.fd) != "NETLINK" {
        return Ok(None);
    }
    let sock = dup(cx, f.fd)?;
    let fd = sock.as_raw_fd();
    let sys = |what: &'static str| move |e| sys_fd(f.fd, what, e);
    let kind = ckpt_sys::fds::sockopt::kind_of(fd).map_err(sys("reading its kind"))?;
    let (port_id, _) = nl_addr(&sock_name(fd).map_err(sys("reading its address"))?);
    let (dst_port_id, dst_group) = peer_name(fd)
        .map_err(sys("reading its peer"))?
        .map_or((0, 0), |p| nl_addr(&p));
    let bitmap = getsockopt_bytes(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, 4096)
        .map_err(sys("reading its multicast groups"))?;
    let mut groups = Vec::new();
    for (i, w) in bitmap.chunks_exact(4).enumerate() {
        let w = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        for bit in 0..32 {
            if w & (1 << bit) != 0 {
                groups.push(i as u32 * 32 + bit + 1);
            }
        }
    }
    let dropped = super::raw::queued_bytes(fd);
    if dropped > 0 {
        tracing::warn!(
            fd = f.fd,
            bytes = dropped,
            protocol = kind.protocol,
            "messages queued on a netlink socket are dropped"
        );
    }
    let s = NetlinkSocket {
        protocol: kind.protocol as u32,
        sock_type: kind.ty as u32,
        port_id,
        groups,
        dst_port_id,
        dst_group,
        options: options(fd, &kind, f.fd)?,
        dropped_queue: dropped,
    };
    tracing::debug!(fd = f.fd, protocol = s.protocol, port_id, groups = ?s.groups, "netlink socket saved");
    Ok(Some(FileKind::NetlinkSocket(s)))
}
