//! What the socket kinds share during one dump: the options the user gave
//! (`--tcp-established`, `--tcp-close`, `--unix-external`), the TCP
//! sockets the kernel reports (one sock_diag walk, once the processes are
//! frozen), and the connection lock with the sockets put in repair mode.
//!
//! Before any fd is saved, [`Sockets::prepare`] finds the process's live
//! TCP connections and the connections waiting in its listeners' accept
//! queues. Without an option they are refused, by address. With
//! `--tcp-established` they are locked (ckpt_sys::netlock: nothing is
//! answered or lost while they are saved), checked to be held by no
//! process outside the dump, and then saved with TCP_REPAIR; they leave
//! repair mode again at once, without sending anything, so that if the
//! dump worker died the process would go on with working sockets (only
//! the lock to remove: `ckpt_sys::netlock::cleanup_stale`, which the
//! `ckpt` process runs as soon as its worker dies). At the end:
//! - the process is killed ([`Sockets::dumped`]): our duplicates (which
//!   keep the sockets open) go into repair mode and are closed, so the
//!   connections vanish without a FIN or RST, and the lock stays,
//!   recorded as `dumped`, until the restore removes it;
//! - the process goes on (`--leave-running`, or any failure:
//!   [`Sockets::release`], also on drop): connections taken out of an
//!   accept queue are put back into it, the lock goes, and the sockets
//!   leave repair mode (with a window probe: the peer resynchronises at
//!   once).

use super::{fd_path, unsupported, RawFd};
use crate::error::{Error, Result};
use ckpt_image::{SockOpt, UnixExternal};
use ckpt_sys::fds::sockopt::{self, SockKind};
use ckpt_sys::fds::tcp_repair::{self, Pending};
use ckpt_sys::netlock::{self, Conn, Record, Repaired};
use ckpt_sys::segment::RawSender;
use ckpt_sys::sock_diag::{self, InetDiag};
use ckpt_sys::Pid;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// What to do with live sockets (the dump's options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Save live TCP connections (locked while saved, restored live).
    pub tcp_established: bool,
    /// Save live TCP connections as closed (restored closed).
    pub tcp_close: bool,
    /// A unix socket whose peer is outside the dump: what its restore does
    /// (None: the dump refuses it).
    pub unix_external: UnixExternal,
}

/// A socket put in repair mode (our duplicate of it).
struct Held {
    fd: OwnedFd,
    reuseaddr: bool,
}

/// A listener whose accept queue the dump emptied, and what it took.
struct Drained {
    listener: OwnedFd,
    /// Each connection: our duplicate (in repair mode) and its state.
    conns: Vec<(OwnedFd, SocketAddr, SocketAddr, tcp_repair::Saved)>,
}

/// The connection lock of this dump.
struct Lock {
    tag: String,
    record: Record,
    locked: HashSet<Conn>,
}

/// The state the socket kinds share during one dump (see the module doc).
pub(crate) struct Sockets {
    pub opts: SocketOptions,
    /// The dumped processes (holders of a socket outside them are refused).
    pids: BTreeSet<Pid>,
    /// TCP sockets by inode, from sock_diag.
    tcp: HashMap<u64, InetDiag>,
    /// Connections in accept queues (no inode yet).
    children: Vec<InetDiag>,
    scanned: bool,
    /// Socket inodes already prepared.
    prepared: HashSet<u64>,
    lock: Option<Lock>,
    held: Vec<Held>,
    drained: Vec<Drained>,
    finished: bool,
}

impl Sockets {
    pub fn new(opts: SocketOptions) -> Sockets {
        Sockets {
            opts,
            pids: BTreeSet::new(),
            tcp: HashMap::new(),
            children: Vec::new(),
            scanned: false,
            prepared: HashSet::new(),
            lock: None,
            held: Vec::new(),
            drained: Vec::new(),
            finished: false,
        }
    }

    /// The lock's tag, if connections are locked.
    pub fn lock_tag(&self) -> Option<&str> {
        self.lock.as_ref().map(|l| l.tag.as_str())
    }

    /// The TCP socket of inode `ino`, as sock_diag reported it.
    pub fn tcp(&self, ino: u64) -> Option<&InetDiag> {
        self.tcp.get(&ino)
    }

    /// The connections waiting in the accept queue of listener `l`.
    fn children_of(&self, l: &InetDiag) -> Vec<&InetDiag> {
        self.children
            .iter()
            .filter(|c| {
                c.local.port() == l.local.port()
                    && c.family == l.family
                    && (l.local.ip().is_unspecified() || c.local.ip() == l.local.ip())
            })
            .collect()
    }

    fn scan(&mut self) -> Result<()> {
        if self.scanned {
            return Ok(());
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            let all =
                sock_diag::inet_sockets(family, libc::IPPROTO_TCP, u32::MAX).map_err(|source| {
                    Error::Sys {
                        pid: 0,
                        what: "listing TCP sockets (sock_diag)".into(),
                        source,
                    }
                })?;
            for d in all {
                if d.inode != 0 {
                    self.tcp.insert(d.inode, d);
                } else if matches!(
                    d.state,
                    tcp_repair::TCP_ESTABLISHED | tcp_repair::TCP_CLOSE_WAIT
                ) {
                    self.children.push(d);
                }
            }
        }
        self.scanned = true;
        Ok(())
    }

    /// The processes being dumped (all of them, before the first
    /// [`Sockets::prepare`]: a socket shared within the tree is not held
    /// "outside" it).
    pub fn dumping(&mut self, pids: impl IntoIterator<Item = Pid>) {
        self.pids.extend(pids);
    }

    /// Before the fds of process `pid` are saved: find its live TCP
    /// connections and accept queues, refuse them without an option, lock
    /// them with `--tcp-established`.
    pub fn prepare(&mut self, pid: Pid, fds: &[RawFd]) -> Result<()> {
        self.pids.insert(pid);
        // A socket shared within the tree (fork, SCM_RIGHTS) is prepared
        // once, through its first holder.
        let socks: Vec<(i32, u64)> = fds
            .iter()
            .filter(|f| f.link.starts_with(b"socket:["))
            .map(|f| (f.fd, f.ino()))
            .filter(|&(_, ino)| self.prepared.insert(ino))
            .collect();
        if socks.is_empty() {
            return Ok(());
        }
        self.scan()?;
        let mut live: Vec<(i32, InetDiag)> = Vec::new();
        let mut queues: Vec<(i32, InetDiag, usize)> = Vec::new();
        for (fd, ino) in &socks {
            let Some(d) = self.tcp.get(ino) else { continue };
            if tcp_repair::is_connection(d.state) {
                live.push((*fd, d.clone()));
            } else if d.state == tcp_repair::TCP_LISTEN {
                let n = self.children_of(d).len();
                if n > 0 {
                    queues.push((*fd, d.clone(), n));
                }
            }
        }
        if live.is_empty() && queues.is_empty() {
            return Ok(());
        }
        if !self.opts.tcp_established && !self.opts.tcp_close {
            return Err(refusal(&live, &queues));
        }
        if self.opts.tcp_close {
            tracing::info!(
                connections = live.len(),
                "live TCP connections saved closed (--tcp-close)"
            );
            return Ok(());
        }
        let inodes: HashSet<u64> = live.iter().map(|(_, d)| d.inode).collect();
        self.check_holders(pid, &inodes)?;
        let mut conns: Vec<Conn> = live
            .iter()
            .map(|(_, d)| Conn::new(d.local, d.remote))
            .collect();
        for (_, l, _) in &queues {
            conns.extend(
                self.children_of(l)
                    .iter()
                    .map(|c| Conn::new(c.local, c.remote)),
            );
        }
        let ports: Vec<u16> = socks
            .iter()
            .filter_map(|(_, ino)| self.tcp.get(ino))
            .filter(|d| d.state == tcp_repair::TCP_LISTEN)
            .map(|d| d.local.port())
            .collect();
        let mut repaired = Vec::new();
        for (fd, d) in &live {
            let reuseaddr = ckpt_sys::proc::pidfd::fd_of(pid, *fd)
                .and_then(|s| {
                    ckpt_sys::fds::socket::getsockopt_int(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_REUSEADDR,
                    )
                })
                .map_err(|source| sys_fd(*fd, "reading SO_REUSEADDR", source))?;
            repaired.push(Repaired {
                pid,
                fd: *fd,
                inode: d.inode,
                reuseaddr: reuseaddr != 0,
            });
        }
        self.lock_more(&conns, &ports, repaired)
    }

    /// Lock `conns` and `ports` (making the lock on first use), recording
    /// the sockets about to be put in repair mode first.
    fn lock_more(&mut self, conns: &[Conn], ports: &[u16], repaired: Vec<Repaired>) -> Result<()> {
        let dir = Path::new(netlock::STATE_DIR);
        let lock_err = |source| Error::Sys {
            pid: 0,
            what: "locking the TCP connections being saved".into(),
            source,
        };
        let fresh = self.lock.is_none();
        if fresh {
            netlock::cleanup_stale(dir);
            let tag = netlock::new_tag();
            self.lock = Some(Lock {
                record: Record::new(&tag),
                tag,
                locked: HashSet::new(),
            });
        }
        let Some(lock) = self.lock.as_mut() else {
            return Ok(());
        };
        lock.record.sockets.extend(repaired);
        lock.record.write(dir).map_err(lock_err)?;
        let t = std::time::Instant::now();
        if fresh {
            netlock::lock(&lock.tag, conns, ports).map_err(lock_err)?;
        } else {
            netlock::add(&lock.tag, conns, ports).map_err(lock_err)?;
        }
        lock.locked.extend(conns.iter().copied());
        tracing::info!(tag = %lock.tag, connections = conns.len(), listeners = ports.len(), elapsed = ?t.elapsed(), "TCP connections locked");
        Ok(())
    }

    /// A connection about to be saved that is not locked yet (one that
    /// reached an accept queue after the lock was made): lock it now.
    fn ensure_locked(&mut self, local: SocketAddr, peer: SocketAddr) -> Result<()> {
        let c = Conn::new(local, peer);
        match &self.lock {
            Some(l) if l.locked.contains(&c) => Ok(()),
            Some(_) => self.lock_more(&[c], &[], Vec::new()),
            None => Err(unsupported(0, "a TCP connection to save without a lock")),
        }
    }

    /// Refuse connections also held by processes outside the dump: killing
    /// the dumped ones would not close them, and their 4-tuple would not be
    /// free for the restore.
    fn check_holders(&self, pid: Pid, inodes: &HashSet<u64>) -> Result<()> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Ok(());
        };
        for p in procs.flatten() {
            let Some(other) = p.file_name().to_str().and_then(|s| s.parse::<Pid>().ok()) else {
                continue;
            };
            if self.pids.contains(&other) || other == std::process::id() as Pid {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for f in fds.flatten() {
                let Ok(link) = std::fs::read_link(f.path()) else {
                    continue;
                };
                let link = link.to_string_lossy();
                let Some(ino) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                if inodes.contains(&ino) {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{other}/comm")).unwrap_or_default();
                    return Err(Error::Fd {
                        fd: -1,
                        what: format!(
                            "a TCP connection of pid {pid} (socket inode {ino}) is also held by pid {other} (\"{}\"), which is not being dumped",
                            comm.trim()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Save the connections in the accept queue of listener `fd` of `pid`
    /// (our duplicate `dup`): accepted through it, saved with TCP_REPAIR,
    /// and given back if the process goes on. The saved connections.
    pub fn drain_accept_queue(
        &mut self,
        pid: Pid,
        fd: i32,
        dup: OwnedFd,
    ) -> Result<Vec<(SocketAddr, SocketAddr, tcp_repair::Saved)>> {
        let sys = |what: &str| {
            let what = what.to_string();
            move |source| sys_fd(fd, &what, source)
        };
        let _ = pid;
        let l = dup.as_raw_fd();
        let fl = ckpt_sys::fds::get_fl(l).map_err(sys("reading the listener's flags"))?;
        ckpt_sys::fds::set_fl(l, fl | libc::O_NONBLOCK)
            .map_err(sys("making the listener non-blocking"))?;
        let mut drained = Drained {
            listener: dup,
            conns: Vec::new(),
        };
        let r = self.accept_all(fd, &mut drained);
        let back = ckpt_sys::fds::set_fl(l, fl);
        let out = drained
            .conns
            .iter()
            .map(|(_, a, b, s)| (*a, *b, s.clone()))
            .collect();
        self.drained.push(drained);
        r?;
        back.map_err(sys("putting the listener's flags back"))?;
        Ok(out)
    }

    fn accept_all(&mut self, fd: i32, d: &mut Drained) -> Result<()> {
        use ckpt_sys::fds::socket::{accept, inet_addr, peer_name, sock_name};
        let sys = |what: &'static str| move |source| sys_fd(fd, what, source);
        while let Some(c) =
            accept(d.listener.as_raw_fd()).map_err(sys("accepting a waiting connection"))?
        {
            let cfd = c.as_raw_fd();
            let local = sock_name(cfd).ok().and_then(|a| inet_addr(&a));
            let peer = peer_name(cfd).ok().flatten().and_then(|a| inet_addr(&a));
            let (Some(local), Some(peer)) = (local, peer) else {
                return Err(unsupported(fd, "a waiting connection without addresses"));
            };
            self.ensure_locked(local, peer)?;
            let reuse =
                ckpt_sys::fds::socket::getsockopt_int(cfd, libc::SOL_SOCKET, libc::SO_REUSEADDR)
                    .map_err(sys("reading SO_REUSEADDR"))?;
            let s =
                tcp_repair::save(cfd).map_err(sys("saving a waiting connection (TCP_REPAIR)"))?;
            tcp_repair::pause(cfd, reuse != 0).map_err(sys("leaving repair mode"))?;
            d.conns.push((c, local, peer, s));
        }
        Ok(())
    }

    /// Keep our duplicate of a socket just put in repair mode.
    pub fn hold(&mut self, fd: OwnedFd, reuseaddr: bool) {
        self.held.push(Held { fd, reuseaddr });
    }

    /// The process was killed: close our duplicates silently (in repair
    /// mode: no FIN or RST, and the 4-tuples are free at once for the
    /// restore) and keep the lock for the restore.
    pub fn dumped(mut self) {
        self.finished = true;
        let quiet = |fd: &OwnedFd| {
            if let Err(e) = tcp_repair::set_repair(fd.as_raw_fd(), tcp_repair::Repair::On) {
                tracing::warn!(error = %e, "a saved connection could not be closed silently");
            }
        };
        for h in self.held.drain(..) {
            quiet(&h.fd);
        }
        for d in self.drained.drain(..) {
            for (c, ..) in &d.conns {
                quiet(c);
            }
        }
        if let Some(l) = self.lock.as_mut() {
            l.record.status = "dumped".into();
            if let Err(e) = l.record.write(Path::new(netlock::STATE_DIR)) {
                tracing::warn!(error = %e, "could not record the lock as dumped");
            }
            tracing::info!(tag = %l.tag, "the connection lock stays until the restore");
        }
    }

    /// The process goes on: give back what was taken from accept queues,
    /// lift the lock, take the sockets out of repair mode.
    pub fn release(mut self) -> Result<()> {
        self.release_here()
    }

    fn release_here(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let mut first_err = None;
        let mut tx = RawSender::new(netlock::LOCK_MARK);
        for d in std::mem::take(&mut self.drained) {
            let family = ckpt_sys::fds::socket::getsockopt_int(
                d.listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
            )
            .unwrap_or(libc::AF_INET);
            let mut saved = Vec::new();
            for (c, local, peer, s) in d.conns {
                // Closed in repair mode: silently, the 4-tuple free again.
                let _ = tcp_repair::set_repair(c.as_raw_fd(), tcp_repair::Repair::On);
                drop(c);
                saved.push((local, peer, s));
            }
            for (local, peer, s) in &saved {
                if let Err(e) =
                    tcp_repair::replay_accept(&Pending::of_saved(family, *local, *peer, s), &mut tx)
                {
                    tracing::warn!(%local, %peer, error = %e, "could not give a waiting connection back");
                    first_err.get_or_insert(sys_fd(
                        -1,
                        "giving a waiting connection back to its listener",
                        e,
                    ));
                }
            }
        }
        if let Some(l) = self.lock.take() {
            if let Err(e) = netlock::unlock(&l.tag) {
                first_err.get_or_insert(Error::Sys {
                    pid: 0,
                    what: "removing the connection lock".into(),
                    source: e,
                });
            }
            l.record.remove(Path::new(netlock::STATE_DIR));
        }
        for h in std::mem::take(&mut self.held) {
            if let Err(e) = tcp_repair::finish(h.fd.as_raw_fd(), h.reuseaddr) {
                first_err.get_or_insert(sys_fd(-1, "taking a connection out of repair mode", e));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        if let Err(e) = self.release_here() {
            tracing::warn!(error = %e, "letting the sockets go after an abandoned dump");
        }
    }
}

/// The refusal of live TCP connections (no option given), naming them.
fn refusal(live: &[(i32, InetDiag)], queues: &[(i32, InetDiag, usize)]) -> Error {
    let mut parts = Vec::new();
    for (fd, d) in live {
        parts.push(format!(
            "fd {fd}: TCP connection {} -> {} ({})",
            d.local,
            d.remote,
            state_name(d.state)
        ));
    }
    for (fd, d, n) in queues {
        parts.push(format!(
            "fd {fd}: {n} connection(s) waiting in the accept queue of TCP listener {}",
            d.local
        ));
    }
    let fd = live
        .first()
        .map(|l| l.0)
        .or(queues.first().map(|q| q.0))
        .unwrap_or(-1);
    // A server with thousands of clients: the first few, and how many.
    const SHOWN: usize = 5;
    let more = parts.len().saturating_sub(SHOWN);
    parts.truncate(SHOWN);
    if more > 0 {
        parts.push(format!("and {more} more"));
    }
    Error::Fd {
        fd,
        what: format!(
            "live TCP connections are not saved without an option: {}; pass --tcp-established to save them (they stay frozen until restored; a lock drops their packets meanwhile) or --tcp-close to restore them closed",
            parts.join("; ")
        ),
    }
}

/// A TCP state's name.
pub(crate) fn state_name(state: u8) -> &'static str {
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

pub(crate) fn sys_fd(fd: i32, what: &str, source: ckpt_sys::Error) -> Error {
    Error::FdSys {
        fd,
        what: what.to_string(),
        source,
    }
}

/// Our duplicate of fd `fd` of `pid` (pidfd_getfd).
pub(crate) fn dup(cx: &mut super::Ctx<'_>, fd: i32) -> Result<OwnedFd> {
    cx.dup_fd(fd)
        .map_err(|source| sys_fd(fd, "duplicating the socket (pidfd_getfd)", source))
}

/// The kernel's name of a socket's protocol ("TCP", "UDPv6", "NETLINK",
/// "UNIX-STREAM", ...), from its system.sockprotoname attribute.
pub(crate) fn proto_name(pid: Pid, fd: i32) -> String {
    ckpt_sys::fs::getxattr(Path::new(&fd_path(pid, fd)), "system.sockprotoname")
        .map(|n| {
            String::from_utf8_lossy(&n)
                .trim_end_matches('\0')
                .to_string()
        })
        .unwrap_or_default()
}

/// The options of socket `fd` (our duplicate) that differ from a new
/// socket's of the same kind, as the image keeps them.
pub(crate) fn options(fd: i32, kind: &SockKind, orig_fd: i32) -> Result<Vec<SockOpt>> {
    let reference = ckpt_sys::fds::socket::socket(kind.family, kind.ty, kind.protocol).ok();
    let saved = sockopt::save(fd, kind, reference.as_ref().map(|r| r.as_raw_fd()))
        .map_err(|source| sys_fd(orig_fd, "reading its options", source))?;
    Ok(saved
        .into_iter()
        .map(|(level, name, value)| SockOpt { level, name, value })
        .collect())
}

/// (address bytes, port) of an inet address, as the image keeps it.
pub(crate) fn addr_port(a: &SocketAddr) -> (Vec<u8>, u16) {
    (ckpt_sys::fds::socket::ip_bytes(&a.ip()), a.port())
}
