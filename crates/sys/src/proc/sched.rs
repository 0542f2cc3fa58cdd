//! Scheduling of a thread: CPU affinity, policy and priority, nice value.
//!
//! By hand: nix has no sched_setscheduler, sched_getparam, setpriority or
//! getpriority, and its affinity calls use a fixed 1024-CPU set and drop
//! the size the kernel reports (which the saved mask keeps).

use crate::{last_os, Pid, Result};

/// sched_setaffinity(2) of a thread; `mask` is a bitmap, 64 cpus per word.
pub fn sched_setaffinity(tid: Pid, mask: &[u64]) -> Result<()> {
    // SAFETY: the kernel reads `len` bytes from the live slice.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid,
            std::mem::size_of_val(mask),
            mask.as_ptr(),
        )
    };
    if r < 0 {
        return Err(last_os("sched_setaffinity", tid));
    }
    Ok(())
}

/// sched_getaffinity(2) of a thread, 64 cpus per word (as many words as
/// the kernel's CPU mask has).
pub fn sched_getaffinity(tid: Pid) -> Result<Vec<u64>> {
    // 4096 CPUs: as much as a query from inside the process reads.
    let mut mask = vec![0u64; 64];
    // SAFETY: the kernel writes at most `len` bytes into the live buffer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            mask.len() * 8,
            mask.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(last_os("sched_getaffinity", tid));
    }
    mask.truncate((r as usize).div_ceil(8));
    Ok(mask)
}

/// sched_setscheduler(2) of a thread.
pub fn sched_setscheduler(tid: Pid, policy: u32, priority: u32) -> Result<()> {
    let p = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: `p` is a valid sched_param.
    let r = unsafe { libc::sched_setscheduler(tid, policy as i32, &p) };
    if r < 0 {
        return Err(last_os("sched_setscheduler", tid));
    }
    Ok(())
}

/// (policy, rt priority) of a thread.
pub fn sched_getscheduler(tid: Pid) -> Result<(u32, u32)> {
    let mut p = libc::sched_param { sched_priority: 0 };
    // SAFETY: integer argument only.
    let pol = unsafe { libc::sched_getscheduler(tid) };
    // SAFETY: `p` is a valid out-pointer.
    let r = unsafe { libc::sched_getparam(tid, &mut p) };
    if pol < 0 || r < 0 {
        return Err(last_os("sched_getscheduler", tid));
    }
    Ok((pol as u32, p.sched_priority as u32))
}

/// setpriority(PRIO_PROCESS, tid, nice): the nice value of one thread.
pub fn set_nice(tid: Pid, nice: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r < 0 {
        return Err(last_os("setpriority", tid));
    }
    Ok(())
}

/// The nice value of one thread (getpriority(2)).
pub fn get_nice(tid: Pid) -> Result<i32> {
    // getpriority can legitimately return -1: use the raw syscall, which
    // returns 20 - nice.
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if r < 0 {
        return Err(last_os("getpriority", tid));
    }
    Ok(20 - r as i32)
}

/// IOPRIO_WHO_PROCESS: `which` of ioprio_get/ioprio_set for one thread.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

/// The I/O priority of one thread (ioprio_get(2)): class << 13 | level; 0
/// when it has none of its own (it follows its nice value).
pub fn ioprio_get(tid: Pid) -> Result<u32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if r < 0 {
        return Err(last_os("ioprio_get", tid));
    }
    Ok(r as u32)
}

/// Set the I/O priority of one thread (ioprio_set(2)), as [`ioprio_get`]
/// gives it. The kernel checks the caller's rights (the realtime class
/// needs CAP_SYS_NICE or CAP_SYS_ADMIN).
pub fn ioprio_set(tid: Pid, ioprio: u32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            ioprio as libc::c_long,
        )
    };
    if r < 0 {
        return Err(last_os("ioprio_set", tid));
    }
    Ok(())
}
