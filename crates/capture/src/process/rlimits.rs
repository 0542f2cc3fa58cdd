//! Resource limits: read with prlimit from outside when possible, else
//! asked of the process itself (remote.rs).

use ckpt_sys::Pid;

/// The limits by number (RLIMIT_CPU = 0, ...), as the model names them.
pub(crate) const RLIMIT_NAMES: [&str; 16] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

/// Every resource limit of `pid`, read with prlimit from outside; None
/// when any cannot be (then the process is asked).
pub(crate) fn from_outside(pid: Pid) -> Option<Vec<(u64, u64)>> {
    (0..RLIMIT_NAMES.len() as u32)
        .map(|res| ckpt_sys::proc::prlimit(pid, res, None).ok())
        .collect()
}
