//! One dump, step by step: freeze the process, read what /proc and ptrace
//! tell, ask the process the rest (remote.rs), save its memory and its
//! fds, write the image, then let the process go or kill it. Each step is
//! logged (tracing, info level) with its duration.

use crate::error::Result;
use crate::fds::{self, RawFd};
use crate::freeze::Frozen;
use crate::process::{self, rlimits, seccomp, signals, sysv, thread, timers};
use crate::procfs::{Stat, Status};
use crate::remote::{self, RemoteInfo};
use crate::writeback::Writeback;
use crate::{host, mem, worker, Captured, DumpOptions, DumpStats, PageSink};
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

/// Freeze `pid` and capture everything into the model; page contents and
/// blobs go to `sink`.
pub(crate) fn capture_with(
    pid: Pid,
    host: HostInfo,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
) -> Result<Captured> {
    let _span = tracing::info_span!("process", pid).entered();
    let t0 = Instant::now();
    let page = u64::from(host.page_size);
    worker::check(pid)?;
    let mut frozen = Frozen::freeze(pid)?;
    tracing::info!(threads = frozen.threads.len(), elapsed = ?frozen.elapsed(), "freeze");
    worker::test_delay();
    worker::check(pid)?;

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
    let rinfo = ask_process(&mut frozen, &raw_fds, &posix_timers, &status)?;
    worker::test_delay();
    worker::check(pid)?;

    // Pending signals (after the re-queue of the ones we dequeued).
    merge_threads(pid, &mut threads, &rinfo)?;
    let mut seccomp_filters = Vec::new();
    seccomp::save(
        pid,
        status.num("Seccomp")?,
        &mut threads,
        &mut seccomp_filters,
    )?;
    let shared_pending = signals::pending(pid, pid, true)?;
    let mut process = process::process_state(pid, &stat, &status, frozen.state_before.clone())?;
    process::merge_remote(&mut process, &rinfo, posix_timers, shared_pending);

    let mut watched = Watched { pid, sink };
    let held = fds::deleted_files(&raw_fds);
    let pages_bytes = save_memory(pid, page, &held, opts, &mut watched, &mut process)?;
    worker::test_delay();
    worker::check(pid)?;
    let ipc = sysv::save(&[pid], &sysv_attached(&process), page, &mut watched)?;

    let mut sockets = fds::net::Sockets::new(opts.sockets);
    let files = save_fds(
        pid,
        &raw_fds,
        &rinfo,
        &stat,
        &mut watched,
        &mut process,
        &mut sockets,
    )?;
    let locks = fds::locks(pid, &raw_fds, &process.fds)?;
    worker::test_delay();
    worker::check(pid)?;
    process.threads = threads;

    let mut image = new_image(host, process, files, pid, &frozen);
    image.locks = locks;
    image.seccomp_filters = seccomp_filters;
    (image.sysv_shm, image.sysv_sem, image.sysv_msg) = (ipc.shm, ipc.sem, ipc.msg);
    let stats = DumpStats {
        freeze: frozen.elapsed(),
        pages_bytes,
        threads: frozen.threads.len(),
        injected_syscalls: rinfo.injected,
        ..Default::default()
    };
    tracing::info!(elapsed = ?t0.elapsed(), "process captured");
    Ok(Captured {
        image,
        sockets,
        frozen,
        stats,
    })
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
    let (tty_fds, owner_fds) = fds::remote_needs(raw_fds);
    let queries = remote::Queries {
        timer_ids: posix_timers.iter().map(|t| t.id).collect(),
        tty_fds,
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

/// The memory step: areas into `process`, pages to `sink`; bytes saved.
fn save_memory(
    pid: Pid,
    page: u64,
    held: &std::collections::HashSet<(u64, u64)>,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
    process: &mut Process,
) -> Result<u64> {
    let t = Instant::now();
    let mut noop = |_: u64, _: u64| {};
    let progress: &mut dyn FnMut(u64, u64) = match opts.progress.as_mut() {
        Some(p) => p.as_mut(),
        None => &mut noop,
    };
    let (vmas, bytes) = mem::save(pid, page, held, sink, progress)?;
    tracing::info!(areas = vmas.len(), bytes, elapsed = ?t.elapsed(), "memory");
    process.vmas = vmas;
    Ok(bytes)
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

/// The fds step: the fd table into `process`; the open files.
fn save_fds(
    pid: Pid,
    raw_fds: &[RawFd],
    rinfo: &RemoteInfo,
    stat: &Stat,
    sink: &mut dyn PageSink,
    process: &mut Process,
    sockets: &mut fds::net::Sockets,
) -> Result<Vec<OpenFile>> {
    let t = Instant::now();
    let (fds, files) = fds::build(pid, raw_fds, rinfo, stat, sink, sockets)?;
    tracing::info!(fds = fds.len(), files = files.len(), elapsed = ?t.elapsed(), "fds");
    process.fds = fds;
    Ok(files)
}

fn new_image(
    host: HostInfo,
    process: Process,
    files: Vec<OpenFile>,
    pid: Pid,
    frozen: &Frozen,
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
        processes: vec![process],
        files,
        frames: Vec::new(),
        root_pid: pid,
        freeze_ns: frozen.elapsed().as_nanos() as u64,
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
}
