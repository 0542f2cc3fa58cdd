//! Freezing a process: checks, seizing every thread, and letting it go again
//! (resumed as it was, or killed).

use crate::error::{Error, Result, SysCtx};
use crate::procfs::{self, Stat, Status};
use ckpt_sys::{proc, ptrace, Pid};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PF_KTHREAD: u64 = 0x0020_0000;
/// How long a thread may take to reach its stop once asked to: longer, and
/// the dump is refused (a thread in uninterruptible sleep: a vfork parent,
/// a hung file system).
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// No PTRACE_O_EXITKILL: if we die while only reading the process (most of
/// a dump), the kernel lets it go on untouched, which is what it should do.
/// It is set only around system call injection ([`Frozen::set_exit_kill`]),
/// where dying would leave the process running with foreign registers.
const SEIZE_OPTIONS: u32 = ptrace::PTRACE_O_TRACESYSGOOD;
/// Seccomp filters (and strict mode) do not apply to the tracee while we
/// hold it: our injected system calls must not be refused or kill it.
/// Needs CAP_SYS_ADMIN.
const PTRACE_O_SUSPEND_SECCOMP: u32 = 1 << 21;

/// A seized thread.
#[derive(Debug, Clone)]
pub(crate) struct FrozenThread {
    pub tid: Pid,
    /// /proc state letter before we stopped it.
    pub state_before: String,
    /// Signals the kernel dequeued for delivery while we stopped the thread
    /// (suppressed by us; they must be queued again).
    pub deferred: Vec<[u8; ptrace::SIGINFO_SIZE]>,
    /// The signal its interrupt stop reported: for a process in a
    /// job-control stop, the signal that stopped it; else SIGTRAP.
    pub stop_sig: i32,
    /// Its rseq registration, read at the stop (address 0: none).
    pub rseq: ckpt_sys::rseq::RseqConfig,
}

/// All threads of a process in ptrace stops. Dropping it without
/// [`Frozen::release`] or [`Frozen::kill`] detaches every thread (resumes it).
pub(crate) struct Frozen {
    pub pid: Pid,
    /// Leader first, then by tid.
    pub threads: Vec<FrozenThread>,
    /// Threads asked to stop and not waited for yet (see [`Frozen::begin`]).
    pending: Vec<Pid>,
    pub state_before: String,
    pub started: Instant,
    done: bool,
    /// Seized with PTRACE_O_SUSPEND_SECCOMP.
    seccomp: bool,
}

/// Refuse targets we must not or cannot dump, with a clear reason.
pub(crate) fn check_target(pid: Pid) -> Result<()> {
    check_target_as(pid, &Me::read(pid)?)
}

/// What [`check_permission`] needs of the dumper itself: read once for a
/// whole tree.
pub(crate) struct Me {
    caps: u64,
    uid: u32,
    gid: u32,
}

impl Me {
    /// Our own effective capabilities and ids (`pid`: the process being
    /// checked, for errors).
    pub(crate) fn read(pid: Pid) -> Result<Me> {
        let me = Status::read(pid, "/proc/self/status")?;
        Ok(Me {
            caps: me.radix("CapEff", 16)?,
            uid: me.ids("Uid")?[1],
            gid: me.ids("Gid")?[1],
        })
    }
}

/// [`check_target`], for a dumper that is `me`.
pub(crate) fn check_target_as(pid: Pid, me: &Me) -> Result<()> {
    if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::NoSuchProcess { pid });
    }
    if pid == proc::getpid() {
        return Err(Error::Ourselves { pid });
    }
    let status = match Status::read(pid, &format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(Error::Exited { .. }) => return Err(Error::NoSuchProcess { pid }),
        Err(e) => return Err(e),
    };
    let tgid: Pid = status.num("Tgid")?;
    if tgid != 0 && tgid != pid {
        if tgid == proc::getpid() {
            return Err(Error::Ourselves { pid });
        }
        return Err(Error::NotProcess { pid, tgid });
    }
    let (_, state) = status.get("State")?;
    if state.starts_with('Z') || state.starts_with('X') {
        return Err(headless(pid).unwrap_or(Error::Zombie { pid }));
    }
    let stat = Stat::read(pid, &format!("/proc/{pid}/stat"))?;
    if u64::from(stat.stat.flags) & PF_KTHREAD != 0 {
        return Err(Error::KernelThread { pid });
    }
    let tracer: Pid = status.num("TracerPid")?;
    if tracer != 0 {
        return Err(Error::AlreadyTraced { pid, tracer });
    }
    check_permission(pid, &status, me)
}

/// The error for a process in state Z whose main thread exited
/// (pthread_exit) while other threads run: a live process, which ckpt
/// cannot save (None: a real zombie).
pub(crate) fn headless(pid: Pid) -> Option<Error> {
    let threads = crate::procfs::list_tids(pid).map_or(0, |t| t.len());
    (threads > 1).then(|| Error::NotPermitted {
        pid,
        why: format!(
            "has a main thread that exited (pthread_exit) while its {} other thread(s) run: a process without its main thread cannot be saved",
            threads - 1
        ),
    })
}

const CAP_SYS_PTRACE: u32 = 19;

/// The kernel's ptrace rule (ptrace_may_access), said clearly before we try:
/// without CAP_SYS_PTRACE a caller may dump only processes whose real,
/// effective and saved uids and gids are all its own, and which are
/// dumpable. A process stops being dumpable when it changes its ids (a
/// setuid program) or says so (PR_SET_DUMPABLE 0): it may hold what its
/// user must not read. /proc would still show some of it, so we check this
/// ourselves rather than rely on a later ptrace failing.
fn check_permission(pid: Pid, status: &Status, me: &Me) -> Result<()> {
    if me.caps & (1 << CAP_SYS_PTRACE) != 0 {
        return Ok(());
    }
    let (my_uid, my_gid) = (me.uid, me.gid);
    let uids = status.ids("Uid")?;
    let gids = status.ids("Gid")?;
    let three = |v: &[u32]| {
        v.iter()
            .take(3)
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    if uids.iter().take(3).any(|&u| u != my_uid) || gids.iter().take(3).any(|&g| g != my_gid) {
        let owner = uids[1];
        return Err(Error::NotPermitted {
            pid,
            why: format!(
                "belongs to uid {owner} (uids {}, gids {} real/effective/saved); uid {my_uid} may dump only its own processes (or needs CAP_SYS_PTRACE)",
                three(&uids),
                three(&gids)
            ),
        });
    }
    // A non-dumpable process's /proc/PID files (not the directory) belong to root.
    let path = format!("/proc/{pid}/status");
    let proc_uid = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .map_err(|e| procfs::io_err(pid, &path, e))?;
    if proc_uid != my_uid {
        return Err(Error::NotPermitted {
            pid,
            why: "is not dumpable (it set PR_SET_DUMPABLE to 0, or changed its ids like a setuid program): only a caller with CAP_SYS_PTRACE may dump it".into(),
        });
    }
    Ok(())
}

/// "state D (disk sleep), in wait_for_vfork_done": what a thread is doing,
/// for messages.
pub(crate) fn describe_thread(pid: Pid, tid: Pid) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let name = match state.as_str() {
        "R" => "running",
        "S" => "sleeping",
        "D" => "disk sleep",
        "T" => "stopped",
        "t" => "tracing stop",
        "Z" => "zombie",
        _ => "?",
    };
    let wchan =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
    match wchan.trim() {
        "" | "0" => format!("state {state} ({name})"),
        w => format!("state {state} ({name}), in {w}"),
    }
}

/// The state letter of a thread before we stop it; empty when it cannot
/// be read (the thread exited: seizing it fails, and it is skipped).
fn thread_state(pid: Pid, tid: Pid) -> Result<String> {
    let path = format!("/proc/{pid}/task/{tid}/stat");
    match std::fs::read(&path) {
        Ok(raw) => Ok(Stat::parse(pid, &path, &raw)?.state()),
        Err(_) => Ok(String::new()),
    }
}

/// Whether a thread of `pid` runs under seccomp (a thread may have
/// filters of its own that the leader does not).
fn any_seccomp(pid: Pid, tids: &[Pid]) -> Result<bool> {
    if Status::read(pid, &format!("/proc/{pid}/status"))?.num::<u32>("Seccomp")? != 0 {
        return Ok(true);
    }
    // The process's status is its main thread's.
    for &tid in tids.iter().filter(|&&t| t != pid) {
        if let Ok(st) = Status::read(pid, &format!("/proc/{pid}/task/{tid}/status")) {
            if st.num::<u32>("Seccomp")? != 0 {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl Frozen {
    /// Seize and stop every thread of `pid` ([`Frozen::begin`], then
    /// [`Frozen::complete`]): one process alone.
    pub fn freeze(pid: Pid) -> Result<Frozen> {
        let mut f = Frozen::begin(pid)?;
        f.complete()?;
        Ok(f)
    }

    /// Seize every thread of `pid` there is now and ask each to stop,
    /// without waiting for the stops ([`Frozen::complete`] does): a tree's
    /// processes are all asked before any is waited for.
    pub fn begin(pid: Pid) -> Result<Frozen> {
        let state_before = Stat::read(pid, &format!("/proc/{pid}/stat"))?.state();
        let mut f = Frozen {
            pid,
            threads: Vec::new(),
            pending: Vec::new(),
            state_before,
            started: Instant::now(),
            done: false,
            seccomp: false,
        };
        let tids = match procfs::list_tids(pid) {
            Ok(t) => t,
            Err(Error::Exited { .. }) => return Err(Error::NoSuchProcess { pid }),
            Err(e) => return Err(e),
        };
        f.seccomp = any_seccomp(pid, &tids)?;
        let mut seized = BTreeMap::new();
        let r = f.seize_only(&mut seized, tids);
        f.threads = seized.into_values().collect();
        r.map(|pending| {
            f.pending = pending;
            f
        })
    }

    /// Wait for the stops asked by [`Frozen::begin`], then seize the
    /// threads created meanwhile, until no new one appears.
    pub fn complete(&mut self) -> Result<()> {
        let pid = self.pid;
        let mut seized: BTreeMap<Pid, FrozenThread> =
            self.threads.drain(..).map(|t| (t.tid, t)).collect();
        let pending = std::mem::take(&mut self.pending);
        let r = self.wait_stops(&mut seized, pending);
        self.threads = seized.values().cloned().collect();
        r?;
        let mut rounds = 1;
        loop {
            let tids = procfs::list_tids(pid)?;
            let new: Vec<Pid> = tids
                .into_iter()
                .filter(|t| !seized.contains_key(t))
                .collect();
            if new.is_empty() {
                break;
            }
            rounds += 1;
            if rounds > 1000 {
                return Err(Error::Sys {
                    pid,
                    what: "freezing".into(),
                    source: ckpt_sys::Error::Unexpected {
                        tid: pid,
                        what: "threads keep appearing".into(),
                    },
                });
            }
            let r = self.seize_round(&mut seized, new);
            self.threads = seized.values().cloned().collect();
            r?;
        }
        tracing::debug!(pid, threads = seized.len(), rounds, "threads seized");
        // Leader first.
        let mut threads: Vec<FrozenThread> = seized.into_values().collect();
        threads.sort_by_key(|t| (t.tid != pid, t.tid));
        let leader_first = threads.first().map(|t| t.tid) == Some(pid);
        self.threads = threads;
        if !leader_first {
            return Err(Error::Exited { pid });
        }
        Ok(())
    }

    /// Seize and interrupt all `new` threads first, then wait for each: the
    /// stops happen in parallel. A thread is in `seized` from the moment it
    /// is ours (so that a failure releases it) until it turns out gone.
    fn seize_round(
        &mut self,
        seized: &mut BTreeMap<Pid, FrozenThread>,
        new: Vec<Pid>,
    ) -> Result<()> {
        let pending = self.seize_only(seized, new)?;
        self.wait_stops(seized, pending)
    }

    /// Seize and interrupt the `new` threads; the ones to wait for.
    fn seize_only(
        &mut self,
        seized: &mut BTreeMap<Pid, FrozenThread>,
        new: Vec<Pid>,
    ) -> Result<Vec<Pid>> {
        let pid = self.pid;
        let mut pending = Vec::new();
        for tid in new {
            // The process's state is its main thread's (read by begin).
            let state_before = if tid == pid && !self.state_before.is_empty() {
                self.state_before.clone()
            } else {
                thread_state(pid, tid)?
            };
            if !self.seize(tid)? {
                continue; // the thread exited meanwhile
            }
            seized.insert(
                tid,
                FrozenThread {
                    tid,
                    state_before,
                    deferred: Vec::new(),
                    stop_sig: 0,
                    rseq: Default::default(),
                },
            );
            if let Err(e) = ptrace::interrupt(tid) {
                if e.errno() == Some(libc::ESRCH) && tid != pid {
                    // Exited right after seize; the wait below sees it.
                } else {
                    return Err(e).ctx(pid, || format!("interrupting thread {tid}"));
                }
            }
            pending.push(tid);
        }
        Ok(pending)
    }

    /// Wait (at most [`STOP_TIMEOUT`]) until every thread of `pending`
    /// reaches its interrupt stop; signals dequeued on the way are kept in
    /// its `deferred`. A thread that exits meanwhile is dropped (the leader
    /// exiting is the process exiting).
    fn wait_stops(
        &mut self,
        seized: &mut BTreeMap<Pid, FrozenThread>,
        mut pending: Vec<Pid>,
    ) -> Result<()> {
        let pid = self.pid;
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut rounds = 0u32;
        while !pending.is_empty() {
            let mut i = 0;
            while i < pending.len() {
                let tid = pending[i];
                let mut deferred = Vec::new();
                let r = ptrace::poll_interrupt_stop(tid, &mut deferred);
                if let Some(t) = seized.get_mut(&tid) {
                    t.deferred.extend(deferred);
                }
                match r {
                    Ok(Some(sig)) => {
                        let rseq = crate::process::thread::abort_rseq(pid, tid)?;
                        if let Some(t) = seized.get_mut(&tid) {
                            t.stop_sig = sig;
                            t.rseq = rseq;
                        }
                        pending.swap_remove(i);
                    }
                    Ok(None) => i += 1,
                    Err(ckpt_sys::Error::Gone { .. }) if tid != pid => {
                        seized.remove(&tid);
                        pending.swap_remove(i);
                    }
                    Err(ckpt_sys::Error::Gone { .. }) => return Err(Error::Exited { pid }),
                    Err(e) => return Err(e).ctx(pid, || format!("stopping thread {tid}")),
                }
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let tid = pending[0];
                return Err(Error::WontStop {
                    pid,
                    tid,
                    secs: STOP_TIMEOUT.as_secs(),
                    state: describe_thread(pid, tid),
                });
            }
            rounds += 1;
            if rounds < 50 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(())
    }

    /// PTRACE_SEIZE one thread; false when it has exited (a thread other
    /// than the leader).
    fn seize(&self, tid: Pid) -> Result<bool> {
        let pid = self.pid;
        let options = if self.seccomp {
            SEIZE_OPTIONS | PTRACE_O_SUSPEND_SECCOMP
        } else {
            SEIZE_OPTIONS
        };
        match ptrace::seize(tid, options) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ESRCH) => {
                if tid == pid {
                    return Err(Error::NoSuchProcess { pid });
                }
                Ok(false)
            }
            Err(e) if e.errno() == Some(libc::EPERM) => {
                // The thread exited meanwhile (ptrace refuses a zombie
                // with EPERM): as for ESRCH.
                let stat = Stat::read(pid, &format!("/proc/{pid}/task/{tid}/stat"));
                if stat
                    .as_ref()
                    .map_or(true, |s| s.state() == "Z" || s.state() == "X")
                {
                    if tid == pid {
                        return Err(Error::NoSuchProcess { pid });
                    }
                    return Ok(false);
                }
                // Somebody else may have attached between our check and now.
                if let Ok(st) = Status::read(pid, &format!("/proc/{pid}/task/{tid}/status")) {
                    let tracer: Pid = st.num("TracerPid")?;
                    if tracer != 0 {
                        return Err(Error::AlreadyTraced { pid, tracer });
                    }
                }
                if self.seccomp {
                    return Err(e).ctx(pid, || {
                        format!(
                            "seizing thread {tid} with seccomp suspended \
                             (the process uses seccomp; this needs CAP_SYS_ADMIN)"
                        )
                    });
                }
                Err(e).ctx(pid, || format!("seizing thread {tid}"))
            }
            Err(e) => Err(e).ctx(pid, || format!("seizing thread {tid}")),
        }
    }

    /// Whether our death kills the process (PTRACE_O_EXITKILL) rather than
    /// letting it go: on while its registers are not its own.
    pub fn set_exit_kill(&mut self, on: bool) -> Result<()> {
        let mut options = if on {
            SEIZE_OPTIONS | ptrace::PTRACE_O_EXITKILL
        } else {
            SEIZE_OPTIONS
        };
        if self.seccomp {
            options |= PTRACE_O_SUSPEND_SECCOMP;
        }
        for t in &self.threads {
            ptrace::set_options(t.tid, options).ctx(self.pid, || {
                format!("thread {}: setting ptrace options", t.tid)
            })?;
        }
        Ok(())
    }

    /// The deferred signals of these threads have been queued again (in the
    /// process itself), so they need no fallback at release.
    pub fn mark_requeued(&mut self, tids: &[Pid]) {
        for t in self.threads.iter_mut().filter(|t| tids.contains(&t.tid)) {
            t.deferred.clear();
        }
    }

    /// Let every thread go on exactly where it was (PTRACE_DETACH).
    pub fn release(mut self) -> Result<Duration> {
        self.done = true;
        let mut first_err = None;
        for t in &self.threads {
            if let Err(e) = detach_thread(self.pid, t) {
                if first_err.is_none() {
                    first_err = Some(Error::Release {
                        pid: self.pid,
                        what: format!("detaching thread {}: {e}", t.tid),
                    });
                }
            }
        }
        let d = self.started.elapsed();
        match first_err {
            Some(e) => Err(e),
            None => Ok(d),
        }
    }

    /// SIGKILL the process while we still hold it, and wait until it is dead
    /// (gone or a zombie left for its parent to reap).
    pub fn kill(mut self) -> Result<Duration> {
        self.done = true;
        let pid = self.pid;
        let _ = proc::kill(pid, libc::SIGKILL);
        let d = self.started.elapsed();
        // Collect the exit of every traced thread: other threads first (the
        // leader is reported only once the group is empty).
        for t in self.threads.iter().filter(|t| t.tid != pid) {
            loop {
                match ptrace::wait(t.tid) {
                    Ok(ptrace::Stop::Exited(_)) | Ok(ptrace::Stop::Killed(_)) | Err(_) => break,
                    Ok(_) => {
                        let _ = ptrace::cont(t.tid, 0);
                    }
                }
            }
        }
        // Unreadable: the process is gone already.
        let we_are_parent = match Stat::read(pid, &format!("/proc/{pid}/stat")) {
            Ok(s) => s.stat.ppid == proc::getpid(),
            Err(e @ Error::Parse { .. }) => {
                return Err(Error::Release {
                    pid,
                    what: e.to_string(),
                })
            }
            Err(_) => false,
        };
        if we_are_parent {
            // Do not reap our own child: the caller may want its status.
            let _ = proc::wait::wait_exit_nowait(pid);
        } else {
            loop {
                match ptrace::wait(pid) {
                    Ok(ptrace::Stop::Exited(_)) | Ok(ptrace::Stop::Killed(_)) | Err(_) => break,
                    Ok(_) => {
                        let _ = ptrace::cont(pid, 0);
                    }
                }
            }
        }
        // Dead means: no longer in /proc, or a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Stat::read(pid, &format!("/proc/{pid}/stat")) {
                Err(e @ Error::Parse { .. }) => {
                    return Err(Error::Release {
                        pid,
                        what: e.to_string(),
                    })
                }
                Err(_) => break,
                Ok(s) if matches!(s.state().as_str(), "Z" | "X") => break,
                Ok(_) if Instant::now() > deadline => {
                    return Err(Error::Release {
                        pid,
                        what: "the process did not die after SIGKILL".into(),
                    })
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        Ok(d)
    }
}

/// Detach one thread. One that is not in a ptrace stop yet (interrupted but
/// not waited for, after an error) is waited for first. Signals it had
/// dequeued and that were not queued again are sent again (tgkill: the
/// siginfo details are lost, the signal is not).
fn detach_thread(pid: Pid, t: &FrozenThread) -> ckpt_sys::Result<()> {
    let mut deferred = t.deferred.clone();
    let r = match ptrace::detach(t.tid, 0) {
        Err(e) if e.errno() == Some(libc::ESRCH) => {
            // Not in a stop yet: wait for it, a bounded time (a thread that
            // never stops stays ours until we exit, when the kernel lets it
            // go).
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match ptrace::poll_interrupt_stop(t.tid, &mut deferred) {
                    Ok(Some(_)) => break ptrace::detach(t.tid, 0),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    // Gone, not ours any more, or not stopping.
                    _ => break Ok(()),
                }
            }
        }
        r => r,
    };
    for si in &deferred {
        let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
        let _ = proc::tgkill(pid, t.tid, signo);
    }
    r
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done {
            for t in &self.threads {
                let _ = detach_thread(self.pid, t);
            }
        }
    }
}
