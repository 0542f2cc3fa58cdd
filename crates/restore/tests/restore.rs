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
