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
//!   Deleted files mapped, and memfds mapped private: every readable page.
//!   Shared mappings of existing files, vdso/vvar/vsyscall/uprobes: none.
//! - Pipes: buffered bytes are on the read end's OpenFile only (once per
//!   pipe); a write end alone carries no data.
//! - `Process.timerSlackNs` is the main thread's. `OpenFile.owner` is read
//!   for fds with O_ASYNC only. Inotify watch paths are resolved from their
//!   file handles when possible, else empty.
//!
//! # Layout
//!
//! One module per kind of saved object, named as in ckpt-restore:
//!
//! - `dump.rs`: one dump step by step (freeze, read, ask, memory, fds,
//!   write, release or kill); `writeback.rs`: the image file synced while
//!   it is written; `worker.rs`: the forked worker that survives its
//!   caller's death; `freeze.rs`: checks, seizing every thread, letting go.
//! - `process/`: `mod.rs` (identity, memory layout, cwd, ...), `creds.rs`,
//!   `signals.rs`, `timers.rs`, `rlimits.rs`, `thread.rs`; `remote.rs` asks
//!   the process what only it can tell (injected system calls).
//! - `mem/`: `vmas.rs` (smaps into areas and page policies), `pages.rs`
//!   (pagemap, fast page reads), `shmem.rs` (shared memory data and holes).
//! - `fds/`: `mod.rs` (listing, the kind table), `fdinfo.rs`,
//!   `descriptions.rs` (which fds share an open file description), and one
//!   module per kind: `regular`, `pipe`, `unix`, `inet`, `tty`, `eventfd`,
//!   `epoll`, `timerfd`, `signalfd`, `inotify`, `memfd`, `chardev`.
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
mod worker;
mod writeback;

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
}

impl std::fmt::Debug for DumpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpOptions")
            .field("leave_running", &self.leave_running)
            .field("compression", &self.compression)
            .field("progress", &self.progress.is_some())
            .field("parent", &self.parent)
            .field("track", &self.track)
            .field("no_snapshot", &self.no_snapshot)
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
    pub threads: usize,
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
}

impl<W: Write> PageSink for ImageWriter<W> {
    fn add_pages(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        ImageWriter::add_pages(self, pid, addr, data).map_err(Error::from)
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
        return worker::run_in_worker(pid, || dump::dump_here(pid, out, opts, t0));
    }
    dump::dump_here(pid, out, opts, t0)
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

/// A frozen process and its captured state. Dropping it resumes the process.
pub struct Captured {
    image: Image,
    frozen: freeze::Frozen,
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
    let prep = mem::Prepared::frozen(pid)?;
    dump::capture_with(pid, host::host_info(pid)?, opts, sink, prep)
}
