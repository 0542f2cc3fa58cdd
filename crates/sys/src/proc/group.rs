//! Sessions and process groups, and ending a process with a given wait
//! status (a restored zombie). Every call here allocates nothing: restore's
//! stubs make them after a fork.

use crate::{last_os, nix_pid, OsResult, Pid, Result};

/// setsid(2): a new session (and process group) led by the caller.
pub fn setsid() -> Result<Pid> {
    nix::unistd::setsid().op("setsid").map(|p| p.as_raw())
}

/// setpgid(2): move process `pid` (0: the caller) into group `pgid` (0:
/// a new group led by `pid`).
pub fn setpgid(pid: Pid, pgid: Pid) -> Result<()> {
    nix::unistd::setpgid(nix_pid(pid), nix_pid(pgid)).op_tid("setpgid", pid)
}

/// getpgid(2) of `pid` (0: the caller).
pub fn getpgid(pid: Pid) -> Result<Pid> {
    nix::unistd::getpgid(Some(nix_pid(pid)))
        .op_tid("getpgid", pid)
        .map(|p| p.as_raw())
}

/// getsid(2) of `pid` (0: the caller).
pub fn getsid(pid: Pid) -> Result<Pid> {
    nix::unistd::getsid(Some(nix_pid(pid)))
        .op_tid("getsid", pid)
        .map(|p| p.as_raw())
}

/// Whether the caller is a child subreaper (PR_GET_CHILD_SUBREAPER).
pub fn is_child_subreaper() -> Result<bool> {
    nix::sys::prctl::get_child_subreaper().op("prctl(PR_GET_CHILD_SUBREAPER)")
}

/// Make the caller a child subreaper, or stop being one.
pub fn set_child_subreaper_to(on: bool) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(on).op("prctl(PR_SET_CHILD_SUBREAPER)")
}

/// Put signal `sig` back to its default action (SIG_DFL), any signal number.
pub fn set_default_action(sig: i32) -> Result<()> {
    // SAFETY: an all-zero sigaction with sa_handler = SIG_DFL is valid; the
    // pointers point at live locals for the duration of the call.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r < 0 {
        return Err(last_os("sigaction", 0));
    }
    Ok(())
}

/// Unblock every signal of the calling thread.
pub fn unblock_all_signals() -> Result<()> {
    // SAFETY: an empty set built by sigemptyset; pointers to live locals.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(crate::os_errno("pthread_sigmask", 0, r));
    }
    Ok(())
}

/// Set the calling thread's name (prctl(PR_SET_NAME), at most 15 bytes,
/// cut at a NUL). Allocates nothing.
pub fn set_name(name: &[u8]) -> Result<()> {
    let mut buf = [0u8; 16];
    let n = name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(name.len())
        .min(15);
    buf[..n].copy_from_slice(&name[..n]);
    let c = std::ffi::CStr::from_bytes_until_nul(&buf).unwrap_or(c"");
    nix::sys::prctl::set_name(c).op("prctl(PR_SET_NAME)")
}

/// End the calling process so that its parent's wait() reports the wait
/// status `status`: `exit_group(code)` for a normal exit, else death by the
/// signal in its low 7 bits (its default action restored and unblocked,
/// without a core dump: the core flag 0x80 is not reproduced). Never
/// returns; a status that cannot be reproduced ends with exit code 255.
pub fn exit_with_status(status: i32) -> ! {
    let sig = status & 0x7f;
    if sig == 0 {
        crate::proc::exit_now((status >> 8) & 0xff);
    }
    // No core file: RLIMIT_CORE 0 (a core dump would also take time).
    let _ = crate::proc::prlimit(0, libc::RLIMIT_CORE, Some((0, 0)));
    let _ = set_default_action(sig);
    let _ = unblock_all_signals();
    let _ = crate::proc::kill(crate::proc::getpid(), sig);
    // A signal whose default is to be ignored or to stop does not end us.
    crate::proc::exit_now(255)
}
