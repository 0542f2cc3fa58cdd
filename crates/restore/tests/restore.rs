//! Dump real programs with ckpt-capture and restore them.

mod common;
use ckpt_restore::RestoreOptions;
use common::*;

const COUNTER: &str = r#"
#include <stdio.h>
#include <time.h>
#include <unistd.h>
volatile long count;
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("READY pid=%d\n", getpid());
    for (;;) {
        printf("count=%ld pid=%d\n", count++, getpid());
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
"#;

#[test]
fn counter_continues_at_the_same_pid() {
    let dir = TempDir::new("counter");
    let bin = compile(&dir, "counter", COUNTER);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more(5);
    let image = dump_kill(&mut p, &dir);
    let last = *values(&p.output(), "count=").last().unwrap();
    let before = p.lines();
    let r = restore(&image, &RestoreOptions::default()).unwrap_or_else(|e| panic!("restore: {e}"));
    eprintln!("restore stats: {:?}", r.stats);
    assert_eq!(r.pid, p.pid);
    let q = Proc::restored(&r, &p.out);
    q.wait_line_after(before, |l| l.starts_with("count="));
    q.wait_more(5);
    let out = q.output();
    let counts = values(&out, "count=");
    let after: Vec<i64> = values(
        &out.lines().skip(before).collect::<Vec<_>>().join("\n"),
        "count=",
    );
    assert_eq!(after[0], last + 1, "{}", tail(&out));
    for w in counts.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{}", tail(&out));
    }
    assert_eq!(out.matches("READY").count(), 1);
}

#[test]
fn threads_keep_their_tids_and_locks() {
    let dir = TempDir::new("threads");
    let bin = fixture(&dir, "threads");
    let (q, before) = roundtrip(&dir, &bin, &["5"], 12);
    q.wait_more(12);
    let totals = values(&q.output(), "total=");
    assert!(totals.len() > before + 8);
    for w in totals.windows(2) {
        assert_eq!(w[1], w[0] + 1, "token passing broken: {totals:?}");
    }
}

#[test]
fn sleeping_syscalls_restart() {
    for mode in ["sleep", "read", "poll", "futex"] {
        let dir = TempDir::new(&format!("sleep-{mode}"));
        let bin = fixture(&dir, "sleeper");
        let (q, before) = roundtrip(&dir, &bin, &[mode, "40"], 2);
        q.wait_more(3);
        let out = q.output();
        let after: Vec<&str> = out.lines().skip(before).collect();
        assert!(
            after.iter().any(|l| l.starts_with("wake")),
            "{mode}: {}",
            tail(&out)
        );
    }
}

#[test]
fn pipe_keeps_buffered_data() {
    let dir = TempDir::new("pipe");
    let bin = fixture(&dir, "pipe");
    let (q, _) = roundtrip(&dir, &bin, &["30", "10"], 5);
    let l = q.wait_line(|l| l.starts_with("pipe_data="));
    assert!(l.ends_with(" ok"), "{l}");
}

#[test]
fn file_offsets_and_deleted_files() {
    let dir = TempDir::new("files");
    let bin = fixture(&dir, "fileoffset");
    let data = dir.join("data.txt");
    let text: String = (0..200).map(|i| format!("line{i:04}|")).collect();
    std::fs::write(&data, text).unwrap();
    let (q, before) = roundtrip(&dir, &bin, &[data.to_str().unwrap(), "3", "10"], 10);
    q.wait_line_after(before, |l| l.starts_with("offset="));
    q.wait_line_after(before, |l| l.starts_with("deleted_data="));
}

#[test]
fn eventfd_epoll_timerfd() {
    let dir = TempDir::new("fdkinds");
    let bin = fixture(&dir, "fdkinds");
    let (q, before) = roundtrip(&dir, &bin, &["20"], 12);
    q.wait_more(15);
    q.wait_line_after(before, |l| l.starts_with("drained"));
}

#[test]
fn signals_handlers_altstack_and_pending() {
    let dir = TempDir::new("signals");
    let bin = fixture(&dir, "signals");
    let marker = dir.join("unblock");
    let (q, _) = roundtrip(&dir, &bin, &["0", marker.to_str().unwrap(), "10"], 12);
    std::fs::write(&marker, b"").unwrap();
    q.wait_line(|l| l.starts_with("signals_ok"));
    let out = q.output();
    assert!(
        out.contains("usr2_delivered si_code=-1 si_value=24301"),
        "{}",
        tail(&out)
    );
    assert!(out.contains("on_altstack=1"), "{}", tail(&out));
}

#[test]
fn avx_registers_survive() {
    let dir = TempDir::new("avx");
    let bin = fixture(&dir, "avx");
    for args in [&["200000", "25", "ymm"][..], &["3000000", "0"][..]] {
        let (q, before) = roundtrip(&dir, &bin, args, 3);
        q.wait_line_after(before, |l| l.starts_with("avx_ok"));
        q.wait_more(3);
        assert!(!q.output().contains("avx_mismatch"));
        drop(q);
        let _ = std::fs::remove_file(dir.join("out.txt"));
    }
}

fn last_count(p: &Proc) -> i64 {
    *values(&p.output(), "count=").last().unwrap()
}

#[test]
fn one_image_restores_twice() {
    let dir = TempDir::new("twice");
    let bin = compile(&dir, "counter", COUNTER);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more(5);
    let image = dump_kill(&mut p, &dir);
    let last = last_count(&p);
    for round in 0..2 {
        let start = p.lines();
        let r = restore(&image, &RestoreOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(r.pid, p.pid);
        let mut q = Proc::restored(&r, &p.out);
        let l = q.wait_line_after(start, |l| l.starts_with("count="));
        assert_eq!(values(&l, "count="), vec![last + 1], "round {round}");
        q.wait_more(3);
        q.kill();
    }
}

#[test]
fn taken_pid_is_reported_and_new_pid_works() {
    let dir = TempDir::new("newpid");
    let bin = compile(&dir, "counter", COUNTER);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more(5);
    let image = dump_kill(&mut p, &dir);
    let last = last_count(&p);
    let first = restore(&image, &RestoreOptions::default()).unwrap();
    let q1 = Proc::restored(&first, &p.out);
    q1.wait_more(2);

    // The pid is now taken by the first copy.
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let report = ckpt_restore::check(&reader, &RestoreOptions::default());
    let want = format!("pid {} is in use by \"counter\" (pid {})", p.pid, p.pid);
    assert!(report.errors.iter().any(|e| e.contains(&want)), "{report}");
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    assert!(e.to_string().contains(&want), "{e}");
    assert_eq!(
        runs_binary(&bin),
        vec![p.pid],
        "a failed restore left a process behind"
    );

    // With new_pid: a second copy under another pid, going on from the dump.
    let opts = RestoreOptions { new_pid: true };
    let report = ckpt_restore::check(&reader, &opts);
    assert!(report.is_ok(), "{report}");
    assert!(
        report.warnings.iter().any(|w| w.contains("new ids")),
        "{report}"
    );
    let start = q1.lines();
    let second = restore(&image, &opts).unwrap();
    assert_ne!(second.pid, p.pid);
    let mut q2 = Proc::restored(&second, &p.out);
    let pid_tag = format!("pid={}", second.pid);
    // glibc's getpid() is a real system call: the new pid shows.
    let l = q2.wait_line_after(start, |l| l.contains(&pid_tag));
    assert!(values(&l, "count=")[0] > last, "{l}");
    q2.kill();
    drop(q1);
}

/// Opens `log` for appending, maps `data` privately, counts.
const MAPPER: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int log = open("log", O_WRONLY | O_APPEND | O_CREAT, 0644);
    int d = open("data", O_RDONLY);
    char *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, d, 0);
    close(d);
    if (log < 0 || m == MAP_FAILED) { printf("ERROR setup\n"); return 1; }
    printf("READY pid=%d\n", getpid());
    for (long i = 0;; i++) {
        dprintf(log, "%ld\n", i);
        printf("count=%ld data=%c\n", i, m[0]);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
"#;

#[test]
fn failed_restores_leave_nothing_behind() {
    let dir = TempDir::new("fail");
    let bin = compile(&dir, "mapper", MAPPER);
    std::fs::write(dir.join("data"), vec![b'x'; 4096]).unwrap();
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more(3);
    let image = dump_kill(&mut p, &dir);
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    assert!(ckpt_restore::check(&reader, &RestoreOptions::default()).is_ok());
    let gone = |what: &str| {
        assert!(
            !std::path::Path::new(&format!("/proc/{}", p.pid)).exists(),
            "{what}: pid {} exists",
            p.pid
        );
        assert!(
            runs_binary(&bin).is_empty(),
            "{what}: a process runs {}",
            bin.display()
        );
    };

    // A missing file is found by check(), before anything starts.
    std::fs::rename(dir.join("log"), dir.join("log.away")).unwrap();
    let report = ckpt_restore::check(&reader, &RestoreOptions::default());
    let log = dir.join("log");
    let want = format!("{}: No such file or directory", log.display());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains(&want) && e.starts_with("fd 3: ")),
        "{report}"
    );
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    assert!(e.to_string().contains(&want), "{e}");
    gone("missing file");

    // A file that exists but cannot be opened as saved fails in the stub.
    std::fs::create_dir(&log).unwrap();
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("fd 3: {}: Is a directory (os error 21)", log.display())
    );
    gone("stub failure");
    std::fs::remove_dir(&log).unwrap();
    std::fs::rename(dir.join("log.away"), &log).unwrap();

    // A mapped file replaced by a directory fails while the process is built.
    std::fs::rename(dir.join("data"), dir.join("data.away")).unwrap();
    std::fs::create_dir(dir.join("data")).unwrap();
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("mmap of vma") && msg.contains("/data"),
        "{msg}"
    );
    gone("injection failure");
    std::fs::remove_dir(dir.join("data")).unwrap();
    std::fs::rename(dir.join("data.away"), dir.join("data")).unwrap();

    // And with everything back, it restores.
    let r = restore(&image, &RestoreOptions::default()).unwrap();
    let q = Proc::restored(&r, &p.out);
    q.wait_more(3);
    assert!(q.output().contains("data=x"));
}

/// Fills MiB of memory with a pattern, then checks it and counts.
const BIG: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t mb = atol(argv[1]), n = mb << 20;
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 7 + (i >> 20));
    printf("READY pid=%d\n", getpid());
    for (long t = 0;; t++) {
        size_t bad = 0;
        for (size_t i = 0; i < n; i += 4093) bad += b[i] != (unsigned char)(i * 7 + (i >> 20));
        printf("tick=%ld bad=%zu\n", t, bad);
        if (bad) { printf("ERROR pattern broken\n"); return 1; }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
"#;

fn timed_roundtrip(tag: &str, mb: &str) -> ckpt_restore::RestoreStats {
    let dir = TempDir::new(tag);
    let bin = compile(&dir, "big", BIG);
    let mut p = Proc::spawn(&dir, &bin, &[mb]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more(2);
    let image = dump_kill(&mut p, &dir);
    let before = p.lines();
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let r = ckpt_restore::restore(&reader, &RestoreOptions::default()).unwrap();
    let q = Proc::restored(&r, &p.out);
    q.wait_line_after(before, |l| l.starts_with("tick="));
    q.wait_more(2);
    eprintln!(
        "{tag}: restore of {} MiB touched: {:?} total, {} bytes of pages, {} injected syscalls; phases {:?}",
        mb, r.stats.total, r.stats.page_bytes, r.stats.injected_syscalls, r.stats.phases
    );
    r.stats
}

#[test]
fn restore_of_a_tiny_process_is_fast() {
    let s = timed_roundtrip("tiny", "0");
    // Generous bound (debug build, shared machine); see the report for real numbers.
    assert!(s.total < std::time::Duration::from_secs(1), "{s:?}");
    assert!(s.injected_syscalls < 400, "{s:?}");
}

/// 1 GiB of touched memory: `cargo test --release -- --ignored big_memory`.
#[test]
#[ignore]
fn big_memory_restore() {
    let s = timed_roundtrip("big", "1024");
    assert!(s.page_bytes >= 1 << 30, "{s:?}");
}

#[test]
fn interpreters_keep_their_state() {
    for (interp, script) in [("python3", "state.py"), ("perl", "state.pl")] {
        let Ok(path) = which(interp) else {
            eprintln!("skipping {interp}: not installed");
            continue;
        };
        let dir = TempDir::new(interp);
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(script);
        let (q, before) = roundtrip(&dir, &path, &[src.to_str().unwrap()], 5);
        q.wait_more(5);
        assert!(q.lines() > before + 5, "{interp}");
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}
