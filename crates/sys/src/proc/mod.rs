//! Processes and threads by pid: ids, signals, the parent-death signal,
//! subreaping, resource limits, robust futex lists; [`group`] for sessions
//! and process groups; [`wait`] for waiting
//! and reaping, [`sched`] for scheduling, [`pidfd`] for another process's
//! fds, [`job`] for job control (groups, sessions, waiting for signals and
//! for a child's stops), [`signals`] for this process's own signal mask.
//!
//! Calls that take a signal number are made by hand: nix's `Signal` enum
//! has no realtime signals, and ckpt forwards and re-queues any signal.

pub mod group;
pub mod job;
pub mod pidfd;
pub mod sched;
pub mod signals;
pub mod wait;

use crate::{last_os, Error, OsResult, Pid, Result};

/// A /proc text file (stat, status, maps) read in as few reads as its
/// size allows: procfs files report no size, and a plain read_to_string
/// stats the file and then grows its buffer from 32 bytes, one read each.
pub fn read_text(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// getpid(2). (glibc keeps no pid cache, so this is right in a child
/// made by a raw clone3 too.)
pub fn getpid() -> Pid {
    nix::unistd::getpid().as_raw()
}

/// gettid(2): the calling thread's id.
pub fn gettid() -> Pid {
    nix::unistd::gettid().as_raw()
}

/// getppid(2).
pub fn getppid() -> Pid {
    nix::unistd::getppid().as_raw()
}

/// kill(2) with any signal number (0: only check).
pub fn kill(pid: Pid, sig: i32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::kill(pid, sig) };
    if r < 0 {
        return Err(last_os("kill", pid));
    }
    Ok(())
}

/// tgkill(2): a signal to one thread (by hand: nix lacks it).
pub fn tgkill(tgid: Pid, tid: Pid, sig: i32) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    if r < 0 {
        return Err(last_os("tgkill", tid));
    }
    Ok(())
}

/// Sleep until a signal arrives (pause(2)).
pub fn pause() {
    nix::unistd::pause();
}

/// _exit(2): leave at once, without running atexit handlers or destructors
/// (the right way out of a forked child). By hand: nix lacks it.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: terminates the calling process; nothing of ours is left to
    // be used.
    unsafe { libc::_exit(code) }
}

/// prctl(PR_SET_PDEATHSIG) with any signal number.
pub fn set_parent_death_signal(sig: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if r < 0 {
        return Err(last_os("prctl(PR_SET_PDEATHSIG)", 0));
    }
    Ok(())
}

/// Make the calling process a child subreaper: orphaned descendants are
/// reparented to it instead of init (tests use it to reap detached restores).
pub fn set_child_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).op("prctl(PR_SET_CHILD_SUBREAPER)")
}

/// A resource limit: (soft, hard); `u64::MAX` is unlimited.
pub type Limit = (u64, u64);

/// prlimit(2) of another process (pid 0: the caller): read the limit and,
/// with `new`, set it. Returns the old limit. By hand: nix's rlimit calls
/// are for the calling process only.
pub fn prlimit(pid: Pid, resource: u32, new: Option<Limit>) -> Result<Limit> {
    let newl = new.map(|(s, h)| libc::rlimit64 {
        rlim_cur: s,
        rlim_max: h,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let newp = newl
        .as_ref()
        .map_or(std::ptr::null(), |l| l as *const libc::rlimit64);
    // SAFETY: both pointers are null or point at live rlimit64 values.
    let r = unsafe { libc::prlimit64(pid, resource as _, newp, &mut old) };
    if r < 0 {
        return Err(last_os("prlimit", pid));
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// The robust futex list of a thread: (head, len). Works from outside. By
/// hand: nix lacks it.
pub fn get_robust_list(tid: Pid) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers point at live locals of the right size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    if r < 0 {
        return Err(last_os("get_robust_list", tid));
    }
    Ok((head, len as u64))
}

/// Have the child of `cmd` close every fd from `first` up just before it
/// execs (close_range(2) in a pre_exec hook), so that it inherits only
/// fds `0..first`. Errors of close_range are ignored, as the exec goes on
/// either way.
pub fn close_fds_before_exec(
    cmd: &mut std::process::Command,
    first: u32,
) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: it makes one system call and
    // allocates nothing (an error is built from errno alone, then dropped).
    unsafe {
        cmd.pre_exec(move || {
            let _ = crate::fds::close_range(first, u32::MAX);
            Ok(())
        })
    }
}

/// Ignore signal `sig` from now on (SIG_IGN), in this process: a daemon
/// that must outlive its terminal's SIGHUP and SIGINT.
pub fn ignore_signal(sig: i32) -> Result<()> {
    let sig = nix::sys::signal::Signal::try_from(sig)
        .map_err(|e| crate::os_errno("sigaction", 0, e as i32))?;
    // SAFETY: SIG_IGN installs no handler, so nothing of ours runs in
    // signal context.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }
        .map(drop)
        .map_err(|e| crate::os_errno("sigaction", 0, e as i32))
}

/// /proc/`pid`/cgroup as the process itself sees it (from inside its
/// cgroup namespace): read by a short-lived thread of ours that joins that
/// namespace first (the rest of this process keeps its own).
pub fn cgroup_in_own_ns(pid: Pid) -> Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/cgroup")).map_err(|e| Error::Os {
        op: "open /proc/PID/ns/cgroup",
        tid: pid,
        source: e,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscall on an fd we hold open; it changes only
            // this thread's cgroup namespace, and the thread ends here.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWCGROUP) } < 0 {
                return Err(last_os("setns(CLONE_NEWCGROUP)", pid));
            }
            std::fs::read(format!("/proc/{pid}/cgroup")).map_err(|e| Error::Os {
                op: "read /proc/PID/cgroup in its cgroup namespace",
                tid: pid,
                source: e,
            })
        })
        .join()
        .unwrap_or_else(|_| Err(last_os("a thread reading /proc/PID/cgroup", pid)))
    })
}

/// Start time of `pid` (field 22 of /proc/PID/stat, in clock ticks since
/// boot), None if gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// When `pid` started, in whole seconds since the epoch (field 22 of
/// /proc/PID/stat over the clock tick, plus the boot time of /proc/stat),
/// rounded down; None if it is gone or the files cannot be read.
pub fn started_at(pid: i32) -> Option<u64> {
    let ticks = start_time(pid)?;
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)? as u64;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / per_sec)
}
