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

/// The smallest and largest TCP_MAXSEG a user may set.
const TCP_MIN_MSS: u32 = 88;
const MAX_USER_MSS: u32 = 32767;

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

/// A connection that waited in a listener's accept queue, to be put back
/// into the accept queue of a listener on its address ([`replay_accept`]).
#[derive(Debug, Clone)]
pub struct Pending<'a> {
    /// AF_INET or AF_INET6 (of the listener).
    pub family: i32,
    /// The listener's side of the connection, and the client's.
    pub local: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
    /// The server's and the client's initial sequence numbers.
    pub server_isn: u32,
    pub client_isn: u32,
    /// What the client sent that the server had not read.
    pub data: &'a [u8],
    /// The client had closed its side (its FIN came after `data`).
    pub fin: bool,
    pub mss: u32,
    pub sack: bool,
    /// The client's window scale, when negotiated.
    pub client_wscale: Option<u8>,
    /// The client's window (unscaled).
    pub client_window: u32,
}

impl<'a> Pending<'a> {
    /// A waiting connection saved with [`save`] (its state seen from the
    /// listener's side), as a replay of its handshake.
    pub fn of_saved(
        family: i32,
        local: std::net::SocketAddr,
        peer: std::net::SocketAddr,
        s: &'a Saved,
    ) -> Pending<'a> {
        Pending {
            family,
            local,
            peer,
            server_isn: s.send_seq.wrapping_sub(1),
            client_isn: s
                .recv_seq
                .wrapping_sub(s.recv_queue.len() as u32)
                .wrapping_sub(1),
            data: &s.recv_queue,
            fin: fin_received(s.state),
            mss: s.negotiated.mss_clamp,
            sack: s.negotiated.sack,
            client_wscale: s.negotiated.wscale.map(|(snd, _)| snd),
            client_window: s.window.map_or(65535, |w| w.snd_wnd),
        }
    }
}

/// Put a saved pending connection back into the accept queue of the
/// listener bound to its local address, with its original sequence
/// numbers: the only way into an accept queue is a handshake, and the
/// server's ISN is its own to choose, except when the SYN meets a
/// TIME-WAIT socket of the same 4-tuple (the listener then takes the
/// TIME-WAIT's snd_nxt + 65537). So: a TIME-WAIT socket is built with
/// TCP_REPAIR (its FIN acknowledged by an injected segment), then the
/// client's SYN, its ACK with the unread data and its FIN are injected.
/// The connection's packets must be locked (the listener's SYN-ACK and
/// ACKs are dropped); the injected ones carry `tx`'s mark. The new
/// connection has no TCP timestamps (a guessed value would make the
/// server drop the client's segments).
pub fn replay_accept(p: &Pending<'_>, tx: &mut crate::segment::RawSender) -> Result<()> {
    use crate::segment::{self, Segment, TH_ACK, TH_FIN, TH_PSH, TH_SYN};
    let seg = |seq, ack, flags, window, options, payload| Segment {
        src: p.peer,
        dst: p.local,
        seq,
        ack,
        flags,
        window,
        options,
        payload,
    };
    let mut send = |s: Segment| -> Result<()> {
        let pkt =
            segment::tcp(&s).ok_or_else(|| crate::os_errno("replay", 0, libc::EAFNOSUPPORT))?;
        tx.send(&pkt, s.dst.ip())
    };
    plant_timewait(p, &mut send)?;
    let mss = p.mss.clamp(536, 65535) as u16;
    send(seg(
        p.client_isn,
        0,
        TH_SYN,
        p.client_window.min(65535) as u16,
        segment::syn_options(mss, p.sack, p.client_wscale),
        Vec::new(),
    ))?;
    let window = (p.client_window >> p.client_wscale.unwrap_or(0)).min(65535) as u16;
    let ack = p.server_isn.wrapping_add(1);
    let mut seq = p.client_isn.wrapping_add(1);
    let mut rest = p.data;
    loop {
        let n = rest.len().min(usize::from(mss));
        let flags = if n > 0 { TH_ACK | TH_PSH } else { TH_ACK };
        send(seg(seq, ack, flags, window, Vec::new(), rest[..n].to_vec()))?;
        seq = seq.wrapping_add(n as u32);
        rest = &rest[n..];
        if rest.is_empty() {
            break;
        }
    }
    if p.fin {
        send(seg(
            seq,
            ack,
            TH_FIN | TH_ACK,
            window,
            Vec::new(),
            Vec::new(),
        ))?;
    }
    Ok(())
}

/// The TIME-WAIT socket whose snd_nxt makes the listener choose
/// `p.server_isn` for the next SYN of the 4-tuple.
fn plant_timewait(
    p: &Pending<'_>,
    send: &mut impl FnMut(crate::segment::Segment) -> Result<()>,
) -> Result<()> {
    use super::socket::{self, sockaddr_inet};
    use crate::segment::{Segment, TH_ACK, TH_FIN};
    use std::os::fd::AsRawFd;
    let t = socket::socket(p.family, libc::SOCK_STREAM, 0)?;
    let fd = t.as_raw_fd();
    set_repair(fd, Repair::On)?;
    socket::bind_raw(fd, &sockaddr_inet(&p.local))?;
    // Its receive side well before the client's ISN; its FIN one before
    // server_isn - 65537.
    let r = p.client_isn.wrapping_sub(1000);
    let w = p.server_isn.wrapping_sub(65535 + 2 + 1);
    set_queue(fd, Queue::Recv)?;
    set_queue_seq(fd, r)?;
    set_queue(fd, Queue::Send)?;
    set_queue_seq(fd, w)?;
    set_queue(fd, Queue::None)?;
    socket::connect_raw(fd, &sockaddr_inet(&p.peer))?;
    // Our FIN, counted as sent.
    set_queue(fd, Queue::Send)?;
    socket::shutdown(fd, libc::SHUT_WR)?;
    set_queue(fd, Queue::None)?;
    // The client's FIN acknowledging ours: FIN-WAIT-1 -> TIME-WAIT.
    send(Segment {
        src: p.peer,
        dst: p.local,
        seq: r,
        ack: w.wrapping_add(1),
        flags: TH_FIN | TH_ACK,
        window: 1024,
        options: Vec::new(),
        payload: Vec::new(),
    })?;
    // Delivery through the loopback is asynchronous: wait for the state.
    let t0 = std::time::Instant::now();
    loop {
        let st = tcp_info(fd)?.state;
        if st == TCP_CLOSE {
            return Ok(());
        }
        if t0.elapsed() > std::time::Duration::from_secs(2) {
            return Err(crate::Error::Unexpected {
                tid: 0,
                what: format!(
                    "building a TIME-WAIT for {} -> {}: the socket stayed in state {st}",
                    p.local, p.peer
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Our FIN is in the send queue (sent or not) in `state`.
pub fn fin_sent(state: u8) -> bool {
    matches!(
        state,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSING | TCP_LAST_ACK
    )
}

/// The peer's FIN was received (it ends the receive queue) in `state`.
pub fn fin_received(state: u8) -> bool {
    matches!(state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING)
}

/// The states a connection is saved and restored in.
pub fn is_connection(state: u8) -> bool {
    matches!(
        state,
        TCP_ESTABLISHED
            | TCP_SYN_SENT
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    )
}

/// A connection's state, as repair mode reads it. Sequence numbers
/// without SYN and FINs (the state says which FINs there are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub state: u8,
    /// One past the last byte written (SYN-SENT: the ISN).
    pub send_seq: u32,
    /// One past the last byte received.
    pub recv_seq: u32,
    /// Written, not acknowledged: the sent part, then `unsent` bytes.
    pub send_queue: Vec<u8>,
    pub unsent: u32,
    /// Received, not read.
    pub recv_queue: Vec<u8>,
    pub negotiated: Negotiated,
    /// The timestamp clock, when timestamps were negotiated.
    pub ts_clock: Option<u32>,
    pub window: Option<Window>,
}

/// Save a connection: turns repair mode on and leaves it on (closing the
/// socket then makes it vanish without a FIN or RST; [`finish`] takes
/// repair mode off again). Its packets must be locked meanwhile.
pub fn save(fd: impl AsRawFd + Copy) -> Result<Saved> {
    let info = tcp_info(fd)?;
    let state = info.state;
    set_repair(fd, Repair::On)?;
    let (mut outq, mut unsent, inq) = queue_lengths(fd)?;
    if fin_sent(state) {
        // Our FIN takes a sequence number in the send queue, no data.
        outq = outq.saturating_sub(1);
        unsent = unsent.saturating_sub(1);
    }
    let negotiated = negotiated(fd, &info)?;
    let ts_clock = if negotiated.timestamps {
        Some(timestamp(fd)?)
    } else {
        None
    };
    let window = if state == TCP_SYN_SENT {
        None
    } else {
        Some(self::window(fd)?)
    };
    set_queue(fd, Queue::Recv)?;
    let mut recv_seq = queue_seq(fd)?;
    let recv_queue = peek_queue(fd, inq as usize)?;
    set_queue(fd, Queue::Send)?;
    let mut send_seq = queue_seq(fd)?;
    let send_queue = peek_queue(fd, outq as usize)?;
    set_queue(fd, Queue::None)?;
    if fin_received(state) {
        recv_seq = recv_seq.wrapping_sub(1);
    }
    if fin_sent(state) {
        send_seq = send_seq.wrapping_sub(1);
    }
    if state == TCP_SYN_SENT {
        // write_seq already counts the SYN.
        send_seq = send_seq.wrapping_sub(1);
    }
    Ok(Saved {
        state,
        send_seq,
        recv_seq,
        send_queue,
        unsent: unsent.min(outq),
        recv_queue,
        negotiated,
        ts_clock,
        window,
    })
}

/// Leave repair mode (with a window probe: the peer answers at once) and
/// put SO_REUSEADDR back (leaving repair mode clears it).
pub fn finish(fd: impl AsRawFd + Copy, reuseaddr: bool) -> Result<()> {
    set_repair(fd, Repair::Off)?;
    super::socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr as i32)
}

/// Leave repair mode without sending anything (a saved connection whose
/// process is still stopped: were the dumper to die, the process would go
/// on with a working socket), SO_REUSEADDR put back.
pub fn pause(fd: impl AsRawFd + Copy, reuseaddr: bool) -> Result<()> {
    set_repair(fd, Repair::OffNoProbe)?;
    super::socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr as i32)
}

/// The window as saved, made acceptable while the peer's FIN is not back
/// in the receive queue (rcv_wup may not be past rcv_nxt).
fn window_for_restore(s: &Saved) -> Option<Window> {
    let mut w = s.window?;
    let ahead = w.rcv_wup.wrapping_sub(s.recv_seq) as i32;
    if ahead > 0 {
        w.rcv_wup = s.recv_seq;
        w.rcv_wnd = w.rcv_wnd.wrapping_add(ahead as u32);
    }
    // What the kernel accepts (tcp_repair_set_window): a window update
    // not beyond what the receive window allows, a largest window at
    // least the current one. Values read a moment apart at the dump can
    // disagree by a segment: the update is taken as at the receive point.
    let limit = s.recv_seq.wrapping_add(w.rcv_wnd);
    if w.snd_wl1.wrapping_sub(limit) as i32 > 0 {
        w.snd_wl1 = s.recv_seq;
    }
    w.max_window = w.max_window.max(w.snd_wnd);
    Some(w)
}

/// A segment "from the peer" that the restored socket accepts.
fn from_peer(
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    s: &Saved,
    flags: u8,
    ack: u32,
) -> crate::segment::Segment {
    let wnd = s.window.map_or(65535, |w| w.snd_wnd);
    let shift = s.negotiated.wscale.map_or(0, |(snd, _)| snd);
    crate::segment::Segment {
        src: peer,
        dst: local,
        seq: s.recv_seq,
        ack,
        flags,
        window: (wnd >> shift).min(65535) as u16,
        options: Vec::new(),
        payload: Vec::new(),
    }
}

/// Queue our FIN (shutdown in repair mode); with the send queue selected
/// it counts as sent.
fn queue_fin(fd: impl AsRawFd + Copy, as_sent: bool) -> Result<()> {
    if as_sent {
        set_queue(fd, Queue::Send)?;
    }
    super::socket::shutdown(fd, libc::SHUT_WR)?;
    set_queue(fd, Queue::None)
}

/// Put the FINs back where they were, for the half-closed states.
fn restore_fins(
    fd: impl AsRawFd + Copy,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    s: &Saved,
    tx: &mut crate::segment::RawSender,
) -> Result<()> {
    use crate::segment::{TH_ACK, TH_FIN};
    let mut inject = |flags, ack| -> Result<()> {
        let seg = from_peer(local, peer, s, flags, ack);
        let pkt = crate::segment::tcp(&seg)
            .ok_or_else(|| crate::os_errno("inject", 0, libc::EAFNOSUPPORT))?;
        tx.send(&pkt, local.ip())
    };
    let snd_una = s.send_seq.wrapping_sub(s.send_queue.len() as u32);
    match s.state {
        TCP_FIN_WAIT1 => queue_fin(fd, false)?,
        TCP_FIN_WAIT2 => {
            // Our FIN counted as sent, then the peer's ACK of it.
            queue_fin(fd, true)?;
            inject(TH_ACK, s.send_seq.wrapping_add(1))?;
        }
        TCP_CLOSE_WAIT => inject(TH_FIN | TH_ACK, snd_una)?,
        TCP_LAST_ACK => {
            inject(TH_FIN | TH_ACK, snd_una)?;
            wait_state(fd, TCP_CLOSE_WAIT)?;
            queue_fin(fd, false)?;
        }
        TCP_CLOSING => {
            queue_fin(fd, false)?;
            // The peer's FIN, not acknowledging ours.
            inject(TH_FIN | TH_ACK, snd_una)?;
        }
        _ => return Ok(()),
    }
    wait_state(fd, s.state)
}

/// Wait (a moment: loopback delivery is asynchronous) for `state`.
fn wait_state(fd: impl AsRawFd + Copy, state: u8) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let st = tcp_info(fd)?.state;
        if st == state {
            return Ok(());
        }
        if t0.elapsed() > std::time::Duration::from_secs(2) {
            return Err(crate::Error::Unexpected {
                tid: 0,
                what: format!("restored TCP connection in state {st}, not {state}"),
            });
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// Rebuild connection `s` between `local` and `peer` on the new TCP
/// socket `fd` (its options before bind already set). Leaves it in
/// repair mode: call [`finish`] once its packets are no longer locked.
/// Segments it needs from the peer (a FIN, the ACK of ours) are injected
/// through `tx`.
pub fn restore(
    fd: impl AsRawFd + Copy,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    s: &Saved,
    tx: &mut crate::segment::RawSender,
) -> Result<()> {
    use super::socket::{self, sockaddr_inet};
    set_repair(fd, Repair::On)?;
    socket::bind_raw(fd, &sockaddr_inet(&local))?;
    if s.state == TCP_SYN_SENT {
        return restore_syn_sent(fd, peer, s);
    }
    set_queue(fd, Queue::Recv)?;
    set_queue_seq(fd, s.recv_seq.wrapping_sub(s.recv_queue.len() as u32))?;
    set_queue(fd, Queue::Send)?;
    set_queue_seq(fd, s.send_seq.wrapping_sub(s.send_queue.len() as u32))?;
    set_queue(fd, Queue::None)?;
    // The connect computes the MSS in use from the clamp it has then, and
    // the kernel does not compute it again when the negotiated clamp is
    // set after (TCP_REPAIR_OPTIONS): from the default clamp (536) every
    // segment would carry 524 bytes. The user's clamp (TCP_MAXSEG, at most
    // 32767) stands in for it during the connect, and is cleared after
    // (none below the smallest MSS: an image without a clamp).
    let stand_in = s.negotiated.mss_clamp >= TCP_MIN_MSS;
    if stand_in {
        let user_mss = s.negotiated.mss_clamp.min(MAX_USER_MSS) as i32;
        socket::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, user_mss)?;
    }
    // In repair mode: no SYN, ESTABLISHED at once. The saved socket's
    // 4-tuple may still be in the kernel's tables for a moment after its
    // silent close (EADDRNOTAVAIL): tried again for up to a second.
    let t0 = std::time::Instant::now();
    loop {
        match socket::connect_raw(fd, &sockaddr_inet(&peer)) {
            Err(e)
                if e.errno() == Some(libc::EADDRNOTAVAIL)
                    && t0.elapsed() < std::time::Duration::from_secs(1) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => {
                r?;
                break;
            }
        }
    }
    if stand_in {
        socket::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 0)?;
    }
    set_negotiated(fd, &s.negotiated)?;
    if let Some(ts) = s.ts_clock {
        set_timestamp(fd, ts)?;
    }
    // Room for the queues (the sizes the user fixed are set afterwards).
    let room = |n: usize| (2 * n + 65536).min(i32::MAX as usize) as i32;
    socket::setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        room(s.recv_queue.len()),
    )?;
    socket::setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        room(s.send_queue.len()),
    )?;
    let sent = s.send_queue.len() - (s.unsent as usize).min(s.send_queue.len());
    if !s.recv_queue.is_empty() {
        set_queue(fd, Queue::Recv)?;
        fill_queue(fd, &s.recv_queue)?;
    }
    if sent > 0 {
        // Marked sent, not transmitted: the retransmission timer resends it.
        set_queue(fd, Queue::Send)?;
        fill_queue(fd, &s.send_queue[..sent])?;
    }
    set_queue(fd, Queue::None)?;
    if let Some(w) = window_for_restore(s) {
        // A window the kernel still refuses is left to the kernel (it
        // computes its own as data flows): the connection is whole.
        match set_window(fd, &w) {
            Err(e) if e.errno() == Some(libc::EINVAL) => {}
            r => r?,
        }
    }
    if sent < s.send_queue.len() {
        // Never sent: ordinary data, written with repair mode off.
        set_repair(fd, Repair::OffNoProbe)?;
        let r = fill_queue(fd, &s.send_queue[sent..]);
        set_repair(fd, Repair::On)?;
        r?;
    }
    restore_fins(fd, local, peer, s, tx)?;
    // Sizes back to autotuning (the saved options fix them if the user did).
    let _ = socket::setsockopt_int(fd, libc::SOL_SOCKET, super::socket::SO_BUF_LOCK, 0);
    Ok(())
}

/// SYN-SENT: the same ISN; the kernel sends the SYN itself (dropped while
/// locked, retransmitted after).
fn restore_syn_sent(fd: impl AsRawFd + Copy, peer: std::net::SocketAddr, s: &Saved) -> Result<()> {
    use super::socket::{self, sockaddr_inet};
    set_queue(fd, Queue::Send)?;
    set_queue_seq(fd, s.send_seq)?;
    set_queue(fd, Queue::None)?;
    let fl = super::get_fl(fd)?;
    super::set_fl(fd, fl | libc::O_NONBLOCK)?;
    set_repair(fd, Repair::OffNoProbe)?;
    let r = socket::connect_raw(fd, &sockaddr_inet(&peer));
    set_repair(fd, Repair::On)?;
    super::set_fl(fd, fl)?;
    r.map(drop)
}

/// A TCP socket that was connected and is closed now (TCP_CLOSE, both
/// directions shut): reading gives end of file, writing EPIPE, poll
/// POLLHUP. Made in repair mode (connect without a SYN, then a disconnect
/// that sends nothing) from the socket's own address to the peer's; the
/// disconnect's ECONNABORTED is taken (SO_ERROR), then both directions
/// are shut (shutdown on a closed socket marks them, and says ENOTCONN).
pub fn make_aborted(fd: impl AsRawFd + Copy, peer: std::net::SocketAddr) -> Result<()> {
    use super::socket::{self, sockaddr_inet};
    set_repair(fd, Repair::On)?;
    socket::connect_raw(fd, &sockaddr_inet(&peer))?;
    // connect(AF_UNSPEC): disconnect.
    socket::connect_raw(fd, &(libc::AF_UNSPEC as u16).to_ne_bytes())?;
    set_repair(fd, Repair::Off)?;
    socket::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    match socket::shutdown(fd, libc::SHUT_RDWR) {
        Err(e) if e.errno() != Some(libc::ENOTCONN) => Err(e),
        _ => Ok(()),
    }
}

/// Make `fd` (a fresh TCP socket of `family`) a connection that was reset
/// after its peer sent `unread`: state closed, `unread` readable, then
/// ECONNRESET; writes fail (EPIPE). Made over loopback: connected to a
/// listener of ours, given the bytes by the accepted end, which then
/// closes with a zero linger (a reset).
pub fn make_reset(fd: impl AsRawFd + Copy, family: i32, unread: &[u8]) -> Result<()> {
    use super::socket::{self, sockaddr_inet};
    use std::time::{Duration, Instant};
    let any = if family == libc::AF_INET6 {
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
    };
    let l = socket::socket(family, libc::SOCK_STREAM, 0)?;
    socket::bind_raw(l.as_raw_fd(), &sockaddr_inet(&any))?;
    socket::listen(l.as_raw_fd(), 1)?;
    let at = socket::inet_addr(&socket::sock_name(l.as_raw_fd())?).ok_or_else(|| {
        crate::Error::Unexpected {
            tid: 0,
            what: "the loopback listener has no address".into(),
        }
    })?;
    // Room for every byte (the saved options set the buffer size again
    // afterwards).
    let room = i32::try_from(unread.len().saturating_mul(2)).unwrap_or(i32::MAX);
    socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, room.max(4096))?;
    socket::connect_raw(fd, &sockaddr_inet(&at))?;
    let limit = Instant::now() + Duration::from_secs(5);
    let timeout = |what: &str| crate::Error::Unexpected {
        tid: 0,
        what: format!("making a reset TCP connection: {what} took more than 5 s"),
    };
    let peer = loop {
        if let Some(p) = socket::accept(l.as_raw_fd())? {
            break p;
        }
        if Instant::now() > limit {
            return Err(timeout("the loopback accept"));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut sent = 0;
    while sent < unread.len() {
        match socket::send(peer.as_raw_fd(), &unread[sent..], libc::MSG_DONTWAIT) {
            Ok(n) => sent += n,
            Err(e) if e.errno() == Some(libc::EAGAIN) => {
                if Instant::now() > limit {
                    return Err(timeout("sending the unread bytes"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    while socket::ioctl_int(fd, socket::SIOCINQ)? < unread.len() as i32 {
        if Instant::now() > limit {
            return Err(timeout("receiving the unread bytes"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // struct linger { l_onoff = 1, l_linger = 0 }: close sends a reset.
    let linger: Vec<u8> = [1i32, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
    socket::setsockopt_bytes(peer.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
    drop(peer);
    loop {
        let mut info = [0u8; 8];
        socket::getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)?;
        if info[0] == TCP_CLOSE {
            return Ok(());
        }
        if Instant::now() > limit {
            return Err(timeout("the reset"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::socket::{self, inet_addr, peer_name, sock_name};
    use crate::netlock;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// A connected pair over `addr` (the loopback of a family), both ends
    /// with data queued: `a` has unread bytes from `b`, and unsent bytes.
    fn pair(addr: &str) -> (TcpStream, TcpStream) {
        let l = TcpListener::bind(addr).unwrap();
        let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        (a, b)
    }

    /// Save `a` under a lock, close it silently, restore it, unlock,
    /// finish: the conversation goes on, nothing lost or repeated.
    fn round_trip(addr: &str) {
        let (a, mut b) = pair(addr);
        let into_a = pattern(300_000, 1);
        let from_a = pattern(100_000, 2);
        // b writes a lot into a (a does not read); a writes to b.
        b.set_nonblocking(true).unwrap();
        let mut sent_b = 0;
        while sent_b < into_a.len() {
            match b.write(&into_a[sent_b..]) {
                Ok(n) => sent_b += n,
                Err(_) => break,
            }
        }
        b.set_nonblocking(false).unwrap();
        (&a).write_all(&from_a).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let local = inet_addr(&sock_name(a.as_raw_fd()).unwrap()).unwrap();
        let peer = inet_addr(&peer_name(a.as_raw_fd()).unwrap().unwrap()).unwrap();
        let tag = netlock::new_tag();
        netlock::lock(&tag, &[netlock::Conn::new(local, peer)], &[]).unwrap();
        let fd = a.as_raw_fd();
        let s = save(fd).unwrap();
        assert_eq!(s.state, TCP_ESTABLISHED);
        assert!(s.recv_queue.len() > 1000, "{}", s.recv_queue.len());
        assert_eq!(&into_a[..s.recv_queue.len()], &s.recv_queue[..]);
        drop(a); // in repair mode: gone without a FIN or RST
        let family = if local.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let n = socket::socket(family, libc::SOCK_STREAM, 0).unwrap();
        let mut tx = crate::segment::RawSender::new(netlock::LOCK_MARK);
        restore(n.as_raw_fd(), local, peer, &s, &mut tx).unwrap();
        netlock::unlock(&tag).unwrap();
        finish(n.as_raw_fd(), false).unwrap();
        let mut a = TcpStream::from(n);
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // a reads everything b wrote, in order; b reads all a wrote.
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; from_a.len()];
            b.read_exact(&mut got).unwrap();
            assert!(got == from_a, "b read something else");
            b.write_all(&pattern(1000, 9)[sent_b % 1000..]).unwrap();
            b
        });
        let mut got = vec![0u8; sent_b];
        a.read_exact(&mut got).unwrap();
        assert!(got == into_a[..sent_b], "a read something else");
        drop(reader.join().unwrap());
    }

    /// Save `a` (in `want` state, its packets locked under `tag`), close
    /// it silently, restore it, unlock, finish: the new socket.
    fn save_restore(a: TcpStream, tag: &str, want: u8) -> TcpStream {
        let fd = a.as_raw_fd();
        let local = inet_addr(&sock_name(fd).unwrap()).unwrap();
        let peer = inet_addr(&peer_name(fd).unwrap().unwrap()).unwrap();
        let s = save(fd).unwrap();
        assert_eq!(s.state, want);
        drop(a);
        let n = socket::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        let mut tx = crate::segment::RawSender::new(netlock::LOCK_MARK);
        restore(n.as_raw_fd(), local, peer, &s, &mut tx).unwrap();
        assert_eq!(tcp_info(n.as_raw_fd()).unwrap().state, want);
        netlock::unlock(tag).unwrap();
        finish(n.as_raw_fd(), false).unwrap();
        TcpStream::from(n)
    }

    fn lock_pair(a: &TcpStream) -> String {
        let fd = a.as_raw_fd();
        let local = inet_addr(&sock_name(fd).unwrap()).unwrap();
        let peer = inet_addr(&peer_name(fd).unwrap().unwrap()).unwrap();
        let tag = netlock::new_tag();
        netlock::lock(&tag, &[netlock::Conn::new(local, peer)], &[]).unwrap();
        tag
    }

    #[test]
    fn fin_wait_1_last_ack_and_closing_continue() {
        ckpt_testkit::require!(
            ckpt_testkit::require::root(),
            ckpt_testkit::require::tool("nft", "apt-get install nftables")
        );
        // FIN-WAIT-1: data and our FIN written while locked (not sent).
        let (mut a, mut b) = pair("127.0.0.1:0");
        let tag = lock_pair(&a);
        a.write_all(b"last words").unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        let mut a = save_restore(a, &tag, TCP_FIN_WAIT1);
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
        b.write_all(b"reply").unwrap();
        drop(b);
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut back = Vec::new();
        a.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"reply");

        // LAST-ACK: the peer closed first, then we write and close, locked.
        let (a, mut b) = pair("127.0.0.1:0");
        b.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let tag = lock_pair(&a);
        (&a).write_all(b"after your FIN").unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        let a = save_restore(a, &tag, TCP_LAST_ACK);
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"after your FIN");
        drop(a);

        // CLOSING: both FINs crossed (written while locked); the peer's
        // reaches us (its direction let through a moment), ours not.
        let (a, mut b) = pair("127.0.0.1:0");
        let tag = lock_pair(&a);
        a.shutdown(std::net::Shutdown::Write).unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let fd = a.as_raw_fd();
        let local = inet_addr(&sock_name(fd).unwrap()).unwrap();
        let peer = inet_addr(&peer_name(fd).unwrap().unwrap()).unwrap();
        let elem = format!(
            "inet ckpt_lock_{tag} c4 {{ {} . {} . {} . {} }}",
            peer.ip(),
            peer.port(),
            local.ip(),
            local.port()
        );
        let nft = |verb: &str| {
            let st = std::process::Command::new("nft")
                .args([verb, "element"])
                .args(elem.split(' '))
                .status()
                .unwrap();
            assert!(st.success(), "nft {verb} element {elem}");
        };
        nft("delete");
        // The peer's FIN is retransmitted (its first one was dropped).
        let t0 = std::time::Instant::now();
        while tcp_info(fd).unwrap().state != TCP_CLOSING {
            assert!(t0.elapsed() < Duration::from_secs(5), "not CLOSING");
            std::thread::sleep(Duration::from_millis(10));
        }
        nft("add");
        let a = save_restore(a, &tag, TCP_CLOSING);
        // Our FIN goes out again: the peer sees the end of our data.
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
        drop(a);
    }

    #[test]
    fn established_connections_continue_ipv4_and_ipv6() {
        ckpt_testkit::require!(
            ckpt_testkit::require::root(),
            ckpt_testkit::require::tool("nft", "apt-get install nftables")
        );
        round_trip("127.0.0.1:0");
        round_trip("[::1]:0");
    }
}
