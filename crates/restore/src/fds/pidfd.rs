//! pidfds. One of a process that had exited and been reaped is made by
//! the stub: a child of its own at the saved pid (when that pid is free;
//! else anywhere: a dead pidfd shows no pid) that exits at once and is
//! reaped; the other descriptions of that process (the same pidfs inode)
//! are pidfd_open()ed on that child before it is reaped, so that they
//! share its inode again. One of a live process or thread is made once the restored
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

/// What is done by system calls injected into the restored process once
/// it has its threads, in order (after the stub's fds are all placed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateFd {
    /// The process that makes it (index in the image's processes).
    pub proc: usize,
    /// For error messages (`fd 4: anon_inode:[pidfd]`).
    pub what: String,
    pub op: LateOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateOp {
    /// A pidfd of `pid` (a saved id: the process's own, one of its
    /// threads', or a process outside the image) with `flags`
    /// (PIDFD_NONBLOCK, PIDFD_THREAD), placed at each of `fds` (number,
    /// close-on-exec).
    Pidfd {
        pid: i32,
        flags: u32,
        fds: Vec<(i32, bool)>,
    },
    /// A file under /proc/`pid` (a saved id of the image) at `rest`, opened
    /// with `flags` (no O_CLOEXEC) at offset `pos`, placed at each of
    /// `fds` (regular.rs).
    ProcOpen {
        pid: i32,
        rest: Vec<u8>,
        flags: i32,
        pos: u64,
        fds: Vec<(i32, bool)>,
    },
    /// EPOLL_CTL_ADD of fd `fd` (made late) to epoll fd `epfd`.
    EpollAdd {
        epfd: i32,
        fd: i32,
        events: u32,
        data: u64,
    },
}

pub(super) fn plan(b: &mut Builder, g: usize, p: &Pidfd) {
    let (what, flags) = (b.what(g), b.flags(g));
    let nonblock = flags & libc::O_NONBLOCK != 0;
    if p.dead {
        if b.slot_of[g].is_some() {
            // Made with the first description of its process.
            return;
        }
        let s = b.slot();
        let pid = (p.pid > 0 && p.pid != b.proc.pid).then_some(p.pid);
        let same = same_process(b, g, p);
        if same.len() > MAX_SAME {
            b.error(format!(
                "{what}: {} open descriptions of pidfds of one dead process (ckpt restores at most {})",
                same.len() + 1,
                MAX_SAME + 1
            ));
            return;
        }
        let mut more = Vec::new();
        for h in same {
            let t = b.slot();
            more.push((t, b.flags(h) & libc::O_NONBLOCK != 0));
            b.slot_of[h] = Some(t);
        }
        b.op(
            &what,
            FdOp::DeadPidfd {
                slot: s,
                pid,
                nonblock,
                more,
            },
        );
        b.slot_of[g] = Some(s);
        return;
    }
    let own = b
        .image
        .processes
        .iter()
        .any(|q| q.pid == p.pid || q.threads.iter().any(|t| t.tid == p.pid));
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
    // Each holder makes its own (in a tree, holders of one pidfd get
    // pidfds of the same process, not one shared description).
    let mut by_proc: BTreeMap<usize, Vec<(i32, bool)>> = BTreeMap::new();
    for &(i, f) in &b.groups[g].holders {
        by_proc.entry(i).or_default().push((f.fd, f.cloexec));
    }
    // (b.flags() drops O_EXCL, which is PIDFD_THREAD here.)
    let flags = (b.groups[g].file.flags as i32 & (libc::O_NONBLOCK | PIDFD_THREAD)) as u32;
    for (proc, fds) in by_proc {
        b.plan.late.push(LateFd {
            proc,
            what: what.clone(),
            op: LateOp::Pidfd {
                pid: p.pid,
                flags,
                fds,
            },
        });
    }
    b.late[g] = true;
    // Not placed by the stub: `late` does it.
}

/// The other descriptions (after `g`) of dead pidfds of `p`'s process:
/// the same non-zero pidfs inode.
fn same_process(b: &Builder, g: usize, p: &Pidfd) -> Vec<usize> {
    if p.inode == 0 {
        return Vec::new();
    }
    (g + 1..b.groups.len())
        .filter(|&h| {
            matches!(&b.groups[h].file.kind,
                ckpt_image::FileKind::Pidfd(q) if q.dead && q.inode == p.inode)
        })
        .collect()
}

/// FdOp::DeadPidfd: at the saved pid when it is free; `more` (slot,
/// nonblock) opened on the same exited child before it is reaped.
pub(super) fn dead(
    c: &mut Child<'_>,
    slot: usize,
    pid: Option<i32>,
    nonblock: bool,
    more: &[(usize, bool)],
) -> ckpt_sys::Result<()> {
    // No allocation in the stub: the extra fds go to a fixed array first.
    let mut extra = [-1i32; MAX_SAME];
    let n = more.len().min(MAX_SAME);
    let mut open_more = |child: i32| -> ckpt_sys::Result<()> {
        for (k, &(_, nb)) in more[..n].iter().enumerate() {
            let flags = if nb { libc::O_NONBLOCK as u32 } else { 0 };
            extra[k] = ckpt_sys::proc::pidfd::pidfd_open_flags(child, flags)?.into_raw_fd();
        }
        Ok(())
    };
    let fd = match ckpt_sys::clone::dead_pidfd_with(pid, nonblock, &mut open_more) {
        Err(e) if pid.is_some() && matches!(e.errno(), Some(libc::EEXIST | libc::EPERM)) => {
            ckpt_sys::clone::dead_pidfd_with(None, nonblock, &mut open_more)?
        }
        r => r?,
    };
    c.new_fd(slot, fd.into_raw_fd())?;
    for (k, &(s, _)) in more[..n].iter().enumerate() {
        c.new_fd(s, extra[k])?;
    }
    Ok(())
}

/// Most descriptions of one dead process made together (more are refused
/// at planning).
pub(super) const MAX_SAME: usize = 16;

/// The late fds of the process (see [`LateFd`]), injected through its
/// main thread; `ids` maps saved pids and tids to the restored ones.
pub(crate) fn late(
    main: &mut Remote,
    late: &[LateFd],
    ids: &BTreeMap<i32, i32>,
    scratch: u64,
) -> Result<()> {
    for l in late {
        let (pid, flags, fds) = match &l.op {
            LateOp::Pidfd { pid, flags, fds } => (*pid, *flags, fds),
            LateOp::EpollAdd {
                epfd,
                fd,
                events,
                data,
            } => {
                epoll_add(main, &l.what, [*epfd, *fd], (*events, *data), scratch)?;
                continue;
            }
            LateOp::ProcOpen {
                pid,
                rest,
                flags,
                pos,
                fds,
            } => {
                let args = (*pid, &rest[..], *flags, *pos);
                super::regular::late_proc_open(main, &l.what, args, fds, ids, scratch)?;
                continue;
            }
        };
        let pid = ids.get(&pid).copied().unwrap_or(pid);
        let fd = main.call(
            &format!("{}: pidfd_open({pid})", l.what),
            libc::SYS_pidfd_open,
            &[pid as u64, u64::from(flags)],
        )?;
        place_late(main, &l.what, fd, fds)?;
    }
    Ok(())
}

/// The late fd `fd` put at each of `fds` (number, close-on-exec), then
/// closed unless it is one of them.
pub(super) fn place_late(
    main: &mut Remote,
    what: &str,
    fd: u64,
    fds: &[(i32, bool)],
) -> Result<()> {
    for &(n, cloexec) in fds {
        let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
        if n as u64 == fd {
            main.call(
                &format!("{what}: fcntl(F_SETFD) of fd {n}"),
                libc::SYS_fcntl,
                &[fd, libc::F_SETFD as u64, flags as u64],
            )?;
            continue;
        }
        main.call(
            &format!("{what}: dup3 to fd {n}"),
            libc::SYS_dup3,
            &[
                fd,
                n as u64,
                if cloexec { libc::O_CLOEXEC as u64 } else { 0 },
            ],
        )?;
    }
    if !fds.iter().any(|&(n, _)| n as u64 == fd) {
        main.call("close", libc::SYS_close, &[fd])?;
    }
    Ok(())
}

/// epoll_ctl(EPOLL_CTL_ADD) injected, the struct epoll_event at `scratch`.
fn epoll_add(
    main: &mut Remote,
    what: &str,
    [epfd, fd]: [i32; 2],
    (events, data): (u32, u64),
    at: u64,
) -> Result<()> {
    // struct epoll_event is packed on x86_64: u32 events, u64 data.
    let mut ev = events.to_ne_bytes().to_vec();
    ev.extend_from_slice(&data.to_ne_bytes());
    main.write(at, &ev)?;
    main.call(
        &format!("{what}: epoll_ctl(EPOLL_CTL_ADD) of fd {fd}"),
        libc::SYS_epoll_ctl,
        &[epfd as u64, libc::EPOLL_CTL_ADD as u64, fd as u64, at],
    )?;
    Ok(())
}
