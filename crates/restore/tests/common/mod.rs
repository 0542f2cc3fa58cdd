//! Helpers for the restore tests: compile small C programs, run them with
//! their output in a file (O_APPEND, so that a restored process goes on
//! writing to it), dump them with ckpt-capture and restore them.
#![allow(dead_code)]

use ckpt_image::ImageReader;
use ckpt_restore::{RestoreOptions, Restored};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);
static N: AtomicU32 = AtomicU32::new(0);

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ckpt-restore-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
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

/// Compile C source into `dir/name`.
pub fn compile(dir: &TempDir, name: &str, src: &str) -> PathBuf {
    let c = dir.join(&format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&c, src).unwrap();
    let out = Command::new("cc")
        .args(["-O1", "-g", "-pthread", "-o"])
        .arg(&bin)
        .arg(&c)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A process under test (spawned or restored) writing lines to `out`.
pub struct Proc {
    pub pid: i32,
    pub out: PathBuf,
    pub reaped: bool,
}

impl Proc {
    pub fn spawn(dir: &TempDir, bin: &Path, args: &[&str]) -> Proc {
        let out = dir.join("out.txt");
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap();
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn test program");
        let pid = child.id() as i32;
        // The Child handle is not needed: we reap by pid.
        std::mem::forget(child);
        Proc {
            pid,
            out,
            reaped: false,
        }
    }

    pub fn restored(r: &Restored, out: &Path) -> Proc {
        Proc {
            pid: r.pid,
            out: out.to_path_buf(),
            reaped: false,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn lines(&self) -> usize {
        self.output().lines().count()
    }

    /// Wait for a line after the first `skip` lines that matches `pred`.
    pub fn wait_line_after(&self, skip: usize, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let out = self.output();
            if let Some(l) = out.lines().skip(skip).find(|l| pred(l)) {
                return l.to_string();
            }
            if let Some(l) = out.lines().find(|l| l.starts_with("ERROR")) {
                panic!("pid {}: program reported {l}\n{}", self.pid, tail(&out));
            }
            assert!(
                t.elapsed() < TIMEOUT,
                "pid {}: timed out waiting for a line\n{}",
                self.pid,
                tail(&out)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_after(0, pred)
    }

    /// Wait for `n` more lines than there are now.
    pub fn wait_more(&self, n: usize) {
        let have = self.lines();
        let t = Instant::now();
        while self.lines() < have + n {
            let out = self.output();
            if let Some(l) = out.lines().find(|l| l.starts_with("ERROR")) {
                panic!("pid {}: program reported {l}\n{}", self.pid, tail(&out));
            }
            assert!(
                t.elapsed() < TIMEOUT,
                "pid {}: no progress\n{}",
                self.pid,
                tail(&out)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn alive(&self) -> bool {
        !self.reaped
            && std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
    }

    /// Kill (if still running) and reap.
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = ckpt_sys::sys::kill(self.pid, libc::SIGKILL);
            let _ = ckpt_sys::sys::wait_child_exit(self.pid);
            self.reaped = true;
        }
    }

    /// Reap after a dump killed it.
    pub fn reap(&mut self) {
        if !self.reaped {
            let _ = ckpt_sys::sys::wait_child_exit(self.pid);
            self.reaped = true;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn tail(s: &str) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(30)..].join("\n")
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

/// Dump `p` into `dir/img.ckpt`, killing it, and reap it.
pub fn dump_kill(p: &mut Proc, dir: &TempDir) -> PathBuf {
    let image = dir.join("img.ckpt");
    ckpt_capture::dump(p.pid, &image, ckpt_capture::DumpOptions::default())
        .unwrap_or_else(|e| panic!("dump of pid {} failed: {e}", p.pid));
    p.reap();
    image
}

pub fn restore(image: &Path, opts: &RestoreOptions) -> ckpt_restore::Result<Restored> {
    let reader = ImageReader::open(image).expect("open image");
    ckpt_restore::restore(&reader, opts)
}

/// Whether any process other than `except` runs `bin`.
pub fn runs_binary(bin: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            if exe == bin {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Compile one of the project's fixture programs (tests/fixtures/NAME.c).
pub fn fixture(dir: &TempDir, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let bin = dir.join(name);
    let out = Command::new("cc")
        .args(["-O1", "-g", "-pthread", "-Wall", "-o"])
        .arg(&bin)
        .arg(src.join(format!("{name}.c")))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc {name}.c failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Spawn, wait for READY and `warmup` more lines, dump (killing it), reap,
/// restore at the same pid; checks that it goes on without starting over.
/// Returns the restored process and the number of lines before the dump.
pub fn roundtrip(dir: &TempDir, bin: &Path, args: &[&str], warmup: usize) -> (Proc, usize) {
    let mut p = Proc::spawn(dir, bin, args);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more(warmup);
    let image = dump_kill(&mut p, dir);
    let before = p.lines();
    let r = restore(&image, &RestoreOptions::default()).unwrap_or_else(|e| panic!("restore: {e}"));
    assert_eq!(r.pid, p.pid, "restored at another pid");
    let q = Proc::restored(&r, &p.out);
    q.wait_more(3);
    let out = q.output();
    assert_eq!(
        out.matches("READY").count(),
        1,
        "started over:\n{}",
        tail(&out)
    );
    assert!(!out.contains("ERROR"), "{}", tail(&out));
    (q, before)
}
