//! Dump/restore benchmark (issue 5): `cargo build --release && cargo bench --bench dumprestore`.
//!
//! For each size x data kind it starts benches/memhog.c, dumps it with the
//! real `ckpt` binary (`--reps` times with --leave-running, which gives the
//! freeze time, then once killing it), restores it, checks the restored
//! memory's checksum, reads the big mapping back through ckptfs `mem`, and
//! prints dump/restore/freeze times, image size, ckpt's peak RSS and the
//! ckptfs read speed, with ratios to baselines measured in the same run:
//! memcpy of the same amount of memory and `dd conv=fsync` writing it to the
//! same disk as the images. BENCHMARKS.md explains every column.
//!
//! Options: --quick (16 MiB only, one repetition: the CI smoke check),
//! --sizes 16,256,1024, --kinds random,mixed,zeros, --reps N (leave-running
//! dumps per cell, default 3), --dir DIR (where images go; default
//! target/bench), --compress none|fast|best, --no-fs (skip ckptfs).
//!
//! With --criu PATH it then compares ckpt with that CRIU binary in the same
//! run (dumprestore/vs_criu.rs): mixed data at --criu-sizes (default
//! 1,256,1024; 1 with --quick) and a tree of --tree N processes (default
//! 100, benches/proctree.c), with ckpt/CRIU ratios. --criu-only skips the
//! ckpt-only matrix and tiny line.
//!
//! memhog writes its "READY sum=" and "sum=" lines to a file (its third
//! argument) and runs with stdout/stderr on /dev/null; ckpt's own output
//! goes to files too. So no pipe is shared between the benchmark, ckpt and
//! the restored process, whatever restore does with standard descriptors.
//!
//! With --grep it only measures `grep -r` over a freshly mounted image of
//! --grep-mib MiB (default 1024) of mixed data, cold, next to grep over a
//! plain copy of the same files (dumprestore/fs_grep.rs).

#[path = "dumprestore/fs_grep.rs"]
mod fs_grep;
#[path = "dumprestore/incr_lazy.rs"]
mod incr_lazy;
#[path = "dumprestore/vs_criu.rs"]
mod vs_criu;

use ckpt_sys::proc;
use ckpt_sys::proc::wait::{self, ExitKind};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIGHUP: i32 = 1;
const SIGUSR1: i32 = 10;
const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ckpt_bin() -> PathBuf {
    // cargo builds the package's binaries for its benches.
    let p = PathBuf::from(env!("CARGO_BIN_EXE_ckpt"));
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release` first",
        p.display()
    );
    p
}

/// target/release/ckptfs (another package: built by `cargo build --release`).
fn ckptfs_bin() -> Option<PathBuf> {
    let p = ckpt_bin().parent()?.join("ckptfs");
    p.exists().then_some(p)
}

/// Wait until `path` has a line starting with `prefix` at or after byte
/// `from`; returns the line and the offset after it.
fn wait_line(path: &Path, prefix: &str, from: usize, timeout: Duration) -> (String, usize) {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut off = from.min(text.len());
        for line in text[off..].split_inclusive('\n') {
            off += line.len();
            if line.ends_with('\n') && line.starts_with(prefix) {
                return (line.trim().to_string(), off);
            }
        }
        assert!(
            t.elapsed() < timeout,
            "no {prefix:?} line in {} after {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Hog {
    child: Child,
    out: PathBuf,
    sum: String,
    addr: u64,
}

impl Hog {
    fn start(bin: &Path, dir: &Path, mib: u64, kind: &str) -> Hog {
        let out = dir.join(format!("memhog-{mib}-{kind}.out"));
        let _ = std::fs::remove_file(&out);
        let child = Command::new(bin)
            .args([mib.to_string(), kind.to_string()])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memhog");
        let (line, _) = wait_line(&out, "READY sum=", 0, Duration::from_secs(120));
        let sum = field(&line, "sum=").to_string();
        let addr = u64::from_str_radix(field(&line, "addr=").trim_start_matches("0x"), 16).unwrap();
        Hog {
            child,
            out,
            sum,
            addr,
        }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// SIGUSR1 to `pid` (this hog or its restored copy): the checksum it
    /// prints, and the longest gaps its idle loop saw since the last report.
    fn ask_sum(&self, pid: i32) -> (String, Gaps) {
        let line = self.ask(pid, SIGUSR1, "sum=");
        (field(&line, "sum=").to_string(), Gaps::of(&line))
    }
    /// SIGUSR2 to `pid`: the longest gaps its idle loop saw since the last
    /// report (the freeze of a dump in between, as the process saw it).
    fn ask_gap(&self, pid: i32) -> Gaps {
        Gaps::of(&self.ask(pid, SIGUSR2, "gap_us="))
    }
    fn ask(&self, pid: i32, sig: i32, prefix: &str) -> String {
        let from = std::fs::metadata(&self.out).map_or(0, |m| m.len() as usize);
        proc::kill(pid, sig).unwrap();
        wait_line(&self.out, prefix, from, Duration::from_secs(60)).0
    }
}

/// The longest gaps between two readings of memhog's 1 ms idle loop.
struct Gaps {
    /// Of CLOCK_MONOTONIC: how long a dump stopped the process.
    mono: Duration,
    /// Of CLOCK_REALTIME: also across a restore (CRIU gives a restored
    /// process a time namespace whose monotonic clock hides the downtime).
    wall: Duration,
}

impl Gaps {
    fn of(line: &str) -> Gaps {
        let us = |k: &str| Duration::from_micros(field(line, k).parse().expect("a gap in µs"));
        Gaps {
            mono: us("gap_us="),
            wall: us("wall_gap_us="),
        }
    }
}

/// The value of `key` (e.g. "sum=") among the words of `line`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// What a ckpt (or CRIU) run cost.
struct Run {
    wall: Duration,
    /// Peak RSS of the ckpt process, KiB (0: not measured).
    rss: u64,
    out: String,
    err: String,
    /// How the command ended.
    exit: ExitKind,
}

impl Run {
    fn ok(&self) -> bool {
        self.exit == ExitKind::Exited(0)
    }
    /// The first line of stderr that says something (for a failure's cell).
    fn first_err_line(&self) -> String {
        let line = self.err.lines().map(str::trim).find(|l| !l.is_empty());
        line.map_or_else(|| format!("{:?}, no message", self.exit), String::from)
    }
}

/// GNU time, to measure ckpt's peak RSS: wait4's ru_maxrss of a process
/// started by this (big) benchmark counts the benchmark's own peak too (exec
/// records the peak of the memory it replaces, and a spawned child starts
/// sharing or copying ours), while /usr/bin/time is small and forks ckpt.
const TIME: &str = "/usr/bin/time";

/// Run ckpt; panics if it fails.
fn run_ckpt(dir: &Path, args: &[&str], rss: bool) -> Run {
    let r = run_tool(dir, &ckpt_bin(), args, rss);
    assert!(r.ok(), "ckpt {args:?} failed ({:?}): {}", r.exit, r.err);
    r
}

/// Run `bin` with stdout/stderr to files (no pipe a restored process could
/// keep open); with `rss`, through /usr/bin/time for its peak RSS (when
/// installed; else wait4's, an upper bound).
fn run_tool(dir: &Path, bin: &Path, args: &[&str], rss: bool) -> Run {
    let (so, se, sr) = (
        dir.join("tool.stdout"),
        dir.join("tool.stderr"),
        dir.join("tool.rss"),
    );
    let via_time = rss && Path::new(TIME).exists();
    let mut cmd = if via_time {
        let mut c = Command::new(TIME);
        c.arg("-f").arg("%M").arg("-o").arg(&sr).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let t = Instant::now();
    // Reaped below with wait4 (for its rusage), not Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&so).unwrap())
        .stderr(File::create(&se).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let (exit, wait_rss) = wait::wait_child_rusage(child.id() as i32).unwrap();
    let wall = t.elapsed();
    let out = std::fs::read_to_string(&so).unwrap_or_default();
    let err = std::fs::read_to_string(&se).unwrap_or_default();
    let rss = match (rss, via_time) {
        (false, _) => 0,
        (true, false) => wait_rss,
        (true, true) => std::fs::read_to_string(&sr)
            .ok()
            .and_then(|s| s.lines().last()?.trim().parse().ok())
            .unwrap_or(0),
    };
    Run {
        wall,
        rss,
        out,
        err,
        exit,
    }
}

/// Best of 3 memcpy of `mib` MiB, in a child process (`--memcpy MIB`) so
/// that this process stays small (see TIME).
fn memcpy_time(mib: u64) -> Duration {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--memcpy", &mib.to_string()])
        .output()
        .expect("memcpy baseline");
    assert!(out.status.success());
    let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Duration::from_nanos(ns)
}

fn memcpy_child(bytes: usize) -> Duration {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault the pages in first
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
        best = best.min(t.elapsed());
    }
    best
}

fn dd_time(dir: &Path, mib: u64) -> Duration {
    let f = dir.join("dd.bin");
    let t = Instant::now();
    let st = Command::new("dd")
        .args([
            "if=/dev/zero".to_string(),
            format!("of={}", f.display()),
            "bs=1M".into(),
            format!("count={mib}"),
            "conv=fsync".into(),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let el = t.elapsed();
    assert!(st.success());
    let _ = std::fs::remove_file(f);
    el
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn parse_frozen(stderr: &str) -> Option<f64> {
    let i = stderr.find("frozen ")?;
    stderr[i + 7..].split_whitespace().next()?.parse().ok()
}

/// A ckptfs mount of the image store, unmounted (SIGTERM) on drop.
struct Fs {
    child: Child,
    mnt: PathBuf,
}

impl Fs {
    fn mount(bin: &Path, store: &Path, mnt: &Path) -> Option<Fs> {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(mnt)
            .stderr(Stdio::null())
            .status();
        std::fs::create_dir_all(mnt).ok()?;
        let mut child = Command::new(bin)
            .arg("--store")
            .arg(store)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let m = mnt.to_str()?;
            if mounts.lines().any(|l| l.split(' ').nth(4) == Some(m)) {
                return Some(Fs {
                    child,
                    mnt: mnt.to_path_buf(),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Read `mib` MiB of `pid`'s memory at `addr` from image `name` with dd; seconds.
    fn read_mem(&self, name: &str, pid: i32, addr: u64, mib: u64) -> Option<f64> {
        let mem = self.mnt.join(name).join(pid.to_string()).join("mem");
        let t = Instant::now();
        let out = Command::new("dd")
            .arg(format!("if={}", mem.display()))
            .args([
                "of=/dev/null".to_string(),
                "bs=1M".into(),
                "iflag=skip_bytes,fullblock".into(),
                format!("skip={addr}"),
                format!("count={mib}"),
            ])
            .output()
            .ok()?;
        let el = t.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{} bytes", mib << 20);
        (out.status.success() && err.contains(&want)).then_some(el)
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        let _ = proc::kill(self.child.id() as i32, SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kill a restored process (our descendant: we are a subreaper) and reap it.
fn kill_restored(rpid: i32) {
    let _ = proc::kill(rpid, SIGKILL);
    let t = Instant::now();
    while Path::new(&format!("/proc/{rpid}")).exists() && t.elapsed() < Duration::from_secs(10) {
        wait::reap_any();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The command line (after `--`).
struct Opts {
    quick: bool,
    sizes: Vec<u64>,
    kinds: Vec<String>,
    reps: usize,
    compress: String,
    dir: PathBuf,
    store: PathBuf,
    no_fs: bool,
    /// `--criu PATH`: compare with this CRIU binary.
    criu: Option<PathBuf>,
    /// `--criu-sizes`: the mixed-data sizes of the comparison, MiB.
    criu_sizes: Vec<u64>,
    /// `--tree N`: processes in the tree row of the comparison.
    tree: usize,
    /// `--criu-only`: skip the ckpt-only matrix and tiny line.
    criu_only: bool,
    /// `--grep`: only the `grep -r` measurement, of `--grep-mib` MiB.
    grep: bool,
    grep_mib: u64,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let opt = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1).cloned())
        };
        let flag = |name: &str| args.iter().any(|a| a == name);
        // `--criu-sizes none`: no memory rows (the tree row alone).
        let list = |s: String| -> Vec<u64> {
            s.split(',')
                .filter(|x| !x.is_empty() && *x != "none")
                .map(|x| x.parse().expect("a list of MiB like 16,256"))
                .collect()
        };
        let quick = flag("--quick");
        let dir = opt("--dir").map_or_else(|| repo().join("target/bench"), PathBuf::from);
        Opts {
            quick,
            sizes: opt("--sizes").map(list).unwrap_or(if quick {
                vec![16]
            } else {
                vec![16, 256, 1024]
            }),
            kinds: opt("--kinds")
                .map(|s| s.split(',').map(String::from).collect())
                .unwrap_or(vec!["random".into(), "mixed".into(), "zeros".into()]),
            reps: opt("--reps")
                .map(|s| s.parse().unwrap())
                .unwrap_or(if quick { 1 } else { 3 })
                .max(1),
            compress: opt("--compress").unwrap_or("fast".into()),
            store: dir.join("store"),
            dir,
            no_fs: flag("--no-fs"),
            criu: opt("--criu").map(PathBuf::from),
            criu_sizes: opt("--criu-sizes").map(list).unwrap_or(if quick {
                vec![1]
            } else {
                vec![1, 256, 1024]
            }),
            tree: opt("--tree").map_or(100, |s| s.parse().expect("--tree N")),
            criu_only: flag("--criu-only"),
            grep: flag("--grep"),
            grep_mib: opt("--grep-mib").map_or(1024, |s| s.parse().expect("--grep-mib MIB")),
        }
    }
}

/// Compile one of the C fixtures in benches/ into the scratch directory.
fn compile(dir: &Path, name: &str) -> PathBuf {
    let bin = dir.join(name);
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(repo().join(format!("benches/{name}.c")))
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc benches/{name}.c failed");
    bin
}

/// "1.12 1.75 1.98": the load average, to print next to the numbers.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, mib] = &args[..] {
        if flag == "--memcpy" {
            let d = memcpy_child(mib.parse::<usize>().unwrap() << 20);
            println!("{}", d.as_nanos());
            return;
        }
    }
    let o = Opts::parse(&args);
    std::fs::create_dir_all(&o.store).unwrap();
    if o.grep {
        fs_grep::run(&o, o.grep_mib);
        return;
    }
    let hog = compile(&o.dir, "memhog");
    proc::set_child_subreaper().unwrap();
    if !o.criu_only {
        matrix(&o, &hog);
        tiny(&o, &hog);
    }
    if let Some(criu) = &o.criu {
        let tree = compile(&o.dir, "proctree");
        vs_criu::compare(&o, criu, &hog, &tree);
    }
}

/// The ckptfs mount for the `fs MB/s` column, unless --no-fs or unavailable.
fn mount_fs(o: &Opts) -> Option<Fs> {
    if o.no_fs {
        return None;
    }
    let Some(bin) = ckptfs_bin() else {
        println!(
            "(no target/release/ckptfs: `cargo build --release` builds it; no mem read column)"
        );
        return None;
    };
    let fs = Fs::mount(&bin, &o.store, &o.dir.join("mnt"));
    if fs.is_none() {
        println!("(ckptfs could not be mounted: no mem read column)");
    }
    fs
}

/// The ckpt-only matrix: sizes x kinds, with the memcpy and dd baselines.
fn matrix(o: &Opts, hog: &Path) {
    let fs = mount_fs(o);
    println!(
        "ckpt dump/restore benchmark (compress={}, {} leave-running dump(s) per cell, images in {}, load {})",
        o.compress,
        o.reps,
        o.store.display(),
        load_average()
    );
    println!(
        "{:>5} {:>6} | {:>8} {:>8} {:>8} | {:>8} {:>6} | {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>8}",
        "MiB",
        "data",
        "dump ms",
        "frozen",
        "restore",
        "img MiB",
        "ratio",
        "dumpRSS",
        "restRSS",
        "dump/dd",
        "dump/cp",
        "rest/dd",
        "fs MB/s"
    );
    for &mib in &o.sizes {
        let cpy = memcpy_time(mib);
        let dd = median((0..3).map(|_| dd_time(&o.dir, mib)).collect());
        for kind in &o.kinds {
            matrix_cell(o, hog, fs.as_ref(), mib, kind, (cpy, dd));
        }
        println!(
            "{:>5} baselines: memcpy {:.1} ms, dd conv=fsync {:.1} ms (median of 3)",
            mib,
            cpy.as_secs_f64() * 1e3,
            dd.as_secs_f64() * 1e3
        );
    }
}

/// One line of the matrix; `base` is (memcpy, dd) of this size.
fn matrix_cell(
    o: &Opts,
    hog: &Path,
    fs: Option<&Fs>,
    mib: u64,
    kind: &str,
    base: (Duration, Duration),
) {
    let (cpy, dd) = base;
    let compress = o.compress.as_str();
    let name = format!("bench-{mib}-{kind}");
    let image = o.store.join(format!("{name}.ckpt"));
    let img = image.to_str().unwrap();
    let mut h = Hog::start(hog, &o.dir, mib, kind);
    let pid = h.pid().to_string();
    let mut walls = Vec::new();
    let mut frozen = Vec::new();
    let mut rss = 0;
    for _ in 0..o.reps {
        // A fresh path each time: replacing an image would add the
        // freeing of the old one (its page cache, its blocks) to the dump.
        let _ = std::fs::remove_file(&image);
        let args = [
            "dump",
            &pid,
            "-o",
            img,
            "--leave-running",
            "--compress",
            compress,
        ];
        let r = run_ckpt(&o.dir, &args, true);
        frozen.push(Duration::from_secs_f64(
            parse_frozen(&r.err).unwrap_or(f64::NAN) / 1e3,
        ));
        walls.push(r.wall);
        rss = rss.max(r.rss);
    }
    let _ = std::fs::remove_file(&image);
    let r = run_ckpt(
        &o.dir,
        &["dump", &pid, "-o", img, "--compress", compress],
        true,
    );
    walls.push(r.wall);
    rss = rss.max(r.rss);
    let _ = h.child.wait();
    let t_dump = median(walls);
    let frozen = median(frozen);
    let size = std::fs::metadata(&image).unwrap().len();
    let fs_secs = fs.and_then(|fs| fs.read_mem(&name, h.pid(), h.addr, mib));
    let rest = run_ckpt(&o.dir, &["restore", "--detach", img], true);
    let rpid: i32 = rest.out.trim().parse().unwrap();
    let (sum, _) = h.ask_sum(rpid);
    kill_restored(rpid);
    assert_eq!(sum, h.sum, "restored memory differs ({mib} MiB {kind})");
    let dd_s = dd.as_secs_f64();
    println!(
        "{:>5} {:>6} | {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>6.3} | {:>6}M {:>6}M | {:>7.2} {:>7.2} {:>7.2} | {:>8}",
        mib,
        kind,
        t_dump.as_secs_f64() * 1e3,
        frozen.as_secs_f64() * 1e3,
        rest.wall.as_secs_f64() * 1e3,
        size as f64 / 1048576.0,
        size as f64 / (mib << 20) as f64,
        rss / 1024,
        rest.rss / 1024,
        t_dump.as_secs_f64() / dd_s,
        t_dump.as_secs_f64() / cpy.as_secs_f64(),
        rest.wall.as_secs_f64() / dd_s,
        fs_secs.map_or("-".into(), |s| format!("{:.0}", (mib << 20) as f64 / s / 1e6)),
    );
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&h.out);
}

/// A tiny process: the fixed cost of dump and restore.
fn tiny(o: &Opts, hog: &Path) {
    let dir = o.dir.as_path();
    let mut h = Hog::start(hog, dir, 1, "zeros");
    let image = o.store.join("bench-tiny.ckpt");
    let img = image.to_str().unwrap();
    let pid = h.pid().to_string();
    let mut dumps = vec![];
    let n = if o.quick { 3 } else { 9 };
    for _ in 0..n {
        let _ = std::fs::remove_file(&image);
        let r = run_ckpt(dir, &["dump", &pid, "-o", img, "--leave-running"], false);
        dumps.push(r.wall);
    }
    // Its peak RSS: the baseline of the big dumps' RSS.
    let _ = std::fs::remove_file(&image);
    let rss = run_ckpt(dir, &["dump", &pid, "-o", img, "--leave-running"], true).rss;
    let _ = std::fs::remove_file(&image);
    let kill_dump = run_ckpt(dir, &["dump", &pid, "-o", img], false);
    let _ = h.child.wait();
    let rest = run_ckpt(dir, &["restore", "--detach", img], false);
    let rpid: i32 = rest.out.trim().parse().unwrap();
    let (sum, _) = h.ask_sum(rpid);
    kill_restored(rpid);
    assert_eq!(sum, h.sum, "restored memory differs (tiny)");
    println!(
        "tiny process (1 MiB): dump {:.1} ms (median of {n} leave-running: {:.1} ms, peak RSS {} KiB), restore {:.1} ms (wall time of the ckpt command)",
        kill_dump.wall.as_secs_f64() * 1e3,
        median(dumps).as_secs_f64() * 1e3,
        rss,
        rest.wall.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&h.out);
}
