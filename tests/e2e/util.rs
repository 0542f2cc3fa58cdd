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
