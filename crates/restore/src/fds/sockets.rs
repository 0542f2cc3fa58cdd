//! Sockets the restorer builds itself, before the stub is forked: TCP
//! (with TCP_REPAIR, which needs CAP_NET_ADMIN, and packets injected from
//! the peer), UDP (queued datagrams injected), raw, ping, netlink and
//! packet sockets. The stub inherits them (forked from the restorer) and
//! takes each into its slot (`FdOp::Prebuilt`); the restorer keeps its
//! copies until the process runs:
//!
//! 1. [`prebuild`] (after planning, before the stub): make every socket
//!    of [`NetPlan`] in the order planned, put the accept queues back
//!    (replaying their handshakes), refill the UDP queues; the sockets'
//!    numbers go into `FdPlan::prebuilt` (above every staging slot of the
//!    stub's, so that the stub's first close_range leaves them).
//! 2. [`NetGuard::go`] (the process is built, just before it runs):
//!    remove the connection locks of the image, take the restored
//!    connections out of repair mode (with a window probe: both sides
//!    resynchronise at once), close the restorer's copies.
//!
//! A restore that fails before `go` closes everything in repair mode
//! (silently: no FIN or RST reaches the peer) and leaves the lock, so the
//! restore can be tried again.
//!
//! Unix sockets are made by the stub itself (`unix.rs`): their peer
//! credentials and bound paths belong to the restored process.

use super::{inet, netlink, packet, raw, udp, FdPlan};
use ckpt_image::SockOpt;
use ckpt_sys::fds::sockopt::{self, Phase};
use ckpt_sys::netlock;
use ckpt_sys::segment::RawSender;
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};

/// One socket the restorer builds.
#[derive(Debug, Clone, PartialEq)]
pub enum Prebuilt {
    Tcp(inet::TcpSpec),
    Udp(udp::UdpSpec),
    Raw(raw::RawSpec),
    Netlink(netlink::NetlinkSpec),
    Packet(packet::PacketSpec),
    /// Not a socket: a BPF map the restorer makes and fills (bpf.rs).
    BpfMap(super::bpf::BpfSpec),
}

/// What the restorer builds, and the locks it removes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetPlan {
    /// The sockets, with what each is (for messages).
    pub sockets: Vec<(String, Prebuilt)>,
    /// Connection locks (netlock tags) of the image.
    pub lock_tags: BTreeSet<String>,
    /// The connections are restored closed (`--tcp-close`): a lock that
    /// cannot be removed is only a warning.
    pub tcp_close: bool,
}

/// A socket's options as the image keeps them, in the form ckpt-sys takes.
pub(crate) fn opts_view(opts: &[SockOpt]) -> Vec<(i32, i32, &[u8])> {
    opts.iter()
        .map(|o| (o.level, o.name, &o.value[..]))
        .collect()
}

/// Set the saved options of `phase` on `fd`; the error names the option.
pub(crate) fn apply_opts(fd: i32, opts: &[SockOpt], phase: Phase) -> Result<(), String> {
    let view = opts_view(opts);
    sockopt::apply(fd, &view, phase, true).map_err(|(i, e)| {
        let (l, n, _) = view[i];
        format!("setting {}: {e}", sockopt::label(l, n))
    })
}

/// Checks of saved options for the restore: `other_user` with the saved
/// effective capabilities `caps`.
pub(crate) fn check_opts(
    what: &str,
    opts: &[SockOpt],
    caps: u64,
    other_user: bool,
    r: &mut crate::Report,
) {
    for e in sockopt::check(&opts_view(opts), caps, other_user) {
        r.errors.push(format!("{what}: {e}"));
    }
}

/// The restorer's copies of the sockets it built, until the process runs.
#[derive(Default)]
pub struct NetGuard {
    fds: Vec<OwnedFd>,
    /// Restored connections in repair mode: (index into `fds`, SO_REUSEADDR).
    repaired: Vec<(usize, bool)>,
    lock_tags: BTreeSet<String>,
    tcp_close: bool,
    done: bool,
}

impl NetGuard {
    /// The process is about to run: lift the locks, take the connections
    /// out of repair mode, let go of our copies.
    pub fn go(&mut self) -> crate::Result<()> {
        self.done = true;
        let t = std::time::Instant::now();
        let dir = std::path::Path::new(netlock::STATE_DIR);
        for tag in &self.lock_tags {
            match netlock::unlock(tag) {
                Ok(()) => netlock::remove_record(dir, tag),
                Err(e) if self.tcp_close => {
                    tracing::warn!(tag = %tag, error = %e, "the dump's connection lock could not be removed")
                }
                Err(source) => {
                    return Err(crate::Error::Sys {
                        context: format!("removing the connection lock {tag}"),
                        source,
                    })
                }
            }
        }
        for &(i, reuseaddr) in &self.repaired {
            ckpt_sys::fds::tcp_repair::finish(self.fds[i].as_raw_fd(), reuseaddr).map_err(
                |source| crate::Error::Sys {
                    context: "taking a restored TCP connection out of repair mode".into(),
                    source,
                },
            )?;
        }
        tracing::info!(
            locks = self.lock_tags.len(),
            connections = self.repaired.len(),
            elapsed = ?t.elapsed(),
            "connections live again"
        );
        self.fds.clear();
        Ok(())
    }
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        if !self.done && !self.repaired.is_empty() {
            tracing::info!("restore failed: the saved connections stay locked for another try");
        }
    }
}

/// What the kind modules' makers share.
pub(crate) struct Maker {
    /// Sends the packets a restore injects (marked for the lock).
    pub tx: RawSender,
}

/// Build the sockets of `plan.net` (see the module doc). Their numbers go
/// into `plan.prebuilt`, above the fd numbers of the processes and the
/// stubs' fixed numbers.
pub fn prebuild(plan: &mut FdPlan) -> crate::Result<NetGuard> {
    let mut g = NetGuard::default();
    g.lock_tags = plan.net.lock_tags.clone();
    g.tcp_close = plan.net.tcp_close;
    if plan.net.sockets.is_empty() {
        return Ok(g);
    }
    netlock::cleanup_stale(std::path::Path::new(netlock::STATE_DIR));
    let t = std::time::Instant::now();
    let mut m = Maker {
        tx: RawSender::new(netlock::LOCK_MARK),
    };
    // Above the stubs' fixed numbers too (see fds/place.rs).
    let min_fd = super::place::ctl_end(plan);
    plan.prebuilt.clear();
    for (what, p) in &plan.net.sockets {
        let err = |e: String| {
            crate::Error::Check(crate::Report {
                errors: vec![format!("{what}: {e}")],
                warnings: Vec::new(),
            })
        };
        let (fd, repaired) = match p {
            Prebuilt::Tcp(s) => inet::make(s, &mut m).map_err(err)?,
            Prebuilt::Udp(s) => (udp::make(s, &mut m).map_err(err)?, None),
            Prebuilt::Raw(s) => (raw::make(s).map_err(err)?, None),
            Prebuilt::Netlink(s) => (netlink::make(s).map_err(err)?, None),
            Prebuilt::Packet(s) => (packet::make(s).map_err(err)?, None),
            Prebuilt::BpfMap(s) => (super::bpf::make(s).map_err(err)?, None),
        };
        let high = above(fd.as_raw_fd(), min_fd).map_err(|source| crate::Error::Sys {
            context: format!("{what}: moving the socket above the stub's fds"),
            source,
        })?;
        drop(fd);
        plan.prebuilt.push(high.as_raw_fd());
        if let Some(reuse) = repaired {
            g.repaired.push((g.fds.len(), reuse));
        }
        g.fds.push(high);
    }
    for ((what, p), fd) in plan.net.sockets.iter().zip(&g.fds) {
        if let Prebuilt::Tcp(s) = p {
            inet::reuse_back(fd.as_raw_fd(), s).map_err(|e| {
                crate::Error::Check(crate::Report {
                    errors: vec![format!("{what}: {e}")],
                    warnings: Vec::new(),
                })
            })?;
        }
    }
    plan.prebuilt_sorted = plan.prebuilt.clone();
    plan.prebuilt_sorted.sort_unstable();
    tracing::info!(sockets = g.fds.len(), connections = g.repaired.len(), elapsed = ?t.elapsed(), "sockets built");
    Ok(g)
}

/// A duplicate of `fd` at `min` or above; the soft limit on open files is
/// raised to the hard one when `min` is beyond it.
fn above(fd: i32, min: i32) -> ckpt_sys::Result<OwnedFd> {
    match ckpt_sys::fds::dup_at_least(fd, min) {
        Err(e) if e.errno() == Some(libc::EINVAL) => {
            let (_, hard) = ckpt_sys::proc::prlimit(0, libc::RLIMIT_NOFILE, None)?;
            ckpt_sys::proc::prlimit(0, libc::RLIMIT_NOFILE, Some((hard, hard)))?;
            ckpt_sys::fds::dup_at_least(fd, min)
        }
        r => r,
    }
}
