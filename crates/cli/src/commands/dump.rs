//! `ckpt dump PID -o FILE [--no-tree]`

use super::{mib, ms, CompressArg};
use anyhow::Context;
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
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let opts = ckpt_capture::DumpOptions {
        leave_running: a.leave_running,
        no_tree: a.no_tree,
        compression: a.compress.into(),
        progress: if a.quiet {
            None
        } else {
            super::progress_bar("dumping")
        },
    };
    let stats = if a.output.as_os_str() == "-" {
        let out = std::io::stdout().lock();
        ckpt_capture::dump_to(a.pid, out, opts)
            .with_context(|| format!("dump of pid {} failed", a.pid))?
            .1
    } else {
        ckpt_capture::dump(a.pid, &a.output, opts)
            .with_context(|| format!("dump of pid {} failed", a.pid))?
    };
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
            "ckpt: saved {what} ({} thread{}) to {}: {} of memory, image {}, in {} (frozen {}){}",
            stats.threads,
            if stats.threads == 1 { "" } else { "s" },
            a.output.display(),
            mib(stats.pages_bytes),
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
