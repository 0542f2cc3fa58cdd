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
    let bin = compile_c("counter", COUNTER);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(5);
    let image = dump_kill(&mut p, &dir);
    let last = *values(&p.output(), "count=").last().unwrap();
    let before = p.line_count();
    let r = restore(&image, &RestoreOptions::default()).unwrap_or_else(|e| panic!("restore: {e}"));
    eprintln!("restore stats: {:?}", r.stats);
    assert_eq!(r.pid, p.pid);
    let q = restored(&r, &p.out);
    q.wait_line_after(before, |l| l.starts_with("count="));
    // A direct child of ours, no longer traced.
    let status = std::fs::read_to_string(format!("/proc/{}/status", r.pid)).unwrap();
    assert!(status.contains("\nTracerPid:\t0\n"), "{status}");
    assert!(
        status.contains(&format!("\nPPid:\t{}\n", std::process::id())),
        "{status}"
    );
    q.wait_more_lines(5);
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
    scenarios::threads(&Library);
}

#[test]
fn sleeping_syscalls_restart() {
    scenarios::sleepers(&Library);
}

#[test]
fn pipe_keeps_buffered_data() {
    scenarios::pipe_buffer(&Library);
}

#[test]
fn file_offsets_and_deleted_files() {
    scenarios::file_offsets(&Library);
}

#[test]
fn eventfd_epoll_timerfd() {
    scenarios::fd_kinds(&Library);
}

#[test]
fn signals_handlers_altstack_and_pending() {
    scenarios::signals(&Library);
}

#[test]
fn avx_registers_survive() {
    scenarios::avx(&Library);
}

fn last_count(p: &Proc) -> i64 {
    *values(&p.output(), "count=").last().unwrap()
}

#[test]
fn one_image_restores_twice() {
    let dir = TempDir::new("twice");
    let bin = compile_c("counter", COUNTER);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more_lines(5);
    let image = dump_kill(&mut p, &dir);
    let last = last_count(&p);
    for round in 0..2 {
        let start = p.line_count();
        let r = restore(&image, &RestoreOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(r.pid, p.pid);
        let mut q = restored(&r, &p.out);
        let l = q.wait_line_after(start, |l| l.starts_with("count="));
        assert_eq!(values(&l, "count="), vec![last + 1], "round {round}");
        q.wait_more_lines(3);
        q.kill();
    }
}

#[test]
fn taken_pid_is_reported_and_new_pid_works() {
    let dir = TempDir::new("newpid");
    let bin = compile_c_in(&dir, "counter", COUNTER);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more_lines(5);
    let image = dump_kill(&mut p, &dir);
    let last = last_count(&p);
    let first = restore(&image, &RestoreOptions::default()).unwrap();
    let q1 = restored(&first, &p.out);
    q1.wait_more_lines(2);

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
    let opts = RestoreOptions {
        new_pid: true,
        ..Default::default()
    };
    let report = ckpt_restore::check(&reader, &opts);
    assert!(report.is_ok(), "{report}");
    assert!(
        report.warnings.iter().any(|w| w.contains("new ids")),
        "{report}"
    );
    let start = q1.line_count();
    let second = restore(&image, &opts).unwrap();
    assert_ne!(second.pid, p.pid);
    let mut q2 = restored(&second, &p.out);
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
    let bin = compile_c_in(&dir, "mapper", MAPPER);
    std::fs::write(dir.join("data"), vec![b'x'; 4096]).unwrap();
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more_lines(3);
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
        format!("fd 3: {}: Is a directory", log.display())
    );
    gone("stub failure");
    std::fs::remove_dir(&log).unwrap();
    std::fs::rename(dir.join("log.away"), &log).unwrap();

    // A mapped file replaced by a directory: check refuses it; forced
    // (--force-files), it fails while the process is built.
    std::fs::rename(dir.join("data"), dir.join("data.away")).unwrap();
    std::fs::create_dir(dir.join("data")).unwrap();
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a regular file now"), "{e}");
    let forced = RestoreOptions {
        force_files: true,
        ..Default::default()
    };
    let e = restore(&image, &forced).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("mmap of vma") && msg.contains("/data"),
        "{msg}"
    );
    gone("injection failure");
    std::fs::remove_dir(dir.join("data")).unwrap();
    std::fs::rename(dir.join("data.away"), dir.join("data")).unwrap();

    // And with everything back, it restores (forced: moving the file away
    // and back changed its ctime, which check would take for a change).
    let r = restore(&image, &forced).unwrap();
    let q = restored(&r, &p.out);
    q.wait_more_lines(3);
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
    let bin = compile_c("big", BIG);
    let mut p = Proc::spawn(&dir, &bin, &[mb]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(2);
    let image = dump_kill(&mut p, &dir);
    let before = p.line_count();
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let r = ckpt_restore::restore(&reader, &RestoreOptions::default()).unwrap();
    let q = restored(&r, &p.out);
    q.wait_line_after(before, |l| l.starts_with("tick="));
    q.wait_more_lines(2);
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
    scenarios::interpreters(&Library);
}

/// Kernel state of many kinds, checked every tick.
const STATE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c, ...) do { if (!(c)) { printf("ERROR " __VA_ARGS__); printf("\n"); exit(1); } } while (0)
static volatile long rt_hits, alrm_hits;
static void on_rt(int s) { (void)s; rt_hits++; }
static void on_alrm(int s) { (void)s; alrm_hits++; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int *sh = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int *alias = mremap(sh, 0, 8192, MREMAP_MAYMOVE);
    CHECK(sh != MAP_FAILED && alias != MAP_FAILED, "shared mmap");
    sh[0] = 4242;
    int mfd = memfd_create("ckptmem", MFD_ALLOW_SEALING);
    CHECK(ftruncate(mfd, 8192) == 0, "ftruncate");
    char *mm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    strcpy(mm, "memfd-data");
    CHECK(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) == 0, "seal");
    int m2 = memfd_create("gone", 0);
    CHECK(ftruncate(m2, 4096) == 0, "ftruncate 2");
    char *g = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m2, 0);
    strcpy(g, "closed-memfd");
    close(m2);
    char *named = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* needs CONFIG_ANON_VMA_NAME */
    int can_name = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, named, 8192, "ckpt-named") == 0;
    named[100] = 'n';
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = 200; setrlimit(RLIMIT_NOFILE, &rl);
    umask(027);
    mkdir("sub", 0755);
    CHECK(chdir("sub") == 0, "chdir");
    CHECK(setpriority(PRIO_PROCESS, 0, 5) == 0, "nice");
    prctl(PR_SET_NAME, "ckpt-state");
    sigset_t m; sigemptyset(&m); sigaddset(&m, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m, NULL);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK);
    signal(SIGRTMIN + 1, on_rt);
    signal(SIGALRM, on_alrm);
    timer_t tid;
    struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 1 };
    CHECK(timer_create(CLOCK_MONOTONIC, &sev, &tid) == 0, "timer_create");
    timer_t tid2;
    CHECK(timer_create(CLOCK_MONOTONIC, &sev, &tid2) == 0, "timer_create 2");
    timer_delete(tid);   /* a gap in the ids */
    struct itimerspec its = { { 0, 10000000 }, { 0, 10000000 } };
    CHECK(timer_settime(tid2, 0, &its, NULL) == 0, "timer_settime");
    struct itimerval itv = { { 0, 15000 }, { 0, 15000 } };
    setitimer(ITIMER_REAL, &itv, NULL);
    kill(getpid(), SIGUSR2);   /* pending, read through the signalfd later */
    printf("READY pid=%d\n", getpid());
    long last_rt = -1, last_alrm = -1;
    for (long t = 0;; t++) {
        alias[1]++;
        CHECK(sh[0] == 4242 && sh[1] == alias[1], "shared memory not shared: %d %d %d", sh[0], sh[1], alias[1]);
        char buf[16] = {0};
        CHECK(pread(mfd, buf, 10, 0) == 10 && !strcmp(buf, "memfd-data"), "memfd contents '%s'", buf);
        mm[20] = (char)t; CHECK(pread(mfd, buf, 1, 20) == 1 && buf[0] == (char)t, "memfd mapping not shared with its fd");
        CHECK(fcntl(mfd, F_GET_SEALS) == F_SEAL_SHRINK, "seals %d", fcntl(mfd, F_GET_SEALS));
        CHECK(!strcmp(g, "closed-memfd"), "closed memfd '%s'", g);
        CHECK(named[100] == 'n', "named");
        getrlimit(RLIMIT_NOFILE, &rl); CHECK(rl.rlim_cur == 200, "rlimit %ld", (long)rl.rlim_cur);
        mode_t u = umask(027); CHECK(u == 027, "umask %o", u);
        char cwd[4096]; CHECK(getcwd(cwd, sizeof cwd) && strstr(cwd, "/sub"), "cwd %s", cwd);
        errno = 0; CHECK(getpriority(PRIO_PROCESS, 0) == 5, "nice %d", getpriority(PRIO_PROCESS, 0));
        char comm[32] = {0}; prctl(PR_GET_NAME, comm); CHECK(!strcmp(comm, "ckpt-state"), "comm %s", comm);
        CHECK(timer_getoverrun(tid2) >= 0, "timer id lost");
        struct itimerspec cur; timer_gettime(tid2, &cur);
        CHECK(cur.it_interval.tv_nsec == 10000000, "timer interval");
        int have = 0;
        FILE *f = fopen("/proc/self/maps", "r"); char line[512];
        while (fgets(line, sizeof line, f)) if (strstr(line, "[anon:ckpt-named]")) have = 1;
        fclose(f);
        CHECK(have || !can_name, "vma name lost");
        sigset_t p; sigpending(&p); CHECK(sigismember(&p, SIGUSR2), "SIGUSR2 no longer pending");
        printf("tick=%ld rt=%ld alrm=%ld\n", t, rt_hits, alrm_hits);
        if (t % 10 == 9) {
            CHECK(rt_hits > last_rt && alrm_hits > last_alrm, "timers stopped: rt %ld alrm %ld", rt_hits, alrm_hits);
            last_rt = rt_hits; last_alrm = alrm_hits;
        }
        struct timespec ts = { 0, 20000000 };
        while (nanosleep(&ts, &ts) && errno == EINTR) ;
    }
    (void)sfd;
}
"#;

#[test]
fn kernel_state_of_many_kinds() {
    let dir = TempDir::new("state");
    let bin = compile_c("state", STATE);
    let (q, before) = roundtrip(&dir, &bin, &[], 12);
    q.wait_more_lines(25);
    assert!(q.line_count() > before + 20);
}

const NOBODY: &str = r#"
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    gid_t g[] = { 65534, 100 };
    if (setgroups(2, g) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) {
        printf("ERROR dropping privileges\n");
        return 1;
    }
    printf("READY pid=%d\n", getpid());
    for (long i = 0;; i++) {
        uid_t r, e, s;
        getresuid(&r, &e, &s);
        gid_t gs[8];
        int n = getgroups(8, gs);
        printf("count=%ld uid=%d/%d/%d gid=%d groups=%d\n", i, r, e, s, getegid(), n);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
"#;

#[test]
fn credentials_are_restored() {
    let dir = TempDir::new("creds");
    let bin = compile_c("nobody", NOBODY);
    let (q, before) = roundtrip(&dir, &bin, &[], 3);
    let l = q.wait_line_after(before, |l| l.starts_with("count="));
    assert!(
        l.ends_with("uid=65534/65534/65534 gid=65534 groups=2"),
        "{l}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", q.pid)).unwrap();
    assert!(
        status.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
}

#[test]
fn restore_waits_for_a_zombie_holding_the_pid() {
    let dir = TempDir::new("zombie");
    let bin = compile_c("counter", COUNTER);
    let p = Proc::spawn(&dir, &bin, &[]);
    p.wait_more_lines(3);
    let image = dir.join("img.ckpt");
    ckpt_capture::dump(p.pid, &image, ckpt_capture::DumpOptions::default()).unwrap();
    // Killed but not reaped: a zombie holds the pid for a while.
    let pid = p.pid;
    let reaper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = wait_exit(pid);
    });
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let report = ckpt_restore::check(&reader, &RestoreOptions::default());
    assert!(report.is_ok(), "{report}");
    assert!(
        report.warnings.iter().any(|w| w.contains("zombie")),
        "{report}"
    );
    let r = ckpt_restore::restore(&reader, &RestoreOptions::default()).unwrap();
    reaper.join().unwrap();
    std::mem::forget(p);
    assert_eq!(r.pid, pid);
    let q = restored(&r, &dir.join("out.txt"));
    q.wait_more_lines(3);
}

/// A periodic ITIMER_REAL whose SIGALRM is blocked (so pending, and the
/// timer not re-armed) until a marker file appears.
const ALARM: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
static volatile long hits;
static void on_alrm(int s) { (void)s; hits++; }
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, on_alrm);
    sigset_t m; sigemptyset(&m); sigaddset(&m, SIGALRM);
    sigprocmask(SIG_BLOCK, &m, NULL);
    struct itimerval itv = { { 0, 10000 }, { 0, 10000 } };
    setitimer(ITIMER_REAL, &itv, NULL);
    struct timespec ts = { 0, 30000000 };
    nanosleep(&ts, NULL);
    printf("READY pid=%d\n", getpid());
    int released = 0;
    for (long t = 0;; t++) {
        struct stat st;
        if (!released && stat(argv[1], &st) == 0) {
            released = 1;
            sigprocmask(SIG_UNBLOCK, &m, NULL);
        }
        printf("tick=%ld alarms=%ld\n", t, hits);
        struct timespec d = { 0, 20000000 };
        nanosleep(&d, NULL);
    }
}
"#;

#[test]
fn a_fired_interval_timer_keeps_firing() {
    let dir = TempDir::new("alarm");
    let bin = compile_c("alarm", ALARM);
    let marker = dir.join("go");
    let (q, before) = roundtrip(&dir, &bin, &[marker.to_str().unwrap()], 3);
    std::fs::write(&marker, b"").unwrap();
    let l = q.wait_line_after(before, |l| {
        values(l, "alarms=").first().is_some_and(|&n| n >= 5)
    });
    assert!(l.contains("alarms="), "{l}");
}

/// Counts into the file argv[1]; its fds 0-2 are whatever it was started with.
const TTYPROG: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    dprintf(fd, "READY pid=%d tty=%d\n", getpid(), isatty(0));
    for (long i = 0;; i++) {
        dprintf(fd, "count=%ld\n", i);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
"#;

#[test]
fn terminals_attach_to_the_restorers_or_fail_clearly() {
    require!(require::tool("script", "apt-get install bsdutils"));
    let dir = TempDir::new("tty");
    let bin = compile_c("ttyprog", TTYPROG);
    let out = dir.join("out.txt");
    // `script` runs it on a fresh pty; its pid is found through the output.
    let opening = ckpt_testkit::ptys::opening();
    let mut script = std::process::Command::new("script")
        .args([
            "-qfc",
            &format!("{} {}", bin.display(), out.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("script(1)");
    let ready = || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("READY"))
            .map(str::to_string)
    };
    wait_until("READY from the program on a pty", TIMEOUT, || {
        ready().is_some()
    });
    drop(opening);
    let ready = ready().unwrap();
    assert!(ready.ends_with("tty=1"), "{ready}");
    let pid: i32 = values(&ready, "pid=")[0] as i32;
    // Not ours to kill: the dump below does.
    let p = Proc::watch(pid, &out);
    p.wait_more_lines(3);
    let image = dir.join("img.ckpt");
    ckpt_capture::dump(pid, &image, ckpt_capture::DumpOptions::default()).unwrap();
    let _ = script.kill();
    let _ = script.wait();
    // Killed before it reaped the program, `script` leaves it to a
    // subreaper: this process, when a test before made it one. Reaped here
    // then (else the wait below would never end).
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let _ = ckpt_sys::ptrace::try_wait(pid);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let report = ckpt_restore::check(&reader, &RestoreOptions::default());
    use std::io::IsTerminal;
    let have_tty = std::io::stdin().is_terminal()
        || std::io::stdout().is_terminal()
        || std::io::stderr().is_terminal()
        || std::fs::File::open("/dev/tty").is_ok();
    if have_tty {
        // Run from a terminal: the process is attached to it.
        assert!(report.is_ok(), "{report}");
        let r = ckpt_restore::restore(&reader, &RestoreOptions::default()).unwrap();
        let q = restored(&r, &out);
        q.wait_more_lines(3);
    } else {
        let e = report
            .errors
            .iter()
            .find(|e| e.starts_with("fd 0: /dev/pts/"))
            .unwrap_or_else(|| panic!("{report}"));
        assert!(e.contains("a terminal, but the restorer has none"), "{e}");
        let err = ckpt_restore::restore(&reader, &RestoreOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("a terminal, but the restorer has none"),
            "{err}"
        );
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// A process holding both ends of a pty with bytes buffered both ways
/// (see ckpt-capture's test of the same name); `leader`: it leads its
/// session with the pty as its controlling terminal, packet mode, the
/// slave exclusive, the pair locked. On SIGUSR1 it reads both ends and
/// tells its terminal state.
const PTY_PAIR_PY: &str = r#"
import os, sys, time, fcntl, termios, struct, signal, array
leader = sys.argv[1] == 'leader'
m, s = os.openpty()
fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack('HHHH', 20, 70, 3, 4))
if leader:
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 0)
    fcntl.ioctl(m, termios.TIOCPKT, struct.pack('i', 1))
    fcntl.ioctl(s, termios.TIOCEXCL)
    fcntl.ioctl(m, 0x40045431, struct.pack('i', 1))  # TIOCSPTLCK
os.write(s, b'out1\n')
os.write(m, b'line1\npart')
time.sleep(0.2)
def ioc(fd, req):
    b = array.array('i', [0])
    fcntl.ioctl(fd, req, b, True)
    return b[0]
def report(*_):
    os.set_blocking(m, False)
    out = os.read(m, 4096)
    line = os.read(s, 4096)
    os.write(m, b'\n')
    rest = os.read(s, 4096)
    st = open('/proc/self/stat').read().rsplit(') ', 1)[1].split()
    print('GOT out=%r line=%r rest=%r' % (out, line, rest), flush=True)
    print('STATE tty=%s sid=%s tty_nr=%s tpgid=%s pkt=%d lock=%d excl=%d size=%r' % (
        os.ttyname(s), st[3], st[4], st[5], ioc(m, 0x80045438), ioc(m, 0x80045439),
        ioc(s, 0x80045440), struct.unpack('HHHH', fcntl.ioctl(s, termios.TIOCGWINSZ, b'\0' * 8))), flush=True)
signal.signal(signal.SIGUSR1, report)
print('READY pid=%d tty=%s' % (os.getpid(), os.ttyname(s)), flush=True)
# Not signal.pause(): a pause() re-entered after the restore would not
# return for a signal handled just before it.
while True:
    time.sleep(0.05)
"#;

fn pty_pair_round_trip(mode: &str) {
    let dir = TempDir::new(&format!("ptypair-{mode}"));
    let opening = ckpt_testkit::ptys::opening();
    let mut p = Proc::spawn_cmd(
        &dir,
        std::process::Command::new("python3").args(["-c", PTY_PAIR_PY, mode]),
    );
    let ready = p.wait_for("READY");
    drop(opening);
    let tty = field(&ready, "tty").to_string();
    // Its pty index stays free until the pair is made again.
    let keep = ckpt_testkit::ptys::keeping();
    let image = dump_kill(&mut p, &dir);
    if mode == "plain" {
        index_taken_is_refused_by_name(&image, &tty);
    }
    let r = restore(&image, &RestoreOptions::default()).unwrap_or_else(|e| panic!("restore: {e}"));
    drop(keep);
    let q = restored(&r, &p.out);
    signal(r.pid, libc::SIGUSR1).unwrap();
    let got = q.wait_for("GOT");
    let pkt = if mode == "leader" { "\\x00" } else { "" };
    assert_eq!(
        got,
        format!("GOT out=b'{pkt}out1\\r\\nline1\\r\\npart' line=b'line1\\n' rest=b'part\\n'")
    );
    let state = q.wait_for("STATE");
    assert_eq!(field(&state, "tty"), tty, "{state}");
    assert!(state.ends_with("size=(20, 70, 3, 4)"), "{state}");
    let index: u64 = tty.trim_start_matches("/dev/pts/").parse().unwrap();
    if mode == "leader" {
        let nr = (136 + index / 256) << 8 | (index % 256);
        assert_eq!(field(&state, "sid"), r.pid.to_string(), "{state}");
        assert_eq!(field(&state, "tty_nr"), nr.to_string(), "{state}");
        assert_eq!(field(&state, "tpgid"), r.pid.to_string(), "{state}");
        assert!(state.contains("pkt=1 lock=1 excl=1"), "{state}");
    } else {
        assert_eq!(field(&state, "tty_nr"), "0", "{state}");
        assert!(state.contains("pkt=0 lock=0 excl=0"), "{state}");
    }
}

/// With the pair's index taken by a pty of ours, check() refuses the
/// image, naming the index and who holds it.
fn index_taken_is_refused_by_name(image: &std::path::Path, tty: &str) {
    let index: u32 = tty.trim_start_matches("/dev/pts/").parse().unwrap();
    let index_of = |f: &std::fs::File| {
        use std::os::fd::AsRawFd;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let v = info.lines().find_map(|l| l.strip_prefix("tty-index:"));
        v.expect("tty-index in fdinfo")
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let mut held = Vec::new();
    let taken = loop {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ptmx")
            .unwrap();
        match index_of(&f) {
            i if i == index => break f,
            i if i > index => panic!("pty {index} was taken by another process"),
            _ => held.push(f),
        }
    };
    drop(held);
    let reader = ckpt_image::ImageReader::open(image).unwrap();
    let report = ckpt_restore::check(&reader, &RestoreOptions::default());
    let me = format!("whose master pid {} (", std::process::id());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.starts_with(&format!("pty {tty} (master of pid ")) && e.contains(&me)),
        "{report}"
    );
    drop(taken);
}

#[test]
fn pty_pair_comes_back_with_its_bytes_and_index() {
    pty_pair_round_trip("plain");
}

#[test]
fn pty_pair_as_controlling_terminal_of_a_session_leader() {
    pty_pair_round_trip("leader");
}

/// Three threads counting under one mutex; no tid checks.
const WORKERS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long total;
static void *work(void *a) {
    for (;;) {
        pthread_mutex_lock(&mu);
        printf("thread=%ld total=%ld pid=%d\n", (long)a, ++total, getpid());
        pthread_mutex_unlock(&mu);
        struct timespec ts = {0, 15 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, work, (void *)i);
    printf("READY pid=%d\n", getpid());
    pthread_join(t[0], NULL);
}
"#;

#[test]
fn threads_get_fresh_tids_with_new_pid() {
    let dir = TempDir::new("workers");
    let bin = compile_c("workers", WORKERS);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(6);
    let image = dump_kill(&mut p, &dir);
    let first = restore(&image, &RestoreOptions::default()).unwrap();
    assert_eq!(first.tids.len(), 4);
    let _q1 = restored(&first, &p.out);
    let second = restore(
        &image,
        &RestoreOptions {
            new_pid: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(second.pid, first.pid);
    assert_eq!(second.tids.len(), 4);
    for t in &second.tids {
        assert!(
            !first.tids.contains(t),
            "{:?} vs {:?}",
            second.tids,
            first.tids
        );
        let st = std::fs::read_to_string(format!("/proc/{}/task/{t}/status", second.pid)).unwrap();
        assert!(st.contains(&format!("Tgid:\t{}\n", second.pid)), "{st}");
    }
    let q2 = restored(&second, &p.out);
    let tag = format!("pid={}", second.pid);
    let start = q2.line_count();
    for k in 0..3 {
        let want = format!("thread={k} ");
        q2.wait_line_after(start, |l| l.starts_with(&want) && l.ends_with(&tag));
    }
}

/// A FIFO with buffered data (both ends held) and a directory fd.
const FIFO: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkfifo("node", 0600);
    int rd = open("node", O_RDONLY | O_NONBLOCK);
    int wr = open("node", O_WRONLY);
    if (rd < 0 || wr < 0 || write(wr, "fifo-data", 9) != 9) { printf("ERROR fifo setup\n"); return 1; }
    int dfd = open(".", O_DIRECTORY | O_RDONLY);
    printf("READY pid=%d\n", getpid());
    for (long t = 0;; t++) {
        struct stat st;
        if (fstatat(dfd, "go", &st, 0) == 0) {
            char buf[32] = {0};
            ssize_t n = read(rd, buf, sizeof buf);
            if (n != 9 || memcmp(buf, "fifo-data", 9)) { printf("ERROR fifo read %zd '%s'\n", n, buf); return 1; }
            if (write(wr, "again", 5) != 5 || read(rd, buf, 5) != 5) { printf("ERROR fifo reuse\n"); return 1; }
            printf("fifo_ok\n");
            unlinkat(dfd, "go", 0);
        }
        printf("tick=%ld\n", t);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
"#;

#[test]
fn fifo_and_directory_fds() {
    let dir = TempDir::new("fifo");
    let bin = compile_c("fifo", FIFO);
    let (q, before) = roundtrip(&dir, &bin, &[], 3);
    std::fs::write(dir.join("go"), b"").unwrap();
    q.wait_line_after(before, |l| l == "fifo_ok");
}

/// benches/memhog.c with 1 GiB of mixed data (the issue 5 benchmark),
/// restored in-process with the phases printed, its checksum verified:
/// `cargo test --release -p ckpt-restore --test restore -- --ignored memhog --nocapture`.
/// MEMHOG_MIB and MEMHOG_KIND override the size and data kind.
#[test]
#[ignore]
fn memhog_restore() {
    let mib = std::env::var("MEMHOG_MIB").unwrap_or_else(|_| "1024".into());
    let kind = std::env::var("MEMHOG_KIND").unwrap_or_else(|_| "mixed".into());
    let dir = TempDir::new("memhog");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/memhog.c");
    let bin = compile_c("memhog", &std::fs::read_to_string(src).unwrap());
    let mut p = Proc::spawn(&dir, &bin, &[&mib, &kind]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let sum = ready.split_whitespace().nth(1).unwrap().to_string();
    let image = dump_kill(&mut p, &dir);
    let before = p.line_count();
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let r = ckpt_restore::restore(&reader, &RestoreOptions::default()).unwrap();
    eprintln!(
        "memhog {mib} MiB {kind}: restore {:?}, {} bytes of pages, {} injected syscalls",
        r.stats.total, r.stats.page_bytes, r.stats.injected_syscalls
    );
    let mut prev = std::time::Duration::ZERO;
    for (name, t) in &r.stats.phases {
        eprintln!("  {name:>14}: {:>8.1} ms", (*t - prev).as_secs_f64() * 1e3);
        prev = *t;
    }
    let q = restored(&r, &p.out);
    signal(q.pid, libc::SIGUSR1).unwrap();
    let got = q.wait_line_after(before, |l| l.starts_with("sum="));
    assert_eq!(
        got.split_whitespace().next().unwrap(),
        sum,
        "restored memory differs"
    );
}

/// Pages of a big anonymous mapping written through huge pages and moved
/// into place (where THP is in madvise mode), or with UFFDIO_COPY: same
/// bytes, the mapping keeps its own flags (no `hg`, no userfaultfd `um`);
/// the progress callback sees every byte.
#[test]
fn huge_page_fill_and_progress() {
    let dir = TempDir::new("hugefill");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/memhog.c");
    let bin = compile_c("memhog", &std::fs::read_to_string(src).unwrap());
    let mut p = Proc::spawn(&dir, &bin, &["64", "mixed"]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let sum = ready.split_whitespace().nth(1).unwrap().to_string();
    let addr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr=0x"))
        .map(|a| u64::from_str_radix(a, 16).unwrap());
    let image = dump_kill(&mut p, &dir);
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    // Through huge pages moved into place, then with UFFDIO_COPY (or
    // process_vm_writev where that is not available).
    for huge_fill in [Some(true), Some(false)] {
        let before = p.line_count();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut opts = RestoreOptions {
            huge_fill,
            progress: Some(Box::new(move |d, t| s2.lock().unwrap().push((d, t)))),
            ..Default::default()
        };
        let r =
            ckpt_restore::restore(&reader, &mut opts).unwrap_or_else(|e| panic!("restore: {e}"));
        assert!(opts.progress.is_some(), "the callback is given back");
        let mut q = restored(&r, &p.out);
        signal(q.pid, libc::SIGUSR1).unwrap();
        let got = q.wait_line_after(before, |l| l.starts_with("sum="));
        assert_eq!(got.split_whitespace().next().unwrap(), sum);
        let seen = seen.lock().unwrap().clone();
        let (d, t) = *seen.last().unwrap();
        assert_eq!((d, t), (r.stats.page_bytes, r.stats.page_bytes), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
        // The mapping's flags are the saved ones.
        if let Some(addr) = addr {
            let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", q.pid)).unwrap();
            // Header lines are "start-end perms ..."; the fields follow.
            let range = |l: &str| {
                let (a, rest) = l.split_once('-')?;
                let e = rest.split(' ').next()?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(e, 16).ok()?,
                ))
            };
            let mut lines = smaps.lines();
            let head = lines
                .by_ref()
                .find(|l| range(l).is_some_and(|(a, e)| a <= addr && addr < e))
                .expect("the mapping is there")
                .to_string();
            let block: Vec<&str> = lines.take_while(|l| range(l).is_none()).collect();
            let field = |k: &str| {
                block
                    .iter()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let (flags, huge) = (field("VmFlags:"), field("AnonHugePages:"));
            eprintln!("{head}: AnonHugePages {huge}, VmFlags {flags}");
            assert!(!flags.contains("hg"), "{head}: {flags}");
            assert!(!flags.contains("um"), "{head}: {flags}");
        }
        q.kill();
    }
}
