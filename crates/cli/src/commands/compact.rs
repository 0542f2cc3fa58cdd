//! `ckpt compact IMAGE`: rewrite an image keeping only its live generation.

use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Image file (rewritten in place, crash-safely).
    image: PathBuf,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    // Keep ckptfs (which takes the same lock for each edit) out while the
    // copy is written; it sees the new file afterwards.
    let f = std::fs::File::open(&a.image)
        .with_context(|| format!("cannot open {}", a.image.display()))?;
    let _lock = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "{} is being edited (by ckptfs?); try again, or use its ctl: echo compact > MOUNT/NAME/ctl",
            a.image.display()
        ),
        Err((_, e)) => return Err(e).with_context(|| format!("cannot lock {}", a.image.display())),
    };
    let reader = ckpt_image::ImageReader::open(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let usage = ckpt_image::compact::usage(&reader)?;
    drop(reader);
    if usage.dead() == 0 {
        if !a.quiet {
            eprintln!(
                "ckpt: {} has no dead space; left as it is",
                a.image.display()
            );
        }
        return Ok(0);
    }
    let c = ckpt_image::compact::compact(&a.image)
        .with_context(|| format!("cannot compact {}", a.image.display()))?;
    if !a.quiet {
        eprintln!(
            "ckpt: compacted {}: {} -> {} ({} of {} frames kept), generation {}",
            a.image.display(),
            ckpt_image::summary::human_bytes(c.before),
            ckpt_image::summary::human_bytes(c.after),
            c.frames_kept,
            c.frames_kept + c.frames_dropped,
            c.generation
        );
    }
    Ok(0)
}
