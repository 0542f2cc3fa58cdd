//! Netlink sockets: bound again to the saved port id (processes match
//! answers by it; EADDRINUSE if another socket holds it now), joined to
//! every saved multicast group, connected, with their options. Messages
//! queued at the dump were dropped (a warning says how many bytes).

use super::sockets::{apply_opts, Prebuilt};
use super::Builder;
use ckpt_image::{NetlinkSocket, SockOpt};
use ckpt_sys::fds::socket;
use ckpt_sys::fds::sockopt::Phase;
use std::os::fd::{AsRawFd, OwnedFd};

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;

/// One netlink socket for the restorer to build.
#[derive(Debug, Clone, PartialEq)]
pub struct NetlinkSpec {
    pub protocol: i32,
    pub ty: i32,
    pub port_id: u32,
    pub groups: Vec<u32>,
    pub dst: Option<(u32, u32)>,
    pub opts: Vec<SockOpt>,
}

pub(super) fn plan(b: &mut Builder, g: usize, n: &NetlinkSocket) {
    let what = b.what(g);
    if n.dropped_queue > 0 {
        b.warning(format!(
            "{what}: {} bytes of netlink messages queued at the dump were dropped",
            n.dropped_queue
        ));
    }
    if n.groups.len() > 1 << 16 || n.groups.contains(&0) {
        b.error(format!("{what}: netlink groups out of range"));
        return;
    }
    b.prebuilt(
        g,
        Prebuilt::Netlink(NetlinkSpec {
            protocol: n.protocol as i32,
            ty: if n.sock_type == 0 {
                libc::SOCK_RAW
            } else {
                n.sock_type as i32
            },
            port_id: n.port_id,
            groups: n.groups.clone(),
            dst: (n.dst_port_id != 0 || n.dst_group != 0).then_some((n.dst_port_id, n.dst_group)),
            opts: n.options.clone(),
        }),
    );
}

/// A raw sockaddr_nl.
fn sockaddr_nl(pid: u32, groups: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    b[4..8].copy_from_slice(&pid.to_ne_bytes());
    b[8..12].copy_from_slice(&groups.to_ne_bytes());
    b
}

pub(super) fn make(s: &NetlinkSpec) -> Result<OwnedFd, String> {
    let sock = socket::socket(libc::AF_NETLINK, s.ty, s.protocol).map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    apply_opts(fd, &s.opts, Phase::PreBind)?;
    if s.port_id != 0 {
        socket::bind_raw(fd, &sockaddr_nl(s.port_id, 0))
            .map_err(|e| format!("binding to netlink port id {}: {e}", s.port_id))?;
    }
    for g in &s.groups {
        socket::setsockopt_int(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, *g as i32)
            .map_err(|e| format!("joining netlink group {g}: {e}"))?;
    }
    if let Some((pid, group)) = s.dst {
        socket::connect_raw(fd, &sockaddr_nl(pid, group))
            .map_err(|e| format!("connecting to netlink port {pid}: {e}"))?;
    }
    apply_opts(fd, &s.opts, Phase::Post)?;
    Ok(sock)
}
