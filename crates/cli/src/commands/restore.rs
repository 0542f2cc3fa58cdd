//! `ckpt restore IMAGE [--detach] [--new-pid]`

use super::ms;
use anyhow::{bail, Context};
use ckpt_sys::sys::{self, ExitKind};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Image file.
    image: PathBuf,
    /// Return as soon as the process runs, printing its pid.
    #[arg(long)]
    detach: bool,
    /// Restore under fresh pids where the saved ones are taken (see README:
    /// glibc caches tids); each new pid is printed as "pid SAVED -> NEW".
    #[arg(long)]
    new_pid: bool,
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
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    // Connection locks left by a dump whose processes were all killed.
    ckpt_sys::netlock::cleanup_stale(std::path::Path::new(ckpt_sys::netlock::STATE_DIR));
    // SIGINT, SIGTERM and SIGHUP: while the restore runs they cancel it
    // (what was built is killed, exit 128 + signal); once the process
    // runs they are passed on to it (in the foreground; terminal signals
    // reach it anyway: it is in our process group).
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let cancel = ckpt_restore::Cancel::new();
    let restored_pid = Arc::new(AtomicI32::new(0));
    let handle = signals.handle();
    let forwarder = {
        let restored_pid = restored_pid.clone();
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            for info in signals.forever() {
                if cancel.cancel(info.signal) {
                    continue;
                }
                let pid = restored_pid.load(Ordering::SeqCst);
                if pid > 0 && info.process.is_some() {
                    let _ = ckpt_sys::proc::kill(pid, info.signal);
                }
            }
        })
    };
    let reader = ckpt_image::ImageReader::open(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let mut opts = ckpt_restore::RestoreOptions {
        new_pid: a.new_pid,
        force_files: a.force_files,
        tcp_close: a.tcp_close,
        progress: super::progress_bar("restoring"),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let report = ckpt_restore::check(&reader, &opts);
    for w in &report.warnings {
        match w.strip_prefix("--force-files: ") {
            Some(w) => eprintln!("ckpt: WARNING: --force-files: {w}"),
            None => eprintln!("ckpt: warning: {w}"),
        }
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!("ckpt: cannot restore: {e}");
        }
        bail!(
            "{} cannot be restored here ({} problem{})",
            a.image.display(),
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
    }
    if a.check {
        eprintln!("ckpt: {} can be restored here", a.image.display());
        return Ok(0);
    }
    let restored = match ckpt_restore::restore(&reader, &mut opts) {
        Err(e @ ckpt_restore::Error::Cancelled { signal }) => {
            eprintln!("ckpt: {e}");
            handle.close();
            let _ = forwarder.join();
            return Ok(128 + signal);
        }
        r => r.with_context(|| format!("restore of {} failed", a.image.display()))?,
    };
    let pid = restored.pid;
    restored_pid.store(pid, Ordering::SeqCst);
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
    let status = sys::wait_child_exit(pid).context("waiting for the restored process")?;
    handle.close();
    let _ = forwarder.join();
    Ok(match status {
        ExitKind::Exited(c) => c,
        ExitKind::Signaled(s) => 128 + s,
    })
}
