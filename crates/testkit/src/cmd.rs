//! Commands run to completion under a deadline.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to completion with a deadline: a hang is killed and fails the
/// test. Its stdin is /dev/null; stdout and stderr are collected.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    // Drain the pipes in threads so a chatty child cannot block.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let to = drain(Box::new(child.stdout.take().unwrap()));
    let te = drain(Box::new(child.stderr.take().unwrap()));
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} hung (killed after {limit:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    }
}

/// stderr of an output, lossy.
pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout of an output, lossy.
pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The output must be a clean failure: a non-zero exit (not a signal),
/// a message, no panic. Returns stderr.
#[track_caller]
pub fn assert_clean_failure(o: &Output, what: &str) -> String {
    let err = stderr_of(o);
    assert!(
        !o.status.success(),
        "{what}: succeeded\nstdout: {}",
        stdout_of(o)
    );
    assert!(!err.contains("panicked"), "{what}: panicked: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{what}: panicked: {err}");
    assert!(!err.trim().is_empty(), "{what}: failed without a message");
    assert!(
        o.status.code().is_some(),
        "{what}: killed by a signal ({})\n{err}",
        o.status
    );
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_collects_and_checks() {
        let o = run_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 2"]),
            Duration::from_secs(10),
        );
        assert_eq!(stdout_of(&o), "out\n");
        assert_eq!(assert_clean_failure(&o, "sh"), "err\n");
    }

    #[test]
    fn a_hang_fails() {
        let r = std::panic::catch_unwind(|| {
            run_timeout(Command::new("sleep").arg("30"), Duration::from_millis(100))
        });
        assert!(r.is_err());
    }
}
