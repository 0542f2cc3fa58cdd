//! kcmp(2): whether two processes share a kernel object (by hand: nix
//! lacks it).

use crate::{last_os, Pid, Result};

const KCMP_FILE: libc::c_int = 0;

/// Whether fd `fd1` of `pid1` and fd `fd2` of `pid2` are the same open file
/// description (kcmp(KCMP_FILE)). Needs ptrace access to both processes.
/// An `ENOSYS` error means the kernel has no kcmp.
pub fn kcmp_same_file(pid1: Pid, pid2: Pid, fd1: i32, fd2: i32) -> Result<bool> {
    // SAFETY: kcmp takes only integer arguments and touches no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE as libc::c_long,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(last_os("kcmp(KCMP_FILE)", pid1));
    }
    Ok(r == 0)
}
