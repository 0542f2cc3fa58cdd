//! The one error type of ckpt-restore.

use crate::Report;

/// Everything that can make a restore fail. Each message names what failed
/// (the fd, the thread, the mapping, the pid) and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`crate::check()`] found problems: nothing was started.
    #[error("the image cannot be restored here: {}", .0.errors.join("; "))]
    Check(Report),

    /// The saved pid (or a tid) is taken by another task.
    #[error("pid {pid} is in use by {holder}")]
    PidInUse { pid: i32, holder: String },

    /// Reading the image failed.
    #[error("{context}: {source}")]
    Image {
        context: String,
        #[source]
        source: ckpt_image::Error,
    },

    /// Setting up one fd of the stub failed (`what` is e.g. `fd 3: /tmp/x`).
    /// The OS error is said in the message, not again as a source.
    #[error("{what}: {}", os_msg(.error))]
    Fd { what: String, error: std::io::Error },

    /// A system call (direct, or injected into the restored process) failed.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: ckpt_sys::Error,
    },

    /// A local I/O operation, or a system call injected into the process
    /// being built, failed.
    /// The OS error is said in the message, not again as a source.
    #[error("{context}: {}", os_msg(.error))]
    Io {
        context: String,
        error: std::io::Error,
    },

    /// The restore was stopped ([`crate::Cancel`], e.g. on SIGTERM): what
    /// was built is gone.
    #[error("restore cancelled by {}; nothing was left running", signal_name(*signal))]
    Cancelled { signal: i32 },

    /// The process could not be put back into its cgroup v2 group.
    #[error("cgroup {path}: {what}")]
    Cgroup { path: String, what: String },

    /// A SysV IPC object could not be made again or reused.
    #[error("SysV {what}")]
    Ipc { what: String },

    /// The restore stub or the process being built went away or misbehaved.
    #[error("restore stub (pid {pid}): {what}")]
    Stub { pid: i32, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// "SIGTERM" for 15.
fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}

/// An OS error's text without std's " (os error N)" suffix.
pub(crate) fn os_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match (e.raw_os_error(), s.rfind(" (os error ")) {
        (Some(_), Some(i)) => s[..i].to_string(),
        _ => s,
    }
}

/// Attach a context to ckpt-sys errors.
pub(crate) trait SysContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for std::result::Result<T, ckpt_sys::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: context(),
            source,
        })
    }
}

impl<T> SysContext<T> for std::result::Result<T, ckpt_image::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Image {
            context: context(),
            source,
        })
    }
}

impl<T> SysContext<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            error: source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each thing once: an OS error is said in the message, and not again
    /// as a source that a chain formatter would append
    /// ("Invalid argument: Invalid argument (os error 22)").
    #[test]
    fn os_errors_are_said_once() {
        let e = Error::Fd {
            what: "fd 3: /x".into(),
            error: std::io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(e.to_string(), "fd 3: /x: Invalid argument");
        assert!(std::error::Error::source(&e).is_none());
        let e: Result<()> =
            Err(std::io::Error::from_raw_os_error(libc::EISDIR)).ctx(|| "opening /y".into());
        let e = e.unwrap_err();
        assert_eq!(e.to_string(), "opening /y: Is a directory");
        assert!(std::error::Error::source(&e).is_none());
    }
}
