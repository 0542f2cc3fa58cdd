//! Internet sockets: listening TCP sockets are bound and listen again
//! (with the saved backlog); other internet sockets are refused.

use super::{Builder, FdOp};
use crate::stub::Child;
use crate::Report;
use ckpt_image::{Credentials, InetSocket};
use ckpt_sys::setup;

const TCP_LISTEN: u32 = 10;
const CAP_NET_BIND_SERVICE: u32 = 10;

pub(super) fn plan(b: &mut Builder, g: usize, n: &InetSocket) {
    let listening_tcp = n.state == TCP_LISTEN
        && n.sock_type == libc::SOCK_STREAM as u32
        && matches!(
            (n.family as i32, n.local_addr.len()),
            (libc::AF_INET, 4) | (libc::AF_INET6, 16)
        );
    if !listening_tcp {
        b.refuse(g);
        return;
    }
    let (what, flags) = (b.what(g), b.flags(g));
    let s = b.slot();
    b.op(
        &what,
        FdOp::TcpListen {
            slot: s,
            addr: n.local_addr.clone(),
            port: n.local_port,
            // Not known (0): the system's limit (listen() caps it at
            // net.core.somaxconn).
            backlog: if n.backlog == 0 {
                i32::MAX as u32
            } else {
                n.backlog
            },
            flags: flags & libc::O_NONBLOCK,
        },
    );
    b.slot_of[g] = Some(s);
}

/// FdOp::TcpListen.
pub(super) fn listen(
    c: &mut Child<'_>,
    slot: usize,
    addr: &[u8],
    port: u16,
    backlog: u32,
    flags: i32,
) -> ckpt_sys::Result<()> {
    c.new_fd(slot, setup::tcp_listen(addr, port, backlog, flags)?)?;
    Ok(())
}

/// A privileged port is bound by the restorer: only for a process that
/// could bind it itself (checked for another user's process).
pub(super) fn check_port(what: &str, port: u16, c: &Credentials, r: &mut Report) {
    if port != 0
        && u32::from(port) < unprivileged_port_start()
        && c.cap_effective & (1 << CAP_NET_BIND_SERVICE) == 0
    {
        r.errors.push(format!(
            "{what}: port {port} is privileged and uid {} had no CAP_NET_BIND_SERVICE to bind it",
            c.euid
        ));
    }
}

/// The first port an unprivileged process may bind (sysctl
/// net.ipv4.ip_unprivileged_port_start, 1024 when unreadable).
fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}
