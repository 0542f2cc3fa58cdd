//! `ckpt restore IMAGE [--detach] [--new-pid] [--tty PATH] [--check] [--lazy]`
//!
//! Run in a terminal, the restored process comes back as a job of the
//! shell's (see `job.rs`): it gets the terminal with its saved settings,
//! a SIGWINCH to redraw, and Ctrl-Z, `fg` and Ctrl-C work on it through
//! the restorer, which ends the way it ends.

use super::ms;
use crate::job::{self, Job};
use anyhow::{bail, Context};
use ckpt_image::ImageReader;
use ckpt_restore::{Cancel, Terminal};
// SIGINT, SIGTERM and SIGHUP cancel the check or the restore (what was
// built is killed; exit 128 + signal).
use ckpt_sys::proc::signals::CANCEL_MASK;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Image file.
    image: PathBuf,
    /// Return as soon as the process runs, printing its pid (no job
    /// control: the process stays in the background of the terminal).
    #[arg(long)]
    detach: bool,
    /// Restore under fresh pids where the saved ones are taken (see README:
    /// glibc caches tids); each new pid is printed as "pid SAVED -> NEW".
    #[arg(long)]
    new_pid: bool,
    /// Attach the process's terminal to this one (a terminal no session
    /// has, e.g. a new pty): the process leads a new session there.
    #[arg(long, value_name = "PATH")]
    tty: Option<PathBuf>,
    /// Only check that the image can be restored here; change nothing.
    #[arg(long)]
    check: bool,
    /// Restore even if the executable or a mapped file is not the file that
    /// was saved (the process then runs other code or data than it had).
    #[arg(long)]
    force_files: bool,
    /// Restore the image's live TCP connections closed (the process finds
    /// them aborted) and remove the dump's connection lock.
    #[arg(long)]
    tcp_close: bool,
    /// Leave the processes in ckpt's own cgroups: the saved cgroup
    /// membership (v1 and v2), cgroup directories and cgroup namespace are
    /// not restored.
    #[arg(long)]
    ignore_cgroups: bool,
    /// Put the saved cgroups of a hierarchy under another cgroup: a saved
    /// cgroup /a/b goes to ROOT/a/b (missing directories are made).
    /// HIERARCHY as /proc/PID/cgroup names it ("cpu,cpuacct",
    /// "name=systemd", "" for cgroup v2); without it, every v1 hierarchy
    /// no other --cgroup-root names. Repeatable.
    #[arg(long, value_name = "[HIERARCHY:]ROOT", value_parser = parse_cgroup_root, conflicts_with = "ignore_cgroups")]
    cgroup_root: Vec<ckpt_restore::CgroupRoot>,
    /// Let the process run before its memory is written: pages are filled
    /// when it touches them and in the background, from the image (kept
    /// open). Until the last page is in, ckpt stays the process's tracer
    /// (with --detach, a background ckpt does): if it dies, the process is
    /// killed; if the image cannot be read, the process is killed and the
    /// error reported. It never runs on missing pages. One process only.
    #[arg(long)]
    lazy: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    // Connection locks left by a dump whose processes were all killed.
    ckpt_sys::netlock::cleanup_stale(std::path::Path::new(ckpt_sys::netlock::STATE_DIR));
    let terminal = match (&a.tty, a.detach) {
        (Some(p), _) => Terminal::Path(p.clone()),
        (None, true) => Terminal::Caller,
        (None, false) => Terminal::Job,
    };
    // Before any thread exists: every thread then has them blocked.
    if !a.detach && !a.check {
        job::block_signals()?;
    } else {
        ckpt_sys::proc::job::block_signals(CANCEL_MASK).context("blocking signals")?;
    }
    let cancel = Cancel::new();
    let canceller = Canceller::start(cancel.clone());
    // The decoded image is left out of the stubs' forks (they never read
    // it): each stub then neither copies nor unmaps it. Not for --lazy: a
    // detached lazy restore's server is a fork that reads it.
    let open = || ckpt_image::ImageReader::open(&a.image);
    let reader = if a.lazy {
        open()
    } else {
        ckpt_sys::heap::fork_private(open)
    }
    .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let mut opts = ckpt_restore::RestoreOptions {
        new_pid: a.new_pid,
        force_files: a.force_files,
        tcp_close: a.tcp_close,
        ignore_cgroups: a.ignore_cgroups,
        cgroup_roots: a.cgroup_root.clone(),
        progress: if a.lazy {
            None
        } else {
            super::progress_bar("restoring")
        },
        terminal,
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let checked = ckpt_restore::check_once(&reader, &opts);
    let report = &checked.report;
    for w in &report.warnings {
        match w.strip_prefix("--force-files: ") {
            Some(w) => eprintln!("ckpt: WARNING: --force-files: {w}"),
            None => eprintln!("ckpt: warning: {w}"),
        }
    }
    if let Some(signal) = cancel.signal() {
        eprintln!("ckpt: {}", ckpt_restore::Error::Cancelled { signal });
        return Ok(128 + signal);
    }
    refuse_on_errors(&a.image, report)?;
    if a.check {
        eprintln!("ckpt: {} can be restored here", a.image.display());
        return Ok(0);
    }
    if a.lazy {
        // The lazy restore serves the pages from this thread (or, detached,
        // from a fork of it, which must be the only thread): no canceller.
        canceller.stop();
        return if a.detach {
            detached_lazy(&a, reader, &mut opts)
        } else {
            lazy(&a, reader, &mut opts)
        };
    }
    let restored = ckpt_restore::restore_checked(&reader, &mut opts, checked);
    // From here on a signal is the job's (or, detached, ends us as usual).
    canceller.stop();
    let restored = match restored {
        Err(e @ ckpt_restore::Error::Cancelled { signal }) => {
            eprintln!("ckpt: {e}");
            return Ok(128 + signal);
        }
        r => r.with_context(|| format!("restore of {} failed", a.image.display()))?,
    };
    let pid = restored.pid;
    // Processes that got new pids (--new-pid): saved -> now.
    for (saved, now) in restored.pids.iter().filter(|(s, n)| s != n) {
        eprintln!("ckpt: pid {saved} -> {now}");
    }
    if crate::logging::verbosity() > 0 {
        let n = restored.pids.len();
        let what = if n == 1 {
            format!("pid {pid}")
        } else {
            format!("pid {pid} and {} descendants", n - 1)
        };
        eprintln!(
            "ckpt: restored {what} in {} ({} system calls injected, {} of pages)",
            ms(restored.stats.total),
            restored.stats.injected_syscalls,
            super::mib(restored.stats.page_bytes)
        );
        // Time spent in each phase (a tree repeats the per-process ones).
        let mut sums: Vec<(&str, std::time::Duration)> = Vec::new();
        let mut prev = std::time::Duration::ZERO;
        for &(name, t) in &restored.stats.phases {
            match sums.iter_mut().find(|(n, _)| *n == name) {
                Some((_, d)) => *d += t - prev,
                None => sums.push((name, t - prev)),
            }
            prev = t;
        }
        for (name, d) in sums {
            eprintln!("ckpt:   {name:>14}: {}", ms(d));
        }
    }
    if a.detach {
        println!("{pid}");
        return Ok(0);
    }
    run_job(&restored)
}

/// The restored process as a job of the shell's, until it ends.
fn run_job(restored: &ckpt_restore::Restored) -> anyhow::Result<i32> {
    let pid = restored.pid;
    let mut j = Job::new(pid, restored.terminal.as_ref());
    if let Some(h) = &restored.terminal {
        if h.handed {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            eprintln!("ckpt: restored pid {pid} ({})", comm.trim());
            j.winch();
        }
    }
    let end = j.run()?;
    tracing::debug!(?end, "the restored process ended");
    Ok(job::exit_like(end))
}

/// `--lazy` (not detached): restore, serve the pages until every one is in
/// (the process runs meanwhile), then the job as usual.
fn lazy(
    a: &Args,
    reader: ImageReader,
    opts: &mut ckpt_restore::RestoreOptions,
) -> anyhow::Result<i32> {
    let (restored, server) = ckpt_restore::restore_lazy(Arc::new(reader), opts)
        .with_context(|| format!("restore of {} failed", a.image.display()))?;
    if crate::logging::verbosity() > 0 {
        eprintln!(
            "ckpt: restored pid {} in {} (lazy)",
            restored.pid,
            ms(restored.stats.total)
        );
    }
    match server
        .serve(&restored.tids)
        .with_context(|| format!("lazy restore of {} failed", a.image.display()))?
    {
        ckpt_restore::LazyEnd::Exited(status) => Ok(exit_code(status)),
        ckpt_restore::LazyEnd::Filled { .. } => run_job(&restored),
    }
}

fn exit_code(status: ckpt_sys::proc::wait::ExitKind) -> i32 {
    match status {
        ckpt_sys::proc::wait::ExitKind::Exited(c) => c,
        ckpt_sys::proc::wait::ExitKind::Signaled(s) => 128 + s,
    }
}

/// `--detach --lazy`: a background ckpt restores the process and serves
/// its pages; this one prints the pid once the process runs and returns.
fn detached_lazy(
    a: &Args,
    reader: ImageReader,
    opts: &mut ckpt_restore::RestoreOptions,
) -> anyhow::Result<i32> {
    let (mut rx, mut tx) = std::io::pipe().context("creating a pipe")?;
    match ckpt_sys::clone::fork_with_pid(None).context("forking the lazy restore's server")? {
        ckpt_sys::clone::Forked::Parent(_) => {
            drop(tx);
            let mut msg = String::new();
            let _ = rx.read_to_string(&mut msg);
            match msg.strip_prefix("pid ") {
                Some(pid) => {
                    println!("{}", pid.trim());
                    Ok(0)
                }
                None if msg.is_empty() => bail!("the lazy restore's server died"),
                None => bail!("{}", msg.trim()),
            }
        }
        ckpt_sys::clone::Forked::Child => {
            drop(rx);
            // The server outlives this command: the terminal's signals are
            // the process's (same process group), not ours; our stdout is
            // not kept (so that `$(ckpt restore --detach --lazy)` returns).
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE] {
                let _ = ckpt_sys::proc::ignore_signal(sig);
            }
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = ckpt_sys::fds::dup3(std::os::fd::AsRawFd::as_raw_fd(&null), 1, false);
            }
            let r = ckpt_restore::restore_lazy(Arc::new(reader), opts);
            let (restored, server) = match r {
                Ok(x) => x,
                Err(e) => {
                    let _ = writeln!(
                        tx,
                        "restore of {} failed: {}",
                        a.image.display(),
                        ckpt_image::error_chain(&e)
                    );
                    ckpt_sys::proc::exit_now(1);
                }
            };
            let _ = writeln!(tx, "pid {}", restored.pid);
            drop(tx);
            let code = match server.serve(&restored.tids) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!(
                        "ckpt: lazy restore of {} failed: {}",
                        a.image.display(),
                        ckpt_image::error_chain(&e)
                    );
                    1
                }
            };
            ckpt_sys::proc::exit_now(code);
        }
    }
}

/// The thread that takes SIGINT, SIGTERM and SIGHUP while the check and
/// the restore run (every thread has them blocked) and cancels the
/// restore. One that comes once the restore is over is sent to us again,
/// pending for the job control (or, detached, for no one: we exit).
struct Canceller {
    stop: Arc<AtomicBool>,
    /// The thread's id once it waits for [`WAKE`] too (0 before).
    tid: Arc<AtomicI32>,
    thread: std::thread::JoinHandle<()>,
}

/// The signal that wakes the canceller when it is to stop (so that the
/// command does not wait for its next timeout to exit). Its default action
/// is to be ignored: sent before the thread blocks it, it does nothing.
const WAKE: i32 = libc::SIGURG;

impl Canceller {
    fn start(cancel: Cancel) -> Canceller {
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let (flag, me) = (stop.clone(), tid.clone());
        let thread = std::thread::spawn(move || {
            let wake = 1u64 << (WAKE - 1);
            if ckpt_sys::proc::job::block_signals(wake).is_ok() {
                me.store(ckpt_sys::proc::gettid(), Ordering::SeqCst);
            }
            while !flag.load(Ordering::SeqCst) {
                let wait = ckpt_sys::proc::job::wait_signal(
                    CANCEL_MASK | wake,
                    Some(Duration::from_millis(20)),
                );
                match wait {
                    Ok(Some(WAKE)) => {}
                    Ok(Some(sig)) if !cancel.cancel(sig) => {
                        let _ = ckpt_sys::proc::kill(ckpt_sys::proc::getpid(), sig);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for signals");
                        return;
                    }
                }
            }
        });
        Canceller { stop, tid, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let tid = self.tid.load(Ordering::SeqCst);
        if tid > 0 {
            let _ = ckpt_sys::proc::tgkill(ckpt_sys::proc::getpid(), tid, WAKE);
        }
        let _ = self.thread.join();
    }
}

/// The check's errors, each on a line, and the refusal (with a hint where
/// the saved pids are taken).
fn refuse_on_errors(image: &std::path::Path, report: &ckpt_restore::Report) -> anyhow::Result<()> {
    if report.errors.is_empty() {
        return Ok(());
    }
    for e in &report.errors {
        eprintln!("ckpt: cannot restore: {e}");
    }
    if report.errors.iter().any(|e| e.contains(" is in use by ")) {
        eprintln!(
            "ckpt: hint: the saved pids are taken (is the process still running?); --new-pid restores it under fresh pids"
        );
    }
    bail!(
        "{} cannot be restored here ({} problem{})",
        image.display(),
        report.errors.len(),
        if report.errors.len() == 1 { "" } else { "s" }
    );
}

/// `[HIERARCHY:]ROOT` of --cgroup-root.
fn parse_cgroup_root(s: &str) -> Result<ckpt_restore::CgroupRoot, String> {
    let (hierarchy, path) = match s.split_once(':') {
        Some((h, p)) if !s.starts_with('/') => (Some(h.to_string()), p),
        _ => (None, s),
    };
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!(
            "{path:?}: the root must be an absolute cgroup path without .."
        ));
    }
    Ok(ckpt_restore::CgroupRoot {
        hierarchy,
        path: path.as_bytes().to_vec(),
    })
}
