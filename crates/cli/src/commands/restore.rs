//! `ckpt restore IMAGE [--detach] [--new-pid] [--lazy]`

use super::ms;
use anyhow::{bail, Context};
use ckpt_image::ImageReader;
use ckpt_sys::sys::{self, ExitKind};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Image file.
    image: PathBuf,
    /// Return as soon as the process runs, printing its pid.
    #[arg(long)]
    detach: bool,
    /// Restore under a fresh pid when the saved one is taken (see README: glibc caches tids).
    #[arg(long)]
    new_pid: bool,
    /// Only check that the image can be restored here; change nothing.
    #[arg(long)]
    check: bool,
    /// Let the process run before its memory is written: pages are filled
    /// when it touches them and in the background, from the image (kept
    /// open). Until the last page is in, ckpt stays the process's tracer
    /// (with --detach, a background ckpt does): if it dies, the process is
    /// killed; if the image cannot be read, the process is killed and the
    /// error reported. It never runs on missing pages.
    #[arg(long)]
    lazy: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let reader = ImageReader::open(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let mut opts = ckpt_restore::RestoreOptions {
        new_pid: a.new_pid,
        progress: if a.lazy {
            None
        } else {
            super::progress_bar("restoring")
        },
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
    if a.lazy && a.detach {
        return detached_lazy(&a, reader, &mut opts);
    }
    // Catch the signals to forward before the process exists, so none is lost.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let pid = if a.lazy {
        let reader = Arc::new(reader);
        let (restored, server) = ckpt_restore::restore_lazy(reader, &mut opts)
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
            ckpt_restore::LazyEnd::Exited(status) => return Ok(exit_code(status)),
            ckpt_restore::LazyEnd::Filled { .. } => restored.pid,
        }
    } else {
        let restored = ckpt_restore::restore(&reader, &mut opts)
            .with_context(|| format!("restore of {} failed", a.image.display()))?;
        if crate::logging::verbosity() > 0 {
            eprintln!(
                "ckpt: restored pid {} in {}",
                restored.pid,
                ms(restored.stats.total)
            );
        }
        restored.pid
    };
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
    Ok(exit_code(status))
}

fn exit_code(status: ExitKind) -> i32 {
    match status {
        ExitKind::Exited(c) => c,
        ExitKind::Signaled(s) => 128 + s,
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
            for sig in [
                SIGHUP,
                SIGINT,
                signal_hook::consts::SIGQUIT,
                signal_hook::consts::SIGPIPE,
            ] {
                let _ = ckpt_sys::proc::ignore_signal(sig);
            }
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = ckpt_sys::fds::dup3(std::os::fd::AsRawFd::as_raw_fd(&null), 1, false);
            }
            let reader = Arc::new(reader);
            let r = ckpt_restore::restore_lazy(reader, opts);
            let (restored, server) = match r {
                Ok(x) => x,
                Err(e) => {
                    let _ = writeln!(tx, "restore of {} failed: {e}", a.image.display());
                    sys::exit_now(1);
                }
            };
            let _ = writeln!(tx, "pid {}", restored.pid);
            drop(tx);
            let code = match server.serve(&restored.tids) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("ckpt: lazy restore of {} failed: {e}", a.image.display());
                    1
                }
            };
            sys::exit_now(code);
        }
    }
}
