//! One dump, step by step: freeze the process, read what /proc and ptrace
//! tell, ask the process the rest (remote.rs), save its memory and its
//! fds, write the image, then let the process go or kill it. Each step is
//! logged (tracing, info level) with its duration.

use crate::error::{Error, Result};
use crate::fds::{self, RawFd};
use crate::freeze::Frozen;
use crate::mem::{self, TreeMemory};
use crate::process::{self, creds, rlimits, seccomp, shares, signals, sysv, thread, timers};
use crate::procfs::{Stat, Status};
use crate::remote::{self, RemoteInfo};
use crate::tree::{self, FrozenTree};
use crate::writeback::Writeback;
use crate::{host, worker, Captured, DumpOptions, DumpStats, PageSink};
use ckpt_image::{
    Blob, HostInfo, Image, ImageWriter, OpenFile, PosixTimer, Process, Thread, WriteOptions,
};
use ckpt_sys::Pid;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Dump to a file, crash-safely (see [`crate::dump()`]). A copy-on-write
/// snapshot that fails (the process unmapped or discarded pages before
/// they were copied, or started a child) is tried again as a dump that
/// copies in the freeze.
pub(crate) fn dump_here(
    pid: Pid,
    out: &Path,
    mut opts: DumpOptions,
    t0: Instant,
) -> Result<DumpStats> {
    loop {
        let file = ckpt_image::AtomicFile::create(out)?;
        // A checkpoint of a process that goes on is for later: written
        // around the page cache (no copy into it, nothing of the running
        // process's cache evicted). A dump that ends the process keeps its
        // image in the cache, where the restore that usually follows
        // reads it.
        let file = if opts.leave_running {
            Writeback::direct(file)
        } else {
            Writeback::new(file)
        };
        match run(pid, file, &mut opts, t0, |w| w.commit()) {
            Err(e @ Error::Snapshot { .. }) if !opts.no_snapshot => {
                tracing::warn!("{e}; dumping again with the memory copied in the freeze");
                opts.no_snapshot = true;
            }
            r => return r.map(|((), stats)| stats),
        }
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Capture into an image written to `w`, `commit` it, and let the process
/// go (leave_running) or kill it.
pub(crate) fn run<W: Write, R>(
    pid: Pid,
    w: W,
    opts: &mut DumpOptions,
    t0: Instant,
    commit: impl FnOnce(W) -> Result<R>,
) -> Result<(R, DumpStats)> {
    let _span = tracing::info_span!("dump", pid).entered();
    let host = host::host_info(pid)?;
    let wopts = WriteOptions {
        compression: opts.compression,
        page_size: host.page_size,
        ..Default::default()
    };
    let mut writer = ImageWriter::new(Counting { inner: w, n: 0 }, wopts)?;
    // Memory, before the freeze (mem/mod.rs: snapshot, pre-copy, ...).
    let prep = mem::prepare(pid, u64::from(host.page_size), opts, &mut writer)?;
    let mut cap = capture_with(pid, host, opts, &mut writer, prep)?;
    cap.image.freeze_ns = cap.frozen.elapsed().as_nanos() as u64;
    let image = std::mem::take(&mut cap.image);
    if let Some(pending) = cap.pending.take() {
        return finish_snapshot(pid, cap, pending, image, writer, opts, t0, commit);
    }
    let image_id = image.image_id.clone();
    // Any error from here on drops `cap`, which lets the process go on.
    let t = Instant::now();
    let counting = writer.finish(image)?;
    let image_bytes = counting.n;
    tracing::info!(bytes = image_bytes, elapsed = ?t.elapsed(), "write");
    let mut stats = cap.stats.clone();
    stats.image_bytes = image_bytes;
    worker::test_delay();
    worker::check(pid)?;
    let r = if opts.leave_running {
        // Everything is captured: let the process go before the (slow)
        // commit; if the commit fails, the process is as it was anyway.
        let prep = cap.prep.take();
        stats.freeze = cap.release()?;
        tracing::info!(frozen = ?stats.freeze, "released");
        worker::test_delay();
        worker::check(pid)?;
        let r = commit(counting.inner)?;
        if let Some(p) = &prep {
            mem::committed(p, &image_id)?;
        }
        r
    } else {
        // The image must be safe before the process is killed.
        let r = commit(counting.inner)?;
        stats.freeze = cap.kill()?;
        tracing::info!(frozen = ?stats.freeze, "killed");
        r
    };
    stats.total = t0.elapsed();
    tracing::info!(elapsed = ?stats.total, pages_bytes = stats.pages_bytes, image_bytes, "dump done");
    Ok((r, stats))
}

/// The end of a leave-running dump whose memory is a copy-on-write
/// snapshot: let the process go, copy the pages, write and commit.
#[allow(clippy::too_many_arguments)]
fn finish_snapshot<W: Write, R>(
    pid: Pid,
    mut cap: Captured,
    pending: mem::snapcopy::Pending,
    image: Image,
    mut writer: ImageWriter<Counting<W>>,
    opts: &mut DumpOptions,
    t0: Instant,
    commit: impl FnOnce(W) -> Result<R>,
) -> Result<(R, DumpStats)> {
    worker::test_delay();
    worker::check(pid)?;
    let mut stats = cap.stats.clone();
    cap.prep.take();
    stats.freeze = cap.release()?;
    tracing::info!(frozen = ?stats.freeze, "released");
    let mut noop = |_: u64, _: u64| {};
    let progress: &mut dyn FnMut(u64, u64) = match opts.progress.as_mut() {
        Some(p) => p.as_mut(),
        None => &mut noop,
    };
    let t = Instant::now();
    let copied = pending.copy(
        &mut Watched {
            pid,
            sink: &mut writer,
        },
        progress,
    )?;
    stats.pages_bytes += copied;
    tracing::info!(bytes = copied, elapsed = ?t.elapsed(), "memory copied");
    let t = Instant::now();
    let counting = writer.finish(image)?;
    stats.image_bytes = counting.n;
    tracing::info!(bytes = stats.image_bytes, elapsed = ?t.elapsed(), "write");
    worker::test_delay();
    worker::check(pid)?;
    let r = commit(counting.inner)?;
    stats.total = t0.elapsed();
    tracing::info!(elapsed = ?stats.total, pages_bytes = stats.pages_bytes, image_bytes = stats.image_bytes, "dump done");
    Ok((r, stats))
}

/// One process of the tree, captured but for its fds (saved for the whole
/// tree at the end).
struct Part {
    process: Process,
    raw_fds: Vec<RawFd>,
    rinfo: RemoteInfo,
    stat: Stat,
    /// Its pages, planned; None for the root when they are taken as
    /// `prep` says (snapshot, pre-copy: one process only).
    memory: Option<mem::Planned>,
}

/// Freeze `root` (and its descendants unless `opts.no_tree`) and capture
/// everything into the model; page contents and blobs go to `sink`. The
/// root's pages are taken as `prep` (mem::prepare) says.
pub(crate) fn capture_with(
    root: Pid,
    host: HostInfo,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
    mut prep: mem::Prepared,
) -> Result<Captured> {
    let t0 = Instant::now();
    let page = u64::from(host.page_size);
    worker::check(root)?;
    let whole_tree = !opts.no_tree;
    let mut frozen = freeze_tree(root, whole_tree)?;
    tracing::info!(
        processes = frozen.members.len(),
        threads = frozen.threads(),
        elapsed = ?frozen.elapsed(),
        "freeze"
    );
    worker::test_delay();
    worker::check(root)?;
    if !prep.is_frozen() && frozen.members.len() > 1 {
        // A child started since mem::prepare looked: the snapshot and the
        // pre-copy are of one process.
        return Err(Error::Snapshot {
            pid: root,
            what: "the process started a child during the dump".into(),
        });
    }

    let mut seccomp_filters = Vec::new();
    let (mut parts, mut processes, injected, mut mem_tree) = capture_members(
        &mut frozen,
        root,
        page,
        (sink.shares_pages(), &prep),
        &mut seccomp_filters,
    )?;
    // Pages only once every process is planned (see mem::plan).
    let (pages_bytes, pending) =
        save_memory(&mut parts, page, &mut mem_tree, opts, &mut prep, sink, root)?;
    let ipc = save_sysv(&parts, page, root, sink)?;
    worker::test_delay();
    worker::check(root)?;
    let mut sockets = fds::net::Sockets::new(opts.sockets);
    // From here on, an error drops `ptys` first, which puts the bytes it
    // took from pty pairs back before `frozen` lets the processes go.
    let (files, ptys) = save_fds(&mut parts, sink, &mut sockets)?;
    let locks = save_locks(&parts, root)?;
    for (p, part) in processes.iter_mut().zip(&mut parts) {
        if let Some(part) = part {
            *p = std::mem::take(&mut part.process);
        }
    }
    for p in &processes {
        mem::vmas::check_ring_holders(p.pid, p, &files)?;
    }
    worker::test_delay();
    worker::check(root)?;
    shares::detect(&frozen.members, &mut processes)?;
    for (p, m) in processes.iter_mut().zip(&frozen.members) {
        p.children = m.children.clone();
    }
    let mut image = new_image(host, processes, files, root, frozen.elapsed());
    image.parent = prep.parent.clone().unwrap_or_default();
    if let Some(n) = &prep.note {
        image.notes.push(ckpt_image::Note {
            key: "ckpt.dump".into(),
            value: n.clone(),
        });
    }
    image.seccomp_filters = seccomp_filters;
    image.locks = locks;
    (image.sysv_shm, image.sysv_sem, image.sysv_msg) = (ipc.shm, ipc.sem, ipc.msg);
    image.ptys = ptys.pairs.clone();
    let stats = DumpStats {
        freeze: frozen.elapsed(),
        pages_bytes: pages_bytes + prep.bytes,
        threads: frozen.threads(),
        processes: frozen.members.len(),
        injected_syscalls: injected,
        mode: prep.mode,
        note: prep.note.clone(),
        ..Default::default()
    };
    tracing::info!(elapsed = ?t0.elapsed(), mode = prep.mode.name(), "captured");
    Ok(Captured {
        image,
        sockets,
        ptys,
        frozen,
        stats,
        pending,
        prep: Some(prep),
    })
}

/// The SysV IPC objects the processes of `parts` use.
fn save_sysv(
    parts: &[Option<Part>],
    page: u64,
    root: Pid,
    sink: &mut dyn PageSink,
) -> Result<sysv::Saved> {
    let pids: Vec<Pid> = parts.iter().flatten().map(|p| p.process.pid).collect();
    let attached = parts
        .iter()
        .flatten()
        .flat_map(|p| sysv_attached(&p.process))
        .collect();
    let mut watched = Watched { pid: root, sink };
    sysv::save(&pids, &attached, page, &mut watched)
}

/// The file locks and leases of the processes of `parts`.
fn save_locks(parts: &[Option<Part>], root: Pid) -> Result<Vec<ckpt_image::FileLock>> {
    let mut locks = Vec::new();
    for part in parts.iter().flatten() {
        let pid = part.process.pid;
        locks.extend(
            fds::locks(pid, &part.raw_fds, &part.process.fds)
                .map_err(|e| in_process(root, pid, e))?,
        );
    }
    Ok(locks)
}

/// Check and freeze the tree. A vfork that began between the check and
/// the freeze (its parent cannot stop until the child execs, and the
/// child may be frozen first) is tried again, a few times.
fn freeze_tree(root: Pid, whole_tree: bool) -> Result<FrozenTree> {
    let mut tries = 0;
    loop {
        let checked = tree::check(root, whole_tree)?;
        match FrozenTree::freeze(root, whole_tree, checked) {
            Err(Error::WontStop { ref state, .. }) if tries < 3 && state.contains("vfork") => {
                tries += 1;
                tracing::info!(tries, "a vfork in progress: freezing again");
            }
            r => return r,
        }
    }
}

/// The processes of the frozen tree (but their fds and pages), in its
/// order, zombies included (no part): their parts, their models so far,
/// the system calls injected, and their memory planned (the pages to save
/// of each process whose pages are taken in the freeze).
///
/// Three threads: this one (which holds the ptrace attachments) asks
/// each process in turn; ahead of it, a reader reads what /proc alone
/// tells of each ([`read_outside`]); behind it, a helper plans the memory
/// of the processes already asked (/proc reads only: smaps, pagemap), in
/// the tree's order (a parent's before its children's). A process is
/// read before it is asked (its status shows its own signal mask), and
/// planned only once its queries are over (its mappings are its own
/// again by then).
#[allow(clippy::type_complexity)]
fn capture_members(
    frozen: &mut FrozenTree,
    root: Pid,
    page: u64,
    (shares_pages, prep): (bool, &mem::Prepared),
    seccomp_filters: &mut Vec<ckpt_image::SeccompFilter>,
) -> Result<(Vec<Option<Part>>, Vec<Process>, u64, TreeMemory)> {
    let mut parts: Vec<Option<Part>> = Vec::new();
    let mut processes = Vec::new();
    let mut injected = 0;
    let frozen_prep = mem::Prepared::frozen_only();
    let own_cgroups = process::cgroup::Own::read(root)?;
    let span = tracing::Span::current();
    let (tree, plans) = std::thread::scope(|s| -> Result<_> {
        // Declared in the scope: an early return drops it, which ends
        // the helper before the scope waits for it.
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Pid, Pid)>();
        let helper = s.spawn(move || {
            let _span = span.entered();
            let mut tree = TreeMemory::default();
            let mut plans = Vec::new();
            for (i, pid, parent) in rx {
                let _span = tracing::info_span!("process", pid).entered();
                let r = mem::plan(pid, parent, page, &mut tree, shares_pages);
                let failed = r.is_err();
                plans.push((i, pid, r));
                if failed {
                    break;
                }
            }
            (tree, plans)
        });
        let members = frozen.members.clone();
        let outside = spawn_reader(s, frozen, tracing::Span::current());
        for chunk in members.chunks(LOCKSTEP) {
            let mut asked = Vec::new();
            for m in chunk {
                let _span = tracing::info_span!("process", pid = m.pid).entered();
                if let Some(status) = m.zombie {
                    processes.push(process::zombie_state(m.pid, status)?);
                    parts.push(None);
                    continue;
                }
                let f = frozen.get_mut(m.pid).ok_or(Error::Exited { pid: m.pid })?;
                let own = if m.pid == root { prep } else { &frozen_prep };
                mem::before_queries(own, &crate::remote::frame_regions(f));
                let out = outside.recv().map_err(|_| Error::Worker {
                    message: "the /proc reading thread stopped".into(),
                })?;
                let read = out
                    .and_then(|o| read_process(f, own, o))
                    .and_then(|r| Ok((queries(m.pid, &r)?, r)))
                    .map_err(|e| in_process(root, m.pid, e))?;
                asked.push((parts.len(), m.pid, m.parent, read));
                parts.push(None);
                processes.push(Process::default());
            }
            let pids: Vec<Pid> = asked.iter().map(|a| a.1).collect();
            let qs: Vec<remote::Queries> = asked
                .iter_mut()
                .map(|a| std::mem::take(&mut (a.3).0))
                .collect();
            let mut fs = frozen_of(frozen, &pids)?;
            let t = Instant::now();
            let infos = remote::query_many(&mut fs, &qs);
            tracing::debug!(processes = pids.len(), elapsed = ?t.elapsed(), "asked the processes");
            for ((i, pid, parent, (_, read)), (f, info)) in
                asked.into_iter().zip(fs.iter().zip(infos))
            {
                let _span = tracing::info_span!("process", pid).entered();
                let part = info
                    .and_then(|rinfo| finish_process(f, read, rinfo, seccomp_filters, &own_cgroups))
                    .map_err(|e| in_process(root, pid, e))?;
                injected += part.rinfo.injected;
                let own = if pid == root { prep } else { &frozen_prep };
                if own.is_frozen() {
                    // A helper gone (it failed) says so at its join.
                    let _ = tx.send((i, pid, parent));
                }
                parts[i] = Some(part);
            }
        }
        drop(tx);
        helper.join().map_err(|_| Error::Worker {
            message: "the memory planning thread panicked".into(),
        })
    })?;
    for (i, pid, planned) in plans {
        let m = planned.map_err(|e| in_process(root, pid, e))?;
        if let Some(part) = parts.get_mut(i).and_then(|p| p.as_mut()) {
            part.process.vmas = m.vmas.clone();
            part.memory = Some(m);
        }
    }
    Ok((parts, processes, injected, tree))
}

/// How many processes are asked at once (see [`remote::query_many`]).
const LOCKSTEP: usize = 16;

/// The frozen processes `pids` of `tree`, in that order.
fn frozen_of<'a>(tree: &'a mut FrozenTree, pids: &[Pid]) -> Result<Vec<&'a mut Frozen>> {
    let mut by: std::collections::HashMap<Pid, &mut Frozen> = tree
        .frozen
        .iter_mut()
        .filter(|f| pids.contains(&f.pid))
        .map(|f| (f.pid, f))
        .collect();
    pids.iter()
        .map(|&pid| by.remove(&pid).ok_or(Error::Exited { pid }))
        .collect()
}

/// What is read of a frozen process from outside before it is asked the
/// rest ([`remote::query_many`]).
struct Read {
    t0: Instant,
    threads: Vec<Thread>,
    stat: Stat,
    status: Status,
    raw_fds: Vec<RawFd>,
    posix_timers: Vec<PosixTimer>,
    /// Its model from /proc ([`process::process_state`]).
    process: Process,
    /// Its /proc/PID/maps.
    maps: String,
}

/// What /proc alone tells of a frozen process (no ptrace request: any
/// thread may read it): stat, status, fds, timers, and its model from
/// /proc.
struct Outside {
    stat: Stat,
    status: Status,
    raw_fds: Vec<RawFd>,
    posix_timers: Vec<PosixTimer>,
    process: Process,
    maps: String,
}

/// [`Outside`] of process `pid`, which was in state `state_before`.
fn read_outside(pid: Pid, state_before: String) -> Result<Outside> {
    let stat = Stat::read(pid, &format!("/proc/{pid}/stat"))?;
    let status = Status::read(pid, &format!("/proc/{pid}/status"))?;
    let raw_fds = fds::list(pid)?;
    let posix_timers = timers::read_posix_timers(pid)?;
    let process = process::process_state(pid, &stat, &status, state_before)?;
    let maps = crate::procfs::read_string(pid, &format!("/proc/{pid}/maps"))?;
    Ok(Outside {
        stat,
        status,
        raw_fds,
        posix_timers,
        process,
        maps,
    })
}

/// A thread of scope `s` that reads [`Outside`] of each live process of
/// `frozen`, in the tree's order, into the channel it returns; it stops
/// when the receiver is dropped.
fn spawn_reader<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    frozen: &FrozenTree,
    span: tracing::Span,
) -> std::sync::mpsc::Receiver<Result<Outside>> {
    let live: Vec<(Pid, String)> = frozen
        .members
        .iter()
        .filter(|m| m.zombie.is_none())
        .map(|m| {
            let f = frozen.frozen.iter().find(|f| f.pid == m.pid);
            (m.pid, f.map(|f| f.state_before.clone()).unwrap_or_default())
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    s.spawn(move || {
        let _span = span.entered();
        for (pid, state_before) in live {
            let _span = tracing::info_span!("process", pid).entered();
            if tx.send(read_outside(pid, state_before)).is_err() {
                break;
            }
        }
    });
    rx
}

/// A frozen process from outside: its threads (before anything is
/// injected), and what /proc told of it (`outside`).
fn read_process(frozen: &Frozen, prep: &mem::Prepared, outside: Outside) -> Result<Read> {
    let pid = frozen.pid;
    let t0 = Instant::now();
    let threads = frozen
        .threads
        .iter()
        .map(|t| thread::thread_state(pid, t.tid, &t.state_before, t.rseq))
        .collect::<Result<Vec<Thread>>>()?;
    worker::test_delay();
    worker::check(pid)?;

    let Outside {
        stat,
        status,
        mut raw_fds,
        posix_timers,
        process,
        maps,
    } = outside;
    // ckpt's own fds (dirty tracking) are not the process's.
    raw_fds.retain(|f| !prep.own_fds.contains(&f.fd));
    Ok(Read {
        t0,
        threads,
        stat,
        status,
        raw_fds,
        posix_timers,
        process,
        maps,
    })
}

/// Everything of one frozen process but its fds and its memory, from
/// what was read of it and what it told: its threads, what /proc and
/// the process itself tell.
fn finish_process(
    frozen: &Frozen,
    read: Read,
    rinfo: RemoteInfo,
    seccomp_filters: &mut Vec<ckpt_image::SeccompFilter>,
    own_cgroups: &process::cgroup::Own,
) -> Result<Part> {
    let pid = frozen.pid;
    let Read {
        t0,
        mut threads,
        stat,
        status,
        raw_fds,
        posix_timers,
        mut process,
        maps: _,
    } = read;
    worker::test_delay();
    worker::check(pid)?;

    // Pending signals (after the re-queue of the ones we dequeued).
    merge_threads(pid, &mut threads, &rinfo)?;
    // Each thread's status but the leader's (that is `status`), read once.
    let thread_status = threads
        .iter()
        .filter(|t| t.tid != pid)
        .map(|t| {
            let path = format!("/proc/{pid}/task/{}/status", t.tid);
            Ok((t.tid, Status::read(pid, &path)?))
        })
        .collect::<Result<std::collections::BTreeMap<Pid, Status>>>()?;
    seccomp::save(
        pid,
        status.num("Seccomp")?,
        &thread_status,
        &mut threads,
        seccomp_filters,
    )?;
    let shared_pending = signals::pending(pid, pid, true)?;
    if process.state == "T" {
        // The group-stop signal the seize reported (SIGTRAP when none).
        let sig = frozen.threads.first().map_or(0, |t| t.stop_sig);
        if matches!(
            sig,
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
        ) {
            process.stop_signal = sig;
        }
    }
    process::merge_remote(&mut process, &rinfo, posix_timers, shared_pending);
    creds::thread_creds(&process.creds, &thread_status, &mut threads)?;
    process::cgroup::save(pid, &mut process, &mut threads, own_cgroups)?;

    process.threads = threads;
    tracing::info!(elapsed = ?t0.elapsed(), injected = rinfo.injected, "process captured");
    Ok(Part {
        process,
        raw_fds,
        rinfo,
        stat,
        // Planned by capture_members; pages taken another way (snapshot,
        // pre-copy) are planned later.
        memory: None,
    })
}

/// An error of process `pid` of the tree, with its pid where it does not
/// say it (not for the root).
fn in_process(root: Pid, pid: Pid, e: Error) -> Error {
    if pid == root {
        e
    } else {
        e.of_process(pid)
    }
}

/// What to ask the process (what only it can tell, asked with injected
/// system calls), from what was read of it.
fn queries(pid: Pid, read: &Read) -> Result<remote::Queries> {
    Ok(remote::Queries {
        timer_ids: read.posix_timers.iter().map(|t| t.id).collect(),
        owner_fds: fds::remote_needs(&read.raw_fds),
        sig_mask: signals::to_query(&read.status)?,
        rlimits: rlimits::from_outside(pid),
        // Without the line (a kernel without shadow stacks): none.
        shadow_stack: Some(
            read.status
                .get("x86_Thread_features")
                .is_ok_and(|(_, v)| remote::shadow_stack_in(v)),
        ),
        batch_signals: signals::batch_signals(&read.status)?,
        maps: Some(read.maps.clone()),
    })
}

/// Each thread's pending signals and what it told of itself.
fn merge_threads(pid: Pid, threads: &mut [Thread], rinfo: &RemoteInfo) -> Result<()> {
    for t in threads {
        t.pending = signals::pending(pid, t.tid, false)?;
        if let Some(r) = rinfo.threads.get(&t.tid) {
            t.altstack = r.altstack;
            t.clear_child_tid = r.clear_child_tid;
        }
    }
    Ok(())
}

/// The memory step: every process's pages to `sink`, in the tree's
/// order (a parent's before its children's), the root's as `prep` says
/// (for a snapshot: the copy to finish after the freeze), and the deleted
/// files they map (into their areas); bytes of pages saved.
fn save_memory(
    parts: &mut [Option<Part>],
    page: u64,
    mem_tree: &mut TreeMemory,
    opts: &mut DumpOptions,
    prep: &mut mem::Prepared,
    sink: &mut dyn PageSink,
    root: Pid,
) -> Result<(u64, Option<mem::snapcopy::Pending>)> {
    let t = Instant::now();
    let total: u64 = parts
        .iter()
        .flatten()
        .filter_map(|p| p.memory.as_ref())
        .map(|m| m.bytes())
        .sum();
    let mut noop = |_: u64, _: u64| {};
    let progress: &mut dyn FnMut(u64, u64) = match opts.progress.as_mut() {
        Some(p) => p.as_mut(),
        None => &mut noop,
    };
    let mut done = 0u64;
    let mut areas = 0;
    let mut pending = None;
    for part in parts.iter_mut().flatten() {
        let pid = part.process.pid;
        let mut watched = Watched { pid: root, sink };
        let held = fds::deleted_files(&part.raw_fds);
        let bytes = match &part.memory {
            Some(m) => {
                let mut each = |d: u64, _: u64| progress(done + d, total);
                areas += m.vmas.len();
                mem::save(pid, m, page, &mut watched, &mut each).and_then(|b| {
                    mem::save_deleted(
                        pid,
                        m,
                        &mut part.process.vmas,
                        &held,
                        mem_tree,
                        &mut watched,
                    )?;
                    Ok(b)
                })
            }
            None => {
                let (vmas, bytes, p) = mem::save_frozen(pid, page, prep, &mut watched, progress)?;
                areas += vmas.len();
                part.process.vmas = vmas;
                pending = p;
                mem::finish_areas(pid, &mut part.process.vmas, &held, mem_tree, &mut watched)
                    .map(|()| bytes)
            }
        }
        .map_err(|e| in_process(root, pid, e))?;
        done += bytes;
        worker::check(root)?;
    }
    tracing::info!(areas, bytes = done, elapsed = ?t.elapsed(), "memory");
    Ok((done, pending))
}

/// The ids of the SysV shared memory segments `process` maps.
pub(crate) fn sysv_attached(process: &Process) -> std::collections::BTreeSet<i32> {
    process
        .vmas
        .iter()
        .filter_map(|v| match &v.backing {
            ckpt_image::VmaBacking::SharedMemory(s) if s.kind == ckpt_image::ShmKind::SysvShm => {
                i32::try_from(s.id).ok()
            }
            _ => None,
        })
        .collect()
}

/// The fds step, for the whole tree: each process's fd table and
/// controlling terminal into its model (zombies have no part); the open
/// files, and the pty pairs (their buffered bytes taken, to be put back
/// unless the processes are killed).
fn save_fds(
    parts: &mut [Option<Part>],
    sink: &mut dyn PageSink,
    sockets: &mut fds::net::Sockets,
) -> Result<(Vec<OpenFile>, fds::Ptys)> {
    let t = Instant::now();
    let live: Vec<(usize, fds::ProcFds)> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.as_ref().map(|p| {
                (
                    i,
                    fds::ProcFds {
                        pid: p.process.pid,
                        fds: &p.raw_fds,
                        remote: &p.rinfo,
                        stat: &p.stat,
                    },
                )
            })
        })
        .collect();
    let procs: Vec<fds::ProcFds> = live.iter().map(|(_, p)| *p).collect();
    let (tables, files, ptys) = fds::build(&procs, sink, sockets)?;
    let at: Vec<usize> = live.iter().map(|(i, _)| *i).collect();
    let mut n = 0;
    for (i, table) in at.into_iter().zip(tables) {
        n += table.len();
        if let Some(p) = &mut parts[i] {
            p.process.fds = table;
            p.process.controlling_tty = fds::tty_dev(p.stat.stat.tty_nr);
        }
    }
    tracing::info!(fds = n, files = files.len(), ptys = ptys.pairs.len(), elapsed = ?t.elapsed(), "fds");
    Ok((files, ptys))
}

fn new_image(
    host: HostInfo,
    processes: Vec<Process>,
    files: Vec<OpenFile>,
    root: Pid,
    frozen: std::time::Duration,
) -> Image {
    Image {
        format_major: ckpt_image::FORMAT_MAJOR,
        format_minor: ckpt_image::FORMAT_MINOR,
        tool_version: format!("ckpt {}", env!("CARGO_PKG_VERSION")),
        created_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
        host,
        processes,
        files,
        frames: Vec::new(),
        root_pid: root,
        freeze_ns: frozen.as_nanos() as u64,
        generation: 0,
        notes: Vec::new(),
        image_id: random_id(),
        ..Default::default()
    }
}

/// 16 random bytes naming a dump (Image.imageId).
fn random_id() -> Vec<u8> {
    let mut id = vec![0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id))
        .is_ok();
    if !ok {
        // Unique enough without /dev/urandom: the time and our pid, hashed.
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in id.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.write_u32(std::process::id());
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_ne_bytes());
        }
    }
    id
}

/// A sink that first checks the dump was not abandoned ([`worker::check`]).
struct Watched<'a> {
    pid: Pid,
    sink: &'a mut dyn PageSink,
}

impl PageSink for Watched<'_> {
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        worker::check(self.pid)?;
        self.sink.add_pages(pid, addr, data)
    }
    fn add_page_buffer(
        &mut self,
        pid: i32,
        buf: Vec<u8>,
        pieces: &[(u64, usize, usize)],
    ) -> Result<Vec<u8>> {
        worker::check(self.pid)?;
        self.sink.add_page_buffer(pid, buf, pieces)
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        worker::check(self.pid)?;
        self.sink.add_blob(data)
    }
    fn add_guard(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        self.sink.add_guard(pid, addr, len)
    }
    fn shares_pages(&self) -> bool {
        self.sink.shares_pages()
    }
    fn add_parent_pages(&mut self, pid: i32, addr: u64, len: u64, parent: i32) -> Result<()> {
        worker::check(self.pid)?;
        self.sink.add_parent_pages(pid, addr, len, parent)
    }
    fn replace_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        worker::check(self.pid)?;
        self.sink.replace_pages(pid, addr, data)
    }
    fn drop_pages(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        self.sink.drop_pages(pid, addr, len)
    }
    fn add_parent_run(&mut self, pid: i32, addr: u64, pages: u64) -> Result<()> {
        self.sink.add_parent_run(pid, addr, pages)
    }
}
