//! ckpt-capture: freeze a running process, capture its whole state into the
//! image model, write the image, then kill the process or let it go on.
//!
//! Entry points: [`dump()`] (to a file, crash-safely) and [`dump_to`] (to any
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
//!   Memfds mapped private: every readable page. Shared mappings of
//!   existing files, vdso/vvar/vsyscall/uprobes: none. Guard regions
//!   (MADV_GUARD_INSTALL) are runs of kind `guard`, never read. SysV
//!   shared memory: its contents are saved once, with the segment
//!   (`Image.sysvShm`), not with each mapping.
//! - Deleted files mapped: their whole contents once per file in
//!   `FileMapping.contents` (every mapping of the file has the same blob),
//!   unless an fd of the process holds the file (then its `RegularFile`
//!   has them); a dump that cannot read them refuses.
//! - Pipes: buffered bytes are on the read end's OpenFile only (once per
//!   pipe); a write end alone carries no data.
//! - File locks and leases (`Image.locks`): flock, OFD locks and leases
//!   once per open file description; POSIX locks once, through an fd of
//!   the file whose access mode allows taking them again.
//! - `Process.timerSlackNs` is the main thread's. `OpenFile.owner` is read
//!   for fds with O_ASYNC only. Inotify watch paths are resolved from their
//!   file handles when possible, else empty.
//! - Deleted files held open: their data ranges only (`RegularFile.extents`
//!   from SEEK_DATA/SEEK_HOLE, none when the file is all data), with size,
//!   mode, owner and times in the identity. A name unlinked while the file
//!   is linked under another name in the same directory (glibc's
//!   `sem_open`) is that other name, not deleted. Deleted directories
//!   (fds and the cwd, `Process.cwdIdentity`), FIFOs (`Pipe.fifo`) and
//!   O_PATH fds on FIFOs and socket files are saved for a restore to make
//!   them again; O_PATH fds on deleted symlinks or device nodes are refused.
//! - `TimerFd.expiryNs`: the next expiry on the timer's clock, read again
//!   (with the time left and the ticks) between two clock reads at the
//!   time it is saved. `Pidfd.pid` is 0 for a dead process.
//! - Epoll watches whose fd number was closed or reused are matched to
//!   the description they watch with kcmp(KCMP_EPOLL_TFD).
//! - `Image.seccompFilters`: each thread's chain (PTRACE_SECCOMP_GET_FILTER,
//!   which needs CAP_SYS_ADMIN), chains equal from their oldest filter up
//!   sharing entries; seccomp strict mode is saved as the mode alone (every thread in it; a process where only some are is refused).
//! - SysV IPC: see `process/sysv.rs` for which objects of the IPC namespace
//!   are the process's (those it maps, created, or last used).
//! - Sockets (see `fds/net.rs`): live TCP connections and accept queues
//!   are refused unless [`SocketOptions`] says otherwise; with
//!   `tcp_established` they are locked (nft) and saved with TCP_REPAIR,
//!   the lock staying for the restore once the process is killed (the
//!   tag is `InetSocket.lockTag`). Queued unix messages are peeked with
//!   the files they carry, which become open files of the image
//!   (`UnixMessage.files`; ids after the process's own descriptions).
//!   Queued datagrams of raw, ping, netlink and packet sockets are not
//!   saved (`droppedQueue` says how much, and a warning is logged).
//! - Terminals are read through the process's own open file descriptions
//!   (pidfd_getfd), never reopened. A pty pair whose master a saved process
//!   holds is in `Image.ptys` with the bytes buffered both ways: they are
//!   taken while the process is frozen and put back exactly before it runs
//!   again (a dump that lets it go on, or fails); its slave open in a
//!   process outside the image is refused by name. Other terminals (the
//!   shell's, /dev/tty, /dev/console, /dev/ttyN) keep their settings and
//!   window size; `Process.controllingTty` is stat's tty_nr.
//!
//! # Layout
//!
//! One module per kind of saved object, named as in ckpt-restore:
//!
//! - `dump.rs`: one dump step by step (freeze, read, ask, memory, fds,
//!   write, release or kill); `writeback.rs`: the image file synced while
//!   it is written; `worker.rs`: the forked worker that survives its
//!   caller's death; `freeze.rs`: checks, seizing every thread, letting go.
//! - `process/`: `mod.rs` (identity, memory layout, cwd, ...),
//!   `cgroup.rs` (v2 and v1 membership, cgroup directories, cgroup
//!   namespace), `creds.rs`, `signals.rs`, `timers.rs`, `rlimits.rs`, `thread.rs`,
//!   `seccomp.rs` (filter chains), `sysv.rs` (SysV IPC objects);
//!   `remote.rs` asks the process what only it can tell (injected system
//!   calls, made so that the process survives our death at any instant:
//!   at a syscall stop of its libc's `rt_sigreturn`, with a signal frame
//!   of its own state on its stack; also its membarrier registrations).
//! - `mem/`: `vmas.rs` (smaps into areas and page policies), `pages.rs`
//!   (pagemap, fast page reads), `shmem.rs` (shared memory data and holes),
//!   `deleted.rs` (deleted files mapped, whole; inode generations of the
//!   mapped files).
//! - `fds/`: `mod.rs` (listing, the kind table, files in flight in unix
//!   messages), `fdinfo.rs`, `descriptions.rs` (which fds share an open
//!   file description), `net.rs` (what the socket kinds share: options,
//!   the connection lock, sockets in repair mode), `locks.rs` (file locks
//!   and leases, from fdinfo), and one module per kind: `regular`,
//!   `opath`, `nsfs`, `pidfd`, `fanotify`, `pipe`, `unix`, `inet` (TCP),
//!   `udp`, `raw` (raw and ping), `netlink`, `packet`, `tty`, `pty` (pty
//!   pairs and their buffered bytes), `eventfd`, `epoll`, `timerfd`,
//!   `signalfd`, `inotify`, `memfd`, `chardev`.
//! - `procfs.rs`: reading /proc; parsers fail loudly, naming the file and
//!   the line. `host.rs`: the machine. `error.rs`: the one error type.
//!
//! # Logs
//!
//! Each step of a dump is a `tracing` event at info level with its
//! duration (`elapsed`), inside a `dump` span and a `process` span (both
//! with the pid): `freeze`, `memory` (areas, bytes), `fds` (fds, files),
//! `write` (image bytes), `fsync`, `released` or `killed` (how long the
//! process was frozen), `dump done`. Details are at debug level. This
//! crate installs no subscriber.
#![forbid(unsafe_code)]

mod dump;
mod error;
mod fds;
mod freeze;
mod host;
mod mem;
mod process;
mod procfs;
mod remote;
mod tree;
mod worker;
mod writeback;

pub use ckpt_image::PAGE_BUFFER_HEAD;
pub use error::{Error, Result};

use ckpt_image::{Blob, Image, ImageWriter};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How to dump.
#[derive(Default)]
pub struct DumpOptions {
    /// Let the process go on after the dump (default: kill it).
    pub leave_running: bool,
    /// Save only the process asked for, refusing if it has children
    /// (default: the process and all its descendants).
    pub no_tree: bool,
    pub compression: ckpt_image::Compression,
    /// Called with (bytes of memory saved so far, bytes to save in all).
    pub progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
    /// An incremental dump against this image: only the pages written
    /// since it was taken are saved, when the process's pages have been
    /// tracked since (see [`DumpOptions::track`]); otherwise a full dump
    /// (with tracking), and [`DumpStats::note`] says why.
    pub parent: Option<std::path::PathBuf>,
    /// With `leave_running`: track the process's writes from this dump on,
    /// so that a later dump with `parent` = this image is incremental
    /// (its pages are then copied while it runs, a pre-copy).
    pub track: bool,
    /// Copy the memory in the freeze, as a dump that kills the process
    /// does, rather than protecting it and copying it after (the freeze
    /// then grows with memory).
    pub no_snapshot: bool,
    /// Live sockets: TCP connections (refused by default, naming them),
    /// unix sockets whose peer is outside the dump (refused by default).
    pub sockets: SocketOptions,
}

pub use fds::net::SocketOptions;

impl std::fmt::Debug for DumpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpOptions")
            .field("leave_running", &self.leave_running)
            .field("no_tree", &self.no_tree)
            .field("compression", &self.compression)
            .field("progress", &self.progress.is_some())
            .field("parent", &self.parent)
            .field("track", &self.track)
            .field("no_snapshot", &self.no_snapshot)
            .field("sockets", &self.sockets)
            .finish()
    }
}

/// How a dump took the pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DumpMode {
    /// All read while the process was stopped.
    #[default]
    Frozen,
    /// Write-protected in the freeze, copied after it (leave-running).
    Snapshot,
    /// Copied while the process ran, the last written ones in the freeze;
    /// the process's writes are tracked for the next (incremental) dump.
    PreCopy,
    /// Only the pages written since the parent image.
    Incremental,
}

impl DumpMode {
    pub fn name(self) -> &'static str {
        match self {
            DumpMode::Frozen => "frozen",
            DumpMode::Snapshot => "snapshot",
            DumpMode::PreCopy => "pre-copy",
            DumpMode::Incremental => "incremental",
        }
    }
    fn from_name(s: &str) -> Option<DumpMode> {
        [
            DumpMode::Frozen,
            DumpMode::Snapshot,
            DumpMode::PreCopy,
            DumpMode::Incremental,
        ]
        .into_iter()
        .find(|m| m.name() == s)
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
    /// Threads of every process saved.
    pub threads: usize,
    /// Processes saved (zombies included).
    pub processes: usize,
    pub injected_syscalls: u64,
    /// How the pages were taken.
    pub mode: DumpMode,
    /// Why the dump is not what was asked for (a full dump instead of an
    /// incremental one, ...).
    pub note: Option<String>,
}

/// Where captured page contents and blobs go: the image writer, or anything
/// else (tests keep them in memory).
///
/// Pages may come in any address order. The dumps that copy pages while
/// the process runs (pre-copy, incremental) also replace pages copied
/// earlier, drop pages of areas that went away, and mark pages held by
/// the parent image; a sink that keeps only full dumps need not implement
/// those (the defaults refuse).
pub trait PageSink {
    /// Saved pages of process `pid` at page-aligned `addr` (whole pages).
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()>;
    /// A byte string (file contents); returns the Blob for the model.
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob>;
    /// `add_pages` for each of `pieces` (address, offset in `buf`, bytes),
    /// which lie in address order after the first [`PAGE_BUFFER_HEAD`]
    /// bytes of `buf`. A sink may keep `buf` (the image writer makes it a
    /// frame: no copy) and return another buffer to fill next, of any
    /// length (an empty one when it has none to spare).
    fn add_page_buffer(
        &mut self,
        pid: i32,
        buf: Vec<u8>,
        pieces: &[(u64, usize, usize)],
    ) -> Result<Vec<u8>> {
        for &(addr, off, len) in pieces {
            self.add_pages(pid, addr, &buf[off..off + len])?;
        }
        Ok(buf)
    }
    /// Like `add_pages`, replacing what was added for these pages before.
    fn replace_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        let _ = (pid, addr, data);
        Err(Error::Worker {
            message: "this page sink cannot replace pages".into(),
        })
    }
    /// Forget what was added for `len` bytes at `addr`.
    fn drop_pages(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        let _ = (pid, addr, len);
        Err(Error::Worker {
            message: "this page sink cannot drop pages".into(),
        })
    }
    /// `pages` pages at `addr` are those of the parent image.
    fn add_parent_run(&mut self, pid: i32, addr: u64, pages: u64) -> Result<()> {
        let _ = (pid, addr, pages);
        Err(Error::Worker {
            message: "this page sink cannot hold incremental dumps".into(),
        })
    }
    /// Guard pages (MADV_GUARD_INSTALL) of process `pid`: `len` bytes at
    /// page-aligned `addr`, with no contents. In any order relative to
    /// `add_pages`.
    fn add_guard(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        let _ = (addr, len);
        Err(Error::Worker {
            message: format!("pid {pid}: this page sink cannot hold guard pages"),
        })
    }
    /// Whether [`PageSink::add_parent_pages`] works; when it does not (the
    /// default), pages shared with a parent are read and added again.
    fn shares_pages(&self) -> bool {
        false
    }
    /// Pages of `pid` at `addr` (`len` bytes) that are the very pages of
    /// process `parent` at the same addresses (still shared copy-on-write
    /// since a fork), which were added before: stored once.
    fn add_parent_pages(&mut self, pid: i32, addr: u64, len: u64, parent: i32) -> Result<()> {
        let _ = (addr, len, parent);
        Err(Error::Sys {
            pid,
            what: "saving pages shared with a parent".into(),
            source: ckpt_sys::Error::Unexpected {
                tid: pid,
                what: "this page sink cannot share pages".into(),
            },
        })
    }
}

impl<W: Write> PageSink for ImageWriter<W> {
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        ImageWriter::add_pages(self, pid, addr, data).map_err(Error::from)
    }
    fn add_page_buffer(
        &mut self,
        pid: i32,
        buf: Vec<u8>,
        pieces: &[(u64, usize, usize)],
    ) -> Result<Vec<u8>> {
        ImageWriter::add_page_buffer(self, pid, buf, pieces).map_err(Error::from)
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        ImageWriter::add_blob(self, data).map_err(Error::from)
    }
    fn replace_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        ImageWriter::replace_pages(self, pid, addr, data).map_err(Error::from)
    }
    fn drop_pages(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        ImageWriter::drop_pages(self, pid, addr, len).map_err(Error::from)
    }
    fn add_parent_run(&mut self, pid: i32, addr: u64, pages: u64) -> Result<()> {
        ImageWriter::add_parent_run(self, pid, addr, pages).map_err(Error::from)
    }
    fn add_guard(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        ImageWriter::add_guard(self, pid, addr, len).map_err(Error::from)
    }
    fn shares_pages(&self) -> bool {
        true
    }
    fn add_parent_pages(&mut self, pid: i32, addr: u64, len: u64, parent: i32) -> Result<()> {
        ImageWriter::add_pages_from(self, pid, addr, len, parent).map_err(Error::from)
    }
}

/// Freeze pid and its descendants (all threads; only pid with
/// `opts.no_tree`), capture, write `out` crash-safely (AtomicFile: temp
/// file 0600, fsync, rename), then kill the processes (default) or let them
/// go on exactly as they were (leave_running). On ANY error every process
/// is resumed untouched and no file appears under `out`.
///
/// Called from a single-threaded process (the `ckpt` command), the dump
/// runs in a forked worker process, so that the caller being killed at any
/// point (SIGKILL included) abandons the dump cleanly: the target goes on
/// as it was, no image appears and the temp file is removed. SIGINT,
/// SIGTERM and SIGHUP cancel it the same way ([`Error::Cancelled`]); a
/// worker killed with SIGKILL leaves the target as it was too. See the
/// `worker` module; errors from the worker keep their message.
pub fn dump(pid: i32, out: &Path, opts: DumpOptions) -> Result<DumpStats> {
    let t0 = Instant::now();
    freeze::check_target(pid)?;
    if worker::single_threaded() {
        let before = file_id(out);
        let leave_running = opts.leave_running;
        return worker::run_in_worker(
            pid,
            || dump::dump_here(pid, out, opts, t0),
            |worker| {
                remove_temp_files(out, worker);
                // Killed after its commit: the image is whole; finish what
                // was asked of the process (killed, or let go by the kernel).
                let id = file_id(out).filter(|&id| Some(id) != before)?;
                if !leave_running {
                    let _ = ckpt_sys::proc::kill(pid, libc::SIGKILL);
                }
                tracing::info!(worker, "the dump worker died after its commit");
                Some(DumpStats {
                    total: t0.elapsed(),
                    image_bytes: id.2,
                    ..Default::default()
                })
            },
        );
    }
    dump::dump_here(pid, out, opts, t0)
}

/// (device, inode, size) of the file at `p`, if any.
fn file_id(p: &Path) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size()))
}

/// Remove the temp files a dump worker that died left (AtomicFile names
/// them NAME.tmp.PID.N after its creator).
fn remove_temp_files(out: &Path, worker: i32) {
    let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.tmp.{worker}.", name.to_string_lossy());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::debug!(file = ?e.path(), "removing the dead worker's temp file");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Same, streaming the image into any Write (pipe/socket).
pub fn dump_to<W: Write>(pid: i32, w: W, mut opts: DumpOptions) -> Result<(W, DumpStats)> {
    let t0 = Instant::now();
    freeze::check_target(pid)?;
    dump::run(pid, w, &mut opts, t0, |mut w| {
        w.flush().map_err(|source| Error::Output { source })?;
        Ok(w)
    })
}

/// A frozen tree of processes and its captured state. Dropping it resumes
/// every process.
pub struct Captured {
    image: Image,
    /// Dropped before `frozen`: sockets in repair mode are let go while the
    /// process is still stopped.
    sockets: fds::net::Sockets,
    /// Declared before `frozen`: dropped first, it puts the bytes taken
    /// from pty pairs back before the processes run again.
    ptys: fds::Ptys,
    frozen: tree::FrozenTree,
    stats: DumpStats,
    /// The pages of a copy-on-write snapshot, copied after the freeze.
    pending: Option<mem::snapcopy::Pending>,
    /// How the memory was taken (tracking to update after the commit).
    prep: Option<mem::Prepared>,
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
    /// Let the processes go on exactly as they were. Returns how long they
    /// were frozen.
    pub fn release(mut self) -> Result<Duration> {
        // The bytes taken from their ptys go back first; if some cannot
        // (the kernel has less room than before), they go on anyway.
        let _ = self.ptys.put_back();
        let sockets = self.sockets.release();
        let d = self.frozen.release()?;
        sockets?;
        Ok(d)
    }
    /// Kill the processes (SIGKILL) and wait until each is dead or a
    /// zombie. Returns how long they were frozen. Locked TCP connections
    /// stay locked for their restore.
    pub fn kill(mut self) -> Result<Duration> {
        self.ptys.discard();
        let d = self.frozen.kill()?;
        self.sockets.dumped();
        Ok(d)
    }
    /// The model, and the process let go.
    pub fn into_image(mut self) -> Result<(Image, Duration)> {
        let _ = self.ptys.put_back();
        let sockets = self.sockets.release();
        let d = self.frozen.release()?;
        sockets?;
        Ok((self.image, d))
    }
}

/// Freeze `pid` (and its descendants, unless `opts.no_tree`) and capture
/// everything into the model; page contents and blobs go to `sink`. The
/// processes stay frozen until the result is released, killed or dropped.
pub fn capture(pid: i32, opts: &mut DumpOptions, sink: &mut dyn PageSink) -> Result<Captured> {
    freeze::check_target(pid)?;
    let prep = mem::Prepared::frozen(pid)?;
    dump::capture_with(pid, host::host_info(pid)?, opts, sink, prep)
}
