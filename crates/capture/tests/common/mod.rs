//! Helpers for the capture tests: compile small C programs, run them, read
//! their output, and keep captured pages in memory.
#![allow(dead_code)]

use ckpt_capture::{PageSink, Result};
use ckpt_image::Blob;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for this test (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ckpt-capture-{tag}-{}-{}",
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
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compile C source into `dir/name`.
pub fn compile(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
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

/// A running test program whose stdout we read line by line.
pub struct Proc {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    pub pid: i32,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
        let out = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id() as i32;
        Proc { child, out, pid }
    }

    pub fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.out.read_line(&mut s).expect("read line");
        assert!(n > 0, "pid {}: output ended", self.pid);
        s.trim_end().to_string()
    }

    /// Read lines until one starts with `prefix`; return it.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            let l = self.line();
            assert!(!l.starts_with("ERROR"), "program reported: {l}");
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// State letter from /proc/PID/stat.
    pub fn state(&self) -> String {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        s.rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "key=value" from a line of words.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_string()
}

pub fn hex_field(line: &str, key: &str) -> u64 {
    let v = field(line, key);
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

/// Pages and blobs kept in memory.
#[derive(Default)]
pub struct MemSink {
    pub pages: BTreeMap<u64, Vec<u8>>,
    pub blobs: Vec<Vec<u8>>,
    pub calls: usize,
    pub last_addr: Option<u64>,
}

impl MemSink {
    /// Bytes at `addr` if saved.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let (&start, data) = self.pages.range(..=addr).next_back()?;
        let off = (addr - start) as usize;
        data.get(off..off + len).map(<[u8]>::to_vec)
    }
    pub fn blob(&self, b: &Blob) -> Vec<u8> {
        let mut v = self.blobs[b.frames[0] as usize].clone();
        v.truncate(b.size as usize);
        v
    }
    pub fn total(&self) -> u64 {
        self.pages.values().map(|v| v.len() as u64).sum()
    }
}

impl PageSink for MemSink {
    fn add_pages(&mut self, _pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        assert_eq!(addr % 4096, 0);
        assert_eq!(data.len() % 4096, 0);
        if let Some(l) = self.last_addr {
            assert!(addr >= l, "pages out of order: {addr:#x} after {l:#x}");
        }
        self.last_addr = Some(addr + data.len() as u64);
        self.calls += 1;
        self.pages.insert(addr, data.to_vec());
        Ok(())
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        self.blobs.push(data.to_vec());
        Ok(Blob {
            size: data.len() as u64,
            frames: vec![self.blobs.len() as u32 - 1],
        })
    }
}

/// A sink that drops everything (for timing).
#[derive(Default)]
pub struct NullSink {
    pub bytes: u64,
}

impl PageSink for NullSink {
    fn add_pages(&mut self, _pid: i32, _addr: u64, data: &[u8]) -> Result<()> {
        self.bytes += data.len() as u64;
        Ok(())
    }
    fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        Ok(Blob {
            size: data.len() as u64,
            frames: vec![],
        })
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
