//! `ckpt dump PID -o FILE [--no-tree]`

use super::{mib, ms, CompressArg};
use anyhow::Context;
use ckpt_sys::proc::signals::CANCEL_MASK;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Process to save.
    pid: i32,
    /// Image file to write (created 0600; "-" writes to standard output).
    #[arg(short, long)]
    output: PathBuf,
    /// Let the processes go on after the dump instead of killing them.
    #[arg(long)]
    leave_running: bool,
    /// Save only PID, not its descendants (refused if it has children).
    #[arg(long)]
    no_tree: bool,
    /// Page compression.
    #[arg(long, value_enum, default_value_t)]
    compress: CompressArg,
    /// Incremental dump: save only the pages written since the dump PARENT
    /// (the process must have been tracked since: see --track; otherwise a
    /// full dump is made, and said so). The new image names PARENT; keep
    /// it (restore, show and ckptfs read the chain; `ckpt flatten` merges it).
    #[arg(long, value_name = "PARENT")]
    parent: Option<PathBuf>,
    /// With --leave-running: track the process's writes from this dump on,
    /// so that the next `dump --parent` of this image is incremental (the
    /// pages are copied while the process runs; two hidden fds of ckpt's
    /// stay in the process).
    #[arg(long)]
    track: bool,
    /// With --leave-running: copy the memory while the process is stopped
    /// (no copy-on-write snapshot; the process is stopped longer).
    #[arg(long)]
    no_snapshot: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Save live TCP connections (and connections waiting in accept
    /// queues); a netfilter lock (nft) holds them frozen until restored.
    #[arg(long, conflicts_with = "tcp_close")]
    tcp_established: bool,
    /// Save live TCP connections as closed: the restored process finds
    /// them aborted.
    #[arg(long)]
    tcp_close: bool,
    /// A unix socket whose peer is outside the dump: connect it again to
    /// the peer's name at restore (reconnect), or restore it as a socket
    /// whose peer has gone (close). Without it such sockets are refused.
    #[arg(long, value_enum)]
    unix_external: Option<UnixExternalArg>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum UnixExternalArg {
    Reconnect,
    Close,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    if a.track && !a.leave_running {
        anyhow::bail!("--track needs --leave-running (a killed process has nothing to track)");
    }
    // SIGINT, SIGTERM and SIGHUP are held from here to the end when the
    // image goes to a file: until the dump worker starts they wait, then
    // they cancel it (see ckpt-capture's worker); one that comes after the
    // image is complete is too late to cancel anything and is dropped.
    let held = if a.output.as_os_str() == "-" {
        None
    } else {
        Some(
            ckpt_sys::proc::signals::block(CANCEL_MASK)
                .context("blocking SIGINT, SIGTERM and SIGHUP")?,
        )
    };
    // Connection locks left by a dump whose processes were all killed.
    ckpt_sys::netlock::cleanup_stale(std::path::Path::new(ckpt_sys::netlock::STATE_DIR));
    let opts = ckpt_capture::DumpOptions {
        leave_running: a.leave_running,
        no_tree: a.no_tree,
        compression: a.compress.into(),
        progress: if a.quiet {
            None
        } else {
            super::progress_bar("dumping")
        },
        parent: a.parent.clone(),
        track: a.track,
        no_snapshot: a.no_snapshot,
        sockets: ckpt_capture::SocketOptions {
            tcp_established: a.tcp_established,
            tcp_close: a.tcp_close,
            unix_external: match a.unix_external {
                None => ckpt_image::UnixExternal::None,
                Some(UnixExternalArg::Reconnect) => ckpt_image::UnixExternal::Reconnect,
                Some(UnixExternalArg::Close) => ckpt_image::UnixExternal::Close,
            },
        },
    };
    let stats = if a.output.as_os_str() == "-" {
        let out = std::io::stdout().lock();
        ckpt_capture::dump_to(a.pid, out, opts)
            .with_context(|| format!("dump of pid {} failed", a.pid))?
            .1
    } else {
        match ckpt_capture::dump(a.pid, &a.output, opts) {
            // SIGINT/SIGTERM/SIGHUP: nothing written, the process goes on;
            // the exit status says which signal, as if it had killed us.
            Err(e @ ckpt_capture::Error::Cancelled { signal, .. }) => {
                eprintln!("ckpt: {e}");
                return Ok(128 + signal);
            }
            r => r.with_context(|| format!("dump of pid {} failed", a.pid))?,
        }
    };
    if let Some(held) = held {
        // Kept blocked to the exit: later ones are dropped too.
        std::mem::forget(held);
        while ckpt_sys::proc::signals::take_pending(CANCEL_MASK).is_some() {}
    }
    if let Some(n) = &stats.note {
        eprintln!("ckpt: note: {n}");
    }
    if !a.quiet {
        let others = stats.processes.saturating_sub(1);
        let what = if others == 0 {
            format!("pid {}", a.pid)
        } else {
            format!(
                "pid {} and {others} descendant{}",
                a.pid,
                if others == 1 { "" } else { "s" }
            )
        };
        eprintln!(
            "ckpt: saved {what} ({} thread{}) to {}: {} of memory ({}), image {}, in {} (frozen {}){}",
            stats.threads,
            if stats.threads == 1 { "" } else { "s" },
            a.output.display(),
            mib(stats.pages_bytes),
            stats.mode.name(),
            mib(stats.image_bytes),
            ms(stats.total),
            ms(stats.freeze),
            if a.leave_running {
                ", left running"
            } else {
                ""
            },
        );
    }
    Ok(0)
}
