//! The restore stubs: one child per process of the image, forked at its
//! saved pid by the stub of its saved parent (the root's by the restorer),
//! that builds its fd table with plain system calls and waits (in pause())
//! to be seized and turned into the saved process.
//!
//! 1. The root stub moves its pipes to the restorer (and copies of the
//!    restorer's fds 0-2 it needs) to fixed numbers above every saved fd,
//!    closes everything else, and makes every open file description of the
//!    image into staging slots ([`FdPlan::ops`]).
//! 2. Each stub takes its session and process group ([`tree`]), then forks
//!    its children one after the other (clone3 set_tid, with CLONE_FILES or
//!    CLONE_FS where the saved child shared its parent's), without waiting
//!    for a child's subtree unless a later child's subtree joins a group
//!    made there (`Node::wait_before`) or the child shares its fd table;
//!    it waits for all of them before saying its own subtree exists.
//!    Every stub inherits every
//!    description, so descriptions the processes shared are shared again.
//!    A zombie exits with its saved wait status once it has its group.
//! 3. Once its own subtree exists, a stub puts its own fds at their
//!    numbers (fds/place.rs), registers its epoll targets, closes the rest
//!    and says it is ready; the restorer builds it while the rest of the
//!    tree is made ([`Readiness`]). A stub that needs other processes (it
//!    joins a group whose leader comes later, reaps its helpers, or gives
//!    its session's terminals to groups) first waits until the whole tree
//!    exists, when the restorer lets them go on. A stub sharing its
//!    parent's fd table leaves that to the table's owner, which waits for
//!    it. A stub may be seized before it closed its report pipes: the
//!    builder closes them (mem/layout.rs).
//!
//! The stubs report on one pipe shared by all (fixed-size records, written
//! atomically): the root once the tree exists, every stub when it is ready
//! or what failed (as codes: a stub may be forked from a multi-threaded
//! restorer, so it only does async-signal-safe work, never allocating:
//! every path, buffer and table it uses was made before the first fork).
//! The restorer reads them with a bounded wait and watches that no stub
//! dies; on any failure it kills and reaps every stub.
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
use crate::fds::place::{self, Scratch, CTL_GO, CTL_KEEP, CTL_STATUS, CTL_STD};
use crate::fds::{self, FdOp, FdPlan};
use crate::tree::{Group, TreePlan};
use ckpt_sys::clone::{fork_with, Forked};
use ckpt_sys::creds::{self, FsSwitch};
use ckpt_sys::mm::SharedWords;
use ckpt_sys::proc::group as pg;
use ckpt_sys::{fds as sfds, proc};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Failure codes beyond op indices (the record's `arg` says more).
const CODE_STD: u32 = 0xffff_ff00; // + k: the restorer's fd k
const CODE_PLACE: u32 = 0xffff_ff10; // arg: the fd
const CODE_POST: u32 = 0xffff_ff11; // arg: index of the post op
const CODE_FORK: u32 = 0xffff_ff12; // arg: creation index of the child
const CODE_CHILD: u32 = 0xffff_ff13; // arg: creation index of the child
const CODE_SETSID: u32 = 0xffff_ff14;
const CODE_GROUP: u32 = 0xffff_ff15; // arg: the group
const CODE_CTTY: u32 = 0xffff_ff16; // arg: the slot
const CODE_FOREGROUND: u32 = 0xffff_ff17; // arg: the group
const CODE_HELPER: u32 = 0xffff_ff18; // arg: the helper's index
const CODE_CREDS: u32 = 0xffff_fffe; // switching the fs ids
const CODE_SETUP: u32 = 0xffff_ffff;

/// Record kinds on the status pipe.
const REC_FORKED: u8 = 1;
const REC_READY: u8 = 2;
const REC_ERROR: u8 = 3;
/// kind, 3 bytes of padding, creation index, code, arg, errno.
const REC_LEN: usize = 20;

/// A failure in a stub: (code, arg, errno).
type Fail = (u32, i32, i32);
type ChildResult<T> = std::result::Result<T, Fail>;

fn errno_of(e: &ckpt_sys::Error) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

fn setup_err(e: ckpt_sys::Error) -> Fail {
    (CODE_SETUP, 0, errno_of(&e))
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

/// The root stub's fd table while it runs the plan: the staging slots,
/// the copies of the restorer's fds 0-2, and the saved user's fs ids. The
/// kind modules' exec functions (`fds::exec`) work through it.
pub(crate) struct Child<'a> {
    slots: &'a mut [i32],
    std_high: [i32; 3],
    /// The saved user's fs ids, taken around each open of a path of the
    /// image; None: the restorer's own are used.
    as_saved: Option<&'a FsSwitch>,
    /// Set when switching the fs ids failed (the op's error is then that).
    switch_failed: bool,
    /// The restorer's sockets, inherited (`FdPlan::prebuilt`).
    prebuilt: &'a [i32],
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

    /// A fresh fd becomes slot `slot` (where the kernel put it: it is
    /// moved to its numbers later); returns it.
    pub fn new_fd(&mut self, slot: usize, fd: i32) -> ckpt_sys::Result<i32> {
        self.slots[slot] = fd;
        Ok(fd)
    }

    /// Every slot at fd `from` is now at fd `to` (the stub moved it).
    pub fn renumber(&mut self, from: i32, to: i32) {
        for s in self.slots.iter_mut().filter(|s| **s == from) {
            *s = to;
        }
    }

    /// The fd of slot `slot`.
    pub fn slot(&self, slot: usize) -> i32 {
        self.slots[slot]
    }

    /// Slot `slot` is `fd` (one of the stub's own fixed numbers).
    pub fn set_slot(&mut self, slot: usize, fd: i32) {
        self.slots[slot] = fd;
    }

    /// The restorer's socket `index` (`FdPlan::prebuilt`), inherited.
    pub fn prebuilt(&self, index: usize) -> i32 {
        self.prebuilt.get(index).copied().unwrap_or(-1)
    }

    /// The restorer's fd `k` (0, 1 or 2), copied to a fixed number.
    pub fn std_fd(&self, k: usize) -> i32 {
        self.std_high[k]
    }

    fn run(&mut self, op: &FdOp) -> ckpt_sys::Result<()> {
        fds::exec(self, op)
    }
}

/// What every stub reads (made before the first fork, never changed).
pub(crate) struct Shared<'a> {
    pub plan: &'a FdPlan,
    pub tree: &'a TreePlan,
    /// The pid each process was forked at, by creation index (written by
    /// the stubs as they are made).
    pub pids: &'a SharedWords,
    /// The pid to fork each process at (None: any free one).
    pub want: &'a [Option<i32>],
    /// A process whose saved pid is taken gets a new one.
    pub new_pid: bool,
    /// How long to wait for a zombie holding a saved pid to be reaped.
    pub zombie_wait: Duration,
    pub restorer: i32,
    pub restorer_pgid: i32,
    pub as_saved: Option<&'a FsSwitch>,
}

/// What each stub writes (its own copy after the fork).
pub(crate) struct Work<'a> {
    pub slots: &'a mut [i32],
    pub scratch: &'a mut Scratch,
    /// Per creation index: the read end of the pipe from a child that
    /// shares the fd table (its "ready" comes later).
    pub child_pipes: &'a mut [i32],
}

impl Shared<'_> {
    fn fixed(&self, off: i32) -> i32 {
        self.plan.stage + off
    }
}

/// Write one record on the status pipe.
fn record(fd: i32, kind: u8, idx: usize, (code, arg, errno): Fail) {
    let mut r = [0u8; REC_LEN];
    r[0] = kind;
    r[4..8].copy_from_slice(&(idx as u32).to_le_bytes());
    r[8..12].copy_from_slice(&code.to_le_bytes());
    r[12..16].copy_from_slice(&arg.to_le_bytes());
    r[16..20].copy_from_slice(&errno.to_le_bytes());
    let _ = sfds::write_fd(fd, &r);
}

/// Report `f` for process `idx` and exit.
fn fail(status: i32, idx: usize, f: Fail) -> ! {
    record(status, REC_ERROR, idx, f);
    proc::exit_now(1)
}

/// The root stub: its fixed fds, every description, then the tree.
fn root_main(sh: &Shared<'_>, w: &mut Work<'_>, status_w: i32, go_r: i32) -> ! {
    if let Err(f) = root_setup(sh, w, status_w, go_r) {
        // The status pipe is at its fixed number once that is set up.
        let st = if sfds::get_fl(sh.fixed(CTL_STATUS)).is_ok() {
            sh.fixed(CTL_STATUS)
        } else {
            status_w
        };
        fail(st, 0, f)
    }
    run_node(sh, w, 0, -1)
}

/// The root stub's fds: its own at their fixed numbers, everything else
/// closed, then every description of the image made.
fn root_setup(sh: &Shared<'_>, w: &mut Work<'_>, status_w: i32, go_r: i32) -> ChildResult<()> {
    let plan = sh.plan;
    // The restorer's signal handlers (e.g. the ckpt command's, which write
    // to a pipe of its own) must not run here, where its fd numbers are
    // the saved processes' files: SIGINT or SIGTERM now just end the stub
    // (and its children, by their parent-death signal).
    ckpt_sys::proc::signals::reset_handlers().map_err(setup_err)?;
    proc::set_parent_death_signal(libc::SIGKILL).map_err(setup_err)?;
    if proc::getppid() != sh.restorer {
        proc::exit_now(1); // the restorer is gone already
    }
    // Zombies must stay for their parents: SIGCHLD at its default.
    pg::set_default_action(libc::SIGCHLD).map_err(setup_err)?;
    if let Ok((soft, hard)) = proc::prlimit(0, libc::RLIMIT_NOFILE, None) {
        if soft < hard {
            let _ = proc::prlimit(0, libc::RLIMIT_NOFILE, Some((hard, hard)));
        }
    }
    let end = place::ctl_end(plan);
    // Copies above every fixed number first (a fixed number may hold one
    // of the sources), then each to its number.
    let up = |fd: i32| -> ckpt_sys::Result<i32> {
        sfds::dup_at_least(fd, end).map(IntoRawFd::into_raw_fd)
    };
    let st = up(status_w).map_err(setup_err)?;
    let go = up(go_r).map_err(setup_err)?;
    let mut std = [st; 3];
    for (k, s) in std.iter_mut().enumerate() {
        if plan.needs_std[k] {
            *s = up(k as i32).map_err(|e| (CODE_STD + k as u32, 0, errno_of(&e)))?;
        }
    }
    let put = |from: i32, off: i32| sfds::dup3(from, sh.fixed(off), true).map_err(setup_err);
    put(st, CTL_STATUS)?;
    put(go, CTL_GO)?;
    for (k, &s) in std.iter().enumerate() {
        put(s, CTL_STD + k as i32)?;
    }
    for j in 0..plan.keep.len() {
        put(st, CTL_KEEP + j as i32)?;
    }
    sfds::close_range(0, plan.stage as u32 - 1).map_err(setup_err)?;
    // Everything above but the restorer's sockets (FdOp::Prebuilt).
    let mut from = end;
    for &fd in &plan.prebuilt_sorted {
        if fd > from {
            sfds::close_range(from as u32, fd as u32 - 1).map_err(setup_err)?;
        }
        from = from.max(fd + 1);
    }
    sfds::close_range(from as u32, u32::MAX).map_err(setup_err)?;
    make_descriptions(sh, w)
}

/// Every description of the image, into the staging slots; the kept ones
/// copied to their fixed numbers.
fn make_descriptions(sh: &Shared<'_>, w: &mut Work<'_>) -> ChildResult<()> {
    let plan = sh.plan;
    let dumpable = creds::dumpable().map_err(setup_err)?;
    let std_high = [0, 1, 2].map(|k| sh.fixed(CTL_STD + k));
    let mut c = Child {
        slots: w.slots,
        std_high,
        as_saved: sh.as_saved,
        switch_failed: false,
        prebuilt: &plan.prebuilt,
    };
    for (i, op) in plan.ops.iter().enumerate() {
        c.run(op).map_err(|e| {
            let code = if c.switch_failed {
                CODE_CREDS
            } else {
                i as u32
            };
            (code, 0, errno_of(&e))
        })?;
    }
    if sh.as_saved.is_some() {
        // Each change of the fs ids cleared the parent-death signal and
        // reset the dumpable flag: set them again, and make sure the
        // restorer did not die while there was no signal to say so.
        proc::set_parent_death_signal(libc::SIGKILL).map_err(setup_err)?;
        if proc::getppid() != sh.restorer {
            proc::exit_now(1);
        }
        if dumpable <= 1 && creds::dumpable().map_err(setup_err)? != dumpable {
            creds::set_dumpable(dumpable).map_err(setup_err)?;
        }
    }
    for (j, &(slot, _)) in plan.keep.iter().enumerate() {
        sfds::dup3(c.slots[slot], sh.fixed(CTL_KEEP + j as i32), true).map_err(setup_err)?;
    }
    Ok(())
}

/// Process `i` (creation index), just forked: make its subtree, then
/// (once the restorer says so) its fd table; then wait to be seized.
/// `parent_w`: the pipe to its parent's stub (-1 for the root).
fn run_node(sh: &Shared<'_>, w: &mut Work<'_>, i: usize, parent_w: i32) -> ! {
    let status = sh.fixed(CTL_STATUS);
    if let Err(f) = fork_phase(sh, w, i, parent_w) {
        fail(status, i, f)
    }
    if let Err(f) = fd_phase(sh, w, i, parent_w) {
        fail(status, i, f)
    }
    loop {
        proc::pause();
    }
}

/// Its session and group, its children (each with its whole subtree, one
/// after the other), then "done" to its parent (the root: to the
/// restorer). A zombie then exits.
fn fork_phase(sh: &Shared<'_>, w: &mut Work<'_>, i: usize, parent_w: i32) -> ChildResult<()> {
    let n = &sh.tree.nodes[i];
    let me = proc::getpid();
    sh.pids.set(i, me);
    if n.setsid {
        pg::setsid().map_err(|e| (CODE_SETSID, 0, errno_of(&e)))?;
        // Its terminal, before its children: they are born with it.
        if let Some(slot) = sh.plan.procs[n.image].ctty {
            sfds::tty::make_controlling(w.slots[slot], false)
                .map_err(|e| (CODE_CTTY, slot as i32, errno_of(&e)))?;
        }
    }
    if !n.group_late {
        join_group(sh, i)?;
    }
    let end = place::ctl_end(sh.plan);
    let up = |fd: OwnedFd| {
        sfds::dup_at_least(fd.as_raw_fd(), end)
            .map(IntoRawFd::into_raw_fd)
            .map_err(setup_err)
    };
    // Children not sharing its fd table say "done" on one pipe, read once
    // a later child depends on them (or at the end): they are forked one
    // after the other while the earlier ones set themselves up.
    let mut done: Option<(i32, i32)> = None;
    let mut waiting = 0usize;
    let mut last = 0usize;
    for &c in &n.children {
        let node = &sh.tree.nodes[c];
        if node.wait_before {
            wait_done(done, &mut waiting, last)?;
        }
        for k in (0..sh.tree.helpers.len()).filter(|&k| sh.tree.helpers[k].before == c) {
            fork_helper(sh, k, me)?;
        }
        let share = node.share;
        let files = share & libc::CLONE_FILES as u64 != 0;
        let (r, cw) = match done {
            Some(p) if !files => p,
            _ => {
                let (r, cw) = sfds::pipe::pipe2(libc::O_CLOEXEC).map_err(setup_err)?;
                let p = (up(r)?, up(cw)?);
                if !files {
                    done = Some(p);
                }
                p
            }
        };
        match fork_child(sh, c, share)? {
            Forked::Child => {
                if !files {
                    let _ = sfds::close(r);
                }
                if proc::set_parent_death_signal(libc::SIGKILL).is_err() || proc::getppid() != me {
                    proc::exit_now(1);
                }
                run_node(sh, w, c, cw)
            }
            Forked::Parent(pid) => {
                sh.pids.set(c, pid);
                last = c;
                if files {
                    // Shared with the child: it says "ready" on it later.
                    read_done(r, c)?;
                    w.child_pipes[c] = r;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    wait_done(done, &mut waiting, last)?;
    if let Some((r, cw)) = done {
        let _ = sfds::close(r);
        let _ = sfds::close(cw);
    }
    if i == 0 {
        record(sh.fixed(CTL_STATUS), REC_FORKED, 0, (0, 0, 0));
    } else {
        sfds::write_fd(parent_w, &[1]).map_err(setup_err)?;
    }
    if let Some(status) = n.zombie {
        let _ = pg::set_name(&n.comm);
        pg::exit_with_status(status);
    }
    Ok(())
}

/// One "done" byte from child `c` on `r`.
fn read_done(r: i32, c: usize) -> ChildResult<()> {
    let mut b = [0u8; 1];
    match sfds::read(r, &mut b) {
        Ok(1) => Ok(()),
        Ok(_) => Err((CODE_CHILD, c as i32, 0)),
        Err(e) => Err((CODE_CHILD, c as i32, errno_of(&e))),
    }
}

/// Wait until the `waiting` children forked on the shared "done" pipe
/// `done` have their subtrees (`last`: the last child forked, named on
/// failure).
fn wait_done(done: Option<(i32, i32)>, waiting: &mut usize, last: usize) -> ChildResult<()> {
    let Some((r, _)) = done else {
        return Ok(());
    };
    let mut b = [0u8; 64];
    while *waiting > 0 {
        let want = (*waiting).min(b.len());
        match sfds::read(r, &mut b[..want]) {
            Ok(0) => return Err((CODE_CHILD, last as i32, 0)),
            Ok(k) => *waiting -= k,
            Err(e) => return Err((CODE_CHILD, last as i32, errno_of(&e))),
        }
    }
    Ok(())
}

/// Fork child `c` at its pid: a zombie holding it is waited for (its
/// parent is about to reap it); taken for good, a new pid when allowed.
fn fork_child(sh: &Shared<'_>, c: usize, share: u64) -> ChildResult<Forked> {
    fork_at(sh, sh.want[c], share).map_err(|errno| (CODE_FORK, c as i32, errno))
}

/// [`fork_child`] at `want`; the errno on failure.
fn fork_at(sh: &Shared<'_>, want: Option<i32>, share: u64) -> std::result::Result<Forked, i32> {
    let t0 = Instant::now();
    loop {
        match fork_with(want, share) {
            Ok(f) => return Ok(f),
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                if t0.elapsed() < sh.zombie_wait {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                if sh.new_pid {
                    return fork_with(None, share).map_err(|e| errno_of(&e));
                }
                return Err(libc::EEXIST);
            }
            Err(e) => return Err(errno_of(&e)),
        }
    }
}

/// Fork helper `k` ([`crate::tree::Helper`]) at its group's id: it makes
/// the group, says so, and exits once the tree exists (its parent `me`
/// reaps it in [`fd_phase`]). Its pid goes after the processes' in `pids`.
fn fork_helper(sh: &Shared<'_>, k: usize, me: i32) -> ChildResult<()> {
    let h = sh.tree.helpers[k];
    let fail = |errno: i32| (CODE_HELPER, k as i32, errno);
    let (r, w) = sfds::pipe::pipe2(libc::O_CLOEXEC).map_err(setup_err)?;
    let (r, w) = (r.into_raw_fd(), w.into_raw_fd());
    match fork_at(sh, Some(h.pgid), 0).map_err(fail)? {
        Forked::Child => {
            let _ = sfds::close(r);
            if proc::set_parent_death_signal(libc::SIGKILL).is_err()
                || proc::getppid() != me
                || pg::setpgid(0, 0).is_err()
                || sfds::write_fd(w, &[1]).is_err()
            {
                proc::exit_now(1);
            }
            let _ = sfds::close(w);
            let mut b = [0u8; 16];
            while let Ok(n) = sfds::read(sh.fixed(CTL_GO), &mut b) {
                if n == 0 {
                    break;
                }
            }
            proc::exit_now(0)
        }
        Forked::Parent(pid) => {
            sh.pids.set(sh.tree.nodes.len() + k, pid);
            let _ = sfds::close(w);
            let mut b = [0u8; 1];
            let got = sfds::read(r, &mut b);
            let _ = sfds::close(r);
            match got {
                Ok(1) => Ok(()),
                Ok(_) => Err(fail(0)),
                Err(e) => Err(fail(errno_of(&e))),
            }
        }
    }
}

/// setpgid for process `i` as planned.
fn join_group(sh: &Shared<'_>, i: usize) -> ChildResult<()> {
    let to = match sh.tree.nodes[i].group {
        Group::Inherit => return Ok(()),
        Group::Own => 0,
        Group::Of(l) => sh.pids.get(l),
        Group::Restorer => sh.restorer_pgid,
        Group::Helper(k) => sh.pids.get(sh.tree.nodes.len() + k),
    };
    pg::setpgid(0, to).map_err(|e| (CODE_GROUP, to, errno_of(&e)))
}

/// Once every process exists: a late group, then (the owner of an fd
/// table, once the children sharing it are ready) the fds at their
/// numbers, the epoll targets, everything else closed; "ready".
fn fd_phase(sh: &Shared<'_>, w: &mut Work<'_>, i: usize, parent_w: i32) -> ChildResult<()> {
    let n = &sh.tree.nodes[i];
    let status = sh.fixed(CTL_STATUS);
    let mut b = [0u8; 16];
    // The restorer closes its end of "go" when the tree exists; only a
    // stub that needs other processes waits for it (its subtree exists).
    if needs_whole_tree(sh, i) {
        while let Ok(k) = sfds::read(sh.fixed(CTL_GO), &mut b) {
            if k == 0 {
                break;
            }
        }
    }
    if n.group_late {
        join_group(sh, i)?;
    }
    // Its helpers' groups have every member: they may go.
    for (k, h) in sh.tree.helpers.iter().enumerate() {
        if h.parent == i {
            proc::wait::reap_blocking(sh.pids.get(sh.tree.nodes.len() + k));
        }
    }
    for &c in &n.children {
        if sh.tree.nodes[c].share & libc::CLONE_FILES as u64 != 0 {
            match sfds::read(w.child_pipes[c], &mut b[..1]) {
                Ok(1) => {}
                Ok(_) => return Err((CODE_CHILD, c as i32, 0)),
                Err(e) => return Err((CODE_CHILD, c as i32, errno_of(&e))),
            }
        }
    }
    if n.table != i {
        // The table's owner does the rest, once this one is ready.
        record(status, REC_READY, i, (0, 0, 0));
        sfds::write_fd(parent_w, &[1]).map_err(setup_err)?;
        return Ok(());
    }
    let plan = sh.plan;
    let own = &plan.procs[n.image];
    // Its session's terminals to the groups that had them (every group
    // exists now; its own group has them since TIOCSCTTY).
    for &(slot, leader) in &own.foreground {
        let pgrp = sh.pids.get(sh.tree.order_of[leader]);
        sfds::tty::set_foreground(w.slots[slot], pgrp)
            .map_err(|e| (CODE_FOREGROUND, pgrp, errno_of(&e)))?;
    }
    let end = place::ctl_end(plan);
    place::place(w.slots, &own.places, plan.stage, end, w.scratch)
        .map_err(|(fd, errno)| (CODE_PLACE, fd, errno))?;
    for (k, op) in own.post.iter().enumerate() {
        if let FdOp::EpollAdd {
            epfd,
            fd,
            events,
            data,
        } = op
        {
            sfds::epoll::epoll_add(*epfd, *fd, *events, *data)
                .map_err(|e| (CODE_POST, k as i32, errno_of(&e)))?;
        }
    }
    let std0 = sh.fixed(CTL_STD) as u32;
    sfds::close_range(std0, std0 + 2).map_err(setup_err)?;
    sfds::close_range(end as u32, u32::MAX).map_err(setup_err)?;
    record(status, REC_READY, i, (0, 0, 0));
    let _ = sfds::close(sh.fixed(CTL_GO));
    let _ = sfds::close(status);
    Ok(())
}

/// Whether stub `i` can only finish its fds once every process exists:
/// it joins a group whose leader comes later, reaps its helpers (which
/// wait for the whole tree), or gives its session's terminals to groups.
/// The others do at once, and are built while the tree is still made.
fn needs_whole_tree(sh: &Shared<'_>, i: usize) -> bool {
    let n = &sh.tree.nodes[i];
    n.group_late
        || sh.tree.helpers.iter().any(|h| h.parent == i)
        || (n.table == i && !sh.plan.procs[n.image].foreground.is_empty())
}

/// How long the stubs may take to exist and be ready, in all.
const STUB_TIMEOUT: Duration = Duration::from_secs(60);

/// The stubs of a tree. Dropping it (before [`Stubs::disarm`]) kills and
/// reaps every stub, and every thread made in them.
pub(crate) struct Stubs {
    /// Their pids, by creation index (0: not made yet).
    pub pids: SharedWords,
    /// Threads made by injection, to reap after a failure.
    pub tids: std::sync::Mutex<Vec<i32>>,
    armed: bool,
    /// We made ourselves a child subreaper (orphaned stubs come to us and
    /// are reaped); undone when the restore ends.
    made_subreaper: bool,
}

impl Stubs {
    pub fn new(n: usize) -> Result<Stubs> {
        let pids = SharedWords::new(n).map_err(|source| Error::Sys {
            context: "making the stubs' shared pid table".into(),
            source,
        })?;
        let made_subreaper =
            !pg::is_child_subreaper().unwrap_or(true) && pg::set_child_subreaper_to(true).is_ok();
        Ok(Stubs {
            pids,
            tids: std::sync::Mutex::new(Vec::new()),
            armed: true,
            made_subreaper,
        })
    }

    /// The pid of process `i` (creation index).
    pub fn pid(&self, i: usize) -> i32 {
        self.pids.get(i)
    }

    /// The restore worked: nothing to kill.
    pub fn disarm(&mut self) {
        self.armed = false;
        if self.made_subreaper {
            let _ = pg::set_child_subreaper_to(false);
            self.made_subreaper = false;
        }
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let pids: Vec<i32> = (0..self.pids.len())
            .map(|i| self.pids.get(i))
            .filter(|&p| p > 0)
            .collect();
        for &p in &pids {
            let _ = proc::kill(p, libc::SIGKILL);
        }
        // Reap what is ours (our child, our tracees, orphans that came to
        // us) until each is gone, a bounded time.
        let deadline = Instant::now() + Duration::from_secs(5);
        let tids = std::mem::take(self.tids.get_mut().unwrap_or_else(|p| p.into_inner()));
        for &t in tids.iter().chain(&pids) {
            loop {
                let reaped = proc::wait::reap_nohang(t);
                let gone = !std::path::Path::new(&format!("/proc/{t}")).exists();
                if gone || Instant::now() > deadline {
                    break;
                }
                if !reaped {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if self.made_subreaper {
            let _ = pg::set_child_subreaper_to(false);
        }
    }
}

/// Who holds `pid`: `"bash" (pid 1234)`, a thread, a zombie, or the
/// process group or session of live processes (a number stays taken while
/// a group or session of that id has members, after its leader is gone).
/// `None` if nothing seems to hold it by now. The bool is true for a zombie.
pub fn holder_of(pid: i32) -> Option<(String, bool)> {
    holder_with(pid, &mut None)
}

/// [`holder_of`], with the groups and sessions of the live processes
/// scanned once for many ids (`groups`: None until the first id that is no
/// task needs them).
pub(crate) fn holder_with(pid: i32, groups: &mut Option<Groups>) -> Option<(String, bool)> {
    let Ok(status) = proc::read_text(&format!("/proc/{pid}/status")) else {
        return groups
            .get_or_insert_with(Groups::scan)
            .describe(pid)
            .map(|s| (s, false));
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

/// The process groups and sessions of the live processes (one pass over
/// /proc): id -> its members (pid, comm), in /proc order.
#[derive(Default)]
pub(crate) struct Groups {
    group: std::collections::HashMap<i32, Vec<(i32, String)>>,
    session: std::collections::HashMap<i32, Vec<(i32, String)>>,
}

impl Groups {
    pub(crate) fn scan() -> Groups {
        let mut g = Groups::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return g;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = proc::read_text(&format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let comm = head.split_once(" (").map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = rest.split(' ').collect();
            let id = |i: usize| f.get(i).and_then(|v| v.parse::<i32>().ok());
            if let Some(pgrp) = id(2) {
                g.group
                    .entry(pgrp)
                    .or_default()
                    .push((pid, comm.to_string()));
            }
            if let Some(sid) = id(3) {
                g.session
                    .entry(sid)
                    .or_default()
                    .push((pid, comm.to_string()));
            }
        }
        g
    }

    /// "the process group of \"bash\" (pid 12) and 2 other live
    /// processes", when `id` is the process group or session id of live
    /// processes.
    fn describe(&self, id: i32) -> Option<String> {
        let (what, members) = match (self.group.get(&id), self.session.get(&id)) {
            (Some(m), _) if !m.is_empty() => ("process group", m),
            (_, Some(m)) if !m.is_empty() => ("session", m),
            _ => return None,
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
}

/// The root stub forked and making the tree: its reports and the
/// release ("go") to read and give in [`wait_ready`].
pub(crate) struct Started {
    status: OwnedFd,
    go: OwnedFd,
}

/// Fork the root stub (at its pid, or anywhere with new pids when it is
/// taken), which goes on to make the tree and their fds: [`wait_ready`]
/// follows it. `watch` is told the root stub's pid as soon as it exists
/// (a cancelled restore kills it, and the other stubs die with it: their
/// parent-death signal). On failure the caller drops `stubs`.
pub(crate) fn start_tree(
    sh: &Shared<'_>,
    w: &mut Work<'_>,
    stubs: &Stubs,
    watch: &dyn Fn(i32),
) -> Result<Started> {
    let pipe = |what: &str| {
        sfds::pipe::pipe2(libc::O_CLOEXEC).map_err(|source| Error::Sys {
            context: format!("creating the stubs' {what} pipe"),
            source,
        })
    };
    let (status_r, status_w) = pipe("status")?;
    let (go_r, go_w) = pipe("release")?;
    let t0 = Instant::now();
    let mut backoff = Duration::from_millis(1);
    let mut want = sh.want[0];
    let root = loop {
        match fork_with(want, 0) {
            Ok(Forked::Child) => root_main(sh, w, status_w.as_raw_fd(), go_r.as_raw_fd()),
            Ok(Forked::Parent(c)) => {
                watch(c);
                break c;
            }
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                let p = want.unwrap_or(0);
                let waited = t0.elapsed();
                let holder = holder_of(p);
                // A zombie about to be reaped, or a holder /proc does not
                // show yet (or any more): try again a little later, for a
                // bounded time, without spinning.
                let retry = match &holder {
                    Some((_, true)) => waited < sh.zombie_wait,
                    None => waited < sh.zombie_wait.max(Duration::from_millis(100)),
                    Some((_, false)) => false,
                };
                if retry {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                } else if sh.new_pid {
                    want = None;
                } else {
                    let holder = holder.map(|h| h.0).unwrap_or_else(|| {
                        "a task this restorer cannot see (another pid namespace?)".into()
                    });
                    return Err(Error::PidInUse { pid: p, holder });
                }
            }
            Err(source) => {
                let context = match (want, source.errno()) {
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
    stubs.pids.set(0, root);
    drop(status_w);
    drop(go_r);
    Ok(Started {
        status: status_r,
        go: go_w,
    })
}

/// Processes built by one builder, in order: those sharing an fd table
/// (creation indices).
pub(crate) struct BuildGroup {
    pub members: Vec<usize>,
    /// One of them needs every process to exist first (its late fds name
    /// others: pidfds, epoll targets of other processes).
    pub whole: bool,
}

/// What the restorer knows of the stubs while they are made, for the
/// threads building the processes: which stubs are ready to be built,
/// whether the whole tree exists, and which groups of processes builders
/// have taken.
pub(crate) struct Readiness {
    st: Mutex<ReadyState>,
    cv: Condvar,
}

struct ReadyState {
    /// By creation index.
    ready: Vec<bool>,
    /// Every process exists (their pids are known).
    whole: bool,
    /// The stubs failed: nothing more will be ready.
    failed: bool,
    /// By group index: a builder has it.
    taken: Vec<bool>,
}

impl Readiness {
    pub fn new(nodes: usize, groups: usize) -> Readiness {
        Readiness {
            st: Mutex::new(ReadyState {
                ready: vec![false; nodes],
                whole: false,
                failed: false,
                taken: vec![false; groups],
            }),
            cv: Condvar::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReadyState)) {
        f(&mut self.st.lock().unwrap_or_else(|p| p.into_inner()));
        self.cv.notify_all();
    }

    /// Nothing more will be ready: builders waiting for a group stop.
    pub fn fail(&self) {
        self.update(|s| s.failed = true);
    }

    fn failed(&self) -> bool {
        self.st.lock().unwrap_or_else(|p| p.into_inner()).failed
    }

    /// Take the first group not taken yet whose stubs are all ready (and,
    /// for one that needs it, once every process exists); wait for one.
    /// None once every group is taken, or when the stubs failed or `stop`
    /// is set.
    pub fn take(&self, groups: &[BuildGroup], stop: &AtomicBool) -> Option<usize> {
        let mut s = self.st.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if s.failed || stop.load(Ordering::Relaxed) {
                return None;
            }
            let mut left = false;
            for (g, group) in groups.iter().enumerate() {
                if s.taken[g] {
                    continue;
                }
                left = true;
                if (s.whole || !group.whole) && group.members.iter().all(|&c| s.ready[c]) {
                    s.taken[g] = true;
                    return Some(g);
                }
            }
            if !left {
                return None;
            }
            s = match self.cv.wait_timeout(s, Duration::from_millis(50)) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Read the stubs' records until the tree exists (then release them by
/// closing `go`), every live one is ready and every one has closed its
/// end, telling `ready` of each (and `watch` of each ready pid) as it
/// comes. On failure `ready` is told so and the caller drops `stubs`.
pub(crate) fn wait_ready(
    sh: &Shared<'_>,
    stubs: &Stubs,
    started: Started,
    ready: &Readiness,
    watch: &dyn Fn(i32),
) -> Result<()> {
    let r = read_reports(sh, stubs, started, ready, watch);
    if r.is_err() {
        ready.fail();
    }
    r
}

fn read_reports(
    sh: &Shared<'_>,
    stubs: &Stubs,
    Started { status: r, go }: Started,
    readiness: &Readiness,
    watch: &dyn Fn(i32),
) -> Result<()> {
    let nodes = &sh.tree.nodes;
    let live = nodes.iter().filter(|n| n.zombie.is_none()).count();
    let deadline = Instant::now() + STUB_TIMEOUT;
    let (mut go, mut forked, mut ready) = (Some(go), false, 0);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if readiness.failed() {
            // A builder failed (its error is the one to report): the
            // stubs are killed.
            return Err(Error::Stub {
                pid: stubs.pid(0),
                what: "stopped: a process of the tree could not be built".into(),
            });
        }
        let readable = sfds::wait_readable(r.as_raw_fd(), 100).map_err(|source| Error::Sys {
            context: "waiting for the restore stubs".into(),
            source,
        })?;
        if !readable {
            check_alive(sh, stubs)?;
            if Instant::now() > deadline {
                return Err(Error::Stub {
                    pid: stubs.pid(0),
                    what: format!(
                        "the stubs were not ready within {} s ({ready} of {live})",
                        STUB_TIMEOUT.as_secs()
                    ),
                });
            }
            continue;
        }
        let n = sfds::read(r.as_raw_fd(), &mut chunk).map_err(|source| Error::Sys {
            context: "reading the restore stubs' reports".into(),
            source,
        })?;
        if n == 0 {
            if forked && ready == live {
                return Ok(());
            }
            check_alive(sh, stubs)?;
            return Err(Error::Stub {
                pid: stubs.pid(0),
                what: "a stub died while setting up its files".into(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= REC_LEN {
            let rec: Vec<u8> = buf.drain(..REC_LEN).collect();
            let num = |at: usize| u32::from_le_bytes(rec[at..at + 4].try_into().expect("4 bytes"));
            let idx = num(4) as usize;
            match rec[0] {
                REC_FORKED => {
                    forked = true;
                    go = None; // every stub goes on
                    readiness.update(|s| s.whole = true);
                }
                REC_READY if idx < nodes.len() => {
                    ready += 1;
                    watch(stubs.pid(idx));
                    readiness.update(|s| s.ready[idx] = true);
                }
                _ => {
                    let f = (num(8), num(12) as i32, num(16) as i32);
                    return Err(stub_error(sh, stubs, idx.min(nodes.len() - 1), f));
                }
            }
        }
        let _ = &go;
    }
}

/// A stub that should be alive and is not (gone, or a zombie).
fn check_alive(sh: &Shared<'_>, stubs: &Stubs) -> Result<()> {
    for (i, n) in sh.tree.nodes.iter().enumerate() {
        let pid = stubs.pid(i);
        if pid <= 0 || n.zombie.is_some() {
            continue;
        }
        let dead = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rfind(')')
                .and_then(|k| s[k + 1..].split_whitespace().next())
                .is_some_and(|st| st == "Z" || st == "X"),
        };
        if dead {
            return Err(Error::Stub {
                pid,
                what: format!("died while being made (saved pid {})", n.pid),
            });
        }
    }
    Ok(())
}

/// The error a stub reported, said in full.
fn stub_error(sh: &Shared<'_>, stubs: &Stubs, idx: usize, (code, arg, errno): Fail) -> Error {
    let node = &sh.tree.nodes[idx];
    let plan = sh.plan;
    let source = std::io::Error::from_raw_os_error(errno);
    let who = format!("pid {}", node.pid);
    let what = match code {
        c if (c as usize) < plan.ops.len() => plan.what[c as usize].clone(),
        c if (CODE_STD..CODE_STD + 3).contains(&c) => {
            format!("the restorer's own fd {}", c - CODE_STD)
        }
        CODE_PLACE => format!("{who}: putting fd {arg} in place"),
        CODE_POST => plan.procs[node.image]
            .post_what
            .get(arg as usize)
            .cloned()
            .unwrap_or_else(|| format!("{who}: an epoll registration")),
        CODE_FORK | CODE_CHILD => {
            let c = arg.max(0) as usize;
            let child = sh.tree.nodes.get(c).map_or(0, |n| n.pid);
            if code == CODE_CHILD {
                format!("{who}: its child (saved pid {child}) died while being made")
            } else if errno == libc::EEXIST {
                let holder = holder_of(child).map_or_else(|| "another task".into(), |h| h.0);
                return Error::PidInUse { pid: child, holder };
            } else if errno == libc::EPERM {
                format!("{who}: creating its child at pid {child} (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN; or restore with a new pid)")
            } else {
                format!("{who}: creating its child at pid {child}")
            }
        }
        CODE_HELPER => {
            let pgid = sh
                .tree
                .helpers
                .get(arg.max(0) as usize)
                .map_or(0, |h| h.pgid);
            if errno == libc::EEXIST {
                let holder = holder_of(pgid).map_or_else(|| "another task".into(), |h| h.0);
                return Error::PidInUse { pid: pgid, holder };
            }
            format!(
                "{who}: a helper at pid {pgid} remaking process group {pgid}, whose leader is gone"
            )
        }
        CODE_SETSID => format!("{who}: setsid (leading its session again)"),
        CODE_GROUP => format!("{who}: setpgid (joining process group {arg})"),
        CODE_CTTY => format!("{who}: taking its controlling terminal again (TIOCSCTTY)"),
        CODE_FOREGROUND => format!("{who}: giving its terminal to process group {arg} (TIOCSPGRP)"),
        CODE_CREDS => match sh.as_saved {
            Some(sw) => {
                let ids = sw.ids();
                format!(
                    "switching to the saved user's file access ids (fs uid {} gid {}, groups {:?}) and back",
                    ids.uid, ids.gid, ids.groups
                )
            }
            None => "switching file access ids".into(),
        },
        _ => format!("{who}: setting up its stub"),
    };
    tracing::debug!(stub = stubs.pid(idx), code, arg, errno, "stub failed");
    Error::Fd {
        what,
        error: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_pipe_reaches_ends_without_blocking() {
        let mut slots = vec![-1i32; 2];
        let mut c = Child {
            slots: &mut slots,
            std_high: [-1; 3],
            as_saved: None,
            switch_failed: false,
            prebuilt: &[],
        };
        // A pipe whose only end left is the write end: opening another
        // write end would fail (ENXIO, no reader) without the detour.
        let (r, w) = sfds::pipe::pipe2(libc::O_CLOEXEC).unwrap();
        let (r, w) = (r.into_raw_fd(), w.into_raw_fd());
        sfds::close(r).unwrap();
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
        assert_eq!(sfds::get_fl(nw).unwrap() & libc::O_ACCMODE, libc::O_WRONLY);
        assert_eq!(sfds::get_fl(nr).unwrap() & libc::O_ACCMODE, libc::O_RDONLY);
        sfds::write_fd(w, b"hi").unwrap();
        let mut b = [0u8; 2];
        assert_eq!(sfds::read(nr, &mut b).unwrap(), 2);
        assert_eq!(&b, b"hi");
        for fd in [w, nw, nr] {
            sfds::close(fd).unwrap();
        }
    }

    #[test]
    fn image_paths_are_opened_with_the_saved_users_ids() {
        use ckpt_sys::creds::FsIds;
        use std::os::unix::fs::MetadataExt;
        ckpt_testkit::require!(ckpt_testkit::require::root());
        let own = FsIds::current().unwrap();
        let switch = FsSwitch::new(FsIds {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        })
        .unwrap();
        let mut slots = vec![-1i32; 3];
        let mut c = Child {
            slots: &mut slots,
            std_high: [-1; 3],
            as_saved: Some(&switch),
            switch_failed: false,
            prebuilt: &[],
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
        assert_eq!(sfds::read(slots[2], &mut b).unwrap(), 5);
        assert_eq!(&b, b"saved");
        sfds::close(slots[1]).unwrap();
        sfds::close(slots[2]).unwrap();
    }

    #[test]
    fn a_pipe_too_small_for_its_data_fails_instead_of_blocking() {
        fn child(slots: &mut [i32]) -> Child<'_> {
            Child {
                slots,
                std_high: [-1; 3],
                as_saved: None,
                switch_failed: false,
                prebuilt: &[],
            }
        }
        let mut slots = vec![-1i32; 2];
        let e = child(&mut slots)
            .run(&FdOp::Pipe {
                read: 0,
                write: 1,
                capacity: 4096,
                data: vec![1; 1 << 20],
            })
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EAGAIN), "{e}");
        for fd in slots.iter().filter(|&&f| f >= 0) {
            sfds::close(*fd).unwrap();
        }
        // What fits goes in, and the ends are blocking again.
        let mut slots = vec![-1i32; 2];
        child(&mut slots)
            .run(&FdOp::Pipe {
                read: 0,
                write: 1,
                capacity: 0,
                data: b"abc".to_vec(),
            })
            .unwrap();
        assert_eq!(sfds::get_fl(slots[1]).unwrap() & libc::O_NONBLOCK, 0);
        let mut b = [0u8; 3];
        assert_eq!(sfds::read(slots[0], &mut b).unwrap(), 3);
        for fd in slots {
            sfds::close(fd).unwrap();
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
