//! Pty pairs whose master a saved process holds (a tmux server, `script`,
//! an expect-like parent): the pair's settings and the bytes buffered in
//! both directions, into `Image.ptys`.
//!
//! The master is read through the process's own open file description
//! (pidfd_getfd): opening /proc/PID/fd/N of a master would open /dev/ptmx,
//! a new pair. The buffered bytes can only be read destructively; they are
//! taken while every process of the image is frozen and, when the dump
//! lets the processes go on (or fails), put back exactly before they run
//! again ([`Ptys`] does that when dropped, unless the dump killed them).
//!
//! Input (written to the master, not yet read on the slave side) is read
//! through a slave description a saved process holds: in canonical mode
//! one line per read(), then the unfinished line with canonical mode off
//! for the moment. Output (written on the slave side) is read from the
//! master until it stays empty for [`QUIET`] (the tty's flip buffer holds
//! more than the line discipline and a kernel worker moves it on as reads
//! make room). Input first: reading it lets more in, whose echo lands in
//! the output.

use super::{fd_sys, RawFd};
use crate::error::{Error, Result};
use crate::procfs::{major, minor};
use ckpt_image::PtyPair;
use ckpt_sys::fds::tty::{self, Termios};
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// How long a queue must stay empty before it is believed empty.
const QUIET: Duration = Duration::from_millis(30);
/// The most bytes taken from one direction of one pair (the kernel holds
/// far less: a bound in case a writer we do not know of keeps writing).
const MAX_QUEUE: usize = 1 << 20;

/// Unix98 pty slaves have majors 136-143.
pub(super) const PTS_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;

/// /dev/ptmx (also /dev/pts/ptmx).
pub(super) fn is_master_dev(rdev: u64) -> bool {
    major(rdev) == 5 && minor(rdev) == 2
}

/// The pts index of a slave device number.
pub(super) fn slave_index(rdev: u64) -> Option<u32> {
    let ma = major(rdev);
    PTS_MAJORS
        .contains(&ma)
        .then(|| ((ma - 136) * 256 + minor(rdev)) as u32)
}

/// A pair found in the image, before and after its state is read.
struct Pair {
    /// The master's description (pidfd_getfd).
    master: OwnedFd,
    index: u32,
    devpts: u64,
    /// Where the master was found, for messages.
    pid: Pid,
    fd: i32,
    /// A slave description a saved process holds (pidfd_getfd), if any.
    slave: Option<OwnedFd>,
    /// Saved into `Ptys::pairs` (with its queues taken).
    saved: Option<usize>,
}

/// The pty pairs of the image: found and saved (with their queues) by
/// [`Ptys::scan`], and put back when dropped unless [`Ptys::discard`]
/// says the processes are gone.
#[derive(Default)]
pub(crate) struct Ptys {
    /// (devpts, index) -> pair.
    by_key: HashMap<(u64, u32), usize>,
    /// (pid, fd) of every master fd -> pair.
    by_fd: HashMap<(Pid, i32), usize>,
    found: Vec<Pair>,
    /// What goes to `Image.ptys`.
    pub pairs: Vec<PtyPair>,
    /// Put the taken bytes back when dropped.
    armed: bool,
}

impl std::fmt::Debug for Ptys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ptys")
            .field("pairs", &self.pairs.len())
            .finish()
    }
}

/// The devpts instance a master belongs to: the `pts` directory beside the
/// ptmx node it was opened through (/dev/ptmx -> /dev/pts), or the devpts
/// itself for /dev/pts/ptmx.
fn master_devpts(pid: Pid, f: &RawFd) -> Option<u64> {
    let link = String::from_utf8_lossy(&f.link);
    if link.ends_with("/pts/ptmx") {
        return f.md.as_ref().map(|m| m.dev());
    }
    let dir = link.rsplit_once('/').map_or("", |(d, _)| d);
    std::fs::metadata(format!("/proc/{pid}/root{dir}/pts"))
        .ok()
        .map(|m| m.dev())
}

impl Ptys {
    /// Find the pty masters among the fds of the image's processes, and
    /// refuse (by name) a pair whose slave a process outside the image has
    /// open: its data could not be taken nor the pair made again for it.
    pub fn scan(procs: &[(Pid, &[RawFd])]) -> Result<Ptys> {
        let mut p = Ptys::default();
        p.armed = true;
        for &(pid, fds) in procs {
            let masters = fds
                .iter()
                .filter(|f| f.md.as_ref().is_some_and(|m| is_master_dev(m.rdev())));
            let mut pidfd = None;
            for f in masters {
                if pidfd.is_none() {
                    pidfd = Some(
                        ckpt_sys::proc::pidfd::pidfd_open(pid)
                            .map_err(fd_sys(f.fd, "opening the process's pidfd"))?,
                    );
                }
                let pfd = pidfd.as_ref().expect("just set");
                let master = ckpt_sys::proc::pidfd::pidfd_getfd(pfd, pid, f.fd)
                    .map_err(fd_sys(f.fd, "taking the pty master (pidfd_getfd)"))?;
                let index = tty::pty_index(master.as_raw_fd())
                    .map_err(fd_sys(f.fd, "reading the pty index (TIOCGPTN)"))?;
                let devpts = master_devpts(pid, f).unwrap_or(0);
                if let Some(&i) = p.by_key.get(&(devpts, index)) {
                    p.by_fd.insert((pid, f.fd), i);
                    continue;
                }
                p.by_key.insert((devpts, index), p.found.len());
                p.by_fd.insert((pid, f.fd), p.found.len());
                p.found.push(Pair {
                    master,
                    index,
                    devpts,
                    pid,
                    fd: f.fd,
                    slave: None,
                    saved: None,
                });
            }
        }
        if p.found.is_empty() {
            return Ok(p);
        }
        p.find_slaves(procs)?;
        p.refuse_outside_holders(procs)?;
        p.read_all()?;
        Ok(p)
    }

    /// Save every pair (settings and queues) at once: each waits until its
    /// queues stay quiet, so a tree with many terminals (tmux, screen)
    /// waits once, not once per terminal. The first failure (the pairs
    /// read are put back when `self` is dropped).
    fn read_all(&mut self) -> Result<()> {
        const AT_ONCE: usize = 64;
        let t = Instant::now();
        let mut results: Vec<Result<PtyPair>> = Vec::with_capacity(self.found.len());
        for (c, chunk) in self.found.chunks(AT_ONCE).enumerate() {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let id = (c * AT_ONCE + k) as u32 + 1;
                        s.spawn(move || read_pair(p, id, p.index, p.devpts))
                    })
                    .collect();
                for (h, p) in handles.into_iter().zip(chunk) {
                    results.push(h.join().unwrap_or_else(|_| {
                        Err(Error::Fd {
                            fd: p.fd,
                            what: format!("pty master of /dev/pts/{}: reading it failed", p.index),
                        })
                    }));
                }
            });
        }
        let mut first = Ok(());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(pair) => {
                    tracing::debug!(
                        index = pair.index,
                        input = pair.input_lines.iter().map(Vec::len).sum::<usize>()
                            + pair.input_pending.len(),
                        output = pair.output.len(),
                        "pty pair saved"
                    );
                    self.found[i].saved = Some(self.pairs.len());
                    self.pairs.push(pair);
                }
                Err(e) if first.is_ok() => first = Err(e),
                Err(_) => {}
            }
        }
        tracing::debug!(pairs = self.pairs.len(), elapsed = ?t.elapsed(), "pty pairs saved");
        first
    }

    /// A slave description of each pair held by a saved process.
    fn find_slaves(&mut self, procs: &[(Pid, &[RawFd])]) -> Result<()> {
        for &(pid, fds) in procs {
            for f in fds {
                let Some(k) =
                    f.md.as_ref()
                        .and_then(|m| Some((m.dev(), slave_index(m.rdev())?)))
                else {
                    continue;
                };
                let Some(&i) = self.by_key.get(&k) else {
                    continue;
                };
                if self.found[i].slave.is_none() {
                    let s = ckpt_sys::proc::pidfd::fd_of(pid, f.fd)
                        .map_err(fd_sys(f.fd, "taking the pty slave (pidfd_getfd)"))?;
                    self.found[i].slave = Some(s);
                }
            }
        }
        Ok(())
    }

    /// Refuse a pair whose slave is open in a process outside the image.
    fn refuse_outside_holders(&self, procs: &[(Pid, &[RawFd])]) -> Result<()> {
        let inside: Vec<Pid> = procs.iter().map(|p| p.0).collect();
        let me = ckpt_sys::proc::getpid();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Ok(());
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<Pid>().ok()) else {
                continue;
            };
            if inside.contains(&pid) || pid == me {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                if !link
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"/dev/pts/")
                {
                    continue;
                }
                let Ok(md) = std::fs::metadata(fd.path()) else {
                    continue;
                };
                let Some(index) = slave_index(md.rdev()) else {
                    continue;
                };
                if let Some(&i) = self.by_key.get(&(md.dev(), index)) {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let pair = &self.found[i];
                    let held = if pair.pid == procs[0].0 {
                        String::new()
                    } else {
                        format!(" of pid {}", pair.pid)
                    };
                    return Err(Error::Fd {
                        fd: pair.fd,
                        what: format!(
                            "the pty master{held} of /dev/pts/{index}: its slave is open in pid {pid} ({}), which is not in the image (dump the process tree that holds both ends)",
                            comm.trim()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The pair id of a slave (devpts, index) whose master is in the image.
    pub fn pair_of(&self, devpts: u64, index: u32) -> Option<u32> {
        self.by_key.get(&(devpts, index)).map(|&i| i as u32 + 1)
    }

    /// The pair whose master is fd `f` of `pid` (saved by [`Ptys::scan`]):
    /// (pair id, index, devpts).
    pub fn master_of(&self, pid: Pid, f: &RawFd) -> Result<(u32, u32, u64)> {
        let Some(&i) = self.by_fd.get(&(pid, f.fd)) else {
            return Err(Error::Fd {
                fd: f.fd,
                what: "a pty master not found when the fds were listed".into(),
            });
        };
        let (devpts, index) = (self.found[i].devpts, self.found[i].index);
        Ok((i as u32 + 1, index, devpts))
    }

    /// The processes are gone (killed after the image was written): the
    /// bytes need not go back.
    pub fn discard(&mut self) {
        self.armed = false;
    }

    /// Put every pair's bytes back (the processes go on); the first failure.
    pub fn put_back(&mut self) -> Result<()> {
        if !self.armed {
            return Ok(());
        }
        self.armed = false;
        let mut first = Ok(());
        for pair in &self.found {
            let Some(s) = pair.saved else { continue };
            if let Err(e) = put_back(pair, &self.pairs[s]) {
                tracing::error!(index = self.pairs[s].index, error = %e, "pty data could not all be put back");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Ptys {
    fn drop(&mut self) {
        let _ = self.put_back();
    }
}

/// Settings and queues of one pair (the processes are frozen).
fn read_pair(p: &Pair, id: u32, index: u32, devpts: u64) -> Result<PtyPair> {
    let m = p.master.as_raw_fd();
    let fd = p.fd;
    let what = |w: &'static str| fd_sys(fd, w);
    let ldisc = tty::line_discipline(m).map_err(what("reading the line discipline"))?;
    if ldisc != 0 {
        return Err(Error::Fd {
            fd,
            what: format!("pty master of /dev/pts/{index}: line discipline {ldisc} (only N_TTY, 0, can be restored)"),
        });
    }
    if tty::has_locked_termios(m).map_err(what("reading the locked settings"))? {
        return Err(Error::Fd {
            fd,
            what: format!("pty master of /dev/pts/{index}: has locked settings (TIOCSLCKTRMIOS), which ckpt does not restore"),
        });
    }
    let termios = tty::tcgets2(m).map_err(what("reading the terminal settings"))?;
    let w = tty::winsize(m).map_err(what("reading the window size"))?;
    let packet = tty::packet_mode(m).map_err(what("reading the packet mode"))?;
    let peer_closed =
        tty::poll_one(m, libc::POLLIN, 0).map_err(what("polling the master"))? & libc::POLLHUP != 0;
    let mut pair = PtyPair {
        id,
        index,
        devpts,
        termios: termios.to_bytes().to_vec(),
        win_rows: w.rows,
        win_cols: w.cols,
        win_xpixel: w.xpixel,
        win_ypixel: w.ypixel,
        packet,
        locked: tty::pty_locked(m).map_err(what("reading the lock"))?,
        peer_closed,
        sid: tty::session(m).unwrap_or(0),
        foreground_pgrp: tty::foreground(m).unwrap_or(0),
        ..Default::default()
    };
    if let Some(s) = &p.slave {
        // The /dev/pts/N node's mode and owner (grantpt, fchown).
        if let Ok(st) = std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())) {
            use std::os::unix::fs::MetadataExt;
            pair.slave_mode = st.mode();
            (pair.slave_uid, pair.slave_gid) = (st.uid(), st.gid());
        }
        pair.slave_exclusive =
            tty::exclusive(s.as_raw_fd()).map_err(what("reading the exclusive mode"))?;
        let (lines, pending) =
            take_input(s.as_raw_fd(), &termios).map_err(what("taking the pending input"))?;
        pair.input_lines = lines;
        pair.input_pending = pending;
    }
    let (output, status) = take_output(m, packet).map_err(what("taking the pending output"))?;
    pair.output = output;
    pair.packet_status = status;
    if pair.input_lines.is_empty() && pair.input_pending.is_empty() {
        return Ok(pair);
    }
    // Refuse now what a restore could not put back exactly.
    if let Err(e) = tty::plan_input_put_back(&pair.input_lines, &pair.input_pending, &termios) {
        // Give the bytes back first: the dump fails, the processes go on.
        let _ = put_back(p, &pair);
        return Err(Error::Fd {
            fd,
            what: format!("pty master of /dev/pts/{index}: {e}"),
        });
    }
    Ok(pair)
}

/// poll then read: never waits, whatever O_NONBLOCK says on a description
/// the process shares. None when nothing came within `wait`.
fn read_ready(fd: i32, buf: &mut [u8], wait: Duration) -> ckpt_sys::Result<Option<usize>> {
    let rev = tty::poll_one(fd, libc::POLLIN, wait.as_millis() as i32)?;
    if rev & libc::POLLIN == 0 {
        return Ok(None);
    }
    match tty::read_now(fd, buf) {
        Err(e) if e.errno() == Some(libc::EIO) => Ok(None),
        r => r,
    }
}

/// The slave's pending input: complete lines (canonical mode), then the
/// rest. Its settings are back as they were when this returns.
fn take_input(slave: i32, t0: &Termios) -> ckpt_sys::Result<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 8192];
    let res = (|| -> ckpt_sys::Result<()> {
        if t0.lflag & libc::ICANON != 0 {
            let mut total = 0;
            while total < MAX_QUEUE {
                match read_ready(slave, &mut buf, QUIET)? {
                    Some(n) => {
                        total += n.max(1);
                        lines.push(buf[..n].to_vec());
                    }
                    None => break,
                }
            }
        }
        let mut t1 = *t0;
        t1.lflag &= !libc::ICANON;
        t1.cc[libc::VMIN] = 0;
        t1.cc[libc::VTIME] = 0;
        tty::tcsets2(slave, &t1)?;
        while pending.len() < MAX_QUEUE {
            match read_ready(slave, &mut buf, QUIET)? {
                Some(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        Ok(())
    })();
    let back = tty::tcsets2(slave, t0);
    res?;
    back?;
    Ok((lines, pending))
}

/// What the master can read: the bytes, and the packet-mode status bits
/// read along (packet mode: each read starts with a status byte).
fn take_output(master: i32, packet: bool) -> ckpt_sys::Result<(Vec<u8>, u8)> {
    let mut out = Vec::new();
    let mut status = 0u8;
    let mut buf = vec![0u8; 65536];
    while out.len() < MAX_QUEUE {
        let n = match read_ready(master, &mut buf, QUIET)? {
            Some(n) if n > 0 => n,
            _ => break,
        };
        if !packet {
            out.extend_from_slice(&buf[..n]);
        } else if buf[0] == 0 {
            out.extend_from_slice(&buf[1..n]);
        } else {
            status |= buf[0];
        }
    }
    Ok((out, status))
}

/// Give one pair its bytes back (the processes are still frozen).
fn put_back(p: &Pair, pair: &PtyPair) -> Result<()> {
    let fd = p.fd;
    let m = p.master.as_raw_fd();
    let index = pair.index;
    let short = |what: &str, n: usize, of: usize| Error::Fd {
        fd,
        what: format!(
            "pty /dev/pts/{index}: only {n} of {of} bytes of its {what} could be put back"
        ),
    };
    if !pair.output.is_empty() {
        // Beyond what TIOCSTI holds, the rest goes through a slave
        // description of our own, non-blocking.
        let own = (pair.output.len() > tty::LDISC_ROOM)
            .then(|| open_own_slave(m))
            .transpose()
            .map_err(fd_sys(fd, "opening the pty's slave to put its output back"))?;
        let n = tty::put_back_output(m, own.as_ref().map(|s| s.as_raw_fd()), &pair.output)
            .map_err(fd_sys(fd, "putting the pty's output back"))?;
        if n < pair.output.len() {
            return Err(short("output", n, pair.output.len()));
        }
    }
    let total = pair.input_lines.iter().map(Vec::len).sum::<usize>() + pair.input_pending.len();
    if total == 0 {
        return Ok(());
    }
    let (Some(slave), Some(t)) = (&p.slave, Termios::from_bytes(&pair.termios)) else {
        return Ok(());
    };
    let plan =
        tty::plan_input_put_back(&pair.input_lines, &pair.input_pending, &t).map_err(|e| {
            Error::Fd {
                fd,
                what: format!("pty /dev/pts/{index}: {e}"),
            }
        })?;
    tty::put_back_input(
        m,
        slave.as_raw_fd(),
        &t,
        plan.termios.as_ref(),
        &plan.sti,
        &plan.write,
    )
    .map_err(fd_sys(fd, "putting the pty's input back"))?;
    Ok(())
}

/// A non-blocking slave description of our own (TIOCGPTPEER), the pair
/// unlocked for the moment if it is locked.
fn open_own_slave(master: i32) -> ckpt_sys::Result<OwnedFd> {
    let locked = tty::pty_locked(master)?;
    if locked {
        tty::set_pty_locked(master, false)?;
    }
    let r = tty::open_peer(
        master,
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    );
    if locked {
        tty::set_pty_locked(master, true)?;
    }
    r
}
