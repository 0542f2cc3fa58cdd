//! Logs on stderr through `tracing`: `-v` shows each step of a dump or a
//! restore with its duration (info), `-vv` debug, `-vvv` trace. Without
//! `-v` only warnings and errors of the libraries show. `RUST_LOG` takes
//! the usual directives (`RUST_LOG=ckpt_restore=debug`); `-v` then sets
//! the level of what RUST_LOG names no level for. The end of each span
//! (`dump`, `restore` and their steps) is logged with its duration
//! (`time.busy` while entered, `time.idle` otherwise).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::FmtSpan;

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// How many `-v` were given.
pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

fn level(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The filter for `verbose` and the value of RUST_LOG (None: unset).
/// A directive of RUST_LOG that cannot be parsed is reported and left out.
fn filter(verbose: u8, rust_log: Option<&str>) -> EnvFilter {
    let builder = EnvFilter::builder().with_default_directive(level(verbose).into());
    let f = builder.parse_lossy(rust_log.unwrap_or(""));
    if verbose > 0 {
        // The global level, over RUST_LOG's global one (targets it names keep theirs).
        f.add_directive(level(verbose).into())
    } else {
        f
    }
}

/// Install the stderr subscriber; call once, before any work.
pub fn init(verbose: u8) {
    VERBOSITY.store(verbose, Ordering::Relaxed);
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, rust_log.as_deref()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_target(verbose >= 2 || rust_log.is_some())
        .with_span_events(FmtSpan::CLOSE)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_and_rust_log() {
        assert_eq!(filter(0, None).max_level_hint(), Some(LevelFilter::WARN));
        assert_eq!(filter(1, None).max_level_hint(), Some(LevelFilter::INFO));
        assert_eq!(filter(2, None).max_level_hint(), Some(LevelFilter::DEBUG));
        assert_eq!(filter(5, None).max_level_hint(), Some(LevelFilter::TRACE));
        // RUST_LOG alone decides without -v; with -v its targets keep their level.
        assert_eq!(
            filter(0, Some("debug")).max_level_hint(),
            Some(LevelFilter::DEBUG)
        );
        let f = filter(1, Some("ckpt_restore=trace")).to_string();
        assert!(
            f.contains("ckpt_restore=trace") && f.contains("info"),
            "{f}"
        );
        // A bad directive does not stop the program.
        assert_eq!(
            filter(1, Some("=bogus=")).max_level_hint(),
            Some(LevelFilter::INFO)
        );
    }
}
