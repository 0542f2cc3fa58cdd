//! Internet sockets: the dispatch by protocol (UDP in `udp.rs`, raw and
//! ping in `raw.rs`), and TCP in every state: unbound, bound, listening
//! (its saved accept queue put back by replaying each handshake),
//! SYN-sent, established and half-closed connections rebuilt with
//! TCP_REPAIR under the dump's lock, or, with `--tcp-close` (at the dump or
//! the restore), connections that come back aborted. The restorer builds
//! them (`sockets.rs`); the checks say what cannot work here first.

use super::sockets::{apply_opts, check_opts, Maker, Prebuilt};
use super::Builder;
use crate::Report;
use ckpt_image::{Blob, Credentials, InetSocket, SockOpt, TcpConnection};
use ckpt_sys::fds::socket::{self, ip_port, sockaddr_inet};
use ckpt_sys::fds::sockopt::Phase;
use ckpt_sys::fds::tcp_repair::{self, Negotiated, Pending, Saved, Window};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_NET_BIND_SERVICE: u32 = 10;

/// What a TCP socket is made as.
#[derive(Debug, Clone, PartialEq)]
pub enum TcpShape {
    Unbound,
    Bound(SocketAddr),
    Listen {
        local: SocketAddr,
        backlog: u32,
        /// Its saved accept queue: (local, peer, state) of each connection.
        pending: Vec<(SocketAddr, SocketAddr, Saved)>,
    },
    /// A connection rebuilt with TCP_REPAIR (left in repair mode).
    Conn {
        local: SocketAddr,
        peer: SocketAddr,
        saved: Saved,
        /// SO_REUSEADDR to put back when it leaves repair mode.
        reuseaddr: bool,
    },
    /// A connection that comes back aborted (--tcp-close).
    Aborted {
        peer: SocketAddr,
    },
    /// A connection reset with bytes the process had not read: they are
    /// readable again, then the reset.
    Reset {
        unread: Vec<u8>,
    },
}

/// One TCP socket for the restorer to build.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSpec {
    pub family: i32,
    pub opts: Vec<SockOpt>,
    pub shape: TcpShape,
}

/// Plan an internet socket, by protocol.
pub(super) fn plan(b: &mut Builder, g: usize, n: &InetSocket) {
    let ty = n.sock_type as i32;
    let proto = n.protocol as i32;
    match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP | 0) => plan_tcp(b, g, n),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE | 0) => {
            super::udp::plan(b, g, n)
        }
        (libc::SOCK_RAW, _) | (libc::SOCK_DGRAM, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => {
            super::raw::plan(b, g, n)
        }
        _ => b.refuse(g),
    }
}

/// The address of an image's (bytes, port); None when empty or bad.
pub(super) fn addr(bytes: &[u8], port: u16) -> Option<SocketAddr> {
    ip_port(bytes, port)
}

fn saved_of(b: &mut Builder, what: &str, n: &InetSocket, t: &TcpConnection) -> Option<Saved> {
    // (check() plans with a loader that gives nothing: the reader checks
    // blob sizes when it reads them for real.)
    let mut load = |blob: &Blob, which: &str| match b.load(blob) {
        Ok(v) => Some(v),
        Err(e) => {
            b.error(format!("{what}: reading the {which} queue: {e}"));
            None
        }
    };
    let send_queue = load(&t.send_queue, "send")?;
    let recv_queue = load(&t.recv_queue, "receive")?;
    Some(Saved {
        state: n.state as u8,
        send_seq: t.send_seq,
        recv_seq: t.recv_seq,
        send_queue,
        unsent: t.unsent,
        recv_queue,
        negotiated: Negotiated {
            mss_clamp: t.mss_clamp,
            wscale: t.wscale.then_some((t.snd_wscale, t.rcv_wscale)),
            sack: t.sack,
            timestamps: t.timestamps,
        },
        ts_clock: t.timestamps.then_some(t.ts_clock),
        window: t.window.map(|w| Window {
            snd_wl1: w.snd_wl1,
            snd_wnd: w.snd_wnd,
            max_window: w.max_window,
            rcv_wnd: w.rcv_wnd,
            rcv_wup: w.rcv_wup,
        }),
    })
}

fn reuseaddr(opts: &[SockOpt]) -> bool {
    opts.iter().any(|o| {
        o.level == libc::SOL_SOCKET
            && o.name == libc::SO_REUSEADDR
            && o.value.iter().any(|&b| b != 0)
    })
}

/// A listener's saved accept queue (None: refused, said in the plan).
fn pending_of(
    b: &mut Builder,
    what: &str,
    n: &InetSocket,
) -> Option<Vec<(SocketAddr, SocketAddr, Saved)>> {
    let mut pending = Vec::new();
    if b.env.tcp_close && !n.pending.is_empty() {
        b.warning(format!(
            "{what}: {} connection(s) of its accept queue are not restored (--tcp-close)",
            n.pending.len()
        ));
    } else {
        for p in &n.pending {
            if !p.lock_tag.is_empty() {
                b.plan.net.lock_tags.insert(p.lock_tag.clone());
            }
            let (Some(l), Some(r), Some(t)) = (
                addr(&p.local_addr, p.local_port),
                addr(&p.remote_addr, p.remote_port),
                &p.tcp,
            ) else {
                b.error(format!(
                    "{what}: a connection of its accept queue without addresses or state"
                ));
                return None;
            };
            let s = saved_of(b, what, p, t)?;
            if !matches!(
                s.state,
                tcp_repair::TCP_ESTABLISHED | tcp_repair::TCP_CLOSE_WAIT
            ) || !s.send_queue.is_empty()
            {
                b.error(format!("{what}: a connection of its accept queue in state {} with data to send cannot be put back", s.state));
                return None;
            }
            pending.push((l, r, s));
        }
    }
    Some(pending)
}

fn plan_tcp(b: &mut Builder, g: usize, n: &InetSocket) {
    let what = b.what(g);
    let family = n.family as i32;
    if !matches!(family, libc::AF_INET | libc::AF_INET6) {
        b.error(format!("{what}: TCP socket of unknown family {family}"));
        return;
    }
    if !n.lock_tag.is_empty() {
        b.plan.net.lock_tags.insert(n.lock_tag.clone());
    }
    let local = addr(&n.local_addr, n.local_port);
    let peer = addr(&n.remote_addr, n.remote_port);
    let state = n.state as u8;
    let shape = match state {
        tcp_repair::TCP_LISTEN => {
            let Some(local) = local else {
                b.error(format!("{what}: a listening TCP socket without an address"));
                return;
            };
            let Some(pending) = pending_of(b, &what, n) else {
                return;
            };
            // 0: not known (the system's limit).
            let backlog = if n.backlog == 0 {
                i32::MAX as u32
            } else {
                n.backlog
            };
            TcpShape::Listen {
                local,
                backlog,
                pending,
            }
        }
        st if tcp_repair::is_connection(st) => {
            let Some(peer) = peer else {
                b.error(format!(
                    "{what}: a TCP connection without its peer's address"
                ));
                return;
            };
            if n.closed || b.env.tcp_close {
                TcpShape::Aborted { peer }
            } else {
                let (Some(local), Some(t)) = (local, &n.tcp) else {
                    b.error(format!("{what}: TCP connection {} ({}) was saved without its state (dump it with --tcp-established, or restore with --tcp-close)", n.describe(), st));
                    return;
                };
                let Some(saved) = saved_of(b, &what, n, t) else {
                    return;
                };
                TcpShape::Conn {
                    local,
                    peer,
                    saved,
                    reuseaddr: reuseaddr(&n.options),
                }
            }
        }
        // A connection closed before the dump (its port given back): made
        // as a closed connection (repair mode sends nothing; the peer it
        // is made with cannot be asked: getpeername says ENOTCONN).
        tcp_repair::TCP_CLOSE if n.closed => match &n.tcp {
            Some(t) if t.recv_queue.size > 0 => {
                let Ok(unread) = b.load(&t.recv_queue) else {
                    b.error(format!("{what}: reading its unread bytes"));
                    return;
                };
                TcpShape::Reset { unread }
            }
            _ => TcpShape::Aborted {
                peer: loopback(family),
            },
        },
        tcp_repair::TCP_CLOSE => match local {
            Some(l) => TcpShape::Bound(l),
            None => TcpShape::Unbound,
        },
        st => {
            b.error(format!(
                "{what}: TCP socket in state {st} cannot be restored"
            ));
            return;
        }
    };
    b.prebuilt(
        g,
        Prebuilt::Tcp(TcpSpec {
            family,
            opts: n.options.clone(),
            shape,
        }),
    );
}

/// The loopback address of `family`, port 9 (discard).
fn loopback(family: i32) -> SocketAddr {
    if family == libc::AF_INET6 {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 9))
    }
}

/// Build one TCP socket (in the restorer): the fd, and for a connection
/// left in repair mode its SO_REUSEADDR.
pub(super) fn make(s: &TcpSpec, m: &mut Maker) -> Result<(OwnedFd, Option<bool>), String> {
    let sock = socket::socket(s.family, libc::SOCK_STREAM, 0).map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    apply_opts(fd, &s.opts, Phase::PreBind)?;
    let mut repaired = None;
    match &s.shape {
        TcpShape::Unbound => {}
        TcpShape::Bound(a) => bind_again(fd, a)?,
        TcpShape::Listen {
            local,
            backlog,
            pending,
        } => {
            bind_again(fd, local)?;
            socket::listen(fd, *backlog).map_err(|e| format!("listening on {local}: {e}"))?;
            replay(s.family, fd, local, pending, m)?;
        }
        TcpShape::Conn {
            local,
            peer,
            saved,
            reuseaddr,
        } => {
            if !ckpt_sys::segment::is_local(local.ip()) {
                return Err(format!("{local} is not an address of this host"));
            }
            tcp_repair::restore(fd, *local, *peer, saved, &mut m.tx)
                .map_err(|e| format!("rebuilding TCP connection {local} -> {peer}: {e}"))?;
            repaired = Some(*reuseaddr);
        }
        TcpShape::Aborted { peer } => tcp_repair::make_aborted(fd, *peer)
            .map_err(|e| format!("making a closed TCP connection: {e}"))?,
        TcpShape::Reset { unread } => tcp_repair::make_reset(fd, s.family, unread)
            .map_err(|e| format!("making a reset TCP connection: {e}"))?,
    }
    apply_opts(fd, &s.opts, Phase::Post)?;
    Ok((sock, repaired))
}

/// Bind to the saved address again, with SO_REUSEADDR and SO_REUSEPORT
/// (connections of the saved socket may have left TIME-WAIT sockets on
/// its port; another saved socket may share the port, having turned
/// SO_REUSEPORT off after its bind): [`reuse_back`] sets their saved
/// values once every socket is built.
fn bind_again(fd: i32, a: &SocketAddr) -> Result<(), String> {
    for name in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        socket::setsockopt_int(fd, libc::SOL_SOCKET, name, 1).map_err(|e| e.to_string())?;
    }
    bind_free(fd, a)
}

/// Bind `fd` to `a` with IP_FREEBIND for the bind when it is off: the
/// saved process may have bound with it and turned it off since, and an
/// IPv6 address may still be tentative here. Its saved value is set again
/// after the bind.
pub(super) fn bind_free(fd: i32, a: &SocketAddr) -> Result<(), String> {
    let free = socket::getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND)
        .map_err(|e| format!("reading IP_FREEBIND: {e}"))?;
    if free == 0 {
        socket::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)
            .map_err(|e| format!("setting IP_FREEBIND for the bind: {e}"))?;
    }
    socket::bind_raw(fd, &sockaddr_inet(a)).map_err(|e| format!("binding to {a}: {e}"))?;
    if free == 0 {
        socket::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 0)
            .map_err(|e| format!("clearing IP_FREEBIND after the bind: {e}"))?;
    }
    Ok(())
}

fn saved_int(opts: &[SockOpt], level: i32, name: i32) -> i32 {
    opts.iter()
        .find(|o| o.level == level && o.name == name)
        .and_then(|o| o.value.get(..4))
        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Once every socket is built: the saved SO_REUSEADDR and SO_REUSEPORT of
/// a socket [`bind_again`] bound.
pub(super) fn reuse_back(fd: i32, s: &TcpSpec) -> Result<(), String> {
    if !matches!(s.shape, TcpShape::Bound(_) | TcpShape::Listen { .. }) {
        return Ok(());
    }
    for (name, label) in [
        (libc::SO_REUSEADDR, "SO_REUSEADDR"),
        (libc::SO_REUSEPORT, "SO_REUSEPORT"),
    ] {
        let v = saved_int(&s.opts, libc::SOL_SOCKET, name);
        socket::setsockopt_int(fd, libc::SOL_SOCKET, name, v)
            .map_err(|e| format!("setting {label} back: {e}"))?;
    }
    Ok(())
}

/// Put the saved accept queue back into the new listener `fd`.
fn replay(
    family: i32,
    fd: i32,
    local: &SocketAddr,
    pending: &[(SocketAddr, SocketAddr, Saved)],
    m: &mut Maker,
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    for (l, r, s) in pending {
        if !ckpt_sys::segment::is_local(l.ip()) {
            return Err(format!("{l} is not an address of this host"));
        }
        tcp_repair::replay_accept(&Pending::of_saved(family, *l, *r, s), &mut m.tx)
            .map_err(|e| format!("putting connection {r} back into the accept queue: {e}"))?;
    }
    // Loopback delivery is asynchronous: wait until they are all queued.
    let ino = socket::inode(fd).map_err(|e| e.to_string())?;
    let t0 = std::time::Instant::now();
    loop {
        let queued = ckpt_sys::sock_diag::inet_by_inode(libc::IPPROTO_TCP, ino)
            .ok()
            .flatten()
            .map_or(0, |d| d.rqueue as usize);
        if queued >= pending.len() {
            tracing::debug!(listener = %local, connections = queued, elapsed = ?t0.elapsed(), "accept queue put back");
            return Ok(());
        }
        if t0.elapsed() > std::time::Duration::from_secs(2) {
            return Err(format!(
                "only {queued} of the {} saved connections reached the accept queue of {local}",
                pending.len()
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The checks of the restorer's sockets: what `other_user`'s process
/// (saved credentials `c`) could not have done itself, and what is in use
/// here.
pub(crate) fn check(what: &str, p: &Prebuilt, c: &Credentials, other_user: bool, r: &mut Report) {
    let caps = c.cap_effective;
    let need = |cap: u32, why: &str, r: &mut Report| {
        if other_user && caps & (1 << cap) == 0 {
            r.errors.push(format!(
                "{what}: {why} needs a capability (number {cap}) that uid {} did not have",
                c.euid
            ));
        }
    };
    match p {
        Prebuilt::Tcp(s) => {
            check_opts(what, &s.opts, caps, other_user, r);
            match &s.shape {
                TcpShape::Bound(a) => check_port(what, a.port(), c, other_user, r),
                TcpShape::Listen { local, .. } => check_port(what, local.port(), c, other_user, r),
                TcpShape::Conn { local, peer, .. } => {
                    check_port(what, local.port(), c, other_user, r);
                    need(
                        CAP_NET_ADMIN,
                        "restoring a live TCP connection (TCP_REPAIR)",
                        r,
                    );
                    if in_use(local, peer) {
                        r.errors.push(format!(
                            "{what}: TCP connection {local} -> {peer} is still open here (does the dumped process still run?)"
                        ));
                    }
                }
                TcpShape::Unbound | TcpShape::Aborted { .. } | TcpShape::Reset { .. } => {}
            }
        }
        Prebuilt::Udp(s) => {
            check_opts(what, &s.opts, caps, other_user, r);
            if let Some(l) = s.local {
                check_port(what, l.port(), c, other_user, r);
            }
        }
        Prebuilt::Raw(s) => {
            check_opts(what, &s.opts, caps, other_user, r);
            if s.ty == libc::SOCK_RAW {
                need(CAP_NET_RAW, "a raw socket", r);
            }
        }
        Prebuilt::Netlink(s) => {
            check_opts(what, &s.opts, caps, other_user, r);
            if s.protocol != libc::NETLINK_ROUTE && !s.groups.is_empty() {
                need(
                    CAP_NET_ADMIN,
                    "joining the multicast groups of this netlink protocol",
                    r,
                );
            }
        }
        Prebuilt::Packet(s) => {
            check_opts(what, &s.opts, caps, other_user, r);
            need(CAP_NET_RAW, "a packet socket", r);
        }
        Prebuilt::BpfMap(_) => super::bpf::check(what, c, other_user, r),
    }
}

/// Whether a TCP socket of this 4-tuple exists here.
fn in_use(local: &SocketAddr, peer: &SocketAddr) -> bool {
    let family = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let Ok(all) = ckpt_sys::sock_diag::inet_sockets(family, libc::IPPROTO_TCP, u32::MAX) else {
        return false;
    };
    all.iter().any(|d| d.local == *local && d.remote == *peer)
}

/// A privileged port is bound by the restorer: only for a process that
/// could bind it itself (checked for another user's process).
pub(crate) fn check_port(what: &str, port: u16, c: &Credentials, other_user: bool, r: &mut Report) {
    if other_user
        && port != 0
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

/// Warnings of the image's connection locks that are gone here (another
/// host, or they expired): the peer may have reset those connections.
pub(crate) fn check_locks(tags: &std::collections::BTreeSet<String>, r: &mut Report) {
    for tag in tags {
        match ckpt_sys::netlock::exists(tag) {
            Ok(true) => {}
            Ok(false) => r.warnings.push(format!(
                "the connection lock {tag} of the dump is not here (another host, or it expired): the saved connections' peers may have reset them"
            )),
            Err(e) => r.errors.push(format!("checking the connection lock {tag}: {e}")),
        }
    }
}
