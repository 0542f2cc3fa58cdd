//! UDP and UDP-Lite sockets: bound, connected, shut down, with their
//! queued datagrams put back by injecting each one again, in order, with
//! its source address (and destination, for a socket bound to a
//! wildcard) through a raw socket; the restorer waits until they are all
//! queued. Receive timestamps of those datagrams are the injection's.

use super::inet::addr;
use super::sockets::{apply_opts, Maker, Prebuilt};
use super::Builder;
use ckpt_image::{InetSocket, SockOpt};
use ckpt_sys::fds::socket::{self, sockaddr_inet, SO_PEEK_OFF};
use ckpt_sys::fds::sockopt::Phase;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

/// One UDP socket for the restorer to build.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpSpec {
    pub family: i32,
    pub protocol: i32,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub opts: Vec<SockOpt>,
    /// (source, destination when not the socket's own, data).
    pub datagrams: Vec<(SocketAddr, Option<IpAddr>, Vec<u8>)>,
    pub shutdown: u32,
}

pub(super) fn plan(b: &mut Builder, g: usize, n: &InetSocket) {
    let what = b.what(g);
    let family = n.family as i32;
    if !matches!(family, libc::AF_INET | libc::AF_INET6) {
        b.error(format!("{what}: UDP socket of unknown family {family}"));
        return;
    }
    let local = addr(&n.local_addr, n.local_port);
    let mut datagrams = Vec::with_capacity(n.datagrams.len());
    for d in &n.datagrams {
        let Some(src) = addr(&d.src_addr, d.src_port) else {
            b.error(format!(
                "{what}: a queued datagram without a source address"
            ));
            return;
        };
        let dst = addr(&d.dst_addr, 0).map(|a| a.ip());
        datagrams.push((src, dst, d.data.clone()));
    }
    if !datagrams.is_empty() && local.is_none() {
        b.error(format!(
            "{what}: datagrams queued on a socket without an address"
        ));
        return;
    }
    b.prebuilt(
        g,
        Prebuilt::Udp(UdpSpec {
            family,
            protocol: if n.protocol == 0 {
                libc::IPPROTO_UDP
            } else {
                n.protocol as i32
            },
            local,
            peer: addr(&n.remote_addr, n.remote_port),
            opts: n.options.clone(),
            datagrams,
            shutdown: n.shutdown,
        }),
    );
}

pub(super) fn make(s: &UdpSpec, m: &mut Maker) -> Result<OwnedFd, String> {
    let sock = socket::socket(s.family, libc::SOCK_DGRAM, s.protocol).map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    apply_opts(fd, &s.opts, Phase::PreBind)?;
    if let Some(l) = s.local {
        super::inet::bind_free(fd, &l)?;
    }
    if let Some(p) = s.peer {
        socket::connect_raw(fd, &sockaddr_inet(&p))
            .map_err(|e| format!("connecting to {p}: {e}"))?;
    }
    refill(fd, s, m)?;
    apply_opts(fd, &s.opts, Phase::Post)?;
    if s.shutdown & 3 != 0 {
        let how = match s.shutdown & 3 {
            1 => libc::SHUT_RD,
            2 => libc::SHUT_WR,
            _ => libc::SHUT_RDWR,
        };
        // An unconnected socket says ENOTCONN, but the bits are set.
        match socket::shutdown(fd, how) {
            Err(e) if e.errno() != Some(libc::ENOTCONN) => return Err(format!("shutdown: {e}")),
            _ => {}
        }
    }
    Ok(sock)
}

/// Inject the saved datagrams and wait until they are all queued.
fn refill(fd: i32, s: &UdpSpec, m: &mut Maker) -> Result<(), String> {
    if s.datagrams.is_empty() {
        return Ok(());
    }
    let own = socket::sock_name(fd)
        .ok()
        .and_then(|a| socket::inet_addr(&a))
        .ok_or("the socket has no address")?;
    let need: usize = s.datagrams.iter().map(|d| d.2.len() + 1024).sum();
    let rcv = need.min(i32::MAX as usize) as i32;
    socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv)
        .map_err(|e| e.to_string())?;
    for (src, dst, data) in &s.datagrams {
        let dst_ip = dst.unwrap_or(own.ip());
        if !ckpt_sys::segment::is_local(dst_ip) {
            return Err(format!(
                "a queued datagram was sent to {dst_ip}, not an address of this host"
            ));
        }
        let to = SocketAddr::new(dst_ip, own.port());
        let pkt = ckpt_sys::segment::udp(*src, to, s.protocol as u8, data)
            .ok_or_else(|| format!("a datagram from {src} to {to} cannot be built"))?;
        m.tx.send(&pkt, dst_ip)
            .map_err(|e| format!("injecting a queued datagram: {e}"))?;
    }
    let t0 = std::time::Instant::now();
    loop {
        let n = count(fd).map_err(|e| e.to_string())?;
        if n >= s.datagrams.len() {
            return Ok(());
        }
        if t0.elapsed() > std::time::Duration::from_secs(2) {
            return Err(format!(
                "only {n} of {} re-injected datagrams arrived",
                s.datagrams.len()
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// How many datagrams are queued (peeked one after another).
fn count(fd: i32) -> ckpt_sys::Result<usize> {
    socket::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)?;
    let mut buf = [0u8; 1];
    let mut n = 0;
    loop {
        match socket::recv_msg(fd, &mut buf, libc::MSG_PEEK | libc::MSG_TRUNC) {
            Ok(_) => n += 1,
            Err(e) if e.errno() == Some(libc::EAGAIN) => break,
            Err(e) => return Err(e),
        }
    }
    socket::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, -1)?;
    Ok(n)
}
