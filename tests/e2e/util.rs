//! Helpers of the end-to-end tests that are about the `ckpt` binary:
//! run it, dump and restore fixtures with it. What any test needs (temp
//! dirs, processes and their waits, the fixtures, the skip policy) is in
//! ckpt-testkit, re-exported here.

pub use ckpt_testkit::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

/// What every test of this binary needs, checked once: root (ptrace of
/// non-children, clone3 with set_tid), and being the reaper of the
/// processes we restore (they are reparented to us).
fn setup() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        need(require::root());
        become_subreaper();
    });
}

/// The fixture programs of tests/fixtures (built once per test run).
pub fn fixture(name: &str) -> PathBuf {
    setup();
    ckpt_testkit::fixture(name)
}

/// A C program given as source (see `compile_c`).
pub fn c_fixture(name: &str, src: &str) -> PathBuf {
    setup();
    compile_c(name, src)
}

/// Held by the tests that load the machine (300 MB targets) and by those
/// whose sweeps are timed: they take turns instead of skewing each other.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn ckpt() -> Command {
    setup();
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
        stdout_of(&o),
        stderr_of(&o)
    );
    stdout_of(&o)
}

/// ckpt with args, under a deadline.
pub fn ckpt_timeout(args: &[&str], limit: Duration) -> Output {
    run_timeout(ckpt().args(args), limit)
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

/// Dump and restore through the ckpt binary (`ckpt dump`, `ckpt restore
/// --detach`), for testkit's scenarios.
pub struct Binary;

impl scenarios::DumpRestore for Binary {
    fn dump(&self, p: &mut Proc, image: &Path) {
        dump_kill(p, image);
    }
    fn restore(&self, image: &Path, p: &Proc) -> Proc {
        restore_detached(image, &p.out, p.pid)
    }
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

// ---------------------------------------------------------------------
// Helpers of the fault, hostile-input and security tests.

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

/// A command run as user nobody (uid/gid 65534, no supplementary groups),
/// with only fds 0-2: the test harness may leak others (a pipe of root's
/// that nobody's process could not even reopen).
pub fn as_nobody(prog: &Path) -> Command {
    need(require::tool("setpriv", "apt-get install util-linux"));
    let mut c = Command::new(c_fixture("closefds", CLOSEFDS));
    c.args([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ])
    .arg(prog);
    c
}

/// `closefds PROG ARGS...`: close every fd above 2, then exec PROG.
const CLOSEFDS: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    if (argc < 2)
        return 127;
    syscall(SYS_close_range, 3u, ~0u, 0u);
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
"#;

/// Make `p` owned by nobody.
pub fn chown_nobody(p: &Path) {
    let st = Command::new("chown")
        .arg("65534:65534")
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success(), "chown nobody {}", p.display());
}
