//! Processes under test, and waits that fail at once.

use crate::temp::TempDir;
use crate::text::tail;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a wait for a test program's output may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A process under test (spawned, or restored and adopted) whose stdout
/// and stderr go to a file, opened O_APPEND so that a restored process
/// keeps writing to the same file. Killed and reaped on drop unless it is
/// known gone.
///
/// Every wait fails at once, showing the output, when the output has a
/// line starting with `ERROR` (the fixtures' convention for a broken
/// invariant) or when the process has exited; only a process that is alive
/// and silent runs into [`TIMEOUT`]. (For a child, that check is a
/// waitpid(WNOHANG): do not wait on a child while this process ptraces it,
/// or the check could take a ptrace stop meant for the tracer.)
pub struct Proc {
    pub pid: i32,
    /// The output file.
    pub out: PathBuf,
    child: Mutex<Option<Child>>,
    /// False once the process is known dead: its pid may be reused (by a
    /// restore of it), and that one must not be killed on drop.
    owned: bool,
    /// Lines consumed by [`Proc::next_line`] and [`Proc::wait_for`].
    cursor: AtomicUsize,
    _own_dir: Option<TempDir>,
}

impl Proc {
    /// `prog args` run in `dir`, its output in `dir/out.txt` (shared by the
    /// processes of one directory, as a restored one shares it with the
    /// original).
    pub fn spawn(dir: &TempDir, prog: impl AsRef<Path>, args: &[&str]) -> Proc {
        Self::spawn_cmd(dir, Command::new(prog.as_ref()).args(args))
    }

    /// `cmd` run in `dir`, its output in `dir/out.txt`.
    pub fn spawn_cmd(dir: &TempDir, cmd: &mut Command) -> Proc {
        cmd.current_dir(dir.path());
        Self::spawn_to(cmd, dir.join("out.txt"), None)
    }

    /// `cmd` as it is (its working directory unchanged), its output in a
    /// file of a temp dir of its own.
    pub fn start(cmd: &mut Command) -> Proc {
        let d = TempDir::new("out");
        let out = d.join("out.txt");
        Self::spawn_to(cmd, out, Some(d))
    }

    fn spawn_to(cmd: &mut Command, out: PathBuf, own_dir: Option<TempDir>) -> Proc {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap_or_else(|e| panic!("open {}: {e}", out.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            pid: child.id() as i32,
            out,
            child: Mutex::new(Some(child)),
            owned: true,
            cursor: AtomicUsize::new(0),
            _own_dir: own_dir,
        }
    }

    /// A process we did not spawn (a restored one): its pid and output file.
    pub fn adopt(pid: i32, out: &Path) -> Proc {
        Proc {
            pid,
            out: out.to_path_buf(),
            child: Mutex::new(None),
            owned: true,
            cursor: AtomicUsize::new(0),
            _own_dir: None,
        }
    }

    /// A process to watch but not to kill (a dump will, or its parent).
    pub fn watch(pid: i32, out: &Path) -> Proc {
        let mut p = Proc::adopt(pid, out);
        p.owned = false;
        p
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn line_count(&self) -> usize {
        self.output().lines().count()
    }

    /// Why waiting is pointless: the process exited, or is a zombie.
    fn gone(&self) -> Option<String> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = c.as_mut() {
            return match child.try_wait() {
                Ok(Some(st)) => Some(format!("exited ({st})")),
                Ok(None) => None,
                Err(e) => Some(format!("cannot be waited for ({e})")),
            };
        }
        drop(c);
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => Some("is gone".into()),
            Ok(s) if stat_state(&s) == "Z" => Some("exited (a zombie)".into()),
            Ok(_) => None,
        }
    }

    /// Poll the output until `found` returns something; fail at once on
    /// an ERROR line or the process's exit, and after [`TIMEOUT`].
    fn poll<T>(&self, what: &dyn Fn() -> String, found: impl Fn(&str) -> Option<T>) -> T {
        let t = Instant::now();
        loop {
            // Whether it is gone is read before the output: a line printed
            // just before exiting is still found.
            let gone = self.gone();
            let out = self.output();
            if let Some(v) = found(&out) {
                return v;
            }
            if let Some(l) = out.lines().find(|l| l.starts_with("ERROR")) {
                panic!(
                    "pid {}: waiting for {}, it reported: {l}\noutput:\n{}",
                    self.pid,
                    what(),
                    tail(&out)
                );
            }
            if let Some(g) = gone {
                panic!(
                    "pid {} {g} while waiting for {}\noutput:\n{}",
                    self.pid,
                    what(),
                    tail(&out)
                );
            }
            if t.elapsed() > TIMEOUT {
                panic!(
                    "pid {}: timed out after {TIMEOUT:?} waiting for {} ({})\noutput:\n{}",
                    self.pid,
                    what(),
                    proc_state(self.pid),
                    tail(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for a line matching `pred` after the first `skip` lines; returns it.
    pub fn wait_line_after(&self, skip: usize, pred: impl Fn(&str) -> bool) -> String {
        self.poll(&|| format!("a line after line {skip}"), |out| {
            out.lines().skip(skip).find(|l| pred(l)).map(str::to_string)
        })
    }

    pub fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_after(0, pred)
    }

    /// Wait for `n` more lines than there are now.
    pub fn wait_more_lines(&self, n: usize) {
        let want = self.line_count() + n;
        self.poll(&|| format!("{n} more lines ({want} in all)"), |out| {
            (out.lines().count() >= want).then_some(())
        });
    }

    /// The next line not yet consumed by `next_line` / `wait_for`.
    pub fn next_line(&self) -> String {
        let i = self.cursor.load(Ordering::SeqCst);
        let l = self.poll(&|| format!("line {}", i + 1), |out| {
            // Only whole lines: the last one may still be being written.
            let whole = &out[..out.rfind('\n').map_or(0, |e| e + 1)];
            whole.lines().nth(i).map(str::to_string)
        });
        self.cursor.store(i + 1, Ordering::SeqCst);
        l
    }

    /// Consume lines until one starts with `prefix`; returns it.
    pub fn wait_for(&self, prefix: &str) -> String {
        loop {
            let l = self.next_line();
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Alive and not a zombie.
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| stat_state(&s) != "Z")
            .unwrap_or(false)
            && self.gone().is_none()
    }

    /// The state letter of /proc/PID/stat ("S", "T", "t", "Z", ...).
    pub fn state(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| stat_state(&s).to_string())
            .unwrap_or_default()
    }

    /// The exit status, if it has exited (reaping it); None while it runs
    /// or when it is not our child.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let st = c.as_mut()?.try_wait().expect("try_wait");
        if st.is_some() {
            self.owned = false;
        }
        st
    }

    fn take_child(&mut self) -> Option<Child> {
        self.child
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// After it was killed (by `ckpt dump`): reap it so its pid is free
    /// again; it must not have exited successfully.
    pub fn reap(&mut self) {
        self.owned = false;
        let child = self.take_child();
        if let Some(mut c) = child {
            let st = c.wait().unwrap();
            assert!(!st.success(), "the dumped process should have been killed");
        } else {
            wait_gone(self.pid);
        }
    }

    /// SIGKILL and reap, unless it is known gone.
    pub fn kill(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        let child = self.take_child();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        } else {
            let _ = signal(self.pid, Signal::SIGKILL as i32);
            wait_gone(self.pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The state letter in the text of /proc/PID/stat.
fn stat_state(stat: &str) -> &str {
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// Whether `pid` is a zombie.
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| stat_state(&s) == "Z")
        .unwrap_or(false)
}

/// Send signal number `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) -> nix::Result<()> {
    let s = Signal::try_from(sig)?;
    kill(Pid::from_raw(pid), s)
}

/// Reap `pid` if it is our child and has exited; true if it was reaped.
pub fn try_reap(pid: i32) -> bool {
    matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(st) if st.pid().is_some()
    )
}

/// Block until our child `pid` exits, and reap it.
pub fn wait_exit(pid: i32) -> nix::Result<nix::sys::wait::WaitStatus> {
    waitpid(Pid::from_raw(pid), None)
}

/// Make this process the reaper of its orphaned descendants (restored
/// processes are reparented to the test that restored them).
pub fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
}

/// Wait until `pid` has disappeared (reaping it if it is our child).
pub fn wait_gone(pid: i32) {
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        try_reap(pid);
        if t.elapsed() > TIMEOUT {
            panic!("pid {pid} does not go away ({})", proc_state(pid));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Poll `f` until it holds; fail naming `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A field of /proc/PID/status ("State", "TracerPid", "Uid", ...), trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

/// What a process is doing, for failure messages.
pub fn proc_state(pid: i32) -> String {
    let rd = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_else(|e| format!("({e})"))
    };
    let status = rd("status");
    let pick: Vec<&str> = status
        .lines()
        .filter(|l| {
            ["State", "SigBlk", "SigPnd", "ShdPnd", "PPid", "TracerPid"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    format!(
        "{}; wchan {}; syscall {}",
        pick.join(", ").replace('\t', " "),
        rd("wchan"),
        rd("syscall").trim()
    )
}

/// The process runs freely: not stopped (State T/t) and not traced.
#[track_caller]
pub fn assert_free(pid: i32, what: &str) {
    // A thread that was just detached can take a moment to leave the stop.
    let t = Instant::now();
    loop {
        let state = status_field(pid, "State").unwrap_or_default();
        let tracer = status_field(pid, "TracerPid").unwrap_or_default();
        let stopped = state.starts_with('T') || state.starts_with('t');
        if !stopped && tracer == "0" {
            return;
        }
        if t.elapsed() > Duration::from_secs(2) {
            panic!(
                "{what}: pid {pid} left {state}, TracerPid {tracer} ({})",
                proc_state(pid)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Names of the files in `dir` that start with `prefix`, sorted.
pub fn files_starting(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &TempDir, script: &str) -> Proc {
        Proc::spawn(dir, "sh", &["-c", script])
    }

    #[test]
    fn waits_find_lines_and_consume_them() {
        let d = TempDir::new("unit-proc");
        let p = sh(&d, "echo READY; echo a=1; echo a=2; sleep 30");
        assert_eq!(p.wait_for("a="), "a=1");
        assert_eq!(p.next_line(), "a=2");
        assert_eq!(p.wait_line(|l| l.starts_with("READY")), "READY");
        assert!(p.alive());
    }

    #[test]
    fn an_error_line_fails_at_once() {
        let d = TempDir::new("unit-proc");
        let p = sh(&d, "echo 'ERROR broken'; sleep 30");
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.wait_line(|l| l == "never")
        }));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("it reported: ERROR broken"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_exit_fails_at_once() {
        let d = TempDir::new("unit-proc");
        let p = sh(&d, "echo bye; exit 3");
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.wait_more_lines(5)));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(
            msg.contains("exited (exit status: 3)") && msg.contains("bye"),
            "{msg}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        // A line printed just before the exit is still found.
        assert_eq!(p.wait_line(|l| l == "bye"), "bye");
    }

    #[test]
    fn drop_kills_and_reaps() {
        let d = TempDir::new("unit-proc");
        let pid = sh(&d, "sleep 30").pid;
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
