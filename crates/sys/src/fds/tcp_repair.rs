//! TCP_REPAIR: reading a live connection's state (sequence numbers, queues,
//! negotiated options, window, timestamp clock) and building a connection
//! that continues it (Linux 3.5+; the window since 4.8). Needs
//! CAP_NET_ADMIN in the socket's network namespace.
//!
//! In repair mode a socket sends nothing on its own: connect() makes it
//! ESTABLISHED without a SYN, close() makes it vanish without FIN or RST,
//! and send() writes into the queue selected with TCP_REPAIR_QUEUE.

use super::socket::{getsockopt_int, getsockopt_into, ioctl_int, setsockopt_bytes, setsockopt_int};
use super::socket::{SIOCINQ, SIOCOUTQ, SIOCOUTQNSD};
use crate::Result;
use std::os::fd::AsRawFd;

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;

/// TCPOPT_* codes of TCP_REPAIR_OPTIONS.
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// TCPI_OPT_* bits of tcp_info's options.
pub const TCPI_OPT_TIMESTAMPS: u8 = 1;
pub const TCPI_OPT_SACK: u8 = 2;
pub const TCPI_OPT_WSCALE: u8 = 4;

/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;

/// Repair mode on, off, or off without the window probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    On = 1,
    /// Off; from ESTABLISHED the kernel sends a window probe, which the
    /// peer answers at once (both sides resynchronise).
    Off = 0,
    /// Off without the probe (TCP_REPAIR_OFF_NO_WP, Linux 4.15).
    OffNoProbe = -1,
}

/// The queue TCP_QUEUE_SEQ, send() and MSG_PEEK apply to in repair mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    None = 0,
    Recv = 1,
    Send = 2,
}

/// The head of `struct tcp_info` (the part every kernel fills).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    /// TCPI_OPT_* bits.
    pub options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
}

/// TCP_REPAIR_WINDOW (the original 20-byte layout, which kernels accept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// The options negotiated at the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub mss_clamp: u32,
    /// (send, receive) window scale when window scaling was negotiated.
    pub wscale: Option<(u8, u8)>,
    pub sack: bool,
    pub timestamps: bool,
}

/// getsockopt(TCP_INFO): state, options, window scales.
pub fn tcp_info(fd: impl AsRawFd) -> Result<TcpInfo> {
    let mut b = [0u8; 8];
    getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)?;
    Ok(TcpInfo {
        state: b[0],
        options: b[5],
        // Bit fields: tcpi_snd_wscale is the low nibble (x86 little endian).
        snd_wscale: b[6] & 0xf,
        rcv_wscale: b[6] >> 4,
    })
}

/// Repair mode on or off.
pub fn set_repair(fd: impl AsRawFd, mode: Repair) -> Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, mode as i32)
}

/// Whether the socket is in repair mode.
pub fn in_repair(fd: impl AsRawFd) -> Result<bool> {
    Ok(getsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR)? == 1)
}

/// Select the queue (repair mode).
pub fn set_queue(fd: impl AsRawFd, q: Queue) -> Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, q as i32)
}

/// TCP_QUEUE_SEQ of the selected queue: write_seq (send) or rcv_nxt
/// (receive), FINs counted.
pub fn queue_seq(fd: impl AsRawFd) -> Result<u32> {
    Ok(getsockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ)? as u32)
}

/// Set the selected queue's sequence number (repair mode, state CLOSE:
/// before connect).
pub fn set_queue_seq(fd: impl AsRawFd, seq: u32) -> Result<()> {
    setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, &seq.to_ne_bytes())
}

/// The negotiated options. `mss_clamp` is TCP_MAXSEG, which repair mode
/// makes report the clamp (call it in repair mode).
pub fn negotiated(fd: impl AsRawFd + Copy, info: &TcpInfo) -> Result<Negotiated> {
    Ok(Negotiated {
        mss_clamp: getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG)? as u32,
        wscale: (info.options & TCPI_OPT_WSCALE != 0).then_some((info.snd_wscale, info.rcv_wscale)),
        sack: info.options & TCPI_OPT_SACK != 0,
        timestamps: info.options & TCPI_OPT_TIMESTAMPS != 0,
    })
}

/// Give a repaired connection its negotiated options (ESTABLISHED,
/// repair mode, before anything is queued).
pub fn set_negotiated(fd: impl AsRawFd, n: &Negotiated) -> Result<()> {
    // struct tcp_repair_opt { u32 code; u32 val; }, at most 4.
    let mut b = [0u8; 32];
    let mut len = 0;
    let mut put = |code: u32, val: u32| {
        b[len..len + 4].copy_from_slice(&code.to_ne_bytes());
        b[len + 4..len + 8].copy_from_slice(&val.to_ne_bytes());
        len += 8;
    };
    if n.sack {
        put(TCPOPT_SACK_PERM, 0);
    }
    if let Some((snd, rcv)) = n.wscale {
        put(TCPOPT_WINDOW, u32::from(snd) | (u32::from(rcv) << 16));
    }
    if n.timestamps {
        put(TCPOPT_TIMESTAMP, 0);
    }
    put(TCPOPT_MAXSEG, n.mss_clamp);
    setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &b[..len])
}

/// The connection's TCP timestamp clock (tcp_time_stamp + its offset).
pub fn timestamp(fd: impl AsRawFd) -> Result<u32> {
    Ok(getsockopt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP)? as u32)
}

/// Set the offset so that the clock reads `ts` now (repair mode).
pub fn set_timestamp(fd: impl AsRawFd, ts: u32) -> Result<()> {
    setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, &ts.to_ne_bytes())
}

/// TCP_REPAIR_WINDOW (repair mode).
pub fn window(fd: impl AsRawFd) -> Result<Window> {
    let mut b = [0u8; 20];
    getsockopt_into(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &mut b)?;
    let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok(Window {
        snd_wl1: w(0),
        snd_wnd: w(4),
        max_window: w(8),
        rcv_wnd: w(12),
        rcv_wup: w(16),
    })
}

/// Set TCP_REPAIR_WINDOW (repair mode, ESTABLISHED).
pub fn set_window(fd: impl AsRawFd, w: &Window) -> Result<()> {
    let mut b = [0u8; 20];
    for (i, v) in [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup]
        .iter()
        .enumerate()
    {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    setsockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &b)
}

/// Queue lengths: (not acknowledged, not sent, not read). A queued FIN
/// counts one in the first two.
pub fn queue_lengths(fd: impl AsRawFd + Copy) -> Result<(u32, u32, u32)> {
    Ok((
        ioctl_int(fd, SIOCOUTQ)? as u32,
        ioctl_int(fd, SIOCOUTQNSD)? as u32,
        ioctl_int(fd, SIOCINQ)? as u32,
    ))
}

/// Exactly `len` bytes of the selected queue, peeked (one more is asked
/// for, to prove there are no more). In repair mode with the send queue
/// selected, MSG_PEEK reads the send queue.
pub fn peek_queue(fd: impl AsRawFd, len: usize) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; len + 1];
    let mut got = 0;
    // One peek returns it all; loop in case of a short answer, from the
    // start (a peek does not move).
    for _ in 0..3 {
        // SAFETY: `buf` is live and its length is passed.
        let r = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(crate::last_os("recv(MSG_PEEK)", 0));
        }
        got = r as usize;
        if got >= len {
            break;
        }
    }
    if got != len {
        return Err(crate::os_errno("recv(MSG_PEEK)", 0, libc::EPROTO));
    }
    buf.truncate(len);
    Ok(buf)
}

/// Write `data` into the selected queue (repair mode) or as ordinary data
/// (repair off): as many send()s as it takes, halving the chunk when the
/// kernel wants smaller pieces.
pub fn fill_queue(fd: impl AsRawFd + Copy, data: &[u8]) -> Result<()> {
    let mut off = 0;
    let mut chunk = data.len().max(1);
    while off < data.len() {
        let n = chunk.min(data.len() - off);
        match super::socket::send(fd, &data[off..off + n], libc::MSG_DONTWAIT) {
            Ok(0) => return Err(crate::os_errno("send", 0, libc::ENOBUFS)),
            Ok(w) => off += w,
            Err(e)
                if chunk > 1024
                    && matches!(
                        e.errno(),
                        Some(libc::ENOMEM) | Some(libc::ENOBUFS) | Some(libc::EAGAIN)
                    ) =>
            {
                chunk /= 2
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
