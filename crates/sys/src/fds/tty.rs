//! Terminals: settings (termios2), window size, sessions and foreground
//! groups, pty pairs (index, packet mode, lock, the peer), pushing bytes
//! into a terminal's input (TIOCSTI), and waiting for a terminal's data.
//!
//! By hand: nix has no wrappers for these ioctls. Every call takes a raw
//! fd number or a borrowed fd and allocates nothing (restore's stub makes
//! them after its fork), except where it returns an [`OwnedFd`].
//!
//! Rules worth knowing (checked on the running kernel, see the tests):
//! - On a pty master, [`tcgets2`]/[`tcsets2`] and the window size calls
//!   read and set the *slave's* settings (the master's own are fixed raw).
//! - [`session`] and [`foreground`] answer on a master for any holder; on a
//!   slave only for the caller's controlling terminal (else ENOTTY).
//! - [`push_input`] (TIOCSTI) needs CAP_SYS_ADMIN, unless the terminal is
//!   the caller's controlling one and `dev.tty.legacy_tiocsti` is 1; the
//!   line discipline keeps at most 4095 bytes and drops the rest silently.

use super::borrow;
use crate::{last_os, Pid, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Size of `struct termios2` on x86_64.
pub const TERMIOS2_SIZE: usize = 44;
/// Control characters in a termios2.
pub const NCCS: usize = 19;
/// The most bytes the n_tty line discipline holds (TIOCSTI beyond is lost).
pub const LDISC_ROOM: usize = 4095;

/// Whether `fd` of this process is a terminal (false for an fd that is not
/// open, too).
pub fn isatty(fd: impl AsRawFd) -> bool {
    borrow("isatty", fd).is_ok_and(|fd| nix::unistd::isatty(&*fd).unwrap_or(false))
}

/// A terminal's settings: `struct termios2`, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; NCCS],
    pub ispeed: u32,
    pub ospeed: u32,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Termios {
    /// From the raw bytes of a `struct termios2` (as an image stores it);
    /// None unless exactly [`TERMIOS2_SIZE`] bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Termios> {
        if b.len() != TERMIOS2_SIZE {
            return None;
        }
        let mut cc = [0u8; NCCS];
        cc.copy_from_slice(&b[17..17 + NCCS]);
        Some(Termios {
            iflag: u32_at(b, 0),
            oflag: u32_at(b, 4),
            cflag: u32_at(b, 8),
            lflag: u32_at(b, 12),
            line: b[16],
            cc,
            ispeed: u32_at(b, 36),
            ospeed: u32_at(b, 40),
        })
    }

    /// The raw bytes of the `struct termios2`.
    pub fn to_bytes(&self) -> [u8; TERMIOS2_SIZE] {
        let mut b = [0u8; TERMIOS2_SIZE];
        b[0..4].copy_from_slice(&self.iflag.to_ne_bytes());
        b[4..8].copy_from_slice(&self.oflag.to_ne_bytes());
        b[8..12].copy_from_slice(&self.cflag.to_ne_bytes());
        b[12..16].copy_from_slice(&self.lflag.to_ne_bytes());
        b[16] = self.line;
        b[17..17 + NCCS].copy_from_slice(&self.cc);
        b[36..40].copy_from_slice(&self.ispeed.to_ne_bytes());
        b[40..44].copy_from_slice(&self.ospeed.to_ne_bytes());
        b
    }

    fn to_raw(self) -> libc::termios2 {
        libc::termios2 {
            c_iflag: self.iflag,
            c_oflag: self.oflag,
            c_cflag: self.cflag,
            c_lflag: self.lflag,
            c_line: self.line,
            c_cc: self.cc,
            c_ispeed: self.ispeed,
            c_ospeed: self.ospeed,
        }
    }

    fn from_raw(t: &libc::termios2) -> Termios {
        Termios {
            iflag: t.c_iflag,
            oflag: t.c_oflag,
            cflag: t.c_cflag,
            lflag: t.c_lflag,
            line: t.c_line,
            cc: t.c_cc,
            ispeed: t.c_ispeed,
            ospeed: t.c_ospeed,
        }
    }
}

/// A window size (TIOCGWINSZ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Winsize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

/// ioctl(fd, req, &mut int): the int.
fn get_int(op: &'static str, fd: impl AsRawFd, req: libc::Ioctl) -> Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one int at the pointer, a live local; the
    // fd is a number only.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut libc::c_int) };
    if r < 0 {
        return Err(last_os(op, 0));
    }
    Ok(v)
}

/// ioctl(fd, req, &int).
fn set_int(op: &'static str, fd: impl AsRawFd, req: libc::Ioctl, v: i32) -> Result<()> {
    // SAFETY: the request reads one int at the pointer, a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &v as *const libc::c_int) };
    if r < 0 {
        return Err(last_os(op, 0));
    }
    Ok(())
}

/// ioctl(fd, req, value): the argument passed by value.
fn by_value(op: &'static str, fd: impl AsRawFd, req: libc::Ioctl, v: libc::c_ulong) -> Result<i32> {
    // SAFETY: the request takes its argument by value; no memory is passed.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, v) };
    if r < 0 {
        return Err(last_os(op, 0));
    }
    Ok(r)
}

/// TCGETS2: the settings (of the slave, on a pty master).
pub fn tcgets2(fd: impl AsRawFd) -> Result<Termios> {
    let mut t = Termios::default().to_raw();
    // SAFETY: TCGETS2 writes one termios2 at the pointer, a live local of
    // that type.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t as *mut libc::termios2) };
    if r < 0 {
        return Err(last_os("ioctl(TCGETS2)", 0));
    }
    Ok(Termios::from_raw(&t))
}

/// TCSETS2: set the settings at once (not TCSETSW2/TCSETSF2, which wait
/// for output to drain, the latter discarding pending input).
pub fn tcsets2(fd: impl AsRawFd, t: &Termios) -> Result<()> {
    let raw = t.to_raw();
    // SAFETY: TCSETS2 reads one termios2 at the pointer, a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, &raw as *const libc::termios2) };
    if r < 0 {
        return Err(last_os("ioctl(TCSETS2)", 0));
    }
    Ok(())
}

/// TIOCGWINSZ.
pub fn winsize(fd: impl AsRawFd) -> Result<Winsize> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize at the pointer, a live local.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut w as *mut libc::winsize,
        )
    };
    if r < 0 {
        return Err(last_os("ioctl(TIOCGWINSZ)", 0));
    }
    Ok(Winsize {
        rows: w.ws_row,
        cols: w.ws_col,
        xpixel: w.ws_xpixel,
        ypixel: w.ws_ypixel,
    })
}

/// TIOCSWINSZ (the kernel sends SIGWINCH to the foreground group when the
/// size changes).
pub fn set_winsize(fd: impl AsRawFd, w: &Winsize) -> Result<()> {
    let raw = libc::winsize {
        ws_row: w.rows,
        ws_col: w.cols,
        ws_xpixel: w.xpixel,
        ws_ypixel: w.ypixel,
    };
    // SAFETY: TIOCSWINSZ reads one winsize at the pointer, a live local.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &raw as *const libc::winsize,
        )
    };
    if r < 0 {
        return Err(last_os("ioctl(TIOCSWINSZ)", 0));
    }
    Ok(())
}

/// TIOCGPTN: the index of a pty master (/dev/pts/N). ENOTTY on a slave.
pub fn pty_index(master: impl AsRawFd) -> Result<u32> {
    get_int("ioctl(TIOCGPTN)", master, libc::TIOCGPTN).map(|n| n as u32)
}

/// TIOCGPKT: whether a master is in packet mode.
pub fn packet_mode(master: impl AsRawFd) -> Result<bool> {
    get_int("ioctl(TIOCGPKT)", master, libc::TIOCGPKT).map(|n| n != 0)
}

/// TIOCPKT: packet mode on or off (turning it on clears pending status).
pub fn set_packet_mode(master: impl AsRawFd, on: bool) -> Result<()> {
    set_int("ioctl(TIOCPKT)", master, libc::TIOCPKT, on as i32)
}

/// TIOCGPTLCK: whether a pty is locked (its slave cannot be opened).
pub fn pty_locked(master: impl AsRawFd) -> Result<bool> {
    get_int("ioctl(TIOCGPTLCK)", master, libc::TIOCGPTLCK).map(|n| n != 0)
}

/// TIOCSPTLCK: lock or unlock a pty.
pub fn set_pty_locked(master: impl AsRawFd, on: bool) -> Result<()> {
    set_int("ioctl(TIOCSPTLCK)", master, libc::TIOCSPTLCK, on as i32)
}

/// TIOCGEXCL: exclusive mode (of the terminal of `fd`; on a pair it lives
/// on the slave).
pub fn exclusive(fd: impl AsRawFd) -> Result<bool> {
    get_int("ioctl(TIOCGEXCL)", fd, libc::TIOCGEXCL).map(|n| n != 0)
}

/// TIOCEXCL / TIOCNXCL.
pub fn set_exclusive(fd: impl AsRawFd, on: bool) -> Result<()> {
    let req = if on { libc::TIOCEXCL } else { libc::TIOCNXCL };
    by_value("ioctl(TIOCEXCL)", fd, req, 0).map(drop)
}

/// TIOCGSID: the session whose controlling terminal this is (ENOTTY: none,
/// or a slave that is not the caller's controlling terminal).
pub fn session(fd: impl AsRawFd) -> Result<Pid> {
    get_int("ioctl(TIOCGSID)", fd, libc::TIOCGSID)
}

/// TIOCGPGRP (tcgetpgrp): the foreground process group.
pub fn foreground(fd: impl AsRawFd) -> Result<Pid> {
    get_int("ioctl(TIOCGPGRP)", fd, libc::TIOCGPGRP)
}

/// TIOCSPGRP (tcsetpgrp): make `pgrp` the foreground group. The terminal
/// must be the caller's controlling one, the group in its session; from a
/// background group only with SIGTTOU blocked or ignored.
pub fn set_foreground(fd: impl AsRawFd, pgrp: Pid) -> Result<()> {
    set_int("ioctl(TIOCSPGRP)", fd, libc::TIOCSPGRP, pgrp)
}

/// TIOCSCTTY: make the terminal the controlling terminal of the caller's
/// session (the caller leads a session that has none). `steal`: take it
/// from another session (CAP_SYS_ADMIN).
pub fn make_controlling(fd: impl AsRawFd, steal: bool) -> Result<()> {
    by_value(
        "ioctl(TIOCSCTTY)",
        fd,
        libc::TIOCSCTTY,
        steal as libc::c_ulong,
    )
    .map(drop)
}

/// TIOCGDEV: the device number (as `st_rdev`) of the terminal behind `fd`
/// (the real one behind /dev/tty and /dev/console; on a master, its slave).
pub fn real_device(fd: impl AsRawFd) -> Result<u64> {
    let n = get_int("ioctl(TIOCGDEV)", fd, libc::TIOCGDEV)? as u32;
    // The kernel's new_encode_dev.
    let major = (n >> 8) & 0xfff;
    let minor = (n & 0xff) | ((n >> 12) & 0xfff00);
    Ok(libc::makedev(major, minor))
}

/// TIOCGETD: the line discipline (0 is N_TTY).
pub fn line_discipline(fd: impl AsRawFd) -> Result<i32> {
    get_int("ioctl(TIOCGETD)", fd, libc::TIOCGETD)
}

/// TIOCGLCKTRMIOS: whether any locked-termios bit is set (they are all
/// clear on ptys unless someone set them; ckpt does not restore them).
pub fn has_locked_termios(fd: impl AsRawFd) -> Result<bool> {
    // SAFETY: all-zero is a valid `termios` (plain integers).
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGLCKTRMIOS writes one `struct termios` at the pointer, a
    // live local of that type.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGLCKTRMIOS,
            &mut t as *mut libc::termios,
        )
    };
    if r < 0 {
        return Err(last_os("ioctl(TIOCGLCKTRMIOS)", 0));
    }
    Ok(t.c_iflag | t.c_oflag | t.c_cflag | t.c_lflag != 0
        || t.c_cc.iter().any(|&c| c != 0)
        || t.c_line != 0)
}

/// TIOCSTI of each byte of `data`: as if typed on the terminal (processed
/// at once by its line discipline). Needs CAP_SYS_ADMIN (see the module
/// documentation).
pub fn push_input(fd: impl AsRawFd, data: &[u8]) -> Result<()> {
    let fd = fd.as_raw_fd();
    for b in data {
        // SAFETY: TIOCSTI reads one byte at the pointer, which points into
        // the live slice.
        let r = unsafe { libc::ioctl(fd, libc::TIOCSTI, b as *const u8) };
        if r < 0 {
            return Err(last_os("ioctl(TIOCSTI)", 0));
        }
    }
    Ok(())
}

/// TIOCGPTPEER: open the slave of a pty master (no path lookup, whatever
/// the mount namespace), with open(2) flags (give O_NOCTTY: a session
/// leader without a terminal would otherwise take this one).
pub fn open_peer(master: impl AsRawFd, flags: i32) -> Result<OwnedFd> {
    let fd = by_value(
        "ioctl(TIOCGPTPEER)",
        master,
        libc::TIOCGPTPEER,
        flags as libc::c_ulong,
    )?;
    // SAFETY: a new fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// poll(2) of one fd for `events`, waiting up to `timeout_ms` (-1: no
/// limit), retrying on EINTR: the returned events (0 on timeout).
pub fn poll_one(fd: impl AsRawFd, events: i16, timeout_ms: i32) -> Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: poll reads and writes the one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r >= 0 {
            return Ok(if r == 0 { 0 } else { p.revents });
        }
        let e = last_os("poll", 0);
        if e.errno() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Write `data` to a (possibly non-blocking) fd, waiting for room up to
/// `stall_ms` at a time when it is full: the bytes written (fewer when no
/// room came).
pub fn write_waiting(fd: impl AsRawFd, data: &[u8], stall_ms: i32) -> Result<usize> {
    let fd = fd.as_raw_fd();
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: write reads the live slice, its length passed.
        let r = unsafe { libc::write(fd, rest.as_ptr() as *const libc::c_void, rest.len()) };
        if r >= 0 {
            done += r as usize;
            continue;
        }
        let e = last_os("write", 0);
        match e.errno() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                if poll_one(fd, libc::POLLOUT, stall_ms)? == 0 {
                    return Ok(done);
                }
            }
            _ => return Err(e),
        }
    }
    Ok(done)
}

/// read(2) that does not wait: None when nothing is there (EAGAIN), Some(0)
/// at end of file. Retries EINTR.
pub fn read_now(fd: impl AsRawFd, buf: &mut [u8]) -> Result<Option<usize>> {
    loop {
        // SAFETY: read writes at most buf.len() bytes into the live slice.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let e = last_os("read", 0);
        match e.errno() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// How to give a pty's slave side its pending input back: with the slave
/// in `termios` (None: as it is), push `sti` with TIOCSTI on a slave
/// description, then write `write` to the master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputPutBack {
    pub termios: Option<Termios>,
    pub sti: Vec<u8>,
    pub write: Vec<u8>,
}

/// Whether the slave's input processing leaves bytes untouched
/// (non-canonical, no echo, no signals, no input mapping or flow
/// control): then bytes written to the master arrive as they are, and any
/// amount can go back that way.
pub fn transparent(t: &Termios) -> bool {
    let l = libc::ICANON | libc::ECHO | libc::ISIG;
    let i = libc::ICRNL | libc::INLCR | libc::IGNCR | libc::IUCLC | libc::ISTRIP | libc::IXON;
    t.lflag & l == 0 && t.iflag & i == 0
}

/// The settings under which pushed input is stored as it is: no echo (it
/// was echoed when typed), no signals, no input mapping or flow control;
/// in canonical mode with IEXTEN and a VLNEXT to escape special bytes.
pub fn put_back_termios(t: &Termios) -> Termios {
    let mut w = *t;
    w.lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOPRT
        | libc::ECHOKE
        | libc::ISIG
        | libc::FLUSHO
        | libc::PENDIN);
    w.iflag &= !(libc::ICRNL
        | libc::INLCR
        | libc::IGNCR
        | libc::IUCLC
        | libc::ISTRIP
        | libc::IXON
        | libc::IXOFF
        | libc::PARMRK);
    if w.lflag & libc::ICANON != 0 {
        w.lflag |= libc::IEXTEN;
        if w.cc[libc::VLNEXT] == 0 {
            w.cc[libc::VLNEXT] = 0x16;
        }
    } else {
        w.lflag &= !libc::IEXTEN;
    }
    w
}

/// The bytes to push, under `w` (canonical mode), for a reader to find
/// the same lines: bytes the line discipline would act on are escaped with
/// VLNEXT, line ends stay as they are, a line that ended with VEOF gets
/// VEOF again (an empty one is an end of file), the unfinished line last.
fn canonical_stream(lines: &[Vec<u8>], pending: &[u8], w: &Termios) -> Vec<u8> {
    let cc = |i: usize| w.cc[i];
    let lnext = cc(libc::VLNEXT);
    let specials = [
        cc(libc::VERASE),
        cc(libc::VKILL),
        cc(libc::VWERASE),
        cc(libc::VREPRINT),
        lnext,
        cc(libc::VEOF),
        cc(libc::VEOL),
        cc(libc::VEOL2),
        b'\n',
    ];
    let is_end = |b: u8| b == b'\n' || (b != 0 && (b == cc(libc::VEOL) || b == cc(libc::VEOL2)));
    let mut s = Vec::new();
    let literal = |s: &mut Vec<u8>, body: &[u8]| {
        for &b in body {
            if specials.contains(&b) {
                s.push(lnext);
            }
            s.push(b);
        }
    };
    for line in lines {
        match line.last() {
            Some(&b) if is_end(b) => {
                literal(&mut s, &line[..line.len() - 1]);
                s.push(b);
            }
            _ => {
                literal(&mut s, line);
                s.push(cc(libc::VEOF));
            }
        }
    }
    literal(&mut s, pending);
    s
}

/// How to put back a slave's pending input (`lines` complete lines in
/// canonical mode, then `pending`), taken while its settings were `t`.
/// Err says why it cannot be exact: more than the line discipline holds in
/// a mode that processes input.
pub fn plan_input_put_back(
    lines: &[Vec<u8>],
    pending: &[u8],
    t: &Termios,
) -> std::result::Result<InputPutBack, String> {
    let all = || {
        let mut v: Vec<u8> = lines.concat();
        v.extend_from_slice(pending);
        v
    };
    if lines.is_empty() && pending.is_empty() {
        return Ok(InputPutBack::default());
    }
    if transparent(t) {
        let v = all();
        let head = v.len().min(LDISC_ROOM);
        return Ok(InputPutBack {
            termios: None,
            sti: v[..head].to_vec(),
            write: v[head..].to_vec(),
        });
    }
    let w = put_back_termios(t);
    let stream = if t.lflag & libc::ICANON != 0 {
        canonical_stream(lines, pending, &w)
    } else {
        all()
    };
    if stream.len() > LDISC_ROOM {
        return Err(format!(
            "{} bytes of pending input in a mode that processes input: more than the {LDISC_ROOM} the line discipline holds",
            stream.len()
        ));
    }
    Ok(InputPutBack {
        termios: Some(w),
        sti: stream,
        write: Vec::new(),
    })
}

/// Bytes per write when data goes back through the tty flip buffer (small
/// writes fit the most of it).
const FLIP_CHUNK: usize = 1024;

/// Write `data` in FLIP_CHUNK pieces, waiting for room up to half a second
/// at a time: the bytes written.
fn write_chunked(fd: i32, data: &[u8]) -> Result<usize> {
    let mut done = 0;
    for c in data.chunks(FLIP_CHUNK) {
        let n = write_waiting(fd, c, 500)?;
        done += n;
        if n < c.len() {
            break;
        }
    }
    Ok(done)
}

/// Put a pair's output back for its master to read: the first
/// [`LDISC_ROOM`] bytes with TIOCSTI on the master (its line discipline is
/// raw: stored as they are), the rest written to `slave` (a non-blocking
/// slave description) with output processing off for the moment. Returns
/// how many bytes went back (all, unless the kernel had no room).
pub fn put_back_output(master: impl AsRawFd, slave: Option<i32>, data: &[u8]) -> Result<usize> {
    let head = data.len().min(LDISC_ROOM);
    push_input(master.as_raw_fd(), &data[..head])?;
    let rest = &data[head..];
    let Some(slave) = slave.filter(|_| !rest.is_empty()) else {
        return Ok(head);
    };
    let t0 = tcgets2(slave)?;
    let mut t = t0;
    t.oflag &= !libc::OPOST;
    tcsets2(slave, &t)?;
    let n = write_chunked(slave, rest);
    let back = tcsets2(slave, &t0);
    let n = n?;
    back?;
    Ok(head + n)
}

/// Put a slave's pending input back as `plan` says (the slave's settings
/// are `saved` afterwards). Returns how many bytes went back.
pub fn put_back_input(
    master: impl AsRawFd,
    slave: impl AsRawFd,
    saved: &Termios,
    during: Option<&Termios>,
    sti: &[u8],
    write: &[u8],
) -> Result<usize> {
    let slave = slave.as_raw_fd();
    if let Some(w) = during {
        tcsets2(slave, w)?;
    }
    let pushed = push_input(slave, sti);
    let back = if during.is_some() {
        tcsets2(slave, saved)
    } else {
        Ok(())
    };
    pushed?;
    back?;
    let n = write_chunked(master.as_raw_fd(), write)?;
    Ok(sti.len() + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termios_bytes_round_trip() {
        let mut b = [0u8; TERMIOS2_SIZE];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8 + 1;
        }
        let t = Termios::from_bytes(&b).unwrap();
        assert_eq!(t.line, 17);
        assert_eq!(t.cc[0], 18);
        assert_eq!(t.to_bytes(), b);
        assert!(Termios::from_bytes(&b[..43]).is_none());
        assert_eq!(std::mem::size_of::<libc::termios2>(), TERMIOS2_SIZE);
    }

    fn cooked() -> Termios {
        let mut t = Termios {
            iflag: libc::ICRNL | libc::IXON,
            oflag: libc::OPOST | libc::ONLCR,
            lflag: libc::ISIG | libc::ICANON | libc::ECHO | libc::ECHOE | libc::IEXTEN,
            ..Default::default()
        };
        t.cc[libc::VERASE] = 0x7f;
        t.cc[libc::VKILL] = 0x15;
        t.cc[libc::VEOF] = 0x04;
        t.cc[libc::VLNEXT] = 0x16;
        t
    }

    #[test]
    fn canonical_input_is_escaped_and_keeps_its_line_ends() {
        let t = cooked();
        let p = plan_input_put_back(
            &[b"a\x7fb\n".to_vec(), b"eof".to_vec(), Vec::new()],
            b"un\x15",
            &t,
        )
        .unwrap();
        let w = p.termios.unwrap();
        assert_eq!(w.lflag & (libc::ECHO | libc::ISIG), 0);
        assert_eq!(w.iflag & libc::ICRNL, 0);
        assert_eq!(
            p.sti,
            b"a\x16\x7fb\neof\x04\x04un\x16\x15".to_vec(),
            "{:?}",
            p.sti
        );
        assert!(p.write.is_empty());
        // Too much for the line discipline in a processing mode.
        let big = vec![b'x'; LDISC_ROOM + 1];
        assert!(plan_input_put_back(&[], &big, &t).is_err());
    }

    #[test]
    fn raw_input_goes_back_as_it_is_beyond_the_line_discipline() {
        let mut t = cooked();
        t.lflag = 0;
        t.iflag = 0;
        let big: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
        let p = plan_input_put_back(&[], &big, &t).unwrap();
        assert!(p.termios.is_none());
        assert_eq!(p.sti.len(), LDISC_ROOM);
        assert_eq!([p.sti, p.write].concat(), big);
        assert_eq!(
            plan_input_put_back(&[], &[], &t).unwrap(),
            InputPutBack::default()
        );
    }
}
