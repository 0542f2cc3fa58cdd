//! A restore from start to end: check, plan, the stub with its fds; then,
//! by system calls injected into the stub, its address space, the
//! mappings, the pages, the process state and the threads. Each step runs
//! in a tracing span and ends with an info event giving its duration
//! (`RestoreStats::phases` has the same times); details are debug events.

use crate::check::{check_and_open_as, taken_ids};
use crate::error::{Error, Result, SysContext};
use crate::fds::place::{self, Scratch};
use crate::fds::{self, plan_tree as plan_tree_fds, FdEnv, FdPlan, Handover, LateFd, NetGuard};
use crate::mem::hugefill::{self, plan_huge_fills};
use crate::mem::layout::{self, parse_maps, plan_layout_premap, Layout, Premap};
use crate::mem::pages::Target;
use crate::mem::{chain, cow, lazy, plan_memory_shared, shared_objects, uffd, vmas, MemPlan};
use crate::process::creds::{
    caps_differ, creds_differ, own_creds, set_thread_creds, set_thread_identity, OwnCreds,
};
use crate::process::{cgroup, seccomp, signals, sysv, thread, timers};
use crate::remote::{Batcher, Remote};
use crate::stub::{self, BuildGroup, Readiness, Shared, Stubs, Work};
use crate::tree::{plan_tree, TreePlan};
use crate::{Report, RestoreOptions, RestoreStats, Restored, ZOMBIE_WAIT};
use ckpt_image::{ImageReader, Process, ReadAt};
use ckpt_sys::creds::FsSwitch;
use ckpt_sys::mm::{self, ProcMem};
use ckpt_sys::proc::{self, group};
use ckpt_sys::ptrace;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
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
    /// By creation index: the runs of each live process with the level of
    /// the image in the chain holding each (chain.rs), and, for an
    /// incremental image, the process with those runs as its memory.
    runs: Vec<Option<(chain::Runs, Option<Process>)>>,
    /// Creation index of the last process built of each fd table's
    /// processes: it closes the kept memory objects' fds.
    closes_keep: Vec<bool>,
    /// Private memory shared copy-on-write (mem/cow.rs).
    cow: cow::CowPlan,
}

/// Restore the image's processes (see [`crate::restore`]); stopped by
/// `opts.cancel` at the next step, or at once where it waits on a stub or
/// a process being built (every one is killed).
pub fn restore<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    restore_with(reader, opts, progress, None, None).map(|(r, _)| r)
}

/// [`restore`] after a [`crate::Checked`] made by [`crate::check_once`]
/// for the same image and options (its check is not made again).
pub fn restore_checked<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
    checked: crate::Checked,
) -> Result<Restored> {
    restore_with(reader, opts, progress, None, Some(checked)).map(|(r, _)| r)
}

/// [`restore`], or with `lazy` (the same image, shared with the lazy
/// server) a lazy one: the process is left stopped and traced, its
/// anonymous pages to be filled by the returned server (mem/lazy.rs). A
/// lazy restore is of one process.
pub fn restore_with<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64, u64),
    lazy: Option<std::sync::Arc<dyn lazy::FrameSource>>,
    checked: Option<crate::Checked>,
) -> Result<(Restored, Option<lazy::Server>)> {
    let cancel = opts.cancel.clone().unwrap_or_default();
    let r = cancel
        .check()
        .and_then(|()| restore_steps(reader, opts, &cancel, progress, (lazy, checked)));
    match (cancel.finish(), r) {
        (Some(signal), Ok((done, server))) => {
            // Cancelled as it ended: every process of the tree was killed.
            for &(_, pid) in &done.pids {
                let _ = ckpt_sys::proc::kill(pid, libc::SIGKILL);
            }
            drop(server);
            ckpt_sys::proc::wait::reap_blocking(done.pid);
            Err(Error::Cancelled { signal })
        }
        (Some(signal), Err(_)) => Err(Error::Cancelled { signal }),
        (None, r) => r,
    }
}

/// The check (made now, or handed over by [`crate::check_once`]): its
/// errors end the restore; the ids to open the image's paths with.
fn checked_step<R: ReadAt>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    checked: Option<crate::Checked>,
) -> Result<Option<ckpt_sys::creds::FsIds>> {
    let step = Step::begin("check");
    let (report, as_saved) = match checked {
        Some(c) => (c.report, c.as_saved),
        None => check_and_open_as(reader, opts),
    };
    if !report.errors.is_empty() {
        return Err(Error::Check(report));
    }
    step.done();
    Ok(as_saved)
}

fn restore_steps<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    cancel: &crate::Cancel,
    progress: &mut dyn FnMut(u64, u64),
    (lazy, checked): (
        Option<std::sync::Arc<dyn lazy::FrameSource>>,
        Option<crate::Checked>,
    ),
) -> Result<(Restored, Option<lazy::Server>)> {
    let t0 = Instant::now();
    let _span = tracing::info_span!("restore").entered();
    let as_saved = checked_step(reader, opts, checked)?;
    let page = mm::page_size();
    let step = Step::begin("plan");
    let mut planned = plan(reader, page, opts, as_saved.is_none())?;
    step.done();
    let live = planned.mems.iter().flatten().count();
    if lazy.is_some() && live != 1 {
        return Err(Error::Check(Report {
            errors: vec![format!(
                "restore --lazy restores one process; this image has {live} running processes: restore it without --lazy"
            )],
            warnings: Vec::new(),
        }));
    }
    cancel.check()?;
    // Sockets the restorer builds itself (TCP_REPAIR, injected packets);
    // the stub inherits them. Their locks go just before the process runs.
    let mut net = crate::fds::sockets::prebuild(&mut planned.fds)?;
    let mut phases = vec![("plan", t0.elapsed())];

    // Paths of the image are opened with the saved user's rights where
    // check says so: by the stubs and by the processes being built,
    // around each of their opens of such paths.
    let switch = fs_switch(as_saved.as_ref())?;
    // SysV IPC objects, with their saved ids, before anything else uses
    // ids (removed again if the restore fails); missing cgroup dirs.
    let ipc = sysv::restore(reader)?;
    cgroup::prepare(reader.image(), &planned.tree, opts)?;
    let step = Step::begin("premap");
    // Its frames decoded and cached for the builders, out of the forks.
    let premapped = ckpt_sys::heap::fork_private(|| premap(reader, &planned))?;
    step.done();
    let stubs = Stubs::new(planned.tree.nodes.len() + planned.tree.helpers.len())?;
    let groups = build_groups(&planned);
    let ready = Readiness::new(planned.tree.nodes.len(), groups.len());
    let b = Builders {
        reader,
        planned: &planned,
        stubs: &stubs,
        ready: &ready,
        page,
        huge_fill: opts.huge_fill,
        cgroups: (!opts.ignore_cgroups).then_some(&opts.cgroup_roots[..]),
        switch: switch.as_ref(),
        cancel,
        t0,
        failed: AtomicBool::new(false),
        done_bytes: AtomicU64::new(0),
        ipc: std::sync::Mutex::new(ipc),
        net: std::sync::Mutex::new(&mut net),
        lazy,
        server: std::sync::Mutex::new(None),
        premap_base: premapped.as_ref().map_or(0, |&(_, base)| base),
        total: data_bytes(&planned),
        own: own_creds(),
    };
    // The processes are built as their stubs get ready, while the rest of
    // the tree is made.
    let mut terminal = None;
    let out = stubs_step(
        (reader, &planned, switch.as_ref()),
        (opts, cancel),
        (&b, &groups),
        premapped.map(|(area, _)| area),
        &mut || {
            phases.push(("stubs", t0.elapsed()));
            // The terminal goes to the job now that its groups exist
            // (every process waits to be built, or is built and stopped;
            // none runs before the terminal is its).
            terminal = hand_over(&planned, &stubs, opts)?;
            Ok(())
        },
        progress,
    )?;
    b.ipc.lock().unwrap_or_else(|p| p.into_inner()).keep();
    let server = b.server.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(b);
    let restored = finish(&planned, stubs, out, (phases, t0), terminal);
    Ok((restored, server))
}

/// The restore done: the stubs are the processes now (nothing to kill),
/// and what it did.
fn finish(
    planned: &Planned,
    mut stubs: Stubs,
    out: BuiltAll,
    (mut phases, t0): (Vec<(&'static str, Duration)>, Instant),
    terminal: Option<Handover>,
) -> Restored {
    let (built, injected, page_bytes) = (out.procs, out.injected, out.page_bytes);
    if out.phases.is_empty() {
        phases.push(("processes", t0.elapsed()));
    } else {
        phases.extend(out.phases);
    }
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
    Restored {
        pid: root,
        tids,
        stats,
        pids,
        terminal,
    }
}

/// The switch to the saved user's file access ids, when check says the
/// image's paths are opened with them.
fn fs_switch(as_saved: Option<&ckpt_sys::creds::FsIds>) -> Result<Option<FsSwitch>> {
    match as_saved {
        Some(ids) => Ok(Some(FsSwitch::new(ids.clone()).map_err(|source| {
            Error::Sys {
                context: "reading the restorer's own file access ids".into(),
                source,
            }
        })?)),
        None => Ok(None),
    }
}

/// The bytes of page data the plan writes (the progress total).
fn data_bytes(planned: &Planned) -> u64 {
    planned
        .mems
        .iter()
        .flatten()
        .flat_map(|m| &m.writes)
        .filter(|w| !w.zero)
        .map(|w| w.len)
        .sum()
}

/// Give the terminal to the restored job (see [`fds::hand_over`]): to the
/// group that had it at the dump when it is in the image, else the root's.
fn hand_over(planned: &Planned, stubs: &Stubs, opts: &RestoreOptions) -> Result<Option<Handover>> {
    let jt = planned.fds.job_terminal.as_ref();
    let root = stubs.pid(0);
    let fg = jt
        .and_then(|j| j.foreground)
        .map_or(root, |i| stubs.pid(planned.tree.order_of[i]));
    fds::hand_over(jt, &opts.terminal, root, fg)
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
/// refuse the restore. `own_rights`: the image's paths are opened with the
/// restorer's own rights (not the saved user's).
fn plan<R: ReadAt>(
    reader: &ImageReader<R>,
    page: u64,
    opts: &RestoreOptions,
    own_rights: bool,
) -> Result<Planned> {
    let image = reader.image();
    let mut tree = plan_tree(image);
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
        &FdEnv {
            tcp_close: opts.tcp_close,
            ..FdEnv::for_restore(opts)
        },
        &mut |b| reader.read_blob(b).map_err(|e| e.to_string()),
    );
    fds::adjust_tree(&mut tree, &opts.terminal, &fdplan);
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
    // The memory plans are the builders' alone: left out of the stubs'
    // forks (ckpt_sys::heap), as the decoded image is.
    let (mems, runs, cow) =
        ckpt_sys::heap::fork_private(|| plan_memories(reader, &tree, page, &shared, own_rights))?;
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
        runs,
        closes_keep,
        cow,
    })
}

/// Each live process's memory plan and runs (None for zombies), and the
/// pages shared copy-on-write between them (see [`plan`]).
#[allow(clippy::type_complexity)]
fn plan_memories<R: ReadAt>(
    reader: &ImageReader<R>,
    tree: &TreePlan,
    page: u64,
    shared: &BTreeMap<u64, i32>,
    own_rights: bool,
) -> Result<(
    Vec<Option<MemPlan>>,
    Vec<Option<(chain::Runs, Option<Process>)>>,
    cow::CowPlan,
)> {
    let image = reader.image();
    let mut mems = Vec::with_capacity(tree.nodes.len());
    let mut runs = Vec::with_capacity(tree.nodes.len());
    let mut errors = Vec::new();
    for n in &tree.nodes {
        if n.zombie.is_some() {
            mems.push(None);
            runs.push(None);
            continue;
        }
        // An incremental image: the runs resolved through its parents.
        let p = &image.processes[n.image];
        let r = chain::Runs::of(reader, p)?;
        let resolved = (!r.single()).then(|| r.process(p));
        let m = plan_memory_shared(image, resolved.as_ref().unwrap_or(p), page, shared);
        errors.extend(m.errors.iter().cloned());
        mems.push(Some(m));
        runs.push(Some((r, resolved)));
    }
    if !errors.is_empty() {
        return Err(Error::Check(Report {
            errors,
            warnings: Vec::new(),
        }));
    }
    let cow = plan_shared_pages(tree, &mut mems, &runs, own_rights);
    Ok((mems, runs, cow))
}

/// Pages still shared copy-on-write between parents and children
/// (mem/cow.rs): their slots, each sharing process's plan changed to
/// use them. Processes whose runs are spread over a chain of incremental
/// images share nothing. `files`: private file mappings too.
fn plan_shared_pages(
    tree: &TreePlan,
    mems: &mut [Option<MemPlan>],
    runs: &[Option<(chain::Runs, Option<Process>)>],
    files: bool,
) -> cow::CowPlan {
    let (plan, changed) = {
        let members: Vec<cow::Member<'_>> = tree
            .nodes
            .iter()
            .enumerate()
            .map(|(c, n)| {
                let r = runs[c].as_ref().filter(|(r, _)| r.single());
                cow::Member {
                    parent: n.parent,
                    plan: mems[c].as_ref().filter(|_| r.is_some()),
                    runs: r.map_or(&[], |(r, _)| &r.memory[..]),
                }
            })
            .collect();
        cow::plan_cow(&members, files)
    };
    for (c, m) in changed {
        mems[c] = Some(m);
    }
    if plan.size > 0 {
        tracing::debug!(
            slots = plan.slots.len(),
            bytes = plan.size,
            "memory shared copy-on-write planned"
        );
    }
    plan
}

/// The premap area of [`cow::premap`], in the restorer.
fn premap<R: ReadAt + Sync>(
    reader: &ImageReader<R>,
    planned: &Planned,
) -> Result<Option<(ckpt_sys::mm::FixedArea, u64)>> {
    let runs: Vec<&[ckpt_image::MemoryRun]> = planned
        .runs
        .iter()
        .map(|r| r.as_ref().map_or(&[][..], |(r, _)| &r.memory[..]))
        .collect();
    cow::premap(reader, &planned.cow, &runs)
}

/// The stubs of the whole tree, each at its saved pid (or, with new_pid,
/// anywhere when its ids are taken), with their fds, and the processes
/// built from them as they get ready (`b`); `all_ready` runs once every
/// stub is. The stubs are forked with as little of the restorer's memory
/// as it can leave them (each copies what the restorer has resident at
/// its fork, and unmaps it when it is built); the premap area goes from
/// the restorer once the root stub has it.
#[allow(clippy::type_complexity)]
fn stubs_step<R: ReadAt + Sync>(
    (reader, planned, switch): (&ImageReader<R>, &Planned, Option<&FsSwitch>),
    (opts, cancel): (&RestoreOptions, &crate::Cancel),
    (b, groups): (&Builders<'_, R>, &[BuildGroup]),
    premap_area: Option<ckpt_sys::mm::FixedArea>,
    all_ready: &mut dyn FnMut() -> Result<()>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BuiltAll> {
    let step = Step::begin("stubs");
    let tree = &planned.tree;
    let image = reader.image();
    let mut taken = None;
    let want: Vec<Option<i32>> = tree
        .nodes
        .iter()
        .map(|n| {
            let p = &image.processes[n.image];
            let free = !opts.new_pid || taken_ids(p, &mut taken).is_empty();
            free.then_some(p.pid)
        })
        .collect();
    let mut slots = vec![-1i32; planned.fds.slots];
    let mut scratch = Scratch::new(&planned.fds);
    let mut child_pipes = vec![-1i32; tree.nodes.len()];
    let sh = Shared {
        plan: &planned.fds,
        tree,
        pids: &b.stubs.pids,
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
    // What the check and the plan freed is still resident.
    mm::release_free_memory();
    // The stubs never read the image's raw metadata (the largest
    // allocation): left out of their forks.
    let no_fork = mm::exclude_from_forks(reader.metadata_bytes());
    tracing::debug!(
        bytes = ckpt_sys::heap::fork_private_bytes(),
        "memory left out of the stubs' forks"
    );
    let watch = |pid| cancel.watch(pid);
    let started = stub::start_tree(&sh, &mut w, b.stubs, &watch);
    drop(no_fork);
    drop(premap_area);
    let started = started?;
    b.build_all(progress, groups, || {
        stub::wait_ready(&sh, b.stubs, started, b.ready, &watch)?;
        step.done();
        tracing::debug!(
            processes = tree.nodes.len(),
            fd_ops = planned.fds.ops.len(),
            "stubs ready with their fds"
        );
        all_ready()
    })
}

/// The processes by the fd table they share (one group per table, in
/// creation order): each group is built by one builder, in order (the
/// last one closes the kept fds they share). Zombies are not built.
fn build_groups(planned: &Planned) -> Vec<BuildGroup> {
    let mut by_table: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (c, n) in planned.tree.nodes.iter().enumerate() {
        if n.zombie.is_none() {
            by_table.entry(n.table).or_default().push(c);
        }
    }
    let late = |c: usize| {
        let image = planned.tree.nodes[c].image;
        planned.fds.late.iter().any(|l| l.proc == image)
    };
    by_table
        .into_values()
        .map(|members| BuildGroup {
            whole: members.iter().any(|&c| late(c)),
            members,
        })
        .collect()
}

/// Most threads building processes at once. Building is mostly waiting
/// for the process to run each injected call (a ptrace round trip): several
/// processes are built at once on few cores.
const MAX_BUILDERS: usize = 16;

/// What the threads building the processes share.
struct Builders<'a, R: ReadAt> {
    reader: &'a ImageReader<R>,
    planned: &'a Planned,
    stubs: &'a Stubs,
    page: u64,
    huge_fill: Option<bool>,
    /// The --cgroup-root roots; None: cgroups left alone (--ignore-cgroups).
    cgroups: Option<&'a [crate::CgroupRoot]>,
    switch: Option<&'a FsSwitch>,
    cancel: &'a crate::Cancel,
    t0: Instant,
    /// Which stubs are ready to be built (and groups taken).
    ready: &'a Readiness,
    /// A builder failed: the others stop.
    failed: AtomicBool,
    done_bytes: AtomicU64,
    /// The SysV objects made for the tree (removed on failure).
    ipc: std::sync::Mutex<sysv::Made>,
    /// The restorer's sockets: locks lifted just before the processes run.
    net: std::sync::Mutex<&'a mut NetGuard>,
    /// A lazy restore (of one process): where its pages come from, and its
    /// server once made; the process is not let go (the server does it).
    lazy: Option<std::sync::Arc<dyn lazy::FrameSource>>,
    server: std::sync::Mutex<Option<lazy::Server>>,
    /// Where the premap area is in every stub (mem/cow.rs; 0: none).
    premap_base: u64,
    total: u64,
    /// The restorer's credentials (the stubs').
    own: OwnCreds,
}

/// What the builders did.
#[derive(Default)]
struct BuiltAll {
    /// (creation index, tids) of each process built.
    procs: Vec<(usize, Vec<i32>)>,
    injected: u64,
    page_bytes: u64,
    /// Phases of the only process, when there is one.
    phases: Vec<(&'static str, Duration)>,
}

impl<R: ReadAt + Sync> Builders<'_, R> {
    /// Build every live process, several at once, then let them all go
    /// together (each builder lets go of the processes it built, as only
    /// the thread that traces a process may).
    ///
    /// `first` runs on this thread while the other builders start (the
    /// stubs' reports: processes are built as their stubs get ready); this
    /// thread builds too once it returns. Its error comes first.
    fn build_all(
        &self,
        progress: &mut dyn FnMut(u64, u64),
        groups: &[BuildGroup],
        first: impl FnOnce() -> Result<()>,
    ) -> Result<BuiltAll> {
        let n = groups.len().clamp(1, MAX_BUILDERS);
        let barrier = Barrier::new(n);
        let results: Vec<(BuiltAll, Option<Error>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..n)
                .map(|_| s.spawn(|| self.builder(groups, &barrier, &mut |_, _| {})))
                .collect();
            let before = first();
            let step = Step::begin("processes");
            if before.is_err() {
                self.fail();
            }
            let mine = self.builder(groups, &barrier, progress);
            let mut all = vec![mine];
            for h in handles {
                all.push(h.join().unwrap_or_else(|_| {
                    (
                        BuiltAll::default(),
                        Some(Error::Stub {
                            pid: 0,
                            what: "a builder thread panicked".into(),
                        }),
                    )
                }));
            }
            step.done();
            // A builder's error first: the stubs' reports stop on it.
            all.push((BuiltAll::default(), before.err()));
            all
        });
        let mut out = BuiltAll::default();
        let mut first: Option<Error> = None;
        for (b, e) in results {
            out.procs.extend(b.procs);
            out.injected += b.injected;
            out.page_bytes += b.page_bytes;
            out.phases.extend(b.phases);
            if first.is_none() {
                first = e;
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        out.procs.sort_by_key(|(c, _)| *c);
        if out.procs.len() > 1 {
            out.phases.clear();
        }
        Ok(out)
    }

    /// One builder: groups of processes until none is left (or one
    /// failed), then, once every builder is done, let its own go.
    fn builder(
        &self,
        groups: &[BuildGroup],
        barrier: &Barrier,
        progress: &mut dyn FnMut(u64, u64),
    ) -> (BuiltAll, Option<Error>) {
        let mut out = BuiltAll::default();
        let mut err = None;
        'all: while let Some(g) = self.ready.take(groups, &self.failed) {
            for &c in &groups[g].members {
                match self.build_one(c, &mut out, progress) {
                    Ok(tids) => out.procs.push((c, tids)),
                    Err(e) => {
                        self.fail();
                        err = Some(e);
                        break 'all;
                    }
                }
            }
        }
        // Once every process is built, one builder does what the whole
        // tree needs last: SysV segments removed at the dump go again (all
        // are attached now), and the saved connections live again.
        if barrier.wait().is_leader() && !self.failed.load(Ordering::Relaxed) {
            if let Err(e) = self.cancel.check().and_then(|()| self.last_steps()) {
                self.fail();
                err = Some(e);
            }
        }
        barrier.wait();
        if err.is_none() && !self.failed.load(Ordering::Relaxed) && self.lazy.is_none() {
            if let Err(e) = let_go(&self.planned.tree, &out.procs, self.stubs) {
                err = Some(e);
            }
        }
        (out, err)
    }

    /// Stop every builder (each at the end of the process it builds).
    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.ready.fail();
    }

    /// After every process is built, before any runs.
    fn last_steps(&self) -> Result<()> {
        self.ipc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove_removed()?;
        self.net.lock().unwrap_or_else(|p| p.into_inner()).go()
    }

    /// Turn the stub of process `c` into the saved process (left stopped).
    fn build_one(
        &self,
        c: usize,
        out: &mut BuiltAll,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Vec<i32>> {
        let node = &self.planned.tree.nodes[c];
        let mem = self.planned.mems[c].as_ref().expect("a live process");
        let (runs, resolved) = self.planned.runs[c].as_ref().expect("a live process");
        let pid = self.stubs.pid(c);
        let p = resolved
            .as_ref()
            .unwrap_or(&self.reader.image().processes[node.image]);
        let _span = tracing::info_span!("process", pid, saved_pid = p.pid).entered();
        let (done, total) = (&self.done_bytes, self.total);
        let mut last = 0u64;
        let mut each = |d: u64, _t: u64| {
            let all = done.fetch_add(d - last.min(d), Ordering::Relaxed) + d - last.min(d);
            last = d;
            progress(all, total);
        };
        if let Some(roots) = self.cgroups {
            cgroup::join(pid, p, roots)?;
        }
        let late = self
            .planned
            .fds
            .late
            .iter()
            .filter(|l| l.proc == node.image)
            .cloned()
            .collect();
        let tree_pids = self
            .planned
            .tree
            .nodes
            .iter()
            .enumerate()
            .map(|(c, n)| (n.pid, self.stubs.pid(c)))
            .collect();
        let mut made = Vec::new();
        let mut b = Build {
            reader: self.reader,
            p,
            pid,
            same_ids: pid == p.pid,
            page: self.page,
            mem,
            runs,
            made: &mut made,
            injected: 0,
            page_bytes: 0,
            phases: Vec::new(),
            t0: self.t0,
            progress: &mut each,
            huge_fill: self.huge_fill,
            cgroups: self.cgroups,
            as_saved: self.switch,
            cancel: self.cancel,
            keep: keep_range(self.planned, c),
            late,
            tree_pids,
            lazy: self.lazy.clone(),
            server: None,
            premap: Premap {
                base: self.premap_base,
                size: self.planned.cow.size,
                kept: self.planned.cow.kept[c]
                    .iter()
                    .map(|&(off, len)| (self.premap_base + off, self.premap_base + off + len))
                    .collect(),
            },
            own: &self.own,
            reports: (
                (self.planned.fds.stage + place::CTL_STATUS) as u64,
                (self.planned.fds.stage + place::CTL_GO) as u64,
            ),
        };
        let r = b.run();
        if let Some(s) = b.server.take() {
            *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
        }
        out.injected += b.injected;
        out.page_bytes += b.page_bytes;
        out.phases.append(&mut b.phases);
        self.stubs
            .tids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(made);
        r
    }
}

/// Let processes go once all are built: their registers were set; a
/// process that was stopped gets its stop signal first (it stops as soon
/// as it runs; SIGSTOP where a job-control signal would be discarded, in
/// an orphaned process group); then every thread is detached, the
/// leaders last.
fn let_go(tree: &TreePlan, built: &[(usize, Vec<i32>)], stubs: &Stubs) -> Result<()> {
    for (c, _) in built {
        let node = &tree.nodes[*c];
        if node.stopped {
            let pid = stubs.pid(*c);
            let sig = if node.stop_signal != libc::SIGSTOP && !orphaned_group(pid) {
                node.stop_signal
            } else {
                libc::SIGSTOP
            };
            proc::kill(pid, sig)
                .ctx(|| format!("pid {pid}: stopping it again (it was stopped when dumped)"))?;
        }
    }
    for (_, tids) in built {
        thread::detach_all(tids)?;
    }
    Ok(())
}

/// (parent pid, process group, session) of `pid`, from /proc/PID/stat.
fn stat_ids(pid: i32) -> Option<(i32, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s.get(s.rfind(')')? + 1..)?.split_whitespace().skip(1);
    let mut num = || f.next()?.parse::<i32>().ok();
    Some((num()?, num()?, num()?))
}

/// Whether the process group of `pid` is orphaned now (no member has a
/// parent in another group of the same session): the kernel then discards
/// SIGTSTP, SIGTTIN and SIGTTOU instead of stopping. When unsure: yes.
fn orphaned_group(pid: i32) -> bool {
    let Some((_, pgid, sid)) = stat_ids(pid) else {
        return true;
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    let members = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat_ids)
        .filter(|&(_, g, _)| g == pgid);
    for (ppid, _, _) in members {
        if let Some((_, pg, s)) = stat_ids(ppid).filter(|_| ppid > 0) {
            if pg != pgid && s == sid {
                return false;
            }
        }
    }
    true
}

/// No thread of `p` gets credentials or capabilities set (the stub's are
/// kept): the dumpable flag and parent-death signal, which a change
/// would reset, can be set with the process state.
fn creds_unchanged(p: &Process, own: &crate::process::creds::OwnCreds) -> bool {
    !creds_differ(p, own)
        && p.threads.iter().all(|t| t.creds.is_none())
        && !caps_differ(&p.creds, own)
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
    /// The runs with the level of the image holding each (chain.rs).
    runs: &'a chain::Runs,
    /// Threads made in it (to reap after a failure).
    made: &'a mut Vec<i32>,
    injected: u64,
    page_bytes: u64,
    phases: Vec<(&'static str, Duration)>,
    t0: Instant,
    progress: &'a mut dyn FnMut(u64, u64),
    huge_fill: Option<bool>,
    /// The --cgroup-root roots; None: cgroups left alone (--ignore-cgroups).
    cgroups: Option<&'a [crate::CgroupRoot]>,
    /// The saved user's rights, which the process takes around its opens
    /// of the image's paths (None: it keeps the restorer's).
    as_saved: Option<&'a FsSwitch>,
    cancel: &'a crate::Cancel,
    /// Fds made once the threads exist (pidfds), and saved pids -> pids
    /// now of the tree's processes (for them).
    late: Vec<LateFd>,
    tree_pids: BTreeMap<i32, i32>,
    /// The kept memory objects' fds it closes once its mappings are made.
    keep: Option<(u64, u64)>,
    /// A lazy restore: where its pages come from, and its server once made.
    lazy: Option<std::sync::Arc<dyn lazy::FrameSource>>,
    server: Option<lazy::Server>,
    /// The premap area in the stub and the slots it keeps (mem/cow.rs).
    premap: Premap,
    /// The restorer's credentials (the stub's).
    own: &'a OwnCreds,
    /// The stub's report pipes' fds (first, last), closed when it is seized.
    reports: (u64, u64),
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
        if let Some(roots) = self.cgroups {
            cgroup::enter_ns(&mut main, self.pid, self.p, roots)?;
        }
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
        // The executable (for /proc/PID/exe) is opened with the files.
        let exe = crate::process::exe_to_open(self.p);
        let exe_fd = vmas::map_all(
            &mut main,
            &self.mem.steps,
            &recreated,
            &layout,
            scratch,
            (self.as_saved, exe),
        )?;
        if let Some((first, last)) = self.keep {
            main.call(
                "close_range of the kept memory objects' fds",
                libc::SYS_close_range,
                &[first, last, 0],
            )?;
        }
        step.done();
        self.phase("mappings");
        self.cancel.check()?;

        // The calls from the final protections to the main thread's own
        // state go in one batch (one round trip for a small process).
        let mut b = main.batcher();
        let step = Step::begin("pages");
        self.pages(&mut main, &mut b, (&mem, &layout, &huge), scratch)?;
        step.done_bytes(self.page_bytes);
        self.phase("pages");
        self.cancel.check()?;

        let step = Step::begin("process state");
        let image = self.reader.image();
        let last_now = creds_unchanged(self.p, self.own);
        crate::process::set_state(
            &mut main,
            &mut b,
            (image, self.p),
            scratch,
            (self.as_saved, last_now, exe_fd),
        )?;
        // The main thread's own state (threads made after keep none of it).
        if let Some(t) = self.p.threads.first() {
            thread::push_state(&mut main, &mut b, self.p, t, scratch)?;
        }
        b.flush(&mut main)?;
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
        // TRACESYSGOOD: the last calls run by system call stops
        // (Remote::without_traps).
        let options =
            ptrace::PTRACE_O_EXITKILL | ptrace::PTRACE_O_TRACECLONE | ptrace::PTRACE_O_TRACESYSGOOD;
        ptrace::seize(pid, options).ctx(|| format!("pid {pid}: seizing the restore stub"))?;
        ptrace::interrupt(pid).ctx(|| format!("pid {pid}: stopping the restore stub"))?;
        ptrace::wait_interrupt_stop(pid).ctx(|| format!("pid {pid}: stopping the restore stub"))?;

        let maps_text = ckpt_sys::proc::read_text(&format!("/proc/{pid}/maps"))
            .ctx(|| format!("reading /proc/{pid}/maps"))?;
        let stub_maps = parse_maps(&maps_text);
        let mode = hugefill::huge_fill_mode(self.huge_fill);
        let huge = plan_huge_fills(self.mem, self.p, self.page, mode);
        let huge_lens: Vec<u64> = huge.iter().map(|h| h.len).collect();
        let layout = plan_layout_premap(
            self.p,
            &stub_maps,
            SCRATCH_LEN,
            self.page,
            &huge_lens,
            &self.premap,
        )
        .map_err(|what| Error::Stub { pid, what })?;
        let mem = ProcMem::open(pid).ctx(|| format!("pid {pid}: opening its memory"))?;
        let mut main = Remote::new(pid, layout::syscall_ip(pid, &mem, &stub_maps)?)?;
        let rseq = thread::stub_rseq(pid)?;
        layout::address_space(&mut main, &layout, self.page, rseq, self.reports)?;
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
        b: &mut Batcher,
        (mem, layout, huge): (&ProcMem, &Layout, &[hugefill::HugeFill]),
        scratch: u64,
    ) -> Result<()> {
        let steps = &self.mem.steps;
        if let Some(source) = self.lazy.clone() {
            return self.lazy_pages(main, b, mem, source);
        }
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
        self.page_bytes = chain::write_chain(
            self.reader,
            self.runs,
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
        vmas::finish(main, b, steps, &self.mem.guards)
    }

    /// A lazy restore's pages: the anonymous ones registered with the
    /// server (which answers faults from now on), the others written.
    fn lazy_pages(
        &mut self,
        main: &mut Remote,
        b: &mut Batcher,
        mem: &ProcMem,
        source: std::sync::Arc<dyn lazy::FrameSource>,
    ) -> Result<()> {
        let nofile = self
            .p
            .rlimits
            .iter()
            .find(|r| r.resource == libc::RLIMIT_NOFILE)
            .map_or(1024, |r| r.soft);
        let (server, eager) = lazy::setup(
            main,
            source,
            self.runs,
            &self.mem.steps,
            &self.mem.writes,
            self.page,
            nofile,
        )?;
        self.server = Some(server);
        let target = Target {
            pid: self.pid,
            mem,
            redirects: &[],
            copy: None,
        };
        self.page_bytes =
            chain::write_chain(self.reader, self.runs, &eager, &target, self.progress)?;
        vmas::finish(main, b, &self.mem.steps, &self.mem.guards)
    }

    /// Create the other threads, then give every thread its state and its
    /// registers (they are let go with the rest of the tree).
    fn threads(&mut self, mut main: Remote, l: &Layout, scratch: u64) -> Result<Vec<i32>> {
        let p = self.p;
        let tids = thread::create(&mut main, p, l, scratch, self.same_ids, self.made)?;
        let tid_map: BTreeMap<i32, i32> = p
            .threads
            .iter()
            .map(|t| t.tid)
            .zip(tids.iter().copied())
            .collect();
        if let Some(roots) = self.cgroups {
            cgroup::join_threads(p, &tid_map, roots)?;
        }
        // Injectors for the other threads; the main thread's stays `main`.
        let mut others: Vec<Remote> = Vec::new();
        for &tid in tids.iter().skip(1) {
            others.push(Remote::new(tid, l.tramp)?);
        }
        let own = self.own;
        let set_creds = creds_differ(p, own);
        let thread_creds = p.threads.iter().any(|t| t.creds.is_some());
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            if i == 0 {
                // Its state went with the process's.
                thread::set_sched(r.tid, t)?;
            } else {
                thread::set_state(r, p, t, scratch)?;
            }
        }
        timers::posix_timers(&mut main, p, scratch, &tid_map)?;
        if !self.late.is_empty() {
            let mut ids = self.tree_pids.clone();
            ids.extend(tid_map.iter().map(|(&a, &b)| (a, b)));
            crate::fds::pidfd::late(&mut main, &self.late, &ids, scratch)?;
        }
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
        // No trap from here on: a forced SIGTRAP would unblock a queued
        // one and reset its handler.
        // And every signal blocked until the saved masks are set last, so
        // that what is queued stays pending.
        for r in std::iter::once(&mut main).chain(others.iter_mut()) {
            r.without_traps();
            ptrace::set_sigmask(r.tid, u64::MAX)
                .ctx(|| format!("thread {}: blocking signals", r.tid))?;
        }
        signals::queue_shared(&mut main, p, scratch)?;
        for (i, t) in p.threads.iter().enumerate() {
            let r = if i == 0 {
                &mut main
            } else {
                &mut others[i - 1]
            };
            signals::queue_thread(r, self.pid, t, scratch)?;
            let c = t.creds.as_ref().unwrap_or(&p.creds);
            let ids = set_creds || thread_creds;
            if caps_differ(c, own) {
                set_thread_identity(r, c, (ids, own), scratch)?;
            } else if ids {
                set_thread_creds(r, c, scratch)?;
            }
        }
        let set_early = creds_unchanged(p, own);
        crate::process::finish(&mut main, p, l, set_creds || thread_creds, set_early)?;
        self.injected = main.count() + others.iter().map(|r| r.count()).sum::<u64>();
        self.cancel.check()?;
        thread::set_registers(self.pid, p, &tids)?;
        Ok(tids)
    }
}
