//! ckpt-sys: the one place in ckpt that uses `unsafe`.
//!
//! Thin, checked wrappers over the Linux interfaces checkpoint/restore
//! needs, one module per kernel object:
//!
//! - [`ptrace`]: seizing threads, their stops, registers, register sets
//!   (XSAVE), signal masks and queued siginfos; [`inject`] runs system calls
//!   inside a stopped thread; [`rseq`] reads a thread's rseq registration.
//! - [`proc`]: processes and threads by pid (signals, limits, parent death
//!   signal), [`proc::wait`] (waiting for and reaping children),
//!   [`proc::sched`] (affinity, policy, nice), [`proc::pidfd`] (another
//!   process's fds) and [`proc::job`] (job control).
//! - [`mm`]: the page size and another process's memory.
//! - [`fds`]: one module per kind of fd ([`fds::pipe`], [`fds::eventfd`],
//!   [`fds::timerfd`], [`fds::signalfd`], [`fds::epoll`], [`fds::inotify`],
//!   [`fds::memfd`], [`fds::unix`], [`fds::inet`], [`fds::socket`],
//!   [`fds::tty`], [`fds::regular`]) and the calls common to all of them;
//!   [`fs`] for paths.
//! - [`netlock`]: the netfilter lock that holds live TCP connections while
//!   they are saved and until they are restored; [`segment`]: packets a
//!   restore injects (a peer's FIN, an accept-queue handshake, datagrams).
//! - [`creds`] (fs ids, capabilities), [`sock_diag`] (NETLINK_SOCK_DIAG),
//!   [`userfaultfd`], [`clone`] (clone3 with set_tid), [`kcmp`], [`ipc`]
//!   (System V shared memory, semaphores and message queues).
//!
//! Where the `nix` crate has the call, the wrapper is built on it; the
//! system calls nix lacks are made here by hand (see each module).
//!
//! Everything here is x86_64 Linux; higher crates stay
//! architecture-neutral where they can. Every fallible call returns
//! [`Error`], which names the operation and the thread it was applied to.
//!
//! Conventions for fds: a call that makes a new fd returns an
//! [`OwnedFd`](std::os::fd::OwnedFd); a call on an existing fd takes
//! `impl AsRawFd`, which is a `BorrowedFd` or a plain fd number (`i32`):
//! restore's stub arranges its fd table by number. The calls the stub
//! makes after its fork allocate nothing and only make their system call
//! (async-signal-safe).

// The one crate of the workspace allowed `unsafe`: the workspace lints deny
// it everywhere else (see the root Cargo.toml).
#![allow(unsafe_code)]

pub mod bpf;
pub mod cgroupfs;
pub mod clone;
pub mod creds;
/// libc calls the ckptfs daemon needs (local time).
pub mod daemon;
pub mod fds;
pub mod fs;
pub mod heap;
pub mod inject;
pub mod ipc;
pub mod kcmp;
pub mod mm;
pub mod netlock;
pub mod proc;
pub mod ptrace;
pub mod rseq;
pub mod segment;
pub mod sock_diag;
pub mod userfaultfd;

pub use inject::Injector;
pub use ptrace::{Regs, Stop};

/// Process or thread id.
pub type Pid = i32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op} (tid {tid}): {source}")]
    Os {
        op: &'static str,
        tid: Pid,
        #[source]
        source: std::io::Error,
    },
    /// An injected system call ran but returned an error.
    #[error("injected {name} in tid {tid} failed: {source}")]
    Injected {
        name: String,
        tid: Pid,
        #[source]
        source: std::io::Error,
    },
    /// The thread did not stop the way the protocol expects.
    #[error("tid {tid}: {what}")]
    Unexpected { tid: Pid, what: String },
    /// The thread is gone (exited or killed) while we were working on it.
    #[error("tid {tid} exited ({how}) while being traced")]
    Gone { tid: Pid, how: String },
    /// A program run for us (nft, for the connection lock) failed or is
    /// missing.
    #[error("{tool}: {what}")]
    Tool { tool: &'static str, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } | Error::Injected { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The errno of the last failed libc call, as an [`Error::Os`].
pub(crate) fn last_os(op: &'static str, tid: Pid) -> Error {
    Error::Os {
        op,
        tid,
        source: std::io::Error::last_os_error(),
    }
}

/// An errno of our choosing, as an [`Error::Os`].
pub(crate) fn os_errno(op: &'static str, tid: Pid, errno: i32) -> Error {
    Error::Os {
        op,
        tid,
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// A nix result as ours: the errno becomes an [`Error::Os`] naming the
/// operation and the thread (0: none in particular). Allocates nothing.
pub(crate) trait OsResult<T> {
    fn op(self, op: &'static str) -> Result<T>;
    fn op_tid(self, op: &'static str, tid: Pid) -> Result<T>;
}

impl<T> OsResult<T> for nix::Result<T> {
    fn op(self, op: &'static str) -> Result<T> {
        self.op_tid(op, 0)
    }
    fn op_tid(self, op: &'static str, tid: Pid) -> Result<T> {
        self.map_err(|e| os_errno(op, tid, e as i32))
    }
}

/// A pid as nix's.
pub(crate) fn nix_pid(pid: Pid) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid)
}
