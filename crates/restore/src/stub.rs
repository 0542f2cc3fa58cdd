//! The restore stub: a child forked at the saved pid that builds the saved
//! fd table with plain system calls, then waits (in pause()) to be seized
//! and turned into the saved process.
//!
//! The child may be forked from a multi-threaded restorer, so it only does
//! async-signal-safe work: every path, buffer and slot it uses was allocated
//! before the fork, and it reports failure as (op index, errno) on the
//! readiness pipe instead of formatting messages.
//!
//! Paths of the image (files, FIFOs, live pipes reached through
//! /proc/HOLDER/fd/N, the directories unlinked files are recreated in) are
//! opened with the saved user's fs ids when the restore takes them (another
//! user's process from an image that is not the restorer's own, see
//! `check::open_as`): the child takes that user's fs uid, fs gid and
//! groups, without effective capabilities, around each such open
//! ([`FsSwitch`]), so that the kernel applies that user's rights at the
//! open itself, whatever the path leads to by then.
//! The restorer's own things (its fds 0-2, its terminal, the stub's own
//! fds reopened through /proc/self/fd) are opened with the restorer's ids.

use crate::error::{Error, Result};
use crate::fds::{self, FdOp, FdPlan};
use ckpt_sys::clone::{fork_with_pid, Forked};
use ckpt_sys::creds::{self, FsSwitch};
use ckpt_sys::{setup, sys};
use std::ffi::CStr;
use std::time::{Duration, Instant};

/// Failure codes beyond op indices.
const CODE_STD: u32 = 0xffff_ff00; // + k: the restorer's fd k
const CODE_CREDS: u32 = 0xffff_fffe; // switching the fs ids
const CODE_SETUP: u32 = 0xffff_ffff;

type ChildResult<T> = std::result::Result<T, (u32, i32)>;

fn errno_of(e: &ckpt_sys::Error) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

/// "/proc/self/fd/N" in a stack buffer.
pub(crate) fn proc_fd_path(fd: i32, buf: &mut [u8; 40]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    buf[PREFIX.len()..PREFIX.len() + d.len()].copy_from_slice(d);
    buf[PREFIX.len() + d.len()] = 0;
    CStr::from_bytes_with_nul(&buf[..PREFIX.len() + d.len() + 1]).unwrap_or(c"/")
}

/// The stub child's fd table while it runs the plan: the staging slots,
/// the restorer's fds 0-2 moved up, and the saved user's fs ids. The kind
/// modules' exec functions (`fds::exec`) work through it.
pub(crate) struct Child<'a> {
    plan: &'a FdPlan,
    slots: &'a mut [i32],
    std_high: [i32; 3],
    /// The saved user's fs ids, taken around each open of a path of the
    /// image; None: the restorer's own are used.
    as_saved: Option<&'a FsSwitch>,
    /// Set when switching the fs ids failed (the op's error is then that).
    switch_failed: bool,
}

impl Child<'_> {
    /// Run `f` (opens of paths of the image) with the saved user's fs ids,
    /// and take the restorer's back after.
    pub fn as_saved<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> ckpt_sys::Result<T>,
    ) -> ckpt_sys::Result<T> {
        let Some(switch) = self.as_saved else {
            return f(self);
        };
        if let Err(e) = switch.enter() {
            self.switch_failed = true;
            return Err(e);
        }
        let r = f(self);
        if let Err(e) = switch.leave() {
            // Never go on with the wrong ids.
            self.switch_failed = true;
            return Err(e);
        }
        r
    }

    /// Move a fresh fd up into the staging area.
    fn stage(&self, fd: i32) -> ckpt_sys::Result<i32> {
        if fd >= self.plan.stage {
            return Ok(fd);
        }
        let n = setup::dup_at_least(fd, self.plan.stage)?;
        setup::close(fd)?;
        Ok(n)
    }

    /// A fresh fd becomes slot `slot` (moved up into the staging area);
    /// returns its number there.
    pub fn new_fd(&mut self, slot: usize, fd: i32) -> ckpt_sys::Result<i32> {
        let fd = self.stage(fd)?;
        self.slots[slot] = fd;
        Ok(fd)
    }

    /// The fd of slot `slot`.
    pub fn slot(&self, slot: usize) -> i32 {
        self.slots[slot]
    }

    /// Slot `slot` is `fd` (already in the staging area).
    pub fn set_slot(&mut self, slot: usize, fd: i32) {
        self.slots[slot] = fd;
    }

    /// The restorer's socket `index` (`FdPlan::prebuilt`), inherited.
    pub fn prebuilt(&self, index: usize) -> i32 {
        self.plan.prebuilt.get(index).copied().unwrap_or(-1)
    }

    /// The restorer's fd `k` (0, 1 or 2), moved up into the staging area.
    pub fn std_fd(&self, k: usize) -> i32 {
        self.std_high[k]
    }

    fn run(&mut self, op: &FdOp) -> ckpt_sys::Result<()> {
        fds::exec(self, op)
    }
}

/// Everything the child does; returns its readiness fd.
fn child_setup(
    plan: &FdPlan,
    slots: &mut [i32],
    as_saved: Option<&FsSwitch>,
    ready_w: i32,
    parent: i32,
    report_fd: &mut i32,
) -> ChildResult<i32> {
    let setup_err = |e: ckpt_sys::Error| (CODE_SETUP, errno_of(&e));
    // The restorer's signal handlers (e.g. the ckpt command's, which write
    // to a pipe of its own) must not run here, where its fd numbers are
    // the saved process's files: SIGINT or SIGTERM now just end the stub.
    ckpt_sys::proc::signals::reset_handlers().map_err(setup_err)?;
    sys::set_parent_death_signal(libc::SIGKILL).map_err(setup_err)?;
    if setup::getppid() != parent {
        // The restorer is gone already.
        sys::exit_now(1);
    }
    // Room for the staging fds above the target numbers.
    if let Ok((soft, hard)) = setup::prlimit(0, libc::RLIMIT_NOFILE, None) {
        if soft < hard {
            let _ = setup::prlimit(0, libc::RLIMIT_NOFILE, Some((hard, hard)));
        }
    }
    let ready = setup::dup_at_least(ready_w, plan.stage).map_err(setup_err)?;
    *report_fd = ready;
    let mut std_high = [-1i32; 3];
    for (k, hi) in std_high.iter_mut().enumerate() {
        if plan.needs_std[k] {
            *hi = setup::dup_at_least(k as i32, plan.stage)
                .map_err(|e| (CODE_STD + k as u32, errno_of(&e)))?;
        }
    }
    sys::close_range(0, plan.stage as u32 - 1).map_err(setup_err)?;
    let dumpable = creds::dumpable().map_err(setup_err)?;
    let mut c = Child {
        plan,
        slots,
        std_high,
        as_saved,
        switch_failed: false,
    };
    for (i, op) in plan.ops.iter().enumerate() {
        c.run(op).map_err(|e| {
            let code = if c.switch_failed {
                CODE_CREDS
            } else {
                i as u32
            };
            (code, errno_of(&e))
        })?;
    }
    if as_saved.is_some() {
        // Each change of the fs ids cleared the parent-death signal and
        // reset the dumpable flag: set them again, and make sure the
        // restorer did not die while there was no signal to say so.
        sys::set_parent_death_signal(libc::SIGKILL).map_err(setup_err)?;
        if setup::getppid() != parent {
            sys::exit_now(1);
        }
        if dumpable <= 1 && creds::dumpable().map_err(setup_err)? != dumpable {
            creds::set_dumpable(dumpable).map_err(setup_err)?;
        }
    }
    // Close everything but the target fds and the readiness pipe.
    if ready > plan.stage {
        sys::close_range(plan.stage as u32, ready as u32 - 1).map_err(setup_err)?;
    }
    sys::close_range(ready as u32 + 1, u32::MAX).map_err(setup_err)?;
    Ok(ready)
}

fn child_main(
    plan: &FdPlan,
    slots: &mut [i32],
    as_saved: Option<&FsSwitch>,
    ready_w: i32,
    parent: i32,
) -> ! {
    let mut report_fd = ready_w;
    match child_setup(plan, slots, as_saved, ready_w, parent, &mut report_fd) {
        Ok(ready) => {
            let _ = sys::write_fd(ready, &[0]);
            let _ = setup::close(ready);
            loop {
                sys::pause();
            }
        }
        Err((code, errno)) => {
            let mut rec = [0u8; 9];
            rec[0] = 1;
            rec[1..5].copy_from_slice(&code.to_le_bytes());
            rec[5..9].copy_from_slice(&errno.to_le_bytes());
            let _ = sys::write_fd(report_fd, &rec);
            sys::exit_now(1);
        }
    }
}

/// Who holds `pid`: `"bash" (pid 1234)`, a thread, a zombie, or the
/// process group or session of live processes (a number stays taken while
/// a group or session of that id has members, after its leader is gone).
/// `None` if nothing seems to hold it by now. The bool is true for a zombie.
pub fn holder_of(pid: i32) -> Option<(String, bool)> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return group_or_session_of(pid).map(|s| (s, false));
    };
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let name = field("Name:");
    let tgid: i32 = field("Tgid:").parse().unwrap_or(pid);
    let ppid = field("PPid:");
    let zombie = field("State:").starts_with('Z');
    let s = if zombie {
        format!("a zombie of \"{name}\" that its parent (pid {ppid}) has not reaped")
    } else if tgid != pid {
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).unwrap_or_default();
        format!("thread \"{name}\" of \"{}\" (pid {tgid})", comm.trim())
    } else {
        format!("\"{name}\" (pid {pid})")
    };
    Some((s, zombie))
}

/// "the process group of \"bash\" (pid 12) and 2 other live processes",
/// when `id` is the process group or session id of live processes.
fn group_or_session_of(id: i32) -> Option<String> {
    let mut group = Vec::new();
    let mut session = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split(' ').collect();
        let (pgrp, sid) = (
            f.get(2).and_then(|v| v.parse().ok()),
            f.get(3).and_then(|v| v.parse().ok()),
        );
        if pgrp == Some(id) {
            group.push((pid, comm.to_string()));
        } else if sid == Some(id) {
            session.push((pid, comm.to_string()));
        }
    }
    let (what, members) = if !group.is_empty() {
        ("process group", group)
    } else if !session.is_empty() {
        ("session", session)
    } else {
        return None;
    };
    let (first, comm) = &members[0];
    let more = match members.len() - 1 {
        0 => String::new(),
        1 => " and 1 other live process".to_string(),
        n => format!(" and {n} other live processes"),
    };
    Some(format!(
        "the {what} of \"{comm}\" (pid {first}){more}, whose leader is gone"
    ))
}

/// Fork the stub (at `pid`, or anywhere with None), let it build its fds,
/// and return its pid once it waits in pause(). With `as_saved`, paths of
/// the image are opened with those fs ids. `watch` is told the stub's pid
/// as soon as it exists (a cancelled restore kills it). On failure
/// nothing is left running.
pub fn spawn(
    plan: &FdPlan,
    as_saved: Option<&FsSwitch>,
    pid: Option<i32>,
    zombie_wait: Duration,
    watch: &dyn Fn(i32),
) -> Result<i32> {
    let (r, w) = setup::pipe2(libc::O_CLOEXEC).map_err(|source| Error::Sys {
        context: "creating the stub's readiness pipe".into(),
        source,
    })?;
    let mut slots = vec![-1i32; plan.slots];
    let parent = sys::getpid();
    let t0 = Instant::now();
    let mut backoff = Duration::from_millis(1);
    let child = loop {
        match fork_with_pid(pid) {
            Ok(Forked::Child) => {
                let _ = setup::close(r);
                child_main(plan, &mut slots, as_saved, w, parent)
            }
            Ok(Forked::Parent(c)) => {
                watch(c);
                break c;
            }
            Err(e) if e.errno() == Some(libc::EEXIST) && pid.is_some() => {
                let p = pid.unwrap_or(0);
                let waited = t0.elapsed();
                let holder = holder_of(p);
                // A zombie about to be reaped, or a holder /proc does not
                // show yet (or any more): try again a little later, for a
                // bounded time, without spinning.
                let retry = match &holder {
                    Some((_, true)) => waited < zombie_wait,
                    None => waited < zombie_wait.max(Duration::from_millis(100)),
                    Some((_, false)) => false,
                };
                if retry {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                    continue;
                }
                let _ = setup::close(r);
                let _ = setup::close(w);
                let holder = holder.map(|h| h.0).unwrap_or_else(|| {
                    "a task this restorer cannot see (another pid namespace?)".into()
                });
                return Err(Error::PidInUse { pid: p, holder });
            }
            Err(source) => {
                let _ = setup::close(r);
                let _ = setup::close(w);
                let context = match (pid, source.errno()) {
                    (Some(p), Some(libc::EPERM)) => format!(
                        "creating the process at pid {p} (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN; or restore with a new pid)"
                    ),
                    (Some(p), _) => format!("creating the process at pid {p}"),
                    (None, _) => "creating the process".to_string(),
                };
                return Err(Error::Sys { context, source });
            }
        }
    };
    let _ = setup::close(w);
    let ready = wait_ready(r, child, plan, as_saved);
    let _ = setup::close(r);
    ready.map(|()| child)
}

/// Read the stub's answer on the readiness pipe `r`: ready, or the op that
/// failed and why (the stub is then killed and reaped).
fn wait_ready(r: i32, child: i32, plan: &FdPlan, as_saved: Option<&FsSwitch>) -> Result<()> {
    let mut rec = [0u8; 9];
    let mut got = 0;
    while got < rec.len() {
        match setup::read(r, &mut rec[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if rec[0] == 0 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if got >= 1 && rec[0] == 0 {
        // The stub closes its end right after saying it is ready: wait for
        // that (end of file). Seized before, it would keep the fd for good
        // (its code is replaced), a pipe of the restorer's in the restored
        // process at a number the saved process may use next.
        let mut rest = [0u8; 16];
        while let Ok(n) = setup::read(r, &mut rest) {
            if n == 0 {
                break;
            }
        }
        return Ok(());
    }
    // The stub failed or died: make sure it is gone, then say why.
    let _ = sys::kill(child, libc::SIGKILL);
    setup::reap_blocking(child);
    if got < rec.len() {
        return Err(Error::Stub {
            pid: child,
            what: "died while setting up its files".into(),
        });
    }
    let code = u32::from_le_bytes(rec[1..5].try_into().expect("4 bytes"));
    let errno = i32::from_le_bytes(rec[5..9].try_into().expect("4 bytes"));
    let source = std::io::Error::from_raw_os_error(errno);
    let what = if (code as usize) < plan.what.len() {
        plan.what[code as usize].clone()
    } else if (CODE_STD..CODE_STD + 3).contains(&code) {
        format!("the restorer's own fd {}", code - CODE_STD)
    } else if let (CODE_CREDS, Some(sw)) = (code, as_saved) {
        let ids = sw.ids();
        format!(
            "switching to the saved user's file access ids (fs uid {} gid {}, groups {:?}) and back",
            ids.uid, ids.gid, ids.groups
        )
    } else {
        "setting up the stub".to_string()
    };
    Err(Error::Fd {
        what,
        error: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_pipe_reaches_ends_without_blocking() {
        let plan = FdPlan {
            slots: 2,
            ..Default::default()
        };
        let mut slots = vec![-1i32; 2];
        let mut c = Child {
            plan: &plan,
            slots: &mut slots,
            std_high: [-1; 3],
            as_saved: None,
            switch_failed: false,
        };
        // A pipe whose only end left is the write end: opening another
        // write end would fail (ENXIO, no reader) without the detour.
        let (r, w) = setup::pipe2(libc::O_CLOEXEC).unwrap();
        setup::close(r).unwrap();
        let path = std::ffi::CString::new(format!("/proc/self/fd/{w}")).unwrap();
        c.run(&FdOp::OpenPipe {
            slot: 0,
            path: path.clone(),
            flags: libc::O_WRONLY,
        })
        .unwrap();
        // And a read end of it, which has no writer but ours.
        c.run(&FdOp::OpenPipe {
            slot: 1,
            path,
            flags: libc::O_RDONLY,
        })
        .unwrap();
        let (nw, nr) = (slots[0], slots[1]);
        assert_eq!(setup::get_fl(nw).unwrap() & libc::O_ACCMODE, libc::O_WRONLY);
        assert_eq!(setup::get_fl(nr).unwrap() & libc::O_ACCMODE, libc::O_RDONLY);
        sys::write_fd(w, b"hi").unwrap();
        let mut b = [0u8; 2];
        assert_eq!(setup::read(nr, &mut b).unwrap(), 2);
        assert_eq!(&b, b"hi");
        for fd in [w, nw, nr] {
            setup::close(fd).unwrap();
        }
    }

    #[test]
    fn image_paths_are_opened_with_the_saved_users_ids() {
        use ckpt_sys::creds::FsIds;
        use std::os::unix::fs::MetadataExt;
        if creds::geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let own = FsIds::current().unwrap();
        let switch = FsSwitch::new(FsIds {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        })
        .unwrap();
        let plan = FdPlan {
            slots: 3,
            ..Default::default()
        };
        let mut slots = vec![-1i32; 3];
        let mut c = Child {
            plan: &plan,
            slots: &mut slots,
            std_high: [-1; 3],
            as_saved: Some(&switch),
            switch_failed: false,
        };
        // A file nobody may not read: refused at the open, which root
        // alone could have done; and root's ids are back after.
        let e = c
            .run(&FdOp::Open {
                slot: 0,
                path: c"/etc/shadow".to_owned(),
                flags: libc::O_RDONLY,
                mode: 0,
            })
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EACCES));
        assert!(!c.switch_failed);
        assert_eq!(FsIds::current().unwrap(), own);
        // An unlinked copy is created as nobody, and the stub's own fd is
        // reopened through /proc/self/fd with the restorer's rights.
        c.run(&FdOp::TmpFile {
            slot: 1,
            name: None,
            dirs: vec![c"/tmp".to_owned()],
            mode: 0o400,
            contents: b"saved".to_vec(),
            extents: Vec::new(),
            meta: crate::fds::NodeMeta {
                size: 5,
                ..Default::default()
            },
        })
        .unwrap();
        c.run(&FdOp::Reopen {
            slot: 2,
            from: 1,
            flags: libc::O_RDONLY,
        })
        .unwrap();
        assert_eq!(FsIds::current().unwrap(), own);
        let m = std::fs::metadata(format!("/proc/self/fd/{}", slots[1])).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o400));
        let mut b = [0u8; 5];
        assert_eq!(setup::read(slots[2], &mut b).unwrap(), 5);
        assert_eq!(&b, b"saved");
        setup::close(slots[1]).unwrap();
        setup::close(slots[2]).unwrap();
    }

    #[test]
    fn a_pipe_too_small_for_its_data_fails_instead_of_blocking() {
        let plan = FdPlan {
            slots: 2,
            ..Default::default()
        };
        let mut slots = vec![-1i32; 2];
        let mut c = Child {
            plan: &plan,
            slots: &mut slots,
            std_high: [-1; 3],
            as_saved: None,
            switch_failed: false,
        };
        let e = c
            .run(&FdOp::Pipe {
                read: 0,
                write: 1,
                capacity: 4096,
                data: vec![1; 1 << 20],
            })
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EAGAIN), "{e}");
        for fd in slots.iter().filter(|&&f| f >= 0) {
            ckpt_sys::fds::close(*fd).unwrap();
        }
        // What fits goes in, and the ends are blocking again.
        let mut slots = vec![-1i32; 2];
        let mut c = Child {
            plan: &plan,
            slots: &mut slots,
            std_high: [-1; 3],
            as_saved: None,
            switch_failed: false,
        };
        c.run(&FdOp::Pipe {
            read: 0,
            write: 1,
            capacity: 0,
            data: b"abc".to_vec(),
        })
        .unwrap();
        assert_eq!(
            ckpt_sys::fds::get_fl(slots[1]).unwrap() & libc::O_NONBLOCK,
            0
        );
        let mut b = [0u8; 3];
        assert_eq!(ckpt_sys::fds::read(slots[0], &mut b).unwrap(), 3);
        for fd in slots {
            ckpt_sys::fds::close(fd).unwrap();
        }
    }

    #[test]
    fn proc_fd_paths() {
        let mut b = [0u8; 40];
        assert_eq!(proc_fd_path(0, &mut b).to_bytes(), b"/proc/self/fd/0");
        assert_eq!(
            proc_fd_path(1234567, &mut b).to_bytes(),
            b"/proc/self/fd/1234567"
        );
    }
}
