pub mod dump;
pub mod restore;
pub mod show;

use clap::ValueEnum;

/// `--compress` values.
#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum CompressArg {
    None,
    #[default]
    Fast,
    Best,
}

impl From<CompressArg> for ckpt_image::Compression {
    fn from(c: CompressArg) -> Self {
        match c {
            CompressArg::None => ckpt_image::Compression::None,
            CompressArg::Fast => ckpt_image::Compression::Fast,
            CompressArg::Best => ckpt_image::Compression::Best,
        }
    }
}

/// Milliseconds with one decimal, for reports.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Bytes in MiB with one decimal.
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}
