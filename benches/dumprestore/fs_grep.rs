//! `grep -r` over a freshly mounted 1 GiB image (issue 15: "reads at 1 GB/s
//! or more"), with `--grep`.
//!
//! memhog fills `--grep-mib` MiB (default 1024) with the mixed data and is
//! dumped (LZ4, the default). Its image directory is copied once through
//! ckptfs (`cp -r`) into a plain directory on the same disk: the same
//! files and bytes grep reads, the baseline. Then, `--reps` times (default
//! 3), each time with the page cache dropped first (`echo 3 >
//! /proc/sys/vm/drop_caches`):
//!
//! - `grep -r` of a string that is nowhere, over the plain directory;
//! - a new ckptfs mount (its frame cache empty), `grep -r` over the image
//!   directory, ckptfs's CPU time (user + system) during it, unmount;
//! - `cat` of the image file (the disk's part of the first read).
//!
//! It prints the medians: GB/s (10^9 bytes of the files read per second),
//! the ratio of the two grep speeds, ckptfs's CPU seconds per GiB read, and
//! the load average.

use super::{compile, load_average, run_ckpt, Fs, Hog, Opts};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "grep-1g";

fn drop_caches() {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .expect("dropping the page cache needs root (/proc/sys/vm/drop_caches)");
}

/// Wall time of `grep -r -l NEEDLE path` (which finds nothing).
fn grep(path: &Path, needle: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("grep")
        .args(["-r", "-l", needle])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("grep");
    let took = t.elapsed();
    // 1: nothing found (as expected); 0 would mean the needle is there.
    assert_eq!(st.code(), Some(1), "grep -r over {}: {st}", path.display());
    took
}

/// User + system CPU time of a process so far, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes of the regular files under `dir` (what grep reads).
fn file_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            n += file_bytes(&e.path());
        } else if m.is_file() {
            n += m.len();
        }
    }
    n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn run(o: &Opts, mib: u64) {
    let Some(fsbin) = super::ckptfs_bin() else {
        panic!("--grep needs target/release/ckptfs: run `cargo build --release` first");
    };
    let hog = compile(&o.dir, "memhog");
    let image = o.store.join(format!("{NAME}.ckpt"));
    let _ = std::fs::remove_file(&image);
    let h = Hog::start(&hog, &o.dir, mib, "mixed");
    run_ckpt(
        &o.dir,
        &[
            "dump",
            "--compress",
            &o.compress,
            "-o",
            image.to_str().unwrap(),
            &h.pid().to_string(),
        ],
        false,
    );
    let mut child = h.child;
    let _ = child.wait();
    let mnt = o.dir.join("mnt");
    let plain = o.dir.join("grep-plain");
    let _ = std::fs::remove_dir_all(&plain);
    {
        let fs = Fs::mount(&fsbin, &o.store, &mnt).expect("mounting ckptfs");
        let st = Command::new("cp")
            .arg("-r")
            .arg(fs.mnt.join(NAME))
            .arg(&plain)
            .status()
            .expect("cp");
        assert!(st.success(), "cp -r of the image directory failed");
    }
    let bytes = file_bytes(&plain) as f64;
    let needle = format!(
        "ckpt-no-such-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    println!(
        "grep -r of a fresh ckptfs mount of a {mib} MiB mixed image ({:.0} MB of files, image {:.0} MB, compress={}), page cache dropped before each run, load {}",
        bytes / 1e6,
        std::fs::metadata(&image).unwrap().len() as f64 / 1e6,
        o.compress,
        load_average()
    );
    let (mut fs_rate, mut plain_rate, mut cpu, mut disk) = (vec![], vec![], vec![], vec![]);
    for rep in 0..o.reps {
        drop_caches();
        let p = bytes / grep(&plain, &needle).as_secs_f64() / 1e9;
        let fs = Fs::mount(&fsbin, &o.store, &mnt).expect("mounting ckptfs");
        drop_caches();
        let c0 = cpu_seconds(fs.child.id());
        let f = bytes / grep(&fs.mnt.join(NAME), &needle).as_secs_f64() / 1e9;
        let c = (cpu_seconds(fs.child.id()) - c0) / (bytes / f64::from(1u32 << 30));
        drop(fs);
        drop_caches();
        let t = Instant::now();
        let st = Command::new("cat")
            .arg(&image)
            .stdout(Stdio::null())
            .status()
            .expect("cat");
        assert!(st.success());
        let d = std::fs::metadata(&image).unwrap().len() as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!(
            "  run {}: ckptfs {f:.2} GB/s ({c:.2} s CPU/GiB), plain dir {p:.2} GB/s, ratio {:.2}; cat of the image file {d:.2} GB/s; load {}",
            rep + 1,
            f / p,
            load_average()
        );
        fs_rate.push(f);
        plain_rate.push(p);
        cpu.push(c);
        disk.push(d);
    }
    let (f, p) = (median(fs_rate), median(plain_rate));
    println!(
        "median of {}: grep -r through ckptfs {f:.2} GB/s, plain directory {p:.2} GB/s, ckptfs/plain {:.2}; ckptfs CPU {:.2} s/GiB; cat of the image file {:.2} GB/s; load {}",
        o.reps,
        f / p,
        median(cpu),
        median(disk),
        load_average()
    );
    let _ = std::fs::remove_dir_all(&plain);
}
