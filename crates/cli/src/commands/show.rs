//! `ckpt show [--json] IMAGE`

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Image file.
    image: PathBuf,
    /// Print the whole metadata as JSON (field names as in schema/ckpt.capnp).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let reader = ckpt_image::ImageReader::open(&a.image)
        .with_context(|| format!("cannot read image {}", a.image.display()))?;
    let text = if a.json {
        let v = ckpt_image::json::metadata_to_json(reader.metadata_bytes())
            .with_context(|| format!("cannot decode metadata of {}", a.image.display()))?;
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        s
    } else {
        let facts = ckpt_image::summary::file_facts(&reader)
            .with_context(|| format!("cannot stat {}", a.image.display()))?;
        ckpt_image::summary::render_file(reader.image(), &facts)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // `ckpt show x | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        r => r.map(|_| 0).context("writing to standard output"),
    }
}
