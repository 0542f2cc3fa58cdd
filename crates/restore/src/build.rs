//! A restore from start to end: check, plan, the stub with its fds; then,
//! by system calls injected into the stub, its address space, the
//! mappings, the pages, the process state and the threads. Each step runs
//! in a tracing span and ends with an info event giving its duration
//! (`RestoreStats::phases` has the same times); details are debug events.

use crate::check::{check_and_open_as, root_process, taken_ids};
use crate::error::{Error, Result, SysContext};
use crate::fds::{plan_fds, FdEnv, FdPlan, LateFd};
use crate::mem::hugefill::{self, plan_huge_fills};
use crate::mem::layout::{self, parse_maps, plan_layout, Layout};
use crate::mem::pages::{write_pages, Target};
use crate::mem::{plan_memory, uffd, vmas, MemPlan};
use crate::process::creds::{creds_differ, own_creds, set_thread_creds};
use crate::process::{cgroup, seccomp, signals, sysv, thread, timers};
use crate::remote::Remote;
use crate::stub;
use crate::{Report, RestoreOptions, RestoreStats, Restored, ZOMBIE_WAIT};
use ckpt_image::{ImageReader, Process, ReadAt};
use ckpt_sys::creds::FsSwitch;
use ckpt_sys::ptrace;
use ckpt_sys::remote::ProcMem;
use ckpt_sys::{setup, sys};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Scratch memory after the trampoline page: arguments for injected calls.
const SCRATCH_LEN: u64 = 64 * 1024;

/// Kills and reaps the half-built process unless disarmed.
struct Guard {
    pid: i32,
    tids: Vec<i32>,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = sys::kill(self.pid, libc::SIGKILL);
        for &t in self.tids.iter().filter(|&&t| t != self.pid) {
            setup::reap_blocking(t);
        }
        setup::reap_blocking(self.pid);
    }
}

/// One step of the restore: its span is entered until it ends; `done`
/// logs its duration (a step left by an error logs that at debug level).
struct Step {
    name: &'static str,
    t: Instant,
    done: bool,
    _span: tracing::span::EnteredSpan,
}

impl Step {
    fn begin(name: &'static str) -> Step {
        Step {
            name,
            t: Instant::now(),
            done: false,
            _span: tracing::info_span!("step", step = name).entered(),
        }
    }

    fn done(mut self) {
        self.done = true;
        tracing::info!(elapsed = ?self.t.elapsed(), "{}", self.name);
    }

    /// `done` of a step that wrote `bytes`.
    fn done_bytes(mut self, bytes: u64) {
        self.done = true;
        tracing::info!(elapsed = ?self.t.elapsed(), bytes, "{}", self.name);
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(elapsed = ?self.t.elapsed(), "{} failed", self.name);
        }
    }
}

fn check_error(e: String) -> Error {
    Error::Check(Report {
        errors: vec![e],
        warnings: Vec::new(),
    })
}

/// Restore the image's process (see [`crate::restore`]); stopped by
/// `opts.cancel` at the next step, or at once where it waits on the
/// child (which is killed).
pub fn restore<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    let cancel = opts.cancel.clone().unwrap_or_default();
    let r = cancel
        .check()
        .and_then(|()| restore_steps(reader, opts, &cancel, progress));
    match (cancel.finish(), r) {
        (Some(signal), Ok(done)) => {
            // Cancelled as it ended: it was killed.
            let _ = ckpt_sys::proc::kill(done.pid, libc::SIGKILL);
            ckpt_sys::proc::wait::reap_blocking(done.pid);
            Err(Error::Cancelled { signal })
        }
        (Some(signal), Err(_)) => Err(Error::Cancelled { signal }),
        (None, r) => r,
    }
}

fn restore_steps<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    cancel: &crate::Cancel,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    let t0 = Instant::now();
    let _span = tracing::info_span!("restore").entered();
    let step = Step::begin("check");
    let (report, as_saved) = check_and_open_as(reader, opts);
    if !report.errors.is_empty() {
        return Err(Error::Check(report));
    }
    step.done();
    let p = root_process(reader.image()).map_err(check_error)?;
    let page = setup::page_size();
    let step = Step::begin("plan");
    let (mut fdplan, mem) = plan(reader, p, page, opts.tcp_close)?;
    step.done();
    cancel.check()?;
    // Sockets the restorer builds itself (TCP_REPAIR, injected packets);
    // the stub inherits them. Their locks go just before the process runs.
    let mut net = crate::fds::sockets::prebuild(&mut fdplan)?;
    let mut phases = vec![("plan", t0.elapsed())];

    // Paths of the image are opened with the saved user's rights where
    // check says so: by the stub and by the process being built, around
    // each of their opens of such paths.
    let switch = match &as_saved {
        Some(ids) => Some(FsSwitch::new(ids.clone()).map_err(|source| Error::Sys {
            context: "reading the restorer's own file access ids".into(),
            source,
        })?),
        None => None,
    };
    // SysV IPC objects, with their saved ids, before anything else uses
    // ids (removed again if the restore fails).
    let ipc = sysv::restore(reader)?;
    let step = Step::begin("stub");
    let pid = spawn_stub(&fdplan, switch.as_ref(), p, opts, cancel)?;
    tracing::debug!(pid, fd_ops = fdplan.ops.len(), "stub ready with its fds");
    let mut guard = Guard {
        pid,
        tids: vec![pid],
        armed: true,
    };
    cgroup::join(pid, p)?;
    step.done();
    phases.push(("stub", t0.elapsed()));
    let mut b = Build {
        reader,
        p,
        pid,
        same_ids: pid == p.pid,
        page,
        mem: &mem,
        guard: &mut guard,
        injected: 0,
        page_bytes: 0,
        phases,
        t0,
        progress,
        huge_fill: opts.huge_fill,
        as_saved: switch.as_ref(),
        cancel,
        late: &fdplan.late,
        ipc,
        net: &mut net,
    };
    let tids = b.run()?;
    b.ipc.keep();
    let stats = RestoreStats {
        total: t0.elapsed(),
        page_bytes: b.page_bytes,
        injected_syscalls: b.injected,
        phases: b.phases,
    };
    guard.armed = false;
    tracing::info!(
        pid,
        threads = tids.len(),
        page_bytes = stats.page_bytes,
        injected_syscalls = stats.injected_syscalls,
        elapsed = ?stats.total,
        "restored"
    );
    Ok(Restored { pid, tids, stats })
}

/// The fd plan and the memory plan; their errors refuse the restore.
fn plan<R: ReadAt>(
    reader: &ImageReader<R>,
    p: &Process,
    page: u64,
    tcp_close: bool,
) -> Result<(FdPlan, MemPlan)> {
    let image = reader.image();
    let env = FdEnv {
        tcp_close,
        ..FdEnv::current()
    };
    let fdplan = plan_fds(image, p, &env, &mut |b| {
        reader.read_blob(b).map_err(|e| e.to_string())
    });
    if !fdplan.errors.is_empty() {
        return Err(Error::Check(Report {
            errors: fdplan.errors,
            warnings: fdplan.warnings,
        }));
    }
    let mem = plan_memory(image, p, page);
    if !mem.errors.is_empty() {
        return Err(Error::Check(Report {
            errors: mem.errors,
            warnings: mem.warnings,
        }));
    }
    tracing::debug!(
        fd_ops = fdplan.ops.len(),
        mappings = mem.steps.len(),
        page_writes = mem.writes.len(),
        "planned"
    );
    Ok((fdplan, mem))
}

/// The stub, at the saved pid (or, with new_pid, anywhere when it is taken).
fn spawn_stub(
    fdplan: &FdPlan,
    switch: Option<&FsSwitch>,
    p: &Process,
    opts: &RestoreOptions,
    cancel: &crate::Cancel,
) -> Result<i32> {
    let keep_ids = !opts.new_pid || taken_ids(p).is_empty();
    let watch = |pid| cancel.watch(pid);
    let spawned = stub::spawn(
        fdplan,
        switch,
        keep_ids.then_some(p.pid),
        ZOMBIE_WAIT,
        &watch,
    );
    match spawned {
        Err(Error::PidInUse { .. }) | Err(Error::Sys { .. }) if opts.new_pid && keep_ids => {
            tracing::debug!(pid = p.pid, "the saved pid is taken: a new one");
            stub::spawn(fdplan, switch, None, Duration::ZERO, &watch)
        }
        r => r,
    }
}

/// The stub with its address space ready for the mappings: the main
/// thread's injector, the stub's memory, the layout and the huge-page fills
/// it has room for.
struct Prepared {
    main: Remote,
    mem: ProcMem,
    layout: Layout,
    huge: Vec<hugefill::HugeFill>,
}

/// The stub turned into the saved process, step by step.
struct Build<'a, R: ReadAt> {
    reader: &'a ImageReader<R>,
    p: &'a Process,
    pid: i32,
    same_ids: bool,
    page: u64,
    mem: &'a MemPlan,
    guard: &'a mut Guard,
    injected: u64,
    page_bytes: u64,
    phases: Vec<(&'static str, Duration)>,
    t0: Instant,
    progress: &'a mut dyn FnMut(u64, u64),
    huge_fill: Option<bool>,
    /// The saved user's rights, which the process takes around its opens
    /// of the image's paths (None: it keeps the restorer's).
    as_saved: Option<&'a FsSwitch>,
    cancel: &'a crate::Cancel,
    /// Fds made once the threads exist (pidfds).
    late: &'a [LateFd],
    /// The SysV objects made for the process (removed on failure).
    ipc: sysv::Made,
    /// The restorer's sockets: locks lifted just before the process runs.
    net: &'a mut crate::fds::NetGuard,
}

impl<R: ReadAt + Sync> Build<'_, R> {
    fn phase(&mut self, name: &'static str) {
        self.phases.push((name, self.t0.elapsed()));
    }

    fn run(&mut self) -> Result<Vec<i32>> {
        let step = Step::begin("address space");
        let Prepared {
            mut main,
            mem,
            layout,
            huge,
        } = self.address_space()?;
        step.done();
        self.phase("address space");
        self.cancel.check()?;

        let step = Step::begin("mappings");
        let scratch = layout.tramp + self.page;
        let reader = self.reader;
        let recreated = vmas::recreate_files(
            &mut main,
            &self.mem.recreate,
            scratch,
            self.as_saved,
            &mut |b| {
                reader
                    .read_blob(b)
                    .ctx(|| "reading a deleted file's saved contents".into())
            },
        )?;
        vmas::map_all(
            &mut main,
            &self.mem.steps,
            &recreated,
            &layout,
            scratch,
            self.as_saved,
        )?;
        // Segments removed at the dump go again once attached.
        self.ipc.remove_removed()?;
        step.done();
        self.phase("mappings");
        self.cancel.check()?;

        let step = Step::begin("pages");
        self.pages(&mut main, &mem, &layout, &huge, scratch)?;
        step.done_bytes(self.page_bytes);
        self.phase("pages");
        self.cancel.check()?;

        let step = Step::begin("process state");
        crate::process::set_state(&mut main, self.p, scratch, self.as_saved)?;
        step.done();
        self.phase("process");
        self.cancel.check()?;

        let step = Step::begin("threads");
        let tids = self.threads(main, &layout, scratch)?;
        step.done();
        self.phase("threads");
        Ok(tids)
    }

    /// Seize the stub; inject through its vdso until the trampoline is
    /// there; unmap its memory and move the vdso to the saved address.
    fn address_space(&mut self) -> Result<Prepared> {
        let pid = self.pid;
        ptrace::seize(pid, ptrace::PTRACE_O_EXITKILL | ptrace::PTRACE_O_TRACECLONE)
            .ctx(|| format!("pid {pid}: seizing the restore stub"))?;
        ptrace::interrupt(pid).ctx(|| format!("pid {pid}: stopping the restore stub"))?;
        ptrace::wait_interrupt_stop(pid).ctx(|| format!("pid {pid}: stopping the restore stub"))?;

        let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .ctx(|| format!("reading /proc/{pid}/maps"))?;
        let stub_maps = parse_maps(&maps_text);
        let mode = hugefill::huge_fill_mode(self.huge_fill);
        let huge = plan_huge_fills(self.mem, self.p, self.page, mode);
        let huge_lens: Vec<u64> = huge.iter().map(|h| h.len).collect();
        let layout = plan_layout(self.p, &stub_maps, SCRATCH_LEN, self.page, &huge_lens)
            .map_err(|what| Error::Stub { pid, what })?;
        let mem = ProcMem::open(pid).ctx(|| format!("pid {pid}: opening its memory"))?;
        let mut main = Remote::new(pid, layout::syscall_ip(pid, &mem, &stub_maps)?)?;
        thread::unregister_stub_rseq(&mut main)?;
        layout::address_space(&mut main, &layout, self.page)?;
        Ok(Prepared {
            main,
            mem,
            layout,
            huge,
        })
    }

    /// Write the saved pages (through huge-page areas or UFFDIO_COPY where
    /// they pay), then set the mappings' final protections.
    fn pages(
        &mut self,
        main: &mut Remote,
        mem: &ProcMem,
        layout: &Layout,
        huge: &[hugefill::HugeFill],
        scratch: u64,
    ) -> Result<()> {
        let steps = &self.mem.steps;
        let (redirects, huge_fd) = hugefill::huge_setup(main, steps, layout, huge, scratch)?;
        let copy = if huge_fd.is_none() {
            uffd::copy_setup(main, steps, &self.mem.writes, scratch)?
        } else {
            None
        };
        let target = Target {
            pid: self.pid,
            mem,
            redirects: &redirects,
            copy: copy.as_ref().map(|c| c.target()),
        };
        self.page_bytes = write_pages(
            self.reader,
            &self.p.memory,
            &self.mem.writes,
            &target,
            self.progress,
        )?;
        if let Some(c) = copy {
            uffd::copy_finish(main, c, scratch)?;
        }
        if let Some(fd) = huge_fd {
            hugefill::huge_finish(main, steps, layout, huge, fd, scratch)?;
        }
        vmas::finish(main, steps, &self.mem.guards)
    }

    /// Create the other threads, then give every thread its state, and let go.
    fn threads(&mut self, mut main: Remote, l: &Layout, scratch: u64) -> Result<Vec<i32>> {
        let p = self.p;
        let tids = thread::create(
            &mut main,
            p,
            l,
            scratch,
            self.same_ids,
            &mut self.guard.tids,
        )?;
        let tid_map: BTreeMap<i32, i32> = p
            .threads
            .iter()
            .map(|t| t.tid)
            .zip(tids.iter().copied())
            .collect();
        // Injectors for the other threads; the main thread's stays `main`.
        let mut others: Vec<Remote> = Vec::new();
        for &tid in tids.iter().skip(1) {
            others.push(Remote::new(tid, l.tramp)?);
        }
        let set_creds = creds_differ(p, &own_creds());
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            thread::set_state(r, p, t, scratch)?;
        }
        timers::posix_timers(&mut main, p, scratch, &tid_map)?;
        crate::fds::pidfd::late(&mut main, self.late, &tid_map, scratch)?;
        // Every fd is final and no more are opened or closed: locks now.
        crate::fds::locks::take(&mut main, self.reader.image(), p, scratch)?;
        {
            // Filters apply once the threads are let go (seccomp is
            // suspended for them while they are traced).
            let mut all: Vec<&mut Remote> = std::iter::once(&mut main)
                .chain(others.iter_mut())
                .collect();
            seccomp::install(&mut all, self.reader.image(), p, scratch)?;
        }
        signals::queue_shared(&mut main, p, scratch)?;
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            signals::queue_thread(r, self.pid, t, scratch)?;
            if set_creds {
                set_thread_creds(r, p, scratch)?;
            }
        }
        crate::process::finish(&mut main, p, l, set_creds)?;
        self.injected = main.count() + others.iter().map(|r| r.count()).sum::<u64>();
        self.cancel.check()?;
        // The last step before it runs: its saved connections live again.
        self.net.go()?;
        thread::set_registers_and_detach(self.pid, p, &tids)?;
        Ok(tids)
    }
}
