//! A stopped thread's seccomp filters (PTRACE_SECCOMP_GET_FILTER and
//! PTRACE_SECCOMP_GET_METADATA; by hand: nix lacks both). Both need
//! CAP_SYS_ADMIN, and a tracer that is not itself under seccomp.

use super::ptrace_raw;
use crate::{Pid, Result};

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
/// Bytes of one classic BPF instruction (struct sock_filter).
pub const SOCK_FILTER_SIZE: usize = 8;

/// The program of filter `index` of thread `tid` (0: the oldest, the
/// first installed; then the one installed after it, ...), as struct
/// sock_filter[] bytes.
/// `None` past the oldest filter (ENOENT).
pub fn get_filter(tid: Pid, index: u64) -> Result<Option<Vec<u8>>> {
    // SAFETY: a null data pointer asks only for the number of instructions.
    let n = match unsafe {
        ptrace_raw(
            "PTRACE_SECCOMP_GET_FILTER",
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as usize,
            0,
        )
    } {
        Ok(n) => n as usize,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut prog = vec![0u8; n * SOCK_FILTER_SIZE];
    // SAFETY: `prog` has room for the n instructions the kernel writes
    // (the filter cannot change: filters are immutable once installed).
    let got = unsafe {
        ptrace_raw(
            "PTRACE_SECCOMP_GET_FILTER",
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as usize,
            prog.as_mut_ptr() as usize,
        )
    }?;
    prog.truncate(got as usize * SOCK_FILTER_SIZE);
    Ok(Some(prog))
}

/// The flags of filter `index` of thread `tid` (SECCOMP_FILTER_FLAG_LOG
/// is the one the kernel reports).
pub fn get_filter_flags(tid: Pid, index: u64) -> Result<u64> {
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut md = [index, 0u64];
    // SAFETY: `md` is a live struct seccomp_metadata of the size given.
    unsafe {
        ptrace_raw(
            "PTRACE_SECCOMP_GET_METADATA",
            PTRACE_SECCOMP_GET_METADATA,
            tid,
            std::mem::size_of_val(&md),
            md.as_mut_ptr() as usize,
        )
    }?;
    Ok(md[1])
}
