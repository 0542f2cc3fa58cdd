pub mod compact;
pub mod dump;
pub mod flatten;
pub mod mount;
pub mod restore;
pub mod show;

use clap::ValueEnum;

/// `--compress` values.
#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum CompressArg {
    /// Store pages raw.
    None,
    /// LZ4: the fastest to write and to restore.
    #[default]
    Fast,
    /// zstd level 1: about half the size of fast on text-like data, about
    /// twice the CPU time.
    Zstd,
    /// zstd level 19: smallest, slow.
    Best,
}

impl From<CompressArg> for ckpt_image::Compression {
    fn from(c: CompressArg) -> Self {
        match c {
            CompressArg::None => ckpt_image::Compression::None,
            CompressArg::Fast => ckpt_image::Compression::Fast,
            CompressArg::Zstd => ckpt_image::Compression::Zstd,
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

/// A progress callback drawing a bar on stderr, shown only when stderr is a
/// terminal, no `-v` log goes there, and the work has taken more than a second.
pub fn progress_bar(what: &'static str) -> Option<Box<dyn FnMut(u64, u64) + Send>> {
    if !ckpt_sys::fds::tty::isatty(2) || crate::logging::verbosity() > 0 {
        return None;
    }
    let start = std::time::Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    Some(Box::new(move |done, total| {
        if bar.is_none() && start.elapsed() > std::time::Duration::from_secs(1) {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(what);
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
            if done >= total {
                b.finish_and_clear();
            }
        }
    }))
}
