//! Internet sockets: listening TCP sockets (address, port, backlog); other
//! TCP states are refused by name. Also what kind of socket an fd is, for
//! the message when no kind takes it.

use super::{fd_path, unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, InetSocket};
use ckpt_sys::{query, Pid};

/// TCP state number of a listening socket (as in /proc/net/tcp).
const TCP_LISTEN: u32 = 10;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    match tcp_socket(cx.pid, f.fd, f.ino())? {
        Some(s) if s.state == TCP_LISTEN => Ok(Some(FileKind::InetSocket(s))),
        Some(s) => Err(unsupported(
            f.fd,
            format!(
                "TCP socket {} ({}) is not supported yet: only listening TCP sockets are",
                s.describe(),
                tcp_state_name(s.state)
            ),
        )),
        None => Ok(None),
    }
}

fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "established",
        2 => "SYN sent",
        3 => "SYN received",
        4 => "FIN wait 1",
        5 => "FIN wait 2",
        6 => "TIME wait",
        7 => "closed",
        8 => "close wait",
        9 => "last ACK",
        10 => "listening",
        11 => "closing",
        _ => "unknown state",
    }
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
        options: Vec::new(),
    }))
}

/// The TCP socket of inode `ino`: a listening one from sock_diag (cheap),
/// else from the target's network namespace (/proc/PID/net/tcp and tcp6,
/// which walk every connection of the system). None when it is not a TCP
/// socket.
fn tcp_socket(pid: Pid, fd: i32, ino: u64) -> Result<Option<InetSocket>> {
    for family in [libc::AF_INET, libc::AF_INET6] {
        if let Ok(ls) = query::tcp_listeners(family) {
            if let Some(l) = ls.into_iter().find(|l| l.inode == ino) {
                return Ok(Some(InetSocket {
                    family: family as u32,
                    sock_type: libc::SOCK_STREAM as u32,
                    protocol: libc::IPPROTO_TCP as u32,
                    state: TCP_LISTEN,
                    local_addr: l.addr,
                    local_port: l.port,
                    remote_addr: vec![0; if family == libc::AF_INET { 4 } else { 16 }],
                    remote_port: 0,
                    backlog: l.backlog,
                    options: Vec::new(),
                }));
            }
        }
    }
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
    if let Ok(name) = query::getxattr(
        std::path::Path::new(&fd_path(pid, fd)),
        "system.sockprotoname",
    ) {
        let name = String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string();
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
        if !kind.is_empty() {
            return format!("{kind} socket");
        }
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
