//! The one error type of ckpt-capture.

use ckpt_sys::Pid;

/// Everything that can make a dump fail. Each message names what could not
/// be saved (the process, thread, fd or memory area).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pid {pid} does not exist")]
    NoSuchProcess { pid: Pid },
    #[error("pid {pid} is this process itself; ckpt cannot dump itself")]
    Ourselves { pid: Pid },
    #[error("pid {pid} is a thread of process {tgid}; dump pid {tgid} instead")]
    NotProcess { pid: Pid, tgid: Pid },
    #[error("pid {pid} is already traced by pid {tracer}")]
    AlreadyTraced { pid: Pid, tracer: Pid },
    #[error("pid {pid} is a zombie")]
    Zombie { pid: Pid },
    #[error("pid {pid} is a kernel thread")]
    KernelThread { pid: Pid },
    #[error("pid {pid} exited while being dumped")]
    Exited { pid: Pid },
    /// `--no-tree` on a process with children.
    #[error("pid {pid} has children {children}: dump the whole tree (without --no-tree), or end them first")]
    HasChildren { pid: Pid, children: String },
    /// Two processes of the tree share one address space (vfork, CLONE_VM).
    #[error("pid {pid} shares its address space with pid {with} (a vfork() child, or a process made with CLONE_VM): ckpt cannot save processes that share memory that way")]
    SharesMemory { pid: Pid, with: Pid },
    /// A kernel table shared in a way a restore cannot rebuild.
    #[error("pid {pid} shares its {table} with pid {with}, which is not its parent: ckpt restores only tables a parent shares with its children")]
    SharedTable {
        pid: Pid,
        with: Pid,
        table: &'static str,
    },
    /// A thread that does not stop (uninterruptible sleep).
    #[error("pid {pid}: thread {tid} did not stop within {secs} s ({state}); nothing was changed")]
    WontStop {
        pid: Pid,
        tid: Pid,
        secs: u64,
        state: String,
    },
    /// An error about an fd of a process of the tree other than its root.
    #[error("pid {pid}: {source}")]
    InProcess {
        pid: Pid,
        #[source]
        source: Box<Error>,
    },
    /// The caller may not dump this process (see `check_target`).
    #[error("pid {pid} {why}")]
    NotPermitted { pid: Pid, why: String },

    /// A ptrace / injection / remote-memory operation failed.
    #[error("pid {pid}: {what}: {source}")]
    Sys {
        pid: Pid,
        what: String,
        #[source]
        source: ckpt_sys::Error,
    },
    /// Reading a /proc file (or another local file) failed.
    #[error("pid {pid}: {what}: {source}")]
    Io {
        pid: Pid,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A /proc file did not have the expected format: `line` (1-based) is
    /// the line that could not be parsed, 0 when the file as a whole is
    /// wrong (a line missing, say).
    #[error("pid {pid}: cannot parse {file}{}: {what}", at_line(*line))]
    Parse {
        pid: Pid,
        file: String,
        line: usize,
        what: String,
    },

    /// An fd that cannot be saved (unsupported kind or failed query).
    #[error("fd {fd}: {what}")]
    Fd { fd: i32, what: String },
    #[error("fd {fd}: {what}: {source}")]
    FdIo {
        fd: i32,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fd {fd}: {what}: {source}")]
    FdSys {
        fd: i32,
        what: String,
        #[source]
        source: ckpt_sys::Error,
    },

    /// A memory area that cannot be saved.
    #[error("pid {pid}: memory area {start:#x}-{end:#x} ({name}): {what}")]
    Vma {
        pid: Pid,
        start: u64,
        end: u64,
        name: String,
        what: String,
    },

    /// The copy-on-write snapshot of a running process could not be
    /// completed (pages unmapped or discarded by the process before they
    /// were copied, ...): `what` says which.
    #[error("pid {pid}: the memory snapshot failed: {what}")]
    Snapshot { pid: Pid, what: String },
    /// The parent image of an incremental dump cannot be used.
    #[error("parent image {path}: {what}")]
    Parent { path: String, what: String },

    /// Creating, writing or committing the image failed.
    #[error("writing the image: {source}")]
    Image {
        #[source]
        source: ckpt_image::Error,
    },
    /// The output could not be written.
    #[error("writing the image: {source}")]
    Output {
        #[source]
        source: std::io::Error,
    },
    /// The process could not be killed or released after the dump.
    #[error("pid {pid}: after the image was written: {what}")]
    Release { pid: Pid, what: String },

    /// The process that asked for the dump went away while its worker ran
    /// it (see [`crate::dump()`]): the dump was abandoned, no image written,
    /// and the target let go as it was.
    #[error("pid {pid}: dump abandoned: the ckpt process that started it is gone")]
    Abandoned { pid: Pid },
    /// SIGINT, SIGTERM or SIGHUP reached the dump (see [`crate::dump()`]):
    /// it was abandoned like any failure, no image written, the target
    /// let go as it was. Commands exit with 128 + `signal`.
    #[error("pid {pid}: dump cancelled by {}; no image was written and the process goes on as it was", signal_name(*signal))]
    Cancelled { pid: Pid, signal: i32 },
    /// The dump ran in a worker process (see [`crate::dump()`]) and failed
    /// there with this message; or the worker itself died.
    #[error("{message}")]
    Worker { message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// An OS error's text without std's " (os error N)" suffix.
pub(crate) fn os_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match (e.raw_os_error(), s.rfind(" (os error ")) {
        (Some(_), Some(i)) => s[..i].to_string(),
        _ => s,
    }
}

/// "SIGTERM" for 15.
pub(crate) fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        s => format!("signal {s}"),
    }
}

fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
}

impl Error {
    /// This error of process `pid`, said with its pid where it does not
    /// already name it (fd errors): for a process other than the root.
    pub(crate) fn of_process(self, pid: Pid) -> Error {
        match self {
            Error::Fd { .. } | Error::FdIo { .. } | Error::FdSys { .. } => Error::InProcess {
                pid,
                source: Box::new(self),
            },
            e => e,
        }
    }
}

impl From<ckpt_image::Error> for Error {
    fn from(source: ckpt_image::Error) -> Self {
        Error::Image { source }
    }
}

/// Attach a "pid N: what" context to sys errors.
pub(crate) trait SysCtx<T> {
    fn ctx(self, pid: Pid, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysCtx<T> for std::result::Result<T, ckpt_sys::Error> {
    fn ctx(self, pid: Pid, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| match source {
            ckpt_sys::Error::Gone { .. } => Error::Exited { pid },
            source => Error::Sys {
                pid,
                what: what(),
                source,
            },
        })
    }
}

pub(crate) trait IoCtx<T> {
    fn ctx(self, pid: Pid, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoCtx<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, pid: Pid, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            pid,
            what: what(),
            source,
        })
    }
}
