//! ckpt-capture: freeze a running process, capture its whole state into the
//! image model, write the image, then kill the process or let it go on.
//!
//! Entry points: [`dump`] (to a file, crash-safely) and [`dump_to`] (to any
//! writer). [`capture`] is the lower level: it freezes and captures into any
//! [`PageSink`], and hands back a [`Captured`] that must then be released or
//! killed.
//!
//! Whatever goes wrong, the target is resumed untouched: every thread's
//! registers and signal mask are put back, the scratch page we mapped in it
//! is unmapped, signals we dequeued while stopping it are queued again, and
//! every thread is detached.
//!
//! # What the model holds (beyond the schema comments)
//!
//! - Signals the kernel dequeued while a thread was being stopped are queued
//!   again in that thread (injected `rt_tgsigqueueinfo`) before the pending
//!   queues are read: they appear in `Thread.pending` with their siginfo.
//! - Registers are those at the stop: a thread stopped in a system call keeps
//!   `orig_rax` = the call and `rax` = -ERESTART*; restore applies the fixup.
//! - `FileIdentity.path` is without the kernel's " (deleted)" suffix;
//!   `deleted` says it was there (or the file has no links left).
//! - Memory runs: private anonymous memory (heap, stack too): present and
//!   swapped pages. Private file mappings: the pages no longer the file's
//!   (COW'd). Shared memory mapped shared (shared anonymous, memfd, SysV,
//!   /dev/shm): every page up to the object's end, holes as zero pages.
//!   Deleted files mapped, and memfds mapped private: every readable page.
//!   Shared mappings of existing files, vdso/vvar/vsyscall/uprobes: none.
//! - Pipes: buffered bytes are on the read end's OpenFile only (once per
//!   pipe); a write end alone carries no data.
//! - `Process.timerSlackNs` is the main thread's. `OpenFile.owner` is read
//!   for fds with O_ASYNC only. Inotify watch paths are resolved from their
//!   file handles when possible, else empty.
#![forbid(unsafe_code)]

mod error;
mod files;
mod freeze;
mod host;
mod memory;
mod procfs;
mod remote;
mod vmas;
mod worker;

pub use error::{Error, Result};

use ckpt_image::{
    Blob, Credentials, FileIdentity, Image, ImageWriter, MmLayout, PosixTimer, Process, Registers,
    RobustList, SigInfo, Thread, WriteOptions, X8664Regs,
};
use ckpt_sys::{ptrace, Pid};
use error::{IoCtx, SysCtx};
use procfs::{Stat, Status};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How to dump.
#[derive(Default)]
pub struct DumpOptions {
    /// Let the process go on after the dump (default: kill it).
    pub leave_running: bool,
    pub compression: ckpt_image::Compression,
    /// Called with (bytes of memory saved so far, bytes to save in all).
    pub progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
}

impl std::fmt::Debug for DumpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpOptions")
            .field("leave_running", &self.leave_running)
            .field("compression", &self.compression)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a dump cost.
#[derive(Debug, Clone, Default)]
pub struct DumpStats {
    /// From seizing the first thread until the process was let go (or killed).
    pub freeze: Duration,
    /// The whole dump, checks and writing included.
    pub total: Duration,
    /// Bytes of memory pages saved (before compression).
    pub pages_bytes: u64,
    /// Bytes of image written.
    pub image_bytes: u64,
    pub threads: usize,
    pub injected_syscalls: u64,
}

/// Where captured page contents and blobs go: the image writer, or anything
/// else (tests keep them in memory).
pub trait PageSink {
    /// Saved pages of process `pid` at page-aligned `addr` (whole pages).
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()>;
    /// A byte string (file contents); returns the Blob for the model.
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob>;
}

impl<W: Write> PageSink for ImageWriter<W> {
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        ImageWriter::add_pages(self, pid, addr, data).map_err(Error::from)
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        ImageWriter::add_blob(self, data).map_err(Error::from)
    }
}

/// Freeze pid (all threads), capture, write `out` crash-safely (AtomicFile:
/// temp file 0600, fsync, rename), then kill the process (default) or let it
/// go on exactly as it was (leave_running). On ANY error the process is
/// resumed untouched and no file appears under `out`.
///
/// Called from a single-threaded process (the `ckpt` command), the dump
/// runs in a forked worker process, so that the caller being killed at any
/// point (SIGKILL included) abandons the dump cleanly: the target goes on
/// as it was, no image appears and the temp file is removed. See the
/// `worker` module; errors from the worker keep their message.
pub fn dump(pid: i32, out: &Path, opts: DumpOptions) -> Result<DumpStats> {
    let t0 = Instant::now();
    freeze::check_target(pid)?;
    if worker::single_threaded() {
        return worker::run_in_worker(pid, || dump_here(pid, out, opts, t0));
    }
    dump_here(pid, out, opts, t0)
}

fn dump_here(pid: i32, out: &Path, opts: DumpOptions, t0: Instant) -> Result<DumpStats> {
    let file = ckpt_image::AtomicFile::create(out)?;
    let file = Writeback::new(file);
    let ((), stats) = run(pid, file, opts, t0, |w| w.commit())?;
    Ok(stats)
}

/// The image file, made durable while it is written: at every flush (the
/// image writer flushes every 16 MiB) a thread of its own starts the
/// writeback of what was written (sync_file_range) and waits for it to be
/// on stable storage (fdatasync).
///
/// Without it every byte waits in the page cache for the final fsync, which
/// then alone takes as long as the disk needs for the whole image; worse, a
/// virtual disk with a cache on the host acknowledges the writes quickly
/// and does the real work in the flush at the end. Measured on this kind
/// of machine (1 GiB of mixed data, 607 MiB image): 1.5 s with one fsync at
/// the end, 1.2 s with writeback started every 16 MiB and synced every
/// 16 MiB; `dd conv=fsync` of 1 GiB took 2.3-2.6 s in the same runs.
///
/// The thread never holds the dump up: it coalesces the flushes that came
/// while it waited, so a slow disk means fewer, larger syncs.
struct Writeback {
    file: ckpt_image::AtomicFile,
    /// Bytes written.
    pos: u64,
    /// Writeback requested up to here.
    started: u64,
    tx: Option<std::sync::mpsc::Sender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether starting the thread was tried.
    tried: bool,
}

impl Writeback {
    fn new(file: ckpt_image::AtomicFile) -> Self {
        Writeback {
            file,
            pos: 0,
            started: 0,
            tx: None,
            thread: None,
            tried: false,
        }
    }

    /// The sync thread, started at the first flush worth it (a small image
    /// needs none). Without a second descriptor or a thread, everything
    /// waits for the final fsync, as it would anyway.
    fn sender(&mut self) -> Option<&std::sync::mpsc::Sender<u64>> {
        use std::os::fd::AsFd;
        if !self.tried {
            self.tried = true;
            let fd = self.file.as_fd().try_clone_to_owned().ok()?;
            let (tx, rx) = std::sync::mpsc::channel::<u64>();
            let spawned = std::thread::Builder::new()
                .name("ckpt-writeback".into())
                .spawn(move || {
                    let file = std::fs::File::from(fd);
                    let mut synced = 0u64;
                    while let Ok(mut end) = rx.recv() {
                        // The flushes that came while the last sync ran.
                        while let Ok(e) = rx.try_recv() {
                            end = e;
                        }
                        // Failures are not reported here: the final fsync
                        // sees them (and fails the dump).
                        let _ = ckpt_sys::sys::start_writeback(file.as_fd(), synced, end - synced);
                        let _ = file.sync_data();
                        synced = end;
                    }
                });
            if let Ok(t) = spawned {
                self.tx = Some(tx);
                self.thread = Some(t);
            }
        }
        self.tx.as_ref()
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn commit(mut self) -> Result<()> {
        // Dropped without commit, the thread ends by itself when the
        // sender goes.
        self.stop();
        self.file.commit().map_err(Error::from)
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        // Less than this is left to the final fsync (a small image is
        // synced once).
        const MIN_SYNC: u64 = 1 << 20;
        if self.pos >= self.started + MIN_SYNC {
            let pos = self.pos;
            if let Some(tx) = self.sender() {
                let _ = tx.send(pos);
            }
            self.started = pos;
        }
        Ok(())
    }
}

/// Same, streaming the image into any Write (pipe/socket).
pub fn dump_to<W: Write>(pid: i32, w: W, opts: DumpOptions) -> Result<(W, DumpStats)> {
    let t0 = Instant::now();
    freeze::check_target(pid)?;
    run(pid, w, opts, t0, |mut w| {
        w.flush().map_err(|source| Error::Output { source })?;
        Ok(w)
    })
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

fn run<W: Write, R>(
    pid: Pid,
    w: W,
    mut opts: DumpOptions,
    t0: Instant,
    commit: impl FnOnce(W) -> Result<R>,
) -> Result<(R, DumpStats)> {
    let host = host::host_info();
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
    let counting = writer.finish(image)?;
    let image_bytes = counting.n;
    let mut stats = cap.stats.clone();
    stats.image_bytes = image_bytes;
    worker::test_delay();
    worker::check(pid)?;
    let r = if opts.leave_running {
        // Everything is captured: let the process go before the (slow)
        // commit; if the commit fails, the process is as it was anyway.
        stats.freeze = cap.release()?;
        worker::test_delay();
        worker::check(pid)?;
        commit(counting.inner)?
    } else {
        // The image must be safe before the process is killed.
        let r = commit(counting.inner)?;
        stats.freeze = cap.kill()?;
        r
    };
    stats.total = t0.elapsed();
    Ok((r, stats))
}

/// A frozen process and its captured state. Dropping it resumes the process.
pub struct Captured {
    image: Image,
    frozen: freeze::Frozen,
    stats: DumpStats,
}

impl Captured {
    /// The captured model (pages and blobs went to the sink).
    pub fn image(&self) -> &Image {
        &self.image
    }
    /// Counters so far (freeze time, image bytes and total are filled by dump).
    pub fn stats(&self) -> &DumpStats {
        &self.stats
    }
    /// Let the process go on exactly as it was. Returns how long it was frozen.
    pub fn release(self) -> Result<Duration> {
        self.frozen.release()
    }
    /// Kill the process (SIGKILL) and wait until it is dead or a zombie.
    /// Returns how long it was frozen.
    pub fn kill(self) -> Result<Duration> {
        self.frozen.kill()
    }
    /// The model, and the process let go.
    pub fn into_image(self) -> Result<(Image, Duration)> {
        let d = self.frozen.release()?;
        Ok((self.image, d))
    }
}

/// Freeze `pid` and capture everything into the model; page contents and
/// blobs go to `sink`. The process stays frozen until the result is released,
/// killed or dropped.
pub fn capture(pid: i32, opts: &mut DumpOptions, sink: &mut dyn PageSink) -> Result<Captured> {
    freeze::check_target(pid)?;
    capture_with(pid, host::host_info(), opts, sink)
}

/// The signals whose action the process must be asked for: the caught and
/// the ignored ones (/proc/PID/status), and SIGCHLD (whose flags matter
/// even at its default action). All of them when the status is unreadable.
fn signals_to_query(pid: Pid) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return u64::MAX;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    match (mask("SigCgt:"), mask("SigIgn:")) {
        (Some(c), Some(i)) => c | i | (1 << (libc::SIGCHLD - 1)),
        _ => u64::MAX,
    }
}

/// Every resource limit of `pid`, read with prlimit from outside; None
/// when any cannot be (then the process is asked).
fn rlimits_from_outside(pid: Pid) -> Option<Vec<(u64, u64)>> {
    (0..remote::RLIMIT_NAMES.len() as u32)
        .map(|res| ckpt_sys::setup::prlimit(pid, res, None).ok())
        .collect()
}

fn capture_with(
    pid: Pid,
    host: ckpt_image::HostInfo,
    opts: &mut DumpOptions,
    sink: &mut dyn PageSink,
) -> Result<Captured> {
    let page = u64::from(host.page_size);
    worker::check(pid)?;
    let mut frozen = freeze::Frozen::freeze(pid)?;
    worker::test_delay();
    worker::check(pid)?;

    // Per-thread state from outside, before anything is injected.
    let mut threads = Vec::with_capacity(frozen.threads.len());
    for t in &frozen.threads {
        threads.push(thread_state(pid, t.tid, &t.state_before)?);
    }
    worker::test_delay();
    worker::check(pid)?;

    let stat = Stat::read(pid, &format!("/proc/{pid}/stat"))?;
    let raw_fds = files::list(pid)?;
    let timers = read_posix_timers(pid)?;
    let (tty_fds, owner_fds) = files::remote_needs(&raw_fds);
    let ip = remote::find_syscall_ip(pid)?;
    // While system calls are injected, our death must kill the process
    // rather than let it run on with the injector's registers.
    frozen.set_exit_kill(true)?;
    let rinfo = remote::query(
        &mut frozen,
        ip,
        &remote::Queries {
            timer_ids: timers.iter().map(|t| t.id).collect(),
            tty_fds,
            owner_fds,
            sig_mask: signals_to_query(pid),
            rlimits: rlimits_from_outside(pid),
        },
    );
    frozen.set_exit_kill(false)?;
    let rinfo = rinfo?;
    worker::test_delay();
    worker::check(pid)?;

    // Pending signals (after the re-queue of the ones we dequeued).
    for t in &mut threads {
        let tid = t.tid;
        t.pending = ptrace::peek_siginfo(tid, false)
            .ctx(pid, || format!("thread {tid}: reading pending signals"))?
            .iter()
            .map(siginfo)
            .collect();
        if let Some(r) = rinfo.threads.get(&tid) {
            t.altstack = r.altstack;
            t.clear_child_tid = r.clear_child_tid;
            t.cpu_affinity = r.cpu_affinity.clone();
        }
    }
    let shared_pending = ptrace::peek_siginfo(pid, true)
        .ctx(pid, || "reading shared pending signals".into())?
        .iter()
        .map(siginfo)
        .collect();

    let mut process = process_state(pid, &stat, frozen.state_before.clone())?;
    process.mm.brk = rinfo.brk;
    process.creds.securebits = rinfo.securebits;
    process.rlimits = rinfo.rlimits.clone();
    process.sigactions = rinfo.sigactions.clone();
    process.shared_pending = shared_pending;
    process.itimers = rinfo.itimers.clone();
    process.posix_timers = timers
        .into_iter()
        .map(|mut t| {
            if let Some(&(interval, value, overrun)) = rinfo.timer_times.get(&t.id) {
                t.interval_ns = interval;
                t.value_ns = value;
                t.overrun = overrun;
            }
            t
        })
        .collect();
    process.dumpable = rinfo.dumpable;
    process.child_subreaper = rinfo.child_subreaper;
    process.parent_death_signal = rinfo.pdeathsig;
    process.thp_disabled = rinfo.thp_disabled;
    process.timer_slack_ns = rinfo.timer_slack_ns;

    // Memory.
    let smaps = procfs::read(pid, &format!("/proc/{pid}/smaps"))?;
    let entries = vmas::parse_smaps(pid, &smaps)?;
    let mut areas = Vec::with_capacity(entries.len());
    for e in entries {
        let (vma, policy) = vmas::classify(pid, &e)?;
        process.vmas.push(vma);
        areas.push((e, policy));
    }
    let ranges = memory::plan(pid, &areas, page)?;
    let mut noop = |_: u64, _: u64| {};
    let progress: &mut dyn FnMut(u64, u64) = match opts.progress.as_mut() {
        Some(p) => p.as_mut(),
        None => &mut noop,
    };
    worker::test_delay();
    let mut watched = Watched { pid, sink };
    let pages_bytes = memory::save(pid, &areas, &ranges, page, &mut watched, progress)?;
    worker::test_delay();
    worker::check(pid)?;

    // Files.
    let (fds, files) = files::build(pid, &raw_fds, &rinfo, &stat, &mut watched)?;
    worker::test_delay();
    worker::check(pid)?;
    process.fds = fds;
    process.threads = threads;

    let image = Image {
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
    };
    let stats = DumpStats {
        freeze: frozen.elapsed(),
        pages_bytes,
        threads: frozen.threads.len(),
        injected_syscalls: rinfo.injected,
        ..Default::default()
    };
    Ok(Captured {
        image,
        frozen,
        stats,
    })
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
}

fn siginfo(raw: &[u8; ptrace::SIGINFO_SIZE]) -> SigInfo {
    let i = |o: usize| i32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
    SigInfo {
        signo: i(0),
        code: i(8),
        raw: raw.to_vec(),
    }
}

fn thread_state(pid: Pid, tid: Pid, state_before: &str) -> Result<Thread> {
    let gprs = ptrace::get_regs(tid).ctx(pid, || format!("thread {tid}: reading registers"))?;
    let xsave =
        ptrace::get_xstate(tid).ctx(pid, || format!("thread {tid}: reading the XSAVE area"))?;
    let xfeatures = xsave
        .get(512..520)
        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0);
    let mut regs = X8664Regs {
        xsave,
        xfeatures,
        ..Default::default()
    };
    regs.set_gprs(&gprs);
    let blocked =
        ptrace::get_sigmask(tid).ctx(pid, || format!("thread {tid}: reading the signal mask"))?;
    let rseq = ptrace::get_rseq(tid).ctx(pid, || {
        format!("thread {tid}: reading the rseq registration")
    })?;
    let (head, len) = ptrace::get_robust_list(tid).ctx(pid, || {
        format!("thread {tid}: reading the robust futex list")
    })?;
    let st = Stat::read(pid, &format!("/proc/{pid}/task/{tid}/stat"))?;
    Ok(Thread {
        tid,
        comm: st.comm.clone(),
        state: state_before.to_string(),
        regs: Registers::X8664(regs),
        blocked,
        pending: Vec::new(),
        altstack: Default::default(),
        clear_child_tid: 0,
        robust_list: RobustList { head, len },
        rseq: ckpt_image::Rseq {
            address: rseq.address,
            length: rseq.length,
            signature: rseq.signature,
            flags: rseq.flags,
        },
        sched: ckpt_image::Sched {
            policy: st.num(41),
            priority: st.num(40),
            nice: st.num(19),
        },
        cpu_affinity: Vec::new(),
    })
}

/// /proc/PID/timers: id, signal, sigev value, notify, clock.
fn read_posix_timers(pid: Pid) -> Result<Vec<PosixTimer>> {
    let path = format!("/proc/{pid}/timers");
    let text = procfs::read_string(pid, &path)?;
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "ID" => out.push(PosixTimer {
                id: v
                    .parse()
                    .map_err(|_| procfs::parse_err(pid, &path, "bad ID"))?,
                ..Default::default()
            }),
            "signal" => {
                if let Some(t) = out.last_mut() {
                    let (sig, val) = v.split_once('/').unwrap_or((v, "0"));
                    t.signo = sig.parse().unwrap_or(0);
                    t.value = u64::from_str_radix(val.trim_start_matches("0x"), 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some(t) = out.last_mut() {
                    // "signal/pid.123", "none/pid.123", "thread/tid.456"
                    let (how, who) = v.split_once('/').unwrap_or((v, ""));
                    let base = match how {
                        "signal" => libc::SIGEV_SIGNAL,
                        "none" => libc::SIGEV_NONE,
                        "thread" => libc::SIGEV_THREAD,
                        _ => libc::SIGEV_SIGNAL,
                    };
                    let (kind, id) = who.split_once('.').unwrap_or(("pid", "0"));
                    let tid_flag = if kind == "tid" {
                        libc::SIGEV_THREAD_ID
                    } else {
                        0
                    };
                    t.notify = base | tid_flag;
                    t.notify_tid = id.parse().unwrap_or(0);
                }
            }
            "ClockID" => {
                if let Some(t) = out.last_mut() {
                    t.clock = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn file_identity(pid: Pid, link: &str) -> Result<FileIdentity> {
    let target = procfs::readlink(pid, link)?;
    let (path, deleted) = vmas::strip_deleted(&target);
    let md = std::fs::metadata(link).ctx(pid, || format!("stat {link}"))?;
    Ok(vmas::identity(path, &md, deleted))
}

fn read_num<T: std::str::FromStr + Default>(pid: Pid, path: &str) -> Result<T> {
    Ok(procfs::read_string(pid, path)?
        .trim()
        .parse()
        .unwrap_or_default())
}

fn process_state(pid: Pid, stat: &Stat, state_before: String) -> Result<Process> {
    let p = |name: &str| format!("/proc/{pid}/{name}");
    let status = Status::read(pid, &p("status"))?;
    let ids = |k: &str| {
        let v: Vec<u32> = status.nums(k);
        (0..4)
            .map(|i| v.get(i).copied().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let (uid, gid) = (ids("Uid"), ids("Gid"));
    let creds = Credentials {
        ruid: uid[0],
        euid: uid[1],
        suid: uid[2],
        fsuid: uid[3],
        rgid: gid[0],
        egid: gid[1],
        sgid: gid[2],
        fsgid: gid[3],
        groups: status.nums("Groups"),
        cap_inheritable: status.hex("CapInh"),
        cap_permitted: status.hex("CapPrm"),
        cap_effective: status.hex("CapEff"),
        cap_bounding: status.hex("CapBnd"),
        cap_ambient: status.hex("CapAmb"),
        securebits: 0,
        no_new_privs: status.num::<u32>("NoNewPrivs") != 0,
        seccomp_mode: status.num("Seccomp"),
    };
    let auxv_raw = procfs::read(pid, &p("auxv"))?;
    let mut auxv = Vec::new();
    for c in auxv_raw.chunks_exact(16) {
        let k = u64::from_ne_bytes(c[..8].try_into().expect("8 bytes"));
        let v = u64::from_ne_bytes(c[8..].try_into().expect("8 bytes"));
        auxv.push((k, v));
        if k == 0 {
            break;
        }
    }
    let mm = MmLayout {
        start_code: stat.num(26),
        end_code: stat.num(27),
        start_stack: stat.num(28),
        start_data: stat.num(45),
        end_data: stat.num(46),
        start_brk: stat.num(47),
        brk: 0,
        arg_start: stat.num(48),
        arg_end: stat.num(49),
        env_start: stat.num(50),
        env_end: stat.num(51),
        auxv,
    };
    let personality = u32::from_str_radix(procfs::read_string(pid, &p("personality"))?.trim(), 16)
        .map_err(|_| procfs::parse_err(pid, &p("personality"), "not hex"))?;
    let exe = file_identity(pid, &p("exe"))?;
    Ok(Process {
        pid,
        ppid: stat.num(4),
        pgid: stat.num(5),
        sid: stat.num(6),
        state: state_before,
        comm: stat.comm.clone(),
        exe,
        cmdline: procfs::split_nul(&procfs::read(pid, &p("cmdline"))?),
        environ: procfs::split_nul(&procfs::read(pid, &p("environ"))?),
        cwd: procfs::readlink(pid, &p("cwd"))?,
        root: procfs::readlink(pid, &p("root"))?,
        umask: u32::from_str_radix(status.get("Umask").unwrap_or("0"), 8).unwrap_or(0),
        creds,
        personality,
        mm,
        oom_score_adj: read_num(pid, &p("oom_score_adj"))?,
        exit_signal: stat.num(38),
        login_uid: read_num(pid, &p("loginuid")).unwrap_or(u32::MAX),
        ..Default::default()
    })
}
