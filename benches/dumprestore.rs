//! Dump/restore benchmark (issue 5): `cargo bench --bench dumprestore`.
//!
//! For each size x data kind it starts benches/memhog.c, dumps it with the
//! real `ckpt` binary (once with --leave-running to see the freeze time, once
//! killing it), restores it, checks the restored memory's checksum, and
//! prints dump/restore/freeze times, image size and ckpt's peak RSS, with
//! ratios to baselines measured in the same run: memcpy of the same amount
//! of memory and `dd conv=fsync` writing it to the same disk as the images.
//!
//! Options: --quick (16 MiB only, for CI), --sizes 16,256,1024,
//! --kinds random,mixed,zeros, --dir DIR (where images go; default target/bench),
//! --compress none|fast|best.

use ckpt_sys::sys::{self, ExitKind};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ckpt_bin() -> PathBuf {
    // cargo bench builds the bin target in the same profile dir.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("ckpt");
    assert!(p.exists(), "{} missing: run `cargo build --release` first", p.display());
    p
}

struct Hog {
    child: Child,
    out: BufReader<ChildStdout>,
    sum: String,
}

impl Hog {
    fn start(bin: &Path, mib: u64, kind: &str) -> Hog {
        let mut child = Command::new(bin)
            .args([mib.to_string(), kind.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start memhog");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let sum = line.trim().strip_prefix("READY sum=").expect("memhog READY").to_string();
        Hog { child, out, sum }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// Run ckpt, returning wall time, peak RSS (KiB) and stderr.
fn run_ckpt(args: &[&str]) -> (Duration, u64, String, String) {
    let t = Instant::now();
    let child = Command::new(ckpt_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Read output on threads so a chatty child cannot block.
    let mut so = child.stdout.unwrap();
    let mut se = child.stderr.unwrap();
    let ho = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut so, &mut s).ok();
        s
    });
    let he = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut se, &mut s).ok();
        s
    });
    let (kind, rss) = sys::wait_child_rusage(pid).unwrap();
    let el = t.elapsed();
    let (out, err) = (ho.join().unwrap(), he.join().unwrap());
    assert_eq!(kind, ExitKind::Exited(0), "ckpt {args:?} failed: {err}");
    (el, rss, out, err)
}

fn memcpy_time(bytes: usize) -> Duration {
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

fn parse_frozen(stderr: &str) -> Option<f64> {
    let i = stderr.find("frozen ")?;
    stderr[i + 7..].split_whitespace().next()?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: Vec<u64> = opt("--sizes")
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(if quick { vec![16] } else { vec![16, 256, 1024] });
    let kinds: Vec<String> = opt("--kinds")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or(vec!["random".into(), "mixed".into(), "zeros".into()]);
    let compress = opt("--compress").unwrap_or("fast".into());
    let dir = PathBuf::from(opt("--dir").unwrap_or(repo().join("target/bench").display().to_string()));
    std::fs::create_dir_all(&dir).unwrap();
    let hog = dir.join("memhog");
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&hog)
        .arg(repo().join("benches/memhog.c"))
        .status()
        .expect("gcc");
    assert!(st.success());
    sys::set_child_subreaper().unwrap();

    println!("ckpt dump/restore benchmark (compress={compress}, images in {})", dir.display());
    println!(
        "{:>6} {:>7} | {:>9} {:>9} {:>9} | {:>9} {:>7} | {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "MiB", "data", "dump ms", "restr ms", "frozen ms", "image MiB", "ratio", "dump RSS", "rest RSS",
        "dump/dd", "rest/dd", "dump/cpy"
    );
    for &mib in &sizes {
        let cpy = memcpy_time((mib as usize) << 20);
        let dd = dd_time(&dir, mib);
        for kind in &kinds {
            let image = dir.join(format!("bench-{mib}-{kind}.ckpt"));
            let mut h = Hog::start(&hog, mib, kind);
            let pid = h.pid().to_string();
            let img = image.to_str().unwrap();
            let (_, _, _, err) = run_ckpt(&["dump", &pid, "-o", img, "--leave-running", "--compress", &compress]);
            let frozen = parse_frozen(&err).unwrap_or(f64::NAN);
            let (t_dump, rss_dump, _, _) = run_ckpt(&["dump", &pid, "-o", img, "--compress", &compress]);
            let _ = h.child.wait();
            let size = std::fs::metadata(&image).unwrap().len();
            let (t_rest, rss_rest, out, _) = run_ckpt(&["restore", "--detach", img]);
            let rpid: i32 = out.trim().parse().unwrap();
            // Check the restored memory: ask for the checksum. Its stdout is
            // the pipe we still hold.
            sys::kill(rpid, libc_sigusr1()).unwrap();
            let mut line = String::new();
            let t = Instant::now();
            while !line.starts_with("sum=") && t.elapsed() < Duration::from_secs(20) {
                line.clear();
                h.out.read_line(&mut line).unwrap();
            }
            assert_eq!(line.trim(), format!("sum={}", h.sum), "restored memory differs ({mib} MiB {kind})");
            sys::kill(rpid, 9).unwrap();
            while Path::new(&format!("/proc/{rpid}")).exists() {
                sys::reap_any();
                std::thread::sleep(Duration::from_millis(2));
            }
            println!(
                "{:>6} {:>7} | {:>9.1} {:>9.1} {:>9.1} | {:>9.1} {:>7.3} | {:>7}M {:>7}M | {:>8.2} {:>8.2} {:>8.2}",
                mib,
                kind,
                t_dump.as_secs_f64() * 1e3,
                t_rest.as_secs_f64() * 1e3,
                frozen,
                size as f64 / 1048576.0,
                size as f64 / (mib << 20) as f64,
                rss_dump / 1024,
                rss_rest / 1024,
                t_dump.as_secs_f64() / dd.as_secs_f64(),
                t_rest.as_secs_f64() / dd.as_secs_f64(),
                t_dump.as_secs_f64() / cpy.as_secs_f64(),
            );
            let _ = std::fs::remove_file(&image);
        }
        println!(
            "{:>6} baselines: memcpy {:.1} ms, dd conv=fsync {:.1} ms",
            mib,
            cpy.as_secs_f64() * 1e3,
            dd.as_secs_f64() * 1e3
        );
    }
    // A tiny process: the fixed cost of dump and restore.
    let mut h = Hog::start(&hog, 1, "zeros");
    let image = dir.join("bench-tiny.ckpt");
    let img = image.to_str().unwrap();
    let pid = h.pid().to_string();
    let mut dumps = vec![];
    for _ in 0..5 {
        dumps.push(run_ckpt(&["dump", &pid, "-o", img, "--leave-running"]).0);
    }
    let (t_dump, _, _, _) = run_ckpt(&["dump", &pid, "-o", img]);
    let _ = h.child.wait();
    let (t_rest, _, out, _) = run_ckpt(&["restore", "--detach", img]);
    let rpid: i32 = out.trim().parse().unwrap();
    sys::kill(rpid, 9).unwrap();
    dumps.sort();
    println!(
        "tiny process: dump {:.1} ms (median of 5 leave-running: {:.1} ms), restore {:.1} ms (wall time of the ckpt command)",
        t_dump.as_secs_f64() * 1e3,
        dumps[2].as_secs_f64() * 1e3,
        t_rest.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(&image);
}

fn libc_sigusr1() -> i32 {
    10
}
