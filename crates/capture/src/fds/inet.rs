//! TCP sockets, in every state: unbound, bound, listening (with the
//! connections waiting in its accept queue), SYN-sent, established and
//! half-closed. Connections are saved with TCP_REPAIR under the lock of
//! `net.rs` (`--tcp-established`), or as closed (`--tcp-close`); without
//! either, `net::Sockets::prepare` refused them by address already. Also
//! what kind of socket an fd is, for the message when no kind takes it.

use super::net::{addr_port, dup, options, proto_name, state_name, sys_fd};
use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, InetSocket, TcpConnection, TcpWindow};
use ckpt_sys::fds::sockopt::SockKind;
use ckpt_sys::fds::tcp_repair::{self, Saved};
use ckpt_sys::Pid;
use std::os::fd::AsRawFd;

/// TCP state number of a listening socket (as in /proc/net/tcp).
const TCP_LISTEN: u32 = 10;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(d) = cx.net.tcp(f.ino()).cloned() else {
        // Not seen by sock_diag: not TCP, or in another network namespace
        // (then only a listener is saved, from /proc/PID/net/tcp).
        if !proto_name(cx.pid, f.fd).starts_with("TCP") {
            return Ok(None);
        }
        return match tcp_socket(cx.pid, f.fd, f.ino())? {
            Some(s) if s.state == TCP_LISTEN => Ok(Some(FileKind::InetSocket(s))),
            Some(s) => Err(unsupported(
                f.fd,
                format!(
                    "TCP socket {} ({}) in another network namespace is not supported: only listening ones are",
                    s.describe(),
                    state_name(s.state as u8)
                ),
            )),
            None => unhashed(cx, f),
        };
    };
    let sock = dup(cx, f.fd)?;
    let fd = sock.as_raw_fd();
    let kind = SockKind {
        family: i32::from(d.family),
        ty: libc::SOCK_STREAM,
        protocol: libc::IPPROTO_TCP,
    };
    // Before repair mode, which changes SO_REUSEADDR.
    let opts = options(fd, &kind, f.fd)?;
    let (local_addr, local_port) = addr_port(&d.local);
    let (remote_addr, remote_port) = addr_port(&d.remote);
    let mut s = InetSocket {
        family: u32::from(d.family),
        sock_type: libc::SOCK_STREAM as u32,
        protocol: libc::IPPROTO_TCP as u32,
        state: u32::from(d.state),
        local_addr,
        local_port,
        remote_addr,
        remote_port,
        options: opts,
        shutdown: u32::from(d.shutdown),
        ..Default::default()
    };
    if d.local.port() == 0 {
        s.local_addr.clear();
    }
    match d.state {
        tcp_repair::TCP_LISTEN => {
            s.backlog = d.wqueue;
            s.remote_addr.clear();
            if d.rqueue > 0 {
                save_accept_queue(cx, f, sock, &mut s)?;
            }
        }
        st if tcp_repair::is_connection(st) && cx.net.opts.tcp_close => {
            s.closed = true;
        }
        st if tcp_repair::is_connection(st) => {
            let reuseaddr =
                ckpt_sys::fds::socket::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)
                    .map_err(|e| sys_fd(f.fd, "reading SO_REUSEADDR", e))?;
            let saved = tcp_repair::save(fd)
                .map_err(|e| sys_fd(f.fd, "saving the TCP connection (TCP_REPAIR)", e))?;
            // Out of repair mode until the process is killed (see net.rs).
            tcp_repair::pause(fd, reuseaddr != 0)
                .map_err(|e| sys_fd(f.fd, "leaving repair mode", e))?;
            cx.net.hold(sock, reuseaddr != 0);
            s.state = u32::from(saved.state);
            s.lock_tag = cx.net.lock_tag().unwrap_or_default().to_string();
            s.tcp = Some(connection(cx, &saved)?);
            tracing::debug!(fd = f.fd, conn = %s.describe(), state = state_name(saved.state), recv = saved.recv_queue.len(), send = saved.send_queue.len(), "TCP connection saved");
        }
        tcp_repair::TCP_CLOSE => s.remote_addr.clear(),
        st => {
            return Err(unsupported(
                f.fd,
                format!("TCP socket {} in state {}", s.describe(), state_name(st)),
            ))
        }
    }
    Ok(Some(FileKind::InetSocket(s)))
}

/// A TCP socket neither sock_diag nor /proc/PID/net/tcp lists: one never
/// bound (the kernel hashes a TCP socket only once it has a port). Saved
/// from the socket itself: its family, options, shutdown state; anything
/// else (a port after all) is refused by name.
fn unhashed(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    use ckpt_sys::fds::socket as so;
    let sock = dup(cx, f.fd)?;
    let fd = sock.as_raw_fd();
    let int =
        |level, name, what| so::getsockopt_int(fd, level, name).map_err(|e| sys_fd(f.fd, what, e));
    let family = int(libc::SOL_SOCKET, libc::SO_DOMAIN, "reading SO_DOMAIN")?;
    let name = so::sock_name(fd).map_err(|e| sys_fd(f.fd, "getsockname", e))?;
    let bound = so::inet_addr(&name).is_some_and(|a| a.port() != 0);
    // struct tcp_info starts with tcpi_state.
    let mut info = [0u8; 8];
    so::getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
        .map_err(|e| sys_fd(f.fd, "reading TCP_INFO", e))?;
    let state = info[0];
    let inet = matches!(family, libc::AF_INET | libc::AF_INET6);
    if bound && state == tcp_repair::TCP_CLOSE && inet {
        return former_connection(cx, (fd, f), family, &name);
    }
    if bound || state != tcp_repair::TCP_CLOSE || !inet {
        return Err(unsupported(
            f.fd,
            format!(
                "TCP socket in state {} (family {family}) that sock_diag does not list",
                state_name(state)
            ),
        ));
    }
    let kind = SockKind {
        family,
        ty: libc::SOCK_STREAM,
        protocol: libc::IPPROTO_TCP,
    };
    let options = options(fd, &kind, f.fd)?;
    tracing::debug!(fd = f.fd, "unbound TCP socket saved");
    Ok(Some(FileKind::InetSocket(InetSocket {
        family: family as u32,
        sock_type: libc::SOCK_STREAM as u32,
        protocol: libc::IPPROTO_TCP as u32,
        state: u32::from(tcp_repair::TCP_CLOSE),
        options,
        ..Default::default()
    })))
}

/// A TCP socket with a port that sock_diag does not list in state closed:
/// one that was connected and is closed now (both sides shut it, or a
/// reset), its port given back. Saved as a closed connection (reads give
/// end of file, writes EPIPE), with its last address; bytes it received
/// and the process has not read yet (a connection reset after its peer
/// sent them) are saved too, as `tcp.recvQueue` (the rest of `tcp` unused):
/// the restore makes a connection that holds them and is then reset.
fn former_connection(
    cx: &mut Ctx<'_>,
    (fd, f): (i32, &RawFd),
    family: i32,
    name: &[u8],
) -> Result<Option<FileKind>> {
    use ckpt_sys::fds::socket as so;
    let unread = so::ioctl_int(fd, so::SIOCINQ).map_err(|e| sys_fd(f.fd, "SIOCINQ", e))?;
    let unread_bytes = if unread > 0 {
        let b = so::peek_stream(fd, unread as usize).map_err(|e| {
            sys_fd(
                f.fd,
                "reading the unread bytes of a closed TCP connection",
                e,
            )
        })?;
        if b.len() != unread as usize {
            return Err(unsupported(
                f.fd,
                format!(
                    "a closed TCP connection with {unread} unread byte(s), of which only {} could be read",
                    b.len()
                ),
            ));
        }
        Some(b)
    } else {
        None
    };
    let kind = SockKind {
        family,
        ty: libc::SOCK_STREAM,
        protocol: libc::IPPROTO_TCP,
    };
    let options = options(fd, &kind, f.fd)?;
    let local = so::inet_addr(name);
    let (local_addr, local_port) = local.as_ref().map(addr_port).unwrap_or_default();
    let tcp = match &unread_bytes {
        Some(b) => Some(ckpt_image::TcpConnection {
            recv_queue: cx.sink.add_blob(b)?,
            ..Default::default()
        }),
        None => None,
    };
    tracing::debug!(fd = f.fd, ?local, unread, "closed TCP connection saved");
    Ok(Some(FileKind::InetSocket(InetSocket {
        family: family as u32,
        sock_type: libc::SOCK_STREAM as u32,
        protocol: libc::IPPROTO_TCP as u32,
        state: u32::from(tcp_repair::TCP_CLOSE),
        local_addr,
        local_port,
        options,
        closed: true,
        shutdown: 3,
        tcp,
        ..Default::default()
    })))
}

/// The connections waiting in a listener's accept queue: saved by
/// accepting them through our duplicate (`--tcp-established`), or left to
/// be reset (`--tcp-close`).
fn save_accept_queue(
    cx: &mut Ctx<'_>,
    f: &RawFd,
    sock: std::os::fd::OwnedFd,
    s: &mut InetSocket,
) -> Result<()> {
    if !cx.net.opts.tcp_established {
        tracing::warn!(fd = f.fd, listener = %s.describe(), "connections waiting in the accept queue are not saved (--tcp-close): their clients see a reset");
        return Ok(());
    }
    let conns = cx.net.drain_accept_queue(cx.pid, f.fd, sock)?;
    for (local, peer, saved) in conns {
        let (local_addr, local_port) = addr_port(&local);
        let (remote_addr, remote_port) = addr_port(&peer);
        s.pending.push(InetSocket {
            family: s.family,
            sock_type: s.sock_type,
            protocol: s.protocol,
            state: u32::from(saved.state),
            local_addr,
            local_port,
            remote_addr,
            remote_port,
            lock_tag: cx.net.lock_tag().unwrap_or_default().to_string(),
            tcp: Some(connection(cx, &saved)?),
            ..Default::default()
        });
    }
    s.lock_tag = cx.net.lock_tag().unwrap_or_default().to_string();
    tracing::debug!(fd = f.fd, pending = s.pending.len(), "accept queue saved");
    Ok(())
}

/// A saved connection as the image keeps it (queues as blobs).
fn connection(cx: &mut Ctx<'_>, s: &Saved) -> Result<TcpConnection> {
    let (wscale, (snd_wscale, rcv_wscale)) = match s.negotiated.wscale {
        Some(w) => (true, w),
        None => (false, (0, 0)),
    };
    Ok(TcpConnection {
        send_seq: s.send_seq,
        recv_seq: s.recv_seq,
        send_queue: cx.sink.add_blob(&s.send_queue)?,
        unsent: s.unsent,
        recv_queue: cx.sink.add_blob(&s.recv_queue)?,
        mss_clamp: s.negotiated.mss_clamp,
        snd_wscale,
        rcv_wscale,
        wscale,
        sack: s.negotiated.sack,
        timestamps: s.negotiated.timestamps,
        ts_clock: s.ts_clock.unwrap_or(0),
        window: s.window.map(|w| TcpWindow {
            snd_wl1: w.snd_wl1,
            snd_wnd: w.snd_wnd,
            max_window: w.max_window,
            rcv_wnd: w.rcv_wnd,
            rcv_wup: w.rcv_wup,
        }),
    })
}

/// An address of /proc/net/tcp{,6}: groups of 8 hex digits, each the
/// native-endian u32 of 4 bytes of the address in network order.
fn proc_net_addr(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 8 && hex.len() != 32 {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(8) {
        let w = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        out.extend_from_slice(&w.to_ne_bytes());
    }
    Some(out)
}

/// One line of /proc/net/tcp{,6}: Ok(None) when it is not the socket of
/// inode `ino`, an error (what is wrong) when it is but cannot be parsed.
fn parse_tcp_line(
    line: &str,
    ino: u64,
    family: u32,
) -> std::result::Result<Option<InetSocket>, String> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.get(9).and_then(|v| v.parse::<u64>().ok()) != Some(ino) {
        return Ok(None);
    }
    let bad = |what: &str| format!("{what} in {line:?}");
    let (la, lp) = t[1].split_once(':').ok_or_else(|| bad("no local port"))?;
    let (ra, rp) = t[2].split_once(':').ok_or_else(|| bad("no remote port"))?;
    let port = |p: &str| u16::from_str_radix(p, 16).map_err(|_| bad("bad port"));
    let addr = |a: &str| proc_net_addr(a).ok_or_else(|| bad("bad address"));
    Ok(Some(InetSocket {
        family,
        sock_type: libc::SOCK_STREAM as u32,
        protocol: libc::IPPROTO_TCP as u32,
        state: u32::from_str_radix(t[3], 16).map_err(|_| bad("bad state"))?,
        local_addr: addr(la)?,
        local_port: port(lp)?,
        remote_addr: addr(ra)?,
        remote_port: port(rp)?,
        // Not in /proc/net/tcp (its rx_queue of a listening socket is the
        // current accept queue, not the limit): 0, "not known".
        backlog: 0,
        ..Default::default()
    }))
}

/// The TCP socket of inode `ino` from the target's network namespace
/// (/proc/PID/net/tcp and tcp6). None when it is not there.
fn tcp_socket(pid: Pid, fd: i32, ino: u64) -> Result<Option<InetSocket>> {
    for (file, family) in [("tcp", libc::AF_INET), ("tcp6", libc::AF_INET6)] {
        let path = format!("/proc/{pid}/net/{file}");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (i, l) in text.lines().enumerate().skip(1) {
            match parse_tcp_line(l, ino, family as u32) {
                Ok(Some(s)) => return Ok(Some(s)),
                Ok(None) => {}
                Err(what) => {
                    return Err(unsupported(
                        fd,
                        format!("cannot parse {path} line {}: {what}", i + 1),
                    ))
                }
            }
        }
    }
    Ok(None)
}

/// What kind of socket an fd is (for the error message): the socket's
/// "system.sockprotoname" attribute, else a look-up in /proc/PID/net.
pub(super) fn socket_kind(pid: Pid, fd: i32, ino: u64) -> String {
    let name = proto_name(pid, fd);
    if !name.is_empty() {
        let kind = match name.as_str() {
            "UNIX" | "UNIX-STREAM" | "UNIX-DGRAM" => "unix".to_string(),
            "TCP" | "TCPv6" | "UDP" | "UDPv6" | "UDPLITE" | "UDPLITEv6" | "RAW" | "RAWv6"
            | "PING" | "PINGv6" | "MPTCP" | "SCTP" | "SCTPv6" => {
                name.trim_end_matches("v6").to_string()
            }
            "NETLINK" => "netlink".to_string(),
            "PACKET" => "packet".to_string(),
            _ => name,
        };
        return format!("{kind} socket");
    }
    let ino = ino.to_string();
    for (file, kind) in [
        ("unix", "unix socket"),
        ("tcp", "TCP socket"),
        ("tcp6", "TCP socket"),
        ("udp", "UDP socket"),
        ("udp6", "UDP socket"),
        ("raw", "raw socket"),
        ("raw6", "raw socket"),
        ("netlink", "netlink socket"),
        ("packet", "packet socket"),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            if text
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().any(|t| t == ino))
            {
                return kind.to_string();
            }
        }
    }
    "socket".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        let parse = |l: &str, ino: u64, family: i32| parse_tcp_line(l, ino, family as u32);
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0";
        let s = parse(v4, 31337, libc::AF_INET).unwrap().unwrap();
        assert_eq!(s.local_addr, vec![127, 0, 0, 1]);
        assert_eq!(s.local_port, 8080);
        assert_eq!(s.state, TCP_LISTEN);
        assert_eq!(s.describe(), "127.0.0.1:8080");
        assert!(parse(v4, 31338, libc::AF_INET).unwrap().is_none());
        let v4b = "   1: 0100007F:1F90 0200000A:15B3 01 00000000:00000000 00:00000000 00000000     0        0 4242 1";
        let s = parse(v4b, 4242, libc::AF_INET).unwrap().unwrap();
        assert_eq!(s.describe(), "127.0.0.1:8080 -> 10.0.0.2:5555");
        assert_eq!(s.backlog, 0);
        let v6 = "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000080 00:00000000 00000000     0        0 777 1";
        let s = parse(v6, 777, libc::AF_INET6).unwrap().unwrap();
        assert_eq!(s.local_addr, vec![0u8; 16]);
        assert_eq!(s.describe(), "[::]:80");
        let lo6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000080 00:00000000 00000000     0        0 778 1";
        let s = parse(lo6, 778, libc::AF_INET6).unwrap().unwrap();
        assert_eq!(s.describe(), "[::1]:80");
        // Another socket's line is not looked at; ours must parse.
        assert!(parse("garbage", 1, 2).unwrap().is_none());
        let e = parse("0: zz:zz zz:zz 0A 0:0 0 0 0 0 1", 1, 2).unwrap_err();
        assert!(e.starts_with("bad address in"), "{e}");
    }
}
