//! ckpt-restore: recreate a saved process from an image.
//!
//! [`check()`] finds, without touching anything, every reason a restore
//! could not work here. [`restore`] builds the process as a direct child of
//! the caller and lets it run:
//!
//! 1. **Plan** (pure, [`plan`]): the stub's fd table, the mappings and page
//!    writes, where the trampoline goes and how the vdso moves.
//! 2. **Stub**: a child forked at the saved pid (clone3 `set_tid`) sets up
//!    the saved fds with plain system calls, closes everything else and
//!    waits in `pause()`.
//! 3. The caller seizes it and, by system calls injected through a
//!    trampoline page, replaces its address space with the image's (keeping
//!    and moving the kernel's vdso), writes the pages, restores mm fields,
//!    /proc/PID/exe, handlers, timers, limits and credentials, creates the
//!    other threads at their saved tids and gives each its kernel state,
//!    pending signals, registers and FPU state; then detaches.
//!
//! On any failure the half-built process is killed and reaped; the image is
//! only read. A [`Cancel`] handle (the `ckpt` command's, on SIGINT,
//! SIGTERM, SIGHUP) stops a restore from another thread: the stub or the
//! process being built is killed, which ends whatever step waits on it,
//! and [`restore`] returns [`Error::Cancelled`].
//!
//! # Who the restore is for
//! [`check()`] bounds what the image may ask by its requester: the owner
//! of the image file, or [`RestoreOptions::requester`] (ckptfs's caller).
//! For a requester other than root and the restorer itself, every saved
//! uid must be the requester's, every gid and group one of its groups,
//! no capability, and no other right only root has (spec/security.md §3,
//! `check::Requester`, `process::creds::check_requester`).
//!
//! # File locks
//! flock, POSIX, OFD locks and leases (`Image.locks`) are taken again by
//! the process being built once its fds are final (`fds/locks.rs`), never
//! waiting: a lock someone else holds now is refused by check() (from
//! /proc/locks), naming the file.
//!
//! # Where things are
//! One module per kind of saved object, named as in ckpt-capture; each
//! holds that kind's checks, its (pure) planning and its execution:
//! - `fds/`: the stub's fd table. `fds/mod.rs` groups fds by open file
//!   description, gives each a slot, dispatches to the kind modules and
//!   places the fds; `fds/<kind>.rs` (regular, opath, nsfs, pidfd,
//!   fanotify, pipe, unix, inet, udp, raw, netlink, packet, tty, pty, eventfd,
//!   epoll, timerfd, signalfd, inotify, memfd, chardev) plan the
//!   [`plan::fds::FdOp`]s of their kind and run them in the stub. Fds
//!   that need the process's threads (pidfds of live tasks, and their
//!   epoll watches) are made by injection once the threads exist
//!   ([`plan::fds::LateFd`]). `fds/sockets.rs`: the sockets the restorer
//!   builds itself before forking the stub (TCP with TCP_REPAIR, UDP,
//!   raw, netlink, packet), which the stub inherits, and the connection
//!   locks lifted just before the process runs.
//!   `fds/locks.rs` checks and takes back file locks.
//! - `mem/`: the address space: `layout` (trampoline, vdso moves, free
//!   space), `vmas` (mappings), `pages` (page writes), `uffd`
//!   (UFFDIO_COPY), `hugefill` (huge-page fills).
//! - `process/`: `creds`, `signals`, `timers`, `rlimits`, `thread`
//!   (threads, per-thread state, registers), `seccomp` (filters, installed
//!   last, shared between threads as saved), `cgroup` (missing saved cgroup
//!   directories made before the stubs; the stub joins its saved v2 and v1
//!   cgroups and cgroup namespace, threads their own v1 cgroups), `sysv` (SysV IPC objects made again with
//!   their ids before the stub, or reused when unchanged), and the rest
//!   of the process state in `process/mod.rs` (with the deleted cwd,
//!   membarrier registrations, the login uid).
//! - `check.rs` (what [`check()`] looks at), `stub.rs` (the forked stub
//!   running the fd ops), `build.rs` (the steps of [`restore`], each logged
//!   with `tracing` with its duration).
//!
//! # Same pid, and why it is the default
//! glibc caches each thread's tid in its `struct pthread` (used by
//! `pthread_self()`-based calls such as `raise()`, `pthread_kill()` and
//! robust/PI mutexes). Restoring under other ids leaves those caches stale,
//! and this crate does not patch libc memory. So the saved pid and tids are
//! required by default; [`RestoreOptions::new_pid`] allows fresh ids when
//! the saved ones are taken, with that caveat.
//!
//! # Syscall restart
//! A thread stopped inside a system call resumes by re-executing it, as the
//! kernel would (or gets EINTR where a pending handler would run first and
//! the call may not be restarted across it). ERESTART_RESTARTBLOCK calls
//! (nanosleep, poll, futex with a timeout) are re-executed rather than sent
//! to `restart_syscall`, whose state lived in the old task: their timeout
//! starts over.
//!
//! # Writing the pages
//! Saved frames are independent: one worker per core (at most 4, the
//! calling thread being one) takes the next batch of neighbouring frames,
//! reads it with one read (up to 2 MiB), checks and decodes each frame
//! into buffers it reuses, and writes the pieces straight from there with
//! process_vm_writev, up to IOV_MAX ranges a call. The target's page faults
//! are taken on every core; peak memory is a few MiB a worker.
//!
//! Fresh anonymous memory costs a page fault per 4 KiB. Private anonymous
//! mappings are therefore registered with a userfaultfd made in the
//! target (Linux 5.11+, with UFFD_FEATURE_SIGBUS so nothing can wait on
//! it) and filled with UFFDIO_COPY from the workers, which allocates and
//! fills each page without the fault, clearing and pinning of a write into
//! fresh memory: a third less CPU for the fill. They are unregistered
//! before the process runs, so they keep their flags. Without a
//! userfaultfd (older kernel, seccomp, CKPT_UFFD_COPY=0)
//! process_vm_writev does it all. Where THP is in
//! madvise mode, large private anonymous mappings can be filled through a
//! temporary MADV_HUGEPAGE area instead (one fault per 2 MiB) whose pages
//! are then moved into the mapping with UFFDIO_MOVE (Linux 6.8): the
//! mapping keeps exactly its saved flags (no VM_HUGEPAGE left behind for
//! khugepaged to act on, no MADV_NOHUGEPAGE that was not there), only dense
//! 2 MiB blocks are used (at least half covered by saved pages), and
//! mappings saved with MADV_NOHUGEPAGE, KSM or a THP-disabled process are
//! left alone. It is off by default where free huge pages are reported to
//! a hypervisor (virtio-balloon free page reporting): there a fresh huge
//! page is backed by the host 4 KiB at a time as it is cleared, which made
//! the fill 2-3 times slower than 4 KiB faults on the pages the dumped
//! process had just freed. See [`RestoreOptions::huge_fill`].
//!
//! # External pipes
//! A pipe end whose other end is not in the image (a shell pipeline, a
//! parent reading the process's stdout through `subprocess.PIPE`, a test
//! harness) is reconnected to the same pipe when some live process still
//! holds it: /proc/\*/fd is searched for `pipe:[INODE]` (the saved parent
//! first, then the restorer, then every process, stopping at the first
//! hit) and the pipe is opened again through `/proc/HOLDER/fd/N` with the
//! saved access mode and status flags. The restored process thus writes
//! into (or reads from) the pipe its peer still holds, and never holds the
//! restorer's own stdout, so `$(ckpt restore --detach IMG)` returns.
//!
//! Data buffered in such a pipe at the dump is *not* written again: the
//! pipe never went away, so the bytes are still in it, unless the peer
//! read them meanwhile (then they were delivered, once). Between the dump
//! and the restore the pipe has no process at the saved end: a reader of
//! the peer's end sees end-of-file if it reads then (and no other writer
//! exists), a writer gets EPIPE/SIGPIPE. Only when no live holder is left
//! does the fallback below apply (with the restorer's fd 0-2 being what
//! the user of `ckpt restore` asked for). FIFOs are reopened by path as
//! before; their saved data is refilled only when no live process holds
//! the FIFO (else it is still in the pipe).
//!
//! # Deleted files
//! A deleted file behind an fd, or mapped with no fd left, is made again
//! from its saved contents: created at its old path when that is free and
//! unlinked at once (so that /proc/PID/fd and /proc/PID/maps name it as
//! before), else as an O_TMPFILE file in its directory (else /tmp); with
//! the saved user's rights where the restore takes them. Mappings of one
//! such file share one new file (made by the process being built,
//! `mem/vmas.rs`; filled by the restorer through /proc/PID/fd). A deleted
//! POSIX shared memory file (a named semaphore) mapped by one process only
//! is made again the same way at its /dev/shm name, empty, its pages
//! written after; mapped by several processes of a tree it is one shared
//! memory object for all.
//!
//! # Cancel
//! [`RestoreOptions::cancel`] stops a restore: the stubs, then every
//! process being built, are killed as soon as they exist; the restore
//! cleans up and returns [`Error::Cancelled`], with none of the tree left.
//!
//! # Sockets
//! Internet, netlink and packet sockets are made by the restorer (so that
//! repairing a TCP connection, which needs CAP_NET_ADMIN, and injecting
//! the packets a restore needs — a peer's FIN, an accept queue's
//! handshakes, queued datagrams — happen in a normal Rust process); the
//! stub inherits them and places them (`FdOp::Prebuilt`). Restored
//! connections stay in repair mode, their packets dropped by the dump's
//! lock, until [`restore`] is about to let the process run: then the lock
//! goes and they leave repair mode with a window probe, which resyncs
//! both sides at once. A restore that fails before closes them in repair
//! mode (silently) and leaves the lock, so it can be tried again.
//! [`RestoreOptions::tcp_close`] restores them aborted instead. Unix
//! sockets are made by the stub (see `fds/unix.rs`), so that their
//! credentials and paths are the process's.
//!
//! # Terminals
//! See [`RestoreOptions::terminal`]. A terminal from outside the image
//! (the shell's pty, /dev/tty) becomes a new description of the
//! restorer's terminal (its fd 0-2 that is one, else /dev/tty), or of the
//! terminal given by path. With [`Terminal::Job`] the process leads its own
//! process group in the restorer's session and, just before it runs, gets
//! the terminal as its foreground with its saved settings (when the
//! restorer holds it); [`Restored::terminal`] tells the caller, which does
//! the job control. With [`Terminal::Path`] it leads a new session with that
//! terminal as its controlling terminal. /dev/console, /dev/ttyN and serial
//! lines are reopened by path and must be the same device. Pty pairs whose
//! master is in the image are made again at their index with their
//! settings, size, packet mode, lock and buffered bytes (TIOCSTI: needs
//! CAP_SYS_ADMIN); a session leader whose controlling terminal is one of
//! them gets it back.
//!
//! # Not restored (check() says so, as an error or a warning)
//! - Unknown socket kinds, unknown special mappings: errors.
//! - Queued packets of raw, ping, netlink and packet sockets (dropped at
//!   the dump), sender names of queued unix datagrams whose sender is not
//!   in the image: warnings.
//! - A chroot; a seccomp filter of an image that does not hold it (before 1.2;
//!   restoring without it would drop the sandbox): errors.
//! - SysV IPC: an object whose id or key is taken by another object, or
//!   that changed since the dump: an error (remove it with ipcrm). SysV
//!   semaphore undo values (SEM_UNDO) are not saved.
//! - A timerfd whose clock is not comparable across boots (monotonic,
//!   boot time) restored on another boot is re-armed with the time it had
//!   left (a warning); fanotify and inotify events not read at the dump
//!   are lost.
//! - A terminal from outside the image is attached to the restorer's (or
//!   the one given, see [Terminals](#terminals)); its window size is the
//!   new terminal's. A process that led its session with such a terminal
//!   comes back as a job in the restorer's session (getsid() differs).
//! - A pipe end whose other end was outside the image, when no live process
//!   holds that pipe any more: the restorer's own fd 0/1/2 when it was one
//!   of those, else a new pipe whose other end is closed (buffered data is
//!   refilled where the read end is ours). See [External pipes](#external-pipes).
//! - An `oom_score_adj` below the restorer's cannot be set without
//!   CAP_SYS_RESOURCE: a warning.
//! - Timer overrun counts are lost; a job-control stop is not re-applied.
//! - Namespaces are not made: nsfs fds name the namespaces the restored
//!   process runs in (the restorer's).
//! - Capability sets are what the kernel leaves after setting the saved
//!   uids/gids (they are set only when they differ from the restorer's).

#![forbid(unsafe_code)]

mod build;
mod check;
mod error;
mod fds;
mod mem;
pub mod plan;
mod process;
mod remote;
mod stub;
mod tree;

pub use check::{check, check_once, Checked};
pub use error::{Error, Result};
pub use fds::Handover;

use ckpt_image::{ImageReader, ReadAt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a restore waits for a zombie holding the saved pid to be reaped
/// by its parent (e.g. the dumped process, killed, whose parent is slow).
pub(crate) const ZOMBIE_WAIT: Duration = Duration::from_secs(2);

/// Options of [`check()`] and [`restore`]. Build it with
/// `RestoreOptions { new_pid: true, ..Default::default() }`.
#[derive(Default)]
pub struct RestoreOptions {
    /// When the saved pid (or a saved tid) is taken, restore under fresh
    /// ids instead of failing. The saved ids are still used when free.
    /// See the crate documentation for what fresh ids break.
    pub new_pid: bool,
    /// Called with (bytes of pages written, bytes to write) while the
    /// pages are written, from the calling thread. Only called when
    /// [`restore`] is given the options as `&mut`.
    pub progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
    /// Write large anonymous mappings through transparent huge pages
    /// (then moved into place with UFFDIO_MOVE, the mappings keeping their
    /// saved flags): `Some(true)` whenever THP is in madvise mode,
    /// `Some(false)` never, `None` (the default) as the environment
    /// variable CKPT_HUGE_FILL=1/0 says, else unless free huge pages are
    /// reported to a hypervisor (there a fresh huge page costs a host fault
    /// per 4 KiB as it is cleared, slower than reusing the 4 KiB pages the
    /// dumped process just freed).
    pub huge_fill: Option<bool>,
    /// Restore even when the executable or a mapped file whose pages are
    /// not in the image is not the file that was saved (its size, times,
    /// inode or inode generation differ): check() then warns, each warning
    /// starting with "--force-files: ", instead of refusing.
    pub force_files: bool,
    /// Lets another thread stop the restore ([`Cancel::cancel`]).
    pub cancel: Option<Cancel>,
    /// The user the restore is made for, when it is not the owner of the
    /// image file (ckptfs: the user who asked): the process may hold only
    /// credentials and rights that user could (spec/security.md).
    pub requester: Option<u32>,
    /// Restore live TCP connections of the image closed (aborted: the
    /// process's next read or write on them fails) instead of live, and
    /// remove the dump's connection lock (their peers get a reset).
    pub tcp_close: bool,
    /// What terminals from outside the image (the shell's) are attached
    /// to, and whether the process comes back as a job of the caller's.
    pub terminal: Terminal,
    /// Leave the processes in the restorer's cgroups: the saved cgroup
    /// membership (v1 and v2), directories and namespace are not used.
    pub ignore_cgroups: bool,
    /// Move the saved cgroups under other roots (`--cgroup-root`): a saved
    /// cgroup /a/b of a hierarchy goes to ROOT/a/b, the missing
    /// directories on its way being made.
    pub cgroup_roots: Vec<CgroupRoot>,
}

/// Where a restore puts the saved cgroups of one hierarchy, or of every
/// v1 hierarchy no other [`CgroupRoot`] names (`hierarchy` None; cgroup v2
/// only by its name, ""). `hierarchy` as /proc/PID/cgroup names it ("cpu,cpuacct",
/// "name=x"; "" for cgroup v2); `path` absolute ("/" changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot {
    pub hierarchy: Option<String>,
    pub path: Vec<u8>,
}

/// Where a restored process's terminals from outside the image go (see
/// [`RestoreOptions::terminal`] and the crate documentation, "Terminals").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Terminal {
    /// The caller's terminal (one of its fds 0-2 that is one, else
    /// /dev/tty), reopened; the process joins the caller's session and,
    /// unless it led its group, its group. Nothing is handed over.
    #[default]
    Caller,
    /// The same terminal, the process as a shell job of the caller's: it
    /// leads its own group in the caller's session, and before it runs it
    /// gets the terminal with its saved settings (when the caller holds
    /// the terminal): see [`Restored::terminal`]. The caller then acts
    /// for it towards its own shell (`ckpt restore`'s job control).
    Job,
    /// This terminal: the process leads a new session with it as its
    /// controlling terminal, with its saved settings. It must be no
    /// session's controlling terminal.
    Path(std::path::PathBuf),
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("new_pid", &self.new_pid)
            .field("progress", &self.progress.is_some())
            .field("huge_fill", &self.huge_fill)
            .field("force_files", &self.force_files)
            .field("cancel", &self.cancel.as_ref().and_then(|c| c.signal()))
            .field("requester", &self.requester)
            .field("tcp_close", &self.tcp_close)
            .field("terminal", &self.terminal)
            .finish()
    }
}

/// A handle that stops a running [`restore`] from another thread (the
/// `ckpt` command's, on SIGINT, SIGTERM or SIGHUP): the stub or the
/// process being built is killed, which ends whatever step waits on it,
/// and the restore cleans up and returns [`Error::Cancelled`]. Clones
/// share the request.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<Mutex<CancelState>>);

#[derive(Debug, Default)]
struct CancelState {
    /// The signal that asked for it (0: not asked).
    signal: i32,
    /// The processes being built (the stubs of the tree, as they are
    /// known).
    victims: Vec<i32>,
    /// The restore is over (done or failed): nothing to stop any more.
    over: bool,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CancelState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop the restore (`signal` names why in the error). False when it
    /// was over already (the process, if restored, runs: the caller may
    /// pass the signal on to it).
    pub fn cancel(&self, signal: i32) -> bool {
        let mut s = self.state();
        if s.over {
            return false;
        }
        if s.signal == 0 {
            s.signal = signal.max(1);
        }
        for &v in &s.victims {
            let _ = ckpt_sys::proc::kill(v, libc::SIGKILL);
        }
        true
    }

    /// The signal that cancelled it, if it was.
    pub fn signal(&self) -> Option<i32> {
        match self.state().signal {
            0 => None,
            s => Some(s),
        }
    }

    /// `pid` is being built: killed if cancelled, now or later.
    pub(crate) fn watch(&self, pid: i32) {
        if pid <= 0 {
            return;
        }
        let mut s = self.state();
        if !s.victims.contains(&pid) {
            s.victims.push(pid);
        }
        if s.signal != 0 {
            let _ = ckpt_sys::proc::kill(pid, libc::SIGKILL);
        }
    }

    /// Err(Cancelled) once cancelled.
    pub(crate) fn check(&self) -> Result<()> {
        match self.signal() {
            Some(signal) => Err(Error::Cancelled { signal }),
            None => Ok(()),
        }
    }

    /// The restore is over; the signal that cancelled it, if one did
    /// before (then its victim was killed).
    pub(crate) fn finish(&self) -> Option<i32> {
        let mut s = self.state();
        s.over = true;
        s.victims.clear();
        (s.signal != 0).then_some(s.signal)
    }
}

/// The options [`restore`] takes: `&RestoreOptions`, or `&mut
/// RestoreOptions` to have its progress callback called.
pub enum OptionsRef<'a> {
    Shared(&'a RestoreOptions),
    Mut(&'a mut RestoreOptions),
}

impl<'a> From<&'a RestoreOptions> for OptionsRef<'a> {
    fn from(o: &'a RestoreOptions) -> Self {
        OptionsRef::Shared(o)
    }
}

impl<'a> From<&'a mut RestoreOptions> for OptionsRef<'a> {
    fn from(o: &'a mut RestoreOptions) -> Self {
        OptionsRef::Mut(o)
    }
}

/// What [`check()`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Reasons the restore cannot work here.
    pub errors: Vec<String>,
    /// Things that will differ after the restore, or may go wrong.
    pub warnings: Vec<String>,
}

impl Report {
    /// No errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Numbers of one restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreStats {
    /// From the call to the process running.
    pub total: Duration,
    /// Bytes of saved pages written into the process.
    pub page_bytes: u64,
    /// System calls injected into the process while building it.
    pub injected_syscalls: u64,
    /// Time since the start at the end of each phase.
    pub phases: Vec<(&'static str, Duration)>,
}

/// A restored, running tree of processes.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The root's pid: a child of the caller, no longer traced.
    pub pid: i32,
    /// The root's threads' tids, the leader first (the image's order).
    pub tids: Vec<i32>,
    pub stats: RestoreStats,
    /// Every process of the image: (saved pid, pid now), the root first.
    /// They differ only with [`RestoreOptions::new_pid`].
    pub pids: Vec<(i32, i32)>,
    /// The terminal handed over to it (with `Terminal::Job` or
    /// `Terminal::Path`).
    pub terminal: Option<Handover>,
}

pub use mem::lazy::{FrameSource, LazyEnd, Server as LazyServer};

/// A lazy restore: as [`restore`], but the process's anonymous memory is
/// not written before it runs; it is filled on demand and in the
/// background by the returned server, which must then be run with
/// [`LazyServer::serve`] on this same thread (it is the process's ptrace
/// tracer until every page is in: see `mem/lazy.rs` for what happens if it
/// dies or the image cannot be read). The process runs once `serve` is
/// called.
pub fn restore_lazy<R: ReadAt + Send + Sync + 'static>(
    reader: std::sync::Arc<ImageReader<R>>,
    opts: &mut RestoreOptions,
) -> Result<(Restored, LazyServer)> {
    let mut cb = opts.progress.take();
    let source: std::sync::Arc<dyn FrameSource> = reader.clone();
    let r = match cb.as_mut() {
        Some(f) => build::restore_with(&*reader, opts, &mut |d, t| f(d, t), Some(source), None),
        None => build::restore_with(&*reader, opts, &mut |_, _| {}, Some(source), None),
    };
    opts.progress = cb;
    let (restored, server) = r?;
    let server = server.ok_or_else(|| Error::Stub {
        pid: restored.pid,
        what: "the lazy restore did not start".into(),
    })?;
    Ok((restored, server))
}

/// [`restore`] of an image already checked with [`check_once`] (same
/// reader and options): the check is not made twice. `checked` must hold
/// no errors (else this returns them as [`Error::Check`]).
pub fn restore_checked<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &mut RestoreOptions,
    checked: Checked,
) -> Result<Restored> {
    let mut cb = opts.progress.take();
    let r = match cb.as_mut() {
        Some(f) => build::restore_checked(reader, opts, &mut |d, t| f(d, t), checked),
        None => build::restore_checked(reader, opts, &mut |_, _| {}, checked),
    };
    opts.progress = cb;
    r
}

/// Recreate the image's processes, the root as a child of the calling
/// process and the others under their saved parents, with all their
/// threads, and let them run (all at once). The calling thread must stay
/// alive while this runs (the stubs die with it). On failure nothing is
/// left running.
pub fn restore<'o, R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: impl Into<OptionsRef<'o>>,
) -> Result<Restored> {
    match opts.into() {
        OptionsRef::Shared(o) => build::restore(reader, o, &mut |_, _| {}),
        OptionsRef::Mut(o) => {
            let mut cb = o.progress.take();
            let r = match cb.as_mut() {
                Some(f) => build::restore(reader, o, &mut |d, t| f(d, t)),
                None => build::restore(reader, o, &mut |_, _| {}),
            };
            o.progress = cb;
            r
        }
    }
}
