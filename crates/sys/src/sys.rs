//! Old home of plain system calls; each item here says where it moved.
//! Shim kept while callers migrate: it goes once they use the new paths.

/// Moved to [`crate::proc`]; shim kept while callers migrate.
pub use crate::proc::{
    exit_now, getpid, kill, pause, set_child_subreaper, set_parent_death_signal, tgkill,
};

/// Moved to [`crate::proc::wait`]; shim kept while callers migrate.
pub use crate::proc::wait::{reap_any, try_reap, wait_child_exit, wait_child_rusage, ExitKind};

/// Moved to [`crate::fds`]; shim kept while callers migrate.
pub use crate::fds::{close_range, write_fd};

/// Moved to [`crate::fds::tty::isatty`]; shim kept while callers migrate.
pub use crate::fds::tty::isatty;

/// Moved to [`crate::fds::regular::start_writeback`]; shim kept while callers migrate.
pub use crate::fds::regular::start_writeback;

/// Moved to [`crate::ptrace::xsave_info`]; shim kept while callers migrate.
pub use crate::ptrace::xsave_info;
