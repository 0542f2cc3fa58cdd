//! Issue 16's targets that are ckpt's alone, measured in the same run as
//! the comparison with CRIU, on the same mixed-data fixture:
//!
//! - incremental dump: memhog is dumped with `--leave-running --track`
//!   (the base), rewrites 1% of its pages (every 100th, new random bytes:
//!   SIGHUP), then `dump --parent BASE` saves only what changed and kills
//!   it. The ratio is the incremental image's size / the base's (target
//!   <= 0.05). The chain is restored and must give the new checksum.
//! - lazy restore: `restore --detach --lazy BASE`, wall time until the
//!   command returns with the process running (target <= 50 ms at 1 GiB);
//!   then the checksum, which reads every page, must be the original one.

use super::{field, kill_restored, run_tool, Hog, Opts, Run};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the two measurements gave.
pub(crate) struct IncrLazy {
    pub base: u64,
    pub inc: u64,
    /// Wall time of the incremental (killing) dump.
    pub inc_dump: Duration,
    /// Wall time of the regular restore of the chain.
    pub chain_restore: Duration,
    /// Wall time of `restore --detach --lazy` of the base.
    pub lazy: Duration,
}

impl IncrLazy {
    pub fn ratio(&self) -> f64 {
        self.inc as f64 / self.base.max(1) as f64
    }
}

fn ckpt(o: &Opts, args: &[&str]) -> Run {
    run_tool(&o.dir, &super::ckpt_bin(), args, false)
}

fn img(o: &Opts, tag: &str) -> PathBuf {
    let p = o.store.join(format!("vs-{tag}.ckpt"));
    let _ = std::fs::remove_file(&p);
    p
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Both measurements on a fresh `mib` MiB mixed-data memhog.
pub(crate) fn measure(o: &Opts, hog: &Path, mib: u64) -> Result<IncrLazy, String> {
    let mut h = Hog::start(hog, &o.dir, mib, "mixed");
    let pid = h.pid();
    let (base, inc) = (img(o, "inc-base"), img(o, "inc-1"));
    let r = incremental(o, &mut h, &base, &inc);
    let r = r.and_then(|(inc_dump, touched)| {
        // The chain, restored the regular way: the rewritten pages.
        let rest = ckpt(o, &["restore", "--detach", inc.to_str().unwrap()]);
        if !rest.ok() {
            return Err(format!(
                "restore of the chain failed: {}",
                rest.first_err_line()
            ));
        }
        let (sum, _) = h.ask_sum(pid);
        kill_restored(pid);
        if sum != touched {
            return Err(format!("the restored chain has sum {sum}, not {touched}"));
        }
        let lazy = ckpt(
            o,
            &["restore", "--detach", "--lazy", base.to_str().unwrap()],
        );
        if !lazy.ok() {
            return Err(format!("lazy restore failed: {}", lazy.first_err_line()));
        }
        // The checksum reads every page: all of them come in.
        let (sum, _) = h.ask_sum(pid);
        kill_restored(pid);
        if sum != h.sum {
            return Err(format!(
                "the lazily restored process has sum {sum}, not {}",
                h.sum
            ));
        }
        Ok(IncrLazy {
            base: size(&base),
            inc: size(&inc),
            inc_dump,
            chain_restore: rest.wall,
            lazy: lazy.wall,
        })
    });
    // Whatever a failed step left running (never another process).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "memhog" {
        kill_restored(pid);
    }
    let _ = h.child.wait();
    let _ = std::fs::remove_file(&base);
    let _ = std::fs::remove_file(&inc);
    let _ = std::fs::remove_file(&h.out);
    r
}

/// The base dump (tracking), 1% rewritten, the incremental dump (which
/// kills memhog): its wall time and memhog's checksum after the rewrite.
fn incremental(
    o: &Opts,
    h: &mut Hog,
    base: &Path,
    inc: &Path,
) -> Result<(Duration, String), String> {
    let pid = h.pid().to_string();
    let r = ckpt(
        o,
        &[
            "dump",
            &pid,
            "-o",
            base.to_str().unwrap(),
            "--leave-running",
            "--track",
            "--compress",
            &o.compress,
        ],
    );
    if !r.ok() {
        return Err(format!("base dump failed: {}", r.first_err_line()));
    }
    let touched = field(&h.ask(h.pid(), super::SIGHUP, "touched sum="), "sum=").to_string();
    let r = ckpt(
        o,
        &[
            "dump",
            &pid,
            "-o",
            inc.to_str().unwrap(),
            "--parent",
            base.to_str().unwrap(),
            "--compress",
            &o.compress,
        ],
    );
    if !r.ok() {
        return Err(format!("incremental dump failed: {}", r.first_err_line()));
    }
    let _ = h.child.wait();
    if !r.err.contains("(incremental)") && !r.out.contains("(incremental)") {
        return Err(format!(
            "the dump with --parent was not incremental: {}",
            r.err.trim()
        ));
    }
    Ok((r.wall, touched))
}
