//! `ckpt restore IMAGE [--detach] [--new-pid]`

use super::ms;
use anyhow::{bail, Context};
use ckpt_sys::sys::{self, ExitKind};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use std::path::PathBuf;

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
    /// Restore the image's live TCP connections closed (the process finds
    /// them aborted) and remove the dump's connection lock.
    #[arg(long)]
    tcp_close: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    // Connection locks left by a dump whose processes were all killed.
    ckpt_sys::netlock::cleanup_stale(std::path::Path::new(ckpt_sys::netlock::STATE_DIR));
    let reader = ckpt_image::ImageReader::open(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let mut opts = ckpt_restore::RestoreOptions {
        new_pid: a.new_pid,
        tcp_close: a.tcp_close,
        progress: super::progress_bar("restoring"),
        ..Default::default()
    };
    let report = ckpt_restore::check(&reader, &opts);
    for w in &report.warnings {
        eprintln!("ckpt: warning: {w}");
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
    // Catch the signals to forward before the process exists, so none is lost.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let restored = ckpt_restore::restore(&reader, &mut opts)
        .with_context(|| format!("restore of {} failed", a.image.display()))?;
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
    // Foreground: forward signals sent to us by other processes (terminal
    // signals already reach the process: it is in our process group).
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for info in signals.forever() {
            if info.process.is_some() {
                let _ = sys::kill(pid, info.signal);
            }
        }
    });
    let status = sys::wait_child_exit(pid).context("waiting for the restored process")?;
    handle.close();
    let _ = forwarder.join();
    Ok(match status {
        ExitKind::Exited(c) => c,
        ExitKind::Signaled(s) => 128 + s,
    })
}
