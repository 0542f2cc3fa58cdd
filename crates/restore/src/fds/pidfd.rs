//! pidfds. One of a process that had exited and been reaped is made by
//! the stub: a child of its own at the saved pid (when that pid is free;
//! else anywhere: a dead pidfd shows no pid) that exits at once and is
//! reaped. One of a live process or thread is made once the restored
//! process has its threads, by a pidfd_open injected into it ([`late`]):
//! the process itself, one of its threads (PIDFD_THREAD), or a process
//! outside the image that still runs under the saved pid.

use super::{Builder, FdOp};
use crate::error::Result;
use crate::remote::Remote;
use crate::stub::Child;
use ckpt_image::Pidfd;
use std::collections::BTreeMap;
use std::os::fd::IntoRawFd;

/// PIDFD_THREAD (O_EXCL) and PIDFD_NONBLOCK (O_NONBLOCK).
const PIDFD_THREAD: i32 = libc::O_EXCL;

/// An fd made by system calls injected into the restored process once it
/// has its threads: a pidfd of `pid` (a saved id: the process's own, one of
/// its threads', or a process outside the image) with `flags`, placed at
/// each of `fds` (number, close-on-exec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateFd {
    pub what: String,
    pub pid: i32,
    pub flags: u32,
    pub fds: Vec<(i32, bool)>,
}

pub(super) fn plan(b: &mut Builder, g: usize, p: &Pidfd) {
    let (what, flags) = (b.what(g), b.flags(g));
    let nonblock = flags & libc::O_NONBLOCK != 0;
    if p.dead {
        let s = b.slot();
        let pid = (p.pid > 0 && p.pid != b.proc.pid).then_some(p.pid);
        b.op(
            &what,
            FdOp::DeadPidfd {
                slot: s,
                pid,
                nonblock,
            },
        );
        b.slot_of[g] = Some(s);
        return;
    }
    let own = p.pid == b.proc.pid || b.proc.threads.iter().any(|t| t.tid == p.pid);
    if !own {
        match std::fs::metadata(format!("/proc/{}", p.pid)) {
            Ok(_) => b.warning(format!(
                "{what}: a pidfd of pid {}, which is not in the image: reopened on the process that runs under that pid now",
                p.pid
            )),
            Err(_) => {
                b.error(format!(
                    "{what}: a pidfd of pid {}, which is not in the image and does not run any more",
                    p.pid
                ));
                return;
            }
        }
    }
    let fds = b.groups[g].fds.iter().map(|f| (f.fd, f.cloexec)).collect();
    b.plan.late.push(LateFd {
        what,
        pid: p.pid,
        // (b.flags() drops O_EXCL, which is PIDFD_THREAD here.)
        flags: (b.groups[g].file.flags as i32 & (libc::O_NONBLOCK | PIDFD_THREAD)) as u32,
        fds,
    });
    // Not placed by the stub: `late` does it.
}

/// FdOp::DeadPidfd: at the saved pid when it is free.
pub(super) fn dead(
    c: &mut Child<'_>,
    slot: usize,
    pid: Option<i32>,
    nonblock: bool,
) -> ckpt_sys::Result<()> {
    let fd = match ckpt_sys::clone::dead_pidfd(pid, nonblock) {
        Err(e) if pid.is_some() && matches!(e.errno(), Some(libc::EEXIST | libc::EPERM)) => {
            ckpt_sys::clone::dead_pidfd(None, nonblock)?
        }
        r => r?,
    };
    c.new_fd(slot, fd.into_raw_fd())?;
    Ok(())
}

/// The late fds of the process (see [`LateFd`]), injected through its
/// main thread; `ids` maps saved pids and tids to the restored ones.
pub(crate) fn late(main: &mut Remote, late: &[LateFd], ids: &BTreeMap<i32, i32>) -> Result<()> {
    for l in late {
        let pid = ids.get(&l.pid).copied().unwrap_or(l.pid);
        let fd = main.call(
            &format!("{}: pidfd_open({pid})", l.what),
            libc::SYS_pidfd_open,
            &[pid as u64, u64::from(l.flags)],
        )?;
        for &(n, cloexec) in &l.fds {
            if n as u64 == fd {
                // pidfd_open's fds are close-on-exec.
                let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
                main.call(
                    &format!("{}: fcntl(F_SETFD) of fd {n}", l.what),
                    libc::SYS_fcntl,
                    &[fd, libc::F_SETFD as u64, flags as u64],
                )?;
                continue;
            }
            main.call(
                &format!("{}: dup3 to fd {n}", l.what),
                libc::SYS_dup3,
                &[
                    fd,
                    n as u64,
                    if cloexec { libc::O_CLOEXEC as u64 } else { 0 },
                ],
            )?;
        }
        if !l.fds.iter().any(|&(n, _)| n as u64 == fd) {
            main.call("close", libc::SYS_close, &[fd])?;
        }
    }
    Ok(())
}
