//! A restore from start to end: check, plan, the stub with its fds; then,
//! by system calls injected into the stub, its address space, the
//! mappings, the pages, the process state and the threads. Each step runs
//! in a tracing span and ends with an info event giving its duration
//! (`RestoreStats::phases` has the same times); details are debug events.

use crate::check::{check_and_open_as, taken_ids};
use crate::error::{Error, Result, SysContext};
use crate::fds::place::{self, Scratch};
use crate::fds::{plan_tree as plan_tree_fds, FdEnv, FdPlan};
use crate::mem::hugefill::{self, plan_huge_fills};
use crate::mem::layout::{self, parse_maps, plan_layout, Layout};
use crate::mem::pages::{write_pages, Target};
use crate::mem::{plan_memory_shared, shared_objects, uffd, vmas, MemPlan};
use crate::process::creds::{creds_differ, own_creds, set_thread_creds};
use crate::process::{signals, thread, timers};
use crate::remote::Remote;
use crate::stub::{self, Shared, Stubs, Work};
use crate::tree::{plan_tree, TreePlan};
use crate::{Report, RestoreOptions, RestoreStats, Restored, ZOMBIE_WAIT};
use ckpt_image::{Image, ImageReader, Process, ReadAt};
use ckpt_sys::creds::FsSwitch;
use ckpt_sys::mm::{self, ProcMem};
use ckpt_sys::proc::{self, group};
use ckpt_sys::ptrace;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Scratch memory after the trampoline page: arguments for injected calls.
const SCRATCH_LEN: u64 = 64 * 1024;

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

/// Everything planned before anything is touched.
struct Planned {
    tree: TreePlan,
    fds: FdPlan,
    /// By creation index; None for zombies.
    mems: Vec<Option<MemPlan>>,
    /// Creation index of the last process built of each fd table's
    /// processes: it closes the kept memory objects' fds.
    closes_keep: Vec<bool>,
}

/// Restore the image's processes (see [`crate::restore`]).
pub fn restore<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
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
    let page = mm::page_size();
    let step = Step::begin("plan");
    let planned = plan(reader, page)?;
    step.done();
    let mut phases = vec![("plan", t0.elapsed())];

    // Paths of the image are opened with the saved user's rights where
    // check says so: by the stubs and by the processes being built,
    // around each of their opens of such paths.
    let switch = match &as_saved {
        Some(ids) => Some(FsSwitch::new(ids.clone()).map_err(|source| Error::Sys {
            context: "reading the restorer's own file access ids".into(),
            source,
        })?),
        None => None,
    };
    let step = Step::begin("stubs");
    let mut stubs = spawn_stubs(reader.image(), &planned, switch.as_ref(), opts)?;
    step.done();
    phases.push(("stubs", t0.elapsed()));

    let image = reader.image();
    let total: u64 = planned
        .mems
        .iter()
        .flatten()
        .flat_map(|m| &m.writes)
        .filter(|w| !w.zero)
        .map(|w| w.len)
        .sum();
    let mut done_before = 0u64;
    let mut built: Vec<(usize, Vec<i32>)> = Vec::new();
    let (mut injected, mut page_bytes) = (0, 0);
    for (c, node) in planned.tree.nodes.iter().enumerate() {
        let Some(mem) = &planned.mems[c] else {
            continue; // a zombie: it exited with its status already
        };
        let pid = stubs.pid(c);
        let p = &image.processes[node.image];
        let _span = tracing::info_span!("process", pid, saved_pid = p.pid).entered();
        let mut each = |d: u64, _t: u64| progress(done_before + d, total);
        let mut b = Build {
            reader,
            p,
            pid,
            same_ids: pid == p.pid,
            page,
            mem,
            stubs: &mut stubs,
            injected: 0,
            page_bytes: 0,
            phases: std::mem::take(&mut phases),
            t0,
            progress: &mut each,
            huge_fill: opts.huge_fill,
            as_saved: switch.as_ref(),
            keep: keep_range(&planned, c),
        };
        let tids = b.run()?;
        phases = std::mem::take(&mut b.phases);
        injected += b.injected;
        page_bytes += b.page_bytes;
        done_before += b.page_bytes;
        built.push((c, tids));
    }
    let step = Step::begin("run");
    let_go(image, &planned.tree, &built, &stubs)?;
    step.done();
    stubs.disarm();
    let pids: Vec<(i32, i32)> = planned
        .tree
        .nodes
        .iter()
        .enumerate()
        .map(|(c, n)| (n.pid, stubs.pid(c)))
        .collect();
    let stats = RestoreStats {
        total: t0.elapsed(),
        page_bytes,
        injected_syscalls: injected,
        phases,
    };
    let root = stubs.pid(0);
    let tids = built.first().map(|(_, t)| t.clone()).unwrap_or_default();
    tracing::info!(
        pid = root,
        processes = pids.len(),
        page_bytes = stats.page_bytes,
        injected_syscalls = stats.injected_syscalls,
        elapsed = ?stats.total,
        "restored"
    );
    Ok(Restored {
        pid: root,
        tids,
        stats,
        pids,
    })
}

/// The kept memory objects' fds a process closes once its mappings are
/// made (the last built of the processes sharing its fd table), as a
/// range of fd numbers.
fn keep_range(planned: &Planned, c: usize) -> Option<(u64, u64)> {
    let n = planned.fds.keep.len() as u64;
    if n == 0 || !planned.closes_keep[c] {
        return None;
    }
    let first = (planned.fds.stage + place::CTL_KEEP) as u64;
    Some((first, first + n - 1))
}

/// The tree, the fd plan and each process's memory plan; their errors
/// refuse the restore.
fn plan<R: ReadAt>(reader: &ImageReader<R>, page: u64) -> Result<Planned> {
    let image = reader.image();
    let tree = plan_tree(image);
    if !tree.errors.is_empty() {
        return Err(Error::Check(Report {
            errors: tree.errors,
            warnings: tree.warnings,
        }));
    }
    let procs: Vec<&Process> = image.processes.iter().collect();
    let keep = shared_objects(image);
    let fdplan = plan_tree_fds(
        image,
        &procs,
        &tree.table_owners(),
        &keep,
        &FdEnv::current(),
        &mut |b| reader.read_blob(b).map_err(|e| e.to_string()),
    );
    if !fdplan.errors.is_empty() {
        return Err(Error::Check(Report {
            errors: fdplan.errors,
            warnings: fdplan.warnings,
        }));
    }
    let shared: BTreeMap<u64, i32> = fdplan
        .keep
        .iter()
        .enumerate()
        .map(|(j, &(_, id))| (id, fdplan.stage + place::CTL_KEEP + j as i32))
        .collect();
    let mut mems = Vec::with_capacity(tree.nodes.len());
    let mut errors = Vec::new();
    for n in &tree.nodes {
        if n.zombie.is_some() {
            mems.push(None);
            continue;
        }
        let m = plan_memory_shared(image, &image.processes[n.image], page, &shared);
        errors.extend(m.errors.iter().cloned());
        mems.push(Some(m));
    }
    if !errors.is_empty() {
        return Err(Error::Check(Report {
            errors,
            warnings: Vec::new(),
        }));
    }
    // The last process built of each fd table closes the kept fds.
    let mut closes_keep = vec![false; tree.nodes.len()];
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    for (c, n) in tree.nodes.iter().enumerate() {
        if n.zombie.is_none() {
            last.insert(n.table, c);
        }
    }
    for c in last.into_values() {
        closes_keep[c] = true;
    }
    tracing::debug!(
        processes = tree.nodes.len(),
        fd_ops = fdplan.ops.len(),
        kept = fdplan.keep.len(),
        "planned"
    );
    Ok(Planned {
        tree,
        fds: fdplan,
        mems,
        closes_keep,
    })
}

/// The stubs of the whole tree, each at its saved pid (or, with new_pid,
/// anywhere when its ids are taken), with their fds.
fn spawn_stubs(
    image: &Image,
    planned: &Planned,
    switch: Option<&FsSwitch>,
    opts: &RestoreOptions,
) -> Result<Stubs> {
    let tree = &planned.tree;
    let want: Vec<Option<i32>> = tree
        .nodes
        .iter()
        .map(|n| {
            let p = &image.processes[n.image];
            let free = !opts.new_pid || taken_ids(p).is_empty();
            free.then_some(p.pid)
        })
        .collect();
    let stubs = Stubs::new(tree.nodes.len())?;
    let mut slots = vec![-1i32; planned.fds.slots];
    let mut scratch = Scratch::new(&planned.fds);
    let mut child_pipes = vec![-1i32; tree.nodes.len()];
    let sh = Shared {
        plan: &planned.fds,
        tree,
        pids: &stubs.pids,
        want: &want,
        new_pid: opts.new_pid,
        zombie_wait: if opts.new_pid {
            Duration::ZERO
        } else {
            ZOMBIE_WAIT
        },
        restorer: proc::getpid(),
        restorer_pgid: group::getpgid(0).unwrap_or(0),
        as_saved: switch,
    };
    let mut w = Work {
        slots: &mut slots,
        scratch: &mut scratch,
        child_pipes: &mut child_pipes,
    };
    stub::spawn_tree(&sh, &mut w, &stubs)?;
    tracing::debug!(
        processes = tree.nodes.len(),
        fd_ops = planned.fds.ops.len(),
        "stubs ready with their fds"
    );
    Ok(stubs)
}

/// Let every process go, all together once all are built: registers were
/// set; a process that was stopped gets SIGSTOP first (it stops as soon as
/// it runs); then every thread is detached, the leaders last.
fn let_go(
    image: &Image,
    tree: &TreePlan,
    built: &[(usize, Vec<i32>)],
    stubs: &Stubs,
) -> Result<()> {
    for (c, _) in built {
        let n = &tree.nodes[*c];
        if n.stopped {
            let pid = stubs.pid(*c);
            proc::kill(pid, libc::SIGSTOP)
                .ctx(|| format!("pid {pid}: stopping it again (it was stopped when dumped)"))?;
        }
    }
    for (_, tids) in built {
        thread::detach_all(tids)?;
    }
    let _ = image;
    Ok(())
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
    stubs: &'a mut Stubs,
    injected: u64,
    page_bytes: u64,
    phases: Vec<(&'static str, Duration)>,
    t0: Instant,
    progress: &'a mut dyn FnMut(u64, u64),
    huge_fill: Option<bool>,
    /// The saved user's rights, which the process takes around its opens
    /// of the image's paths (None: it keeps the restorer's).
    as_saved: Option<&'a FsSwitch>,
    /// The kept memory objects' fds it closes once its mappings are made.
    keep: Option<(u64, u64)>,
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

        let step = Step::begin("mappings");
        let scratch = layout.tramp + self.page;
        vmas::map_all(&mut main, &self.mem.steps, &layout, scratch, self.as_saved)?;
        if let Some((first, last)) = self.keep {
            main.call(
                "close_range of the kept memory objects' fds",
                libc::SYS_close_range,
                &[first, last, 0],
            )?;
        }
        step.done();
        self.phase("mappings");

        let step = Step::begin("pages");
        self.pages(&mut main, &mem, &layout, &huge, scratch)?;
        step.done_bytes(self.page_bytes);
        self.phase("pages");

        let step = Step::begin("process state");
        crate::process::set_state(&mut main, self.p, scratch, self.as_saved)?;
        step.done();
        self.phase("process");

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
        vmas::protect(main, steps)
    }

    /// Create the other threads, then give every thread its state and its
    /// registers (they are let go with the rest of the tree).
    fn threads(&mut self, mut main: Remote, l: &Layout, scratch: u64) -> Result<Vec<i32>> {
        let p = self.p;
        let tids = thread::create(
            &mut main,
            p,
            l,
            scratch,
            self.same_ids,
            &mut self.stubs.tids,
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
        let thread_creds = p.threads.iter().any(|t| t.creds.is_some());
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            thread::set_state(r, p, t, scratch)?;
        }
        timers::posix_timers(&mut main, p, scratch, &tid_map)?;
        signals::queue_shared(&mut main, p, scratch)?;
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            signals::queue_thread(r, self.pid, t, scratch)?;
            if set_creds || thread_creds {
                set_thread_creds(r, t.creds.as_ref().unwrap_or(&p.creds), scratch)?;
            }
        }
        crate::process::finish(&mut main, p, l, set_creds || thread_creds)?;
        self.injected = main.count() + others.iter().map(|r| r.count()).sum::<u64>();
        thread::set_registers(self.pid, p, &tids)?;
        Ok(tids)
    }
}
