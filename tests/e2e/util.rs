//! Helpers for the end-to-end tests: build fixtures, run them with their
//! output in a file, dump and restore them with the real `ckpt` binary.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture programs, built once per test run with tests/fixtures/Makefile.
pub fn fixture(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = repo().join("target/fixtures");
    BUILD.call_once(|| {
        let st = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo().join("tests/fixtures"))
            .arg(format!("FIXTURE_DIR={}", dir.display()))
            .status()
            .expect("running make for the fixtures (is make installed?)");
        assert!(st.success(), "building fixtures failed");
        // Restored processes are reparented to us, so we can reap them.
        ckpt_sys::sys::set_child_subreaper().expect("PR_SET_CHILD_SUBREAPER");
    });
    dir.join(name)
}

/// Held by the tests that load the machine (300 MB targets) and by those
/// whose sweeps are timed: they take turns instead of skewing each other.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn ckpt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
}

/// Run ckpt with args; returns its output (no assertion).
pub fn ckpt_run(args: &[&str]) -> Output {
    ckpt()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ckpt")
}

/// Run ckpt with args and require success.
pub fn ckpt_ok(args: &[&str]) -> String {
    let o = ckpt_run(args);
    assert!(
        o.status.success(),
        "ckpt {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub struct TempDir(PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("ckpt-e2e-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process under test whose stdout/stderr go to a file (opened O_APPEND,
/// so a restored process keeps writing to the same file).
pub struct Proc {
    pub pid: i32,
    pub out: PathBuf,
    child: Option<Child>,
    /// False once the process is known dead: its pid may be reused (by a
    /// restore of it), and we must not kill that one on drop.
    owned: bool,
}

impl Proc {
    pub fn spawn(dir: &TempDir, prog: &Path, args: &[&str]) -> Proc {
        Self::spawn_cmd(dir, Command::new(prog).args(args))
    }

    pub fn spawn_cmd(dir: &TempDir, cmd: &mut Command) -> Proc {
        let out = dir.join(&format!("out-{}.txt", std::process::id()));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap();
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn fixture");
        Proc {
            pid: child.id() as i32,
            out,
            child: Some(child),
            owned: true,
        }
    }

    /// A restored process: we only know its pid and output file.
    pub fn adopt(pid: i32, out: &Path) -> Proc {
        Proc {
            pid,
            out: out.to_path_buf(),
            child: None,
            owned: true,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait until the output has a line matching `pred` after the first
    /// `skip` lines; returns that line.
    pub fn wait_line_after(&self, skip: usize, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let out = self.output();
            if let Some(l) = out.lines().skip(skip).find(|l| pred(l)) {
                return l.to_string();
            }
            if let Some(l) = out.lines().find(|l| l.starts_with("ERROR")) {
                panic!("pid {}: fixture reported {l}\noutput:\n{out}", self.pid);
            }
            if t.elapsed() > TIMEOUT {
                panic!(
                    "pid {}: timed out waiting for a line ({})\noutput:\n{}",
                    self.pid,
                    proc_state(self.pid),
                    tail(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_after(0, pred)
    }

    pub fn line_count(&self) -> usize {
        self.output().lines().count()
    }

    /// Wait for `n` more lines than there are now.
    pub fn wait_more_lines(&self, n: usize) {
        let have = self.line_count();
        let t = Instant::now();
        while self.line_count() < have + n {
            assert!(
                t.elapsed() < TIMEOUT,
                "pid {}: no progress ({})\n{}",
                self.pid,
                proc_state(self.pid),
                tail(&self.output())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(s) => !s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
            Err(_) => false,
        }
    }

    /// After `ckpt dump` killed it: reap it so its pid is free again.
    pub fn reap(&mut self) {
        self.owned = false;
        if let Some(mut c) = self.child.take() {
            let st = c.wait().unwrap();
            assert!(!st.success(), "the dumped process should have been killed");
        } else {
            wait_gone(self.pid);
        }
    }

    pub fn kill(&mut self) {
        if self.owned {
            let _ = ckpt_sys::sys::kill(self.pid, 9);
            self.reap_quiet();
        }
        self.owned = false;
    }

    fn reap_quiet(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        } else {
            wait_gone(self.pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `pid` has disappeared (reaping orphans adopted by us).
pub fn wait_gone(pid: i32) {
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        ckpt_sys::sys::try_reap(pid);
        if t.elapsed() > TIMEOUT {
            panic!("pid {pid} does not go away");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Dump (killing the process) and reap it.
pub fn dump_kill(p: &mut Proc, image: &Path) {
    ckpt_ok(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    p.reap();
}

/// `ckpt dump --leave-running` to `image`, which must succeed; its stdout.
pub fn dump_leave_running(pid: i32, image: &Path) -> String {
    ckpt_ok(&[
        "dump",
        &pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "--leave-running",
    ])
}

/// `ckpt restore --detach`; returns the restored process, checked to be at the saved pid.
pub fn restore_detached(image: &Path, out: &Path, expect_pid: i32) -> Proc {
    let s = ckpt_ok(&["restore", "--detach", image.to_str().unwrap()]);
    let pid: i32 = s
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("restore printed {s:?}"));
    assert_eq!(pid, expect_pid, "restored at another pid");
    Proc::adopt(pid, out)
}

/// Numbers following `key=` in every line that has it.
pub fn values(out: &str, key: &str) -> Vec<i64> {
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

#[allow(dead_code)]
pub fn file(p: &Path) -> File {
    File::open(p).unwrap()
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

// ---------------------------------------------------------------------
// Helpers of the fault, hostile-input and security tests.

/// A small C program given as source, compiled once per test run into
/// target/fixtures-extra/NAME (with tests/fixtures/fixture.h on the include path).
pub fn c_fixture(name: &str, src: &str) -> PathBuf {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let _ = fixture("counter"); // the subreaper setting, and make's fixtures
    let dir = repo().join("target/fixtures-extra");
    let bin = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.contains(name) {
        return bin;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.{}.c", std::process::id()));
    std::fs::write(&c, src).unwrap();
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let o = Command::new("gcc")
        .args(["-O1", "-g", "-pthread", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&c)
        .arg("-I")
        .arg(repo().join("tests/fixtures"))
        .output()
        .expect("running gcc (is gcc installed?)");
    assert!(
        o.status.success(),
        "compiling {name} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &bin).unwrap();
    let _ = std::fs::remove_file(&c);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    built.insert(name.to_string());
    bin
}

/// `target [MIB] [INTERVAL_MS] [EXIT_AFTER_MS] [DUMPABLE]`: a counter like
/// tests/fixtures/counter.c ("count=N" lines, no gap, no repeat) that also
/// holds MIB MiB of incompressible heap whose checksum it re-checks every
/// line ("ERROR" if it changes), counts SIGUSR1s in a handler ("usr1=N" on
/// each line), exits 0 after EXIT_AFTER_MS ms when that is > 0, and calls
/// prctl(PR_SET_DUMPABLE, 0) when DUMPABLE is 0.
pub fn target_fixture() -> PathBuf {
    c_fixture(
        "target",
        r#"
#include "fixture.h"
#include <signal.h>
#include <sys/prctl.h>

volatile long count;
volatile sig_atomic_t usr1;

static void on_usr1(int s) { (void)s; usr1++; }

static uint64_t checksum(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i += 512)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv)
{
    fx_init();
    long mib = arg_long(argc, argv, 1, 0);
    long interval = arg_long(argc, argv, 2, 20);
    long exit_ms = arg_long(argc, argv, 3, 0);
    long dumpable = arg_long(argc, argv, 4, 1);
    struct sigaction sa = { 0 };
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    if (!dumpable && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fail("prctl: %s", strerror(errno));
    size_t n = (size_t)mib << 20;
    unsigned char *mem = n ? malloc(n) : NULL;
    uint64_t x = 88172645463325252ULL ^ (uint64_t)getpid();
    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(mem + i, &x, 8);
    }
    uint64_t sum = checksum(mem, n);
    int64_t start = mono_ns();
    long last = -1;
    say("READY pid=%d uid=%d mib=%ld", getpid(), (int)getuid(), mib);
    for (;;) {
        if (count != last + 1)
            fail("count jumped from %ld to %ld", last, count);
        if (n && checksum(mem, n) != sum)
            fail("memory changed");
        say("count=%ld usr1=%ld", count, (long)usr1);
        last = count;
        count++;
        if (exit_ms > 0 && mono_ns() - start > exit_ms * 1000000LL)
            exit(0);
        msleep(interval);
    }
}
"#,
    )
}

/// A field of /proc/PID/status ("State", "TracerPid", "Uid", ...), trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

/// The process runs freely: not stopped (State T/t) and not traced.
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

/// Run `cmd` to completion with a deadline: a hang is killed and fails the test.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    // Drain the pipes in threads so a chatty child cannot block.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
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

/// ckpt with args, under a deadline.
pub fn ckpt_timeout(args: &[&str], limit: Duration) -> Output {
    run_timeout(ckpt().args(args), limit)
}

/// A command run as user nobody (uid/gid 65534, no supplementary groups).
pub fn as_nobody(prog: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(prog);
    // Only fds 0-2: the test harness may leak others (a pipe of root's
    // that nobody's process could not even reopen).
    ckpt_sys::proc::close_fds_before_exec(&mut c, 3);
    c
}

/// Make `p` owned by nobody.
pub fn chown_nobody(p: &Path) {
    let st = Command::new("chown")
        .arg("65534:65534")
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success(), "chown nobody {}", p.display());
}

/// stderr of an output, lossy.
pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The output must be a clean failure: non-zero exit, a message, no panic.
pub fn assert_clean_failure(o: &Output, what: &str) -> String {
    let err = stderr_of(o);
    assert!(
        !o.status.success(),
        "{what}: succeeded\nstdout: {}",
        String::from_utf8_lossy(&o.stdout)
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

/// Files in `dir` whose name starts with `prefix`.
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
