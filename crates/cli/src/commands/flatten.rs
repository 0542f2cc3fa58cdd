//! `ckpt flatten IMAGE [-o OUT]`: an incremental image and its chain of
//! parents as one image.

use super::mib;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The incremental image (its parents are found as `ckpt show` says).
    image: PathBuf,
    /// Where to write the whole image (default: over IMAGE, which is
    /// replaced only once the new image is complete and synced).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let reader = ckpt_image::ImageReader::open(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    if reader.image().parent.image_id.is_empty() {
        eprintln!(
            "ckpt: {} has no parent: nothing to flatten",
            a.image.display()
        );
        if let Some(out) = &a.output {
            std::fs::copy(&a.image, out)
                .with_context(|| format!("copying it to {}", out.display()))?;
        }
        return Ok(0);
    }
    let out = a.output.clone().unwrap_or_else(|| a.image.clone());
    // Written to a temp file next to OUT (0600), synced, renamed over OUT
    // and the directory synced: a crash leaves OUT as it was or complete.
    let file = ckpt_image::AtomicFile::create(&out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let file = ckpt_image::chain::flatten(&reader, file)
        .with_context(|| format!("cannot flatten {}", a.image.display()))?;
    file.commit()
        .with_context(|| format!("cannot write {}", out.display()))?;
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "ckpt: {} and its {} parent image{} flattened into {} ({})",
        a.image.display(),
        reader.ancestors().len(),
        if reader.ancestors().len() == 1 {
            ""
        } else {
            "s"
        },
        out.display(),
        mib(len)
    );
    Ok(0)
}
