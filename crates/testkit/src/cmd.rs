//! Commands run to completion under a deadline.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running child whose stdout and stderr are drained on threads, so
/// that a chatty child cannot block on a full pipe.
pub struct Piped {
    pub child: Child,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

/// Spawn `cmd` with stdin /dev/null and stdout, stderr collected.
pub fn spawn_piped(cmd: &mut Command) -> Piped {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    Piped { child, out, err }
}

impl Piped {
    /// Its output, once it has exited with `status` (however it was waited for).
    pub fn output(self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.out.join().unwrap(),
            stderr: self.err.join().unwrap(),
        }
    }
}

/// Run `cmd` to completion with a deadline: a hang is killed and fails the
/// test. Its stdin is /dev/null; stdout and stderr are collected.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut p = spawn_piped(cmd);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = p.child.kill();
            let _ = p.child.wait();
            panic!("{desc} hung (killed after {limit:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    p.output(status)
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
