//! Signals of a traced thread: the siginfo it is stopped for, its blocked
//! mask, its queued signals.

use super::ptrace_raw;
use crate::{nix_pid, OsResult, Pid, Result};

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

/// Size of a kernel siginfo.
pub const SIGINFO_SIZE: usize = 128;

/// The siginfo of the signal a thread is stopped for (PTRACE_GETSIGINFO,
/// on nix), as raw bytes.
pub fn get_siginfo(tid: Pid) -> Result<[u8; SIGINFO_SIZE]> {
    let si = nix::sys::ptrace::getsiginfo(nix_pid(tid)).op_tid("PTRACE_GETSIGINFO", tid)?;
    // SAFETY: siginfo_t is 128 bytes of plain integers with no padding
    // (transmute checks the size), so every byte is initialised.
    Ok(unsafe { std::mem::transmute::<libc::siginfo_t, [u8; SIGINFO_SIZE]>(si) })
}

/// Blocked signal mask.
pub fn get_sigmask(tid: Pid) -> Result<u64> {
    let mut m: u64 = 0;
    let p = &mut m as *mut u64 as usize;
    // SAFETY: PTRACE_GETSIGMASK writes `addr` (8) bytes at `data`, a live u64.
    unsafe { ptrace_raw("PTRACE_GETSIGMASK", PTRACE_GETSIGMASK, tid, 8, p) }?;
    Ok(m)
}

/// Set the blocked signal mask.
pub fn set_sigmask(tid: Pid, mask: u64) -> Result<()> {
    let p = &mask as *const u64 as usize;
    // SAFETY: PTRACE_SETSIGMASK reads `addr` (8) bytes at `data`, a live u64.
    unsafe { ptrace_raw("PTRACE_SETSIGMASK", PTRACE_SETSIGMASK, tid, 8, p) }.map(drop)
}

/// All queued signals of a thread (`shared == false`) or of its thread
/// group (`shared == true`), in queue order, as raw 128-byte siginfos.
pub fn peek_siginfo(tid: Pid, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        let a = &args as *const PeekArgs as usize;
        let d = buf.as_mut_ptr() as usize;
        // SAFETY: PTRACE_PEEKSIGINFO reads a struct ptrace_peeksiginfo_args
        // (PeekArgs has its layout) at `addr` and writes at most `nr`
        // (BATCH) siginfos of SIGINFO_SIZE bytes at `data`, which has room
        // for exactly that many.
        let n = unsafe { ptrace_raw("PTRACE_PEEKSIGINFO", PTRACE_PEEKSIGINFO, tid, a, d) }?;
        let n = n as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        // The kernel queue is bounded by RLIMIT_SIGPENDING; stop at a short read.
        if n < BATCH || out.len() > 1 << 20 {
            return Ok(out);
        }
    }
}
