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

/// Dump to a file, crash-safely (see [`crate::dump()`]).
pub(crate) fn dump_here(pid: Pid, out: &Path, opts: DumpOptions, t0: Instant) -> Result<DumpStats> {
    let file = ckpt_image::AtomicFile::create(out)?;
    let file = Writeback::new(file);
    let ((), stats) = run(pid, file, opts, t0, |w| w.commit())?;
    Ok(stats)
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
    mut opts: DumpOptions,
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
    let mut cap = capture_with(pid, host, &mut opts, &mut writer)?;
    cap.image.freeze_ns = cap.frozen.elapsed().as_nanos() as u64;
    let image = std::mem::take(&mut cap.image);
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
        stats.freeze = cap.release()?;
        tracing::info!(frozen = ?stats.freeze, "released");
        worker::test_delay();
        worker::check(pid)?;
        commit(counting.inner)?
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

/// One process of the tree, captured but for its fds (saved for the whole
/// tree at the end).
struct Part {
    process: Process,
    raw_fds: Vec<RawFd>,
    rinfo: RemoteInfo,
    stat: Stat,
    memory: mem::Planned,
}

/// Freeze `root` (and its descendants unless `opts.no_tree`) and capture
/// everything into the model; page contents and blobs go to `sink`.
pub(crate) fn capture_with(
    root: Pid,
    host: HostInfo,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
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

    let mut mem_tree = TreeMemory::default();
    let mut parts: Vec<Option<Part>> = Vec::new();
    let mut processes = Vec::new();
    let mut injected = 0;
    let mut seccomp_filters = Vec::new();
    let shares_pages = sink.shares_pages();
    for m in frozen.members.clone() {
        let _span = tracing::info_span!("process", pid = m.pid).entered();
        if let Some(status) = m.zombie {
            processes.push(process::zombie_state(m.pid, status)?);
            parts.push(None);
            continue;
        }
        let f = frozen.get_mut(m.pid).ok_or(Error::Exited { pid: m.pid })?;
        let part = capture_process(
            f,
            m.parent,
            page,
            shares_pages,
            &mut mem_tree,
            &mut seccomp_filters,
        )
        .map_err(|e| in_process(root, m.pid, e))?;
        injected += part.rinfo.injected;
        parts.push(Some(part));
        processes.push(Process::default());
    }
    // Pages only once every process is planned (see mem::plan).
    let pages_bytes = save_memory(&mut parts, page, &mut mem_tree, opts, sink, root)?;
    let pids: Vec<Pid> = parts.iter().flatten().map(|p| p.process.pid).collect();
    let attached = parts
        .iter()
        .flatten()
        .flat_map(|p| sysv_attached(&p.process))
        .collect();
    let ipc = {
        let mut watched = Watched { pid: root, sink };
        sysv::save(&pids, &attached, page, &mut watched)?
    };
    worker::test_delay();
    worker::check(root)?;
    let mut sockets = fds::net::Sockets::new(opts.sockets);
    // From here on, an error drops `ptys` first, which puts the bytes it
    // took from pty pairs back before `frozen` lets the processes go.
    let (files, ptys) = save_fds(&mut parts, sink, &mut sockets)?;
    let mut locks = Vec::new();
    for part in parts.iter().flatten() {
        let pid = part.process.pid;
        locks.extend(
            fds::locks(pid, &part.raw_fds, &part.process.fds)
                .map_err(|e| in_process(root, pid, e))?,
        );
    }
    for (p, part) in processes.iter_mut().zip(&mut parts) {
        if let Some(part) = part {
            *p = std::mem::take(&mut part.process);
        }
    }
    worker::test_delay();
    worker::check(root)?;
    shares::detect(&frozen.members, &mut processes)?;
    for (p, m) in processes.iter_mut().zip(&frozen.members) {
        p.children = m.children.clone();
    }
    let mut image = new_image(host, processes, files, root, frozen.elapsed());
    image.seccomp_filters = seccomp_filters;
    image.locks = locks;
    (image.sysv_shm, image.sysv_sem, image.sysv_msg) = (ipc.shm, ipc.sem, ipc.msg);
    image.ptys = ptys.pairs.clone();
    let stats = DumpStats {
        freeze: frozen.elapsed(),
        pages_bytes,
        threads: frozen.threads(),
        processes: frozen.members.len(),
        injected_syscalls: injected,
        ..Default::default()
    };
    tracing::info!(elapsed = ?t0.elapsed(), "captured");
    Ok(Captured {
        image,
        sockets,
        ptys,
        frozen,
        stats,
    })
}

/// Check and freeze the tree. A vfork that began between the check and
/// the freeze (its parent cannot stop until the child execs, and the
/// child may be frozen first) is tried again, a few times.
fn freeze_tree(root: Pid, whole_tree: bool) -> Result<FrozenTree> {
    let mut tries = 0;
    loop {
        tree::check(root, whole_tree)?;
        match FrozenTree::freeze(root, whole_tree) {
            Err(Error::WontStop { ref state, .. }) if tries < 3 && state.contains("vfork") => {
                tries += 1;
                tracing::info!(tries, "a vfork in progress: freezing again");
            }
            r => return r,
        }
    }
}

/// Everything of one frozen process but its fds and its pages: its
/// threads, what /proc and the process itself tell, its memory areas and
/// which pages to save.
fn capture_process(
    frozen: &mut Frozen,
    parent: Pid,
    page: u64,
    shares_pages: bool,
    mem_tree: &mut TreeMemory,
    seccomp_filters: &mut Vec<ckpt_image::SeccompFilter>,
) -> Result<Part> {
    let pid = frozen.pid;
    let t0 = Instant::now();
    // Per-thread state from outside, before anything is injected.
    let mut threads = frozen
        .threads
        .iter()
        .map(|t| thread::thread_state(pid, t.tid, &t.state_before))
        .collect::<Result<Vec<Thread>>>()?;
    worker::test_delay();
    worker::check(pid)?;

    let stat = Stat::read(pid, &format!("/proc/{pid}/stat"))?;
    let status = Status::read(pid, &format!("/proc/{pid}/status"))?;
    let raw_fds = fds::list(pid)?;
    let posix_timers = timers::read_posix_timers(pid)?;
    let rinfo = ask_process(frozen, &raw_fds, &posix_timers, &status)?;
    worker::test_delay();
    worker::check(pid)?;

    // Pending signals (after the re-queue of the ones we dequeued).
    merge_threads(pid, &mut threads, &rinfo)?;
    seccomp::save(pid, status.num("Seccomp")?, &mut threads, seccomp_filters)?;
    let shared_pending = signals::pending(pid, pid, true)?;
    let mut process = process::process_state(pid, &stat, &status, frozen.state_before.clone())?;
    process::merge_remote(&mut process, &rinfo, posix_timers, shared_pending);
    creds::thread_creds(pid, &process.creds, &mut threads)?;

    let memory = mem::plan(pid, parent, page, mem_tree, shares_pages)?;
    process.vmas = memory.vmas.clone();
    process.threads = threads;
    tracing::info!(elapsed = ?t0.elapsed(), "process captured");
    Ok(Part {
        process,
        raw_fds,
        rinfo,
        stat,
        memory,
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

/// What only the process can tell, asked with injected system calls.
fn ask_process(
    frozen: &mut Frozen,
    raw_fds: &[RawFd],
    posix_timers: &[PosixTimer],
    status: &Status,
) -> Result<RemoteInfo> {
    let pid = frozen.pid;
    let t = Instant::now();
    let owner_fds = fds::remote_needs(raw_fds);
    let queries = remote::Queries {
        timer_ids: posix_timers.iter().map(|t| t.id).collect(),
        owner_fds,
        sig_mask: signals::to_query(status)?,
        rlimits: rlimits::from_outside(pid),
    };
    let rinfo = remote::query(frozen, &queries)?;
    tracing::debug!(injected = rinfo.injected, elapsed = ?t.elapsed(), "asked the process");
    Ok(rinfo)
}

/// Each thread's pending signals and what it told of itself.
fn merge_threads(pid: Pid, threads: &mut [Thread], rinfo: &RemoteInfo) -> Result<()> {
    for t in threads {
        t.pending = signals::pending(pid, t.tid, false)?;
        if let Some(r) = rinfo.threads.get(&t.tid) {
            t.altstack = r.altstack;
            t.clear_child_tid = r.clear_child_tid;
            t.cpu_affinity = r.cpu_affinity.clone();
        }
    }
    Ok(())
}

/// The memory step: every process's pages to `sink`, in the tree's
/// order (a parent's before its children's), and the deleted files they
/// map (into their areas); bytes of pages saved.
fn save_memory(
    parts: &mut [Option<Part>],
    page: u64,
    mem_tree: &mut TreeMemory,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
    root: Pid,
) -> Result<u64> {
    let t = Instant::now();
    let total: u64 = parts.iter().flatten().map(|p| p.memory.bytes()).sum();
    let mut noop = |_: u64, _: u64| {};
    let progress: &mut dyn FnMut(u64, u64) = match opts.progress.as_mut() {
        Some(p) => p.as_mut(),
        None => &mut noop,
    };
    let mut done = 0u64;
    let mut areas = 0;
    for part in parts.iter_mut().flatten() {
        let pid = part.process.pid;
        let mut each = |d: u64, _: u64| progress(done + d, total);
        let mut watched = Watched { pid: root, sink };
        let bytes = mem::save(pid, &part.memory, page, &mut watched, &mut each)
            .map_err(|e| in_process(root, pid, e))?;
        let held = fds::deleted_files(&part.raw_fds);
        mem::save_deleted(
            pid,
            &part.memory,
            &mut part.process.vmas,
            &held,
            mem_tree,
            &mut watched,
        )
        .map_err(|e| in_process(root, pid, e))?;
        done += bytes;
        areas += part.memory.vmas.len();
        worker::check(root)?;
    }
    tracing::info!(areas, bytes = done, elapsed = ?t.elapsed(), "memory");
    Ok(done)
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
        ..Default::default()
    }
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
}
