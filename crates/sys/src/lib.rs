//! ckpt-sys: the one place in ckpt that uses `unsafe`.
//!
//! Thin, checked wrappers over the Linux interfaces checkpoint/restore needs:
//! ptrace (seize, stops, register sets, signal queues), syscall injection
//! into a stopped thread, cross-process memory access, clone3 with a chosen
//! pid, and a few plain syscalls without a std equivalent. Everything here is
//! x86_64 Linux; higher crates stay architecture-neutral where they can.
//!
//! Every fallible call returns [`Error`], which names the operation and the
//! thread it was applied to.

pub mod clone;
/// Credentials of the calling thread: fs ids switched to another user's, access(2) with them. Used by restore.
pub mod creds;
/// libc calls the ckptfs daemon needs (local time).
pub mod daemon;
pub mod inject;
pub mod ptrace;
pub mod remote;
pub mod sys;

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

/// Safe wrappers used by capture (ioctl queries and the like). Owned by ckpt-capture's authors.
pub mod query;
/// Safe wrappers used by restore (fd setup in the stub and the like). Owned by ckpt-restore's authors.
pub mod setup;
