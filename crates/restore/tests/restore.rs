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
