//! Raw IP sockets and ping (ICMP datagram) sockets: protocol, bound
//! address (a ping socket's identifier as its port), connected peer,
//! options and filters. Their queued packets were not saved.

use super::inet::addr;
use super::sockets::{apply_opts, Prebuilt};
use super::Builder;
use ckpt_image::{InetSocket, SockOpt};
use ckpt_sys::fds::socket::{self, sockaddr_inet};
use ckpt_sys::fds::sockopt::Phase;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

/// One raw or ping socket for the restorer to build.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSpec {
    pub family: i32,
    pub ty: i32,
    pub protocol: i32,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub opts: Vec<SockOpt>,
}

pub(super) fn plan(b: &mut Builder, g: usize, n: &InetSocket) {
    let what = b.what(g);
    let family = n.family as i32;
    if !matches!(family, libc::AF_INET | libc::AF_INET6) {
        b.error(format!("{what}: raw socket of unknown family {family}"));
        return;
    }
    if n.dropped_queue > 0 {
        b.warning(format!(
            "{what}: {} bytes of packets queued at the dump were not saved",
            n.dropped_queue
        ));
    }
    b.prebuilt(
        g,
        Prebuilt::Raw(RawSpec {
            family,
            ty: n.sock_type as i32,
            protocol: n.protocol as i32,
            local: addr(&n.local_addr, n.local_port),
            peer: addr(&n.remote_addr, n.remote_port),
            opts: n.options.clone(),
        }),
    );
}

pub(super) fn make(s: &RawSpec) -> Result<OwnedFd, String> {
    let sock = socket::socket(s.family, s.ty, s.protocol).map_err(|e| {
        if s.ty == libc::SOCK_DGRAM && e.errno() == Some(libc::EACCES) {
            format!(
                "{e} (ping sockets: net.ipv4.ping_group_range does not allow the restorer's group)"
            )
        } else {
            e.to_string()
        }
    })?;
    let fd = sock.as_raw_fd();
    apply_opts(fd, &s.opts, Phase::PreBind)?;
    if let Some(l) = s.local {
        socket::bind_raw(fd, &sockaddr_inet(&l)).map_err(|e| format!("binding to {l}: {e}"))?;
    }
    if let Some(p) = s.peer {
        socket::connect_raw(fd, &sockaddr_inet(&p))
            .map_err(|e| format!("connecting to {p}: {e}"))?;
    }
    apply_opts(fd, &s.opts, Phase::Post)?;
    Ok(sock)
}
