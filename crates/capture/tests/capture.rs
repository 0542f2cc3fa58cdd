//! ckpt-capture against real processes (needs root, ptrace, cc).

mod common;

use ckpt_capture::{capture, DumpOptions, Error};
use ckpt_image::{FileKind, PipeEnd, Registers, VmaBacking};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const COUNTER_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
volatile long counter = 0;
volatile long magic = 0;
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    magic = 0x5eed00000000L + getpid();
    char *heap = malloc(1 << 20);
    for (int i = 0; i < (1 << 20); i++) heap[i] = (char)(i * 7);
    printf("READY pid=%d counter=%p magic=%p heap=%p\n", getpid(), (void *)&counter, (void *)&magic, heap);
    long last = 0;
    for (;;) {
        counter++;
        if (counter != last + 1) { printf("ERROR counter jumped from %ld to %ld\n", last, counter); exit(1); }
        last = counter;
        for (int i = 0; i < (1 << 20); i += 4096)
            if (heap[i] != (char)(i * 7)) { printf("ERROR heap changed at %d\n", i); exit(1); }
        printf("count=%ld\n", counter);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}
"#;

const THREADS_C: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static pid_t tids[4];
static volatile long spins[4];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void *work(void *arg) {
    long k = (long)arg;
    pthread_mutex_lock(&mu);
    tids[k] = (pid_t)syscall(SYS_gettid);
    pthread_mutex_unlock(&mu);
    for (;;) {
        spins[k]++;                     /* busy threads: R state */
        if (k == 3) usleep(1000);       /* one sleeping thread */
    }
    return NULL;
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    tids[0] = getpid();
    pthread_t th;
    for (long k = 1; k < 4; k++) pthread_create(&th, NULL, work, (void *)k);
    for (;;) {
        pthread_mutex_lock(&mu);
        int ok = tids[1] && tids[2] && tids[3];
        pthread_mutex_unlock(&mu);
        if (ok) break;
        usleep(1000);
    }
    printf("READY tids=%d,%d,%d,%d\n", tids[0], tids[1], tids[2], tids[3]);
    long last = -1;
    for (;;) {
        usleep(5000);
        long s = spins[1] + spins[2] + spins[3];
        printf("spins=%ld\n", s);
        if (s < last) { printf("ERROR spins went back\n"); exit(1); }
        last = s;
    }
}
"#;

const FILES_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *dir = argv[1];
    char path[4096];
    int p[2];
    if (pipe(p)) return 2;
    write(p[1], "hello pipe", 10);
    snprintf(path, sizeof path, "%s/data.txt", dir);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    char buf[5000];
    memset(buf, 'x', sizeof buf);
    write(f, buf, sizeof buf);
    lseek(f, 1234, SEEK_SET);
    int fdup = dup(f);
    snprintf(path, sizeof path, "%s/gone.txt", dir);
    int g = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    write(g, "deleted content", 15);
    unlink(path);
    int e = eventfd(42, EFD_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xabcdef};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 77;
    epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
    int t = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {{5, 0}, {100, 0}};
    timerfd_settime(t, 0, &its, NULL);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m, NULL);
    int s = signalfd(-1, &m, 0);
    int mf = memfd_create("ckptmem", MFD_ALLOW_SEALING);
    write(mf, "memfd data", 10);
    fcntl(mf, F_ADD_SEALS, F_SEAL_SHRINK);
    int dn = open("/dev/null", O_WRONLY);
    int in = inotify_init1(IN_NONBLOCK);
    inotify_add_watch(in, dir, IN_CREATE | IN_DELETE);
    signal(SIGUSR1, on_usr1);
    /* SIGUSR1 is blocked except inside sigsuspend: one sent early is not lost. */
    sigset_t usr1, wait_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &wait_mask);
    sigdelset(&wait_mask, SIGUSR1);
    printf("READY pipe_r=%d pipe_w=%d file=%d dup=%d gone=%d eventfd=%d epoll=%d timerfd=%d signalfd=%d memfd=%d null=%d inotify=%d\n",
           p[0], p[1], f, fdup, g, e, ep, t, s, mf, dn, in);
    for (;;) {
        sigsuspend(&wait_mask);
        if (go) {
            char b[64] = {0};
            int n = read(p[0], b, sizeof b - 1);
            uint64_t c = 0;
            read(e, &c, 8);
            printf("PIPE n=%d data=%s eventfd=%llu pos=%ld\n", n, b, (unsigned long long)c, (long)lseek(f, 0, SEEK_CUR));
            go = 0;
        }
    }
}
"#;

const SIGNALS_C: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
static void handler(int s) { (void)s; }
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    sigaddset(&m, SIGRTMIN + 3);
    sigprocmask(SIG_BLOCK, &m, NULL);
    union sigval v;
    v.sival_int = 777;
    sigqueue(getpid(), SIGRTMIN + 3, v);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGUSR2;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = 555;
    syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR2, &si);
    struct itimerval it = {{0, 0}, {100, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN + 5;
    sev.sigev_value.sival_int = 99;
    timer_t tm;
    timer_create(CLOCK_MONOTONIC, &sev, &tm);
    struct itimerspec its = {{1, 0}, {200, 0}};
    timer_settime(tm, 0, &its, NULL);
    stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    printf("READY handler=%p altstack=%p rtmin=%d\n", (void *)handler, ss.ss_sp, SIGRTMIN);
    while (access(argv[1], F_OK) != 0) usleep(2000);
    for (int i = 0; i < 2; i++) {
        siginfo_t got;
        int sig = sigwaitinfo(&m, &got);
        printf("GOT sig=%d code=%d value=%d\n", sig, got.si_code, got.si_value.sival_int);
    }
    printf("DONE\n");
    return 0;
}
"#;

const TRACER_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <unistd.h>
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (ptrace(PTRACE_SEIZE, atoi(argv[1]), 0, 0) != 0) { perror("seize"); return 1; }
    printf("ATTACHED\n");
    for (;;) pause();
}
"#;

fn opts() -> DumpOptions {
    DumpOptions {
        leave_running: true,
        ..Default::default()
    }
}

#[test]
fn counter_keeps_counting_after_leave_running_capture() {
    let bin = compile_c("counter", COUNTER_C);
    let p = Proc::start(&mut Command::new(&bin));
    let ready = p.wait_for("READY");
    let magic_addr = hex_field(&ready, "magic");
    let counter_addr = hex_field(&ready, "counter");
    let heap = hex_field(&ready, "heap");
    let before: i64 = field(&p.wait_for("count="), "count").parse().unwrap();

    let mut sink = MemSink::default();
    let mut o = opts();
    let seen = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let s2 = seen.clone();
    o.progress = Some(Box::new(move |d, t| *s2.lock().unwrap() = (d, t)));
    let t = Instant::now();
    let cap = capture(p.pid, &mut o, &mut sink).expect("capture");
    let took = t.elapsed();
    let img = cap.image().clone();
    let stats = cap.stats().clone();
    let frozen = cap.release().expect("release");
    eprintln!(
        "tiny process: capture {took:?}, frozen {frozen:?}, {} pages bytes, {} injected syscalls",
        stats.pages_bytes, stats.injected_syscalls
    );

    let proc_ = &img.processes[0];
    assert_eq!(proc_.pid, p.pid);
    assert_eq!(proc_.threads.len(), 1);
    assert_eq!(proc_.threads[0].tid, p.pid);
    assert_eq!(proc_.comm, b"counter");
    assert!(
        proc_.exe.path.ends_with(b"/counter"),
        "{:?}",
        String::from_utf8_lossy(&proc_.exe.path)
    );
    assert_eq!(proc_.cmdline[0], bin.as_os_str().as_encoded_bytes());
    assert_eq!(proc_.sigactions.len(), 64);
    assert_eq!(proc_.rlimits.len(), 16);
    assert!(proc_.mm.brk >= proc_.mm.start_brk && proc_.mm.brk > 0);
    assert_eq!(proc_.mm.auxv.last().unwrap().0, 0);
    assert!(proc_
        .vmas
        .iter()
        .any(|v| v.backing == VmaBacking::Special(ckpt_image::SpecialMapping::Stack)));
    assert!(proc_.vmas.windows(2).all(|w| w[0].end <= w[1].start));
    assert_eq!(img.host.page_size, 4096);
    assert!(!img.host.boot_id.is_empty());
    assert!(img.host.cpu.xsave_size > 0);
    // Mostly stopped in nanosleep: the syscall number and a restart code are kept.
    let Registers::X8664(r) = &proc_.threads[0].regs else {
        panic!("no regs")
    };
    if r.orig_rax == libc::SYS_clock_nanosleep as u64 {
        assert!(
            (-516..=-512).contains(&(r.rax as i64)) || r.rax == 0,
            "rax {}",
            r.rax as i64
        );
    }
    assert!(r.xsave.len() >= 576);

    // Memory: the globals and the heap pattern.
    let magic = u64::from_ne_bytes(
        sink.read(magic_addr, 8)
            .expect("magic saved")
            .try_into()
            .unwrap(),
    );
    assert_eq!(magic, 0x5eed_0000_0000 + p.pid as u64);
    let counter = i64::from_ne_bytes(sink.read(counter_addr, 8).unwrap().try_into().unwrap());
    assert!(counter >= before, "counter {counter} < {before}");
    let h = sink.read(heap + 4096 * 3, 4096).expect("heap saved");
    assert!(h
        .iter()
        .enumerate()
        .all(|(i, &b)| b == ((i + 4096 * 3) * 7) as u8));
    assert_eq!(sink.total(), stats.pages_bytes);
    assert_eq!(
        *seen.lock().unwrap(),
        (stats.pages_bytes, stats.pages_bytes)
    );
    // vdso/vvar contents are not saved.
    for v in &proc_.vmas {
        if let VmaBacking::Special(
            ckpt_image::SpecialMapping::Vdso | ckpt_image::SpecialMapping::Vvar,
        ) = v.backing
        {
            assert!(sink.read(v.start, 8).is_none());
        }
    }

    // It goes on without a gap or an error.
    let mut last: i64 = field(&p.wait_for("count="), "count").parse().unwrap();
    while last <= counter + 20 {
        let c: i64 = field(&p.wait_for("count="), "count").parse().unwrap();
        assert_eq!(c, last + 1, "gap in the count");
        last = c;
    }
    assert!(p.alive());
}

#[test]
fn four_threads_are_all_captured_and_keep_running() {
    let bin = compile_c("threads", THREADS_C);
    let p = Proc::start(&mut Command::new(&bin));
    let ready = p.wait_for("READY");
    let tids: Vec<i32> = field(&ready, "tids")
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    p.wait_for("spins=");
    let mut sink = NullSink::default();
    let cap = capture(p.pid, &mut opts(), &mut sink).expect("capture");
    let img = cap.image().clone();
    cap.release().unwrap();
    let threads = &img.processes[0].threads;
    assert_eq!(threads.len(), 4);
    assert_eq!(threads[0].tid, p.pid, "leader first");
    let mut got: Vec<i32> = threads.iter().map(|t| t.tid).collect();
    got.sort();
    let mut want = tids.clone();
    want.sort();
    assert_eq!(got, want);
    for t in threads {
        let Registers::X8664(r) = &t.regs else {
            panic!()
        };
        assert!(r.fs_base != 0, "tid {} has no TLS", t.tid);
        assert!(!t.cpu_affinity.is_empty() && t.cpu_affinity[0] != 0);
    }
    // Distinct TLS per thread, and the same rseq area size for all.
    let mut fs: Vec<u64> = threads
        .iter()
        .map(|t| match &t.regs {
            Registers::X8664(r) => r.fs_base,
            _ => 0,
        })
        .collect();
    fs.dedup();
    assert_eq!(fs.len(), 4);
    // Still spinning (the program itself checks the count never goes back).
    let a: i64 = field(&p.wait_for("spins="), "spins").parse().unwrap();
    let mut moved = false;
    for _ in 0..2000 {
        let b: i64 = field(&p.wait_for("spins="), "spins").parse().unwrap();
        if b > a {
            moved = true;
            break;
        }
    }
    assert!(moved, "the threads stopped spinning");
    assert!(p.alive());
}

#[test]
fn fds_of_every_supported_kind() {
    let dir = TempDir::new("files");
    let bin = compile_c("files", FILES_C);
    let p = Proc::start(Command::new(&bin).arg(dir.path()));
    let ready = p.wait_for("READY");
    let num = |k: &str| field(&ready, k).parse::<i32>().unwrap();
    let mut sink = MemSink::default();
    let cap = capture(p.pid, &mut opts(), &mut sink).expect("capture");
    let img = cap.image().clone();
    cap.release().unwrap();
    let proc_ = &img.processes[0];
    let file_of = |fd: i32| {
        let f = proc_
            .fds
            .iter()
            .find(|f| f.fd == fd)
            .unwrap_or_else(|| panic!("no fd {fd}"));
        (f, img.file(f.file).unwrap())
    };
    assert!(proc_.fds.windows(2).all(|w| w[0].fd < w[1].fd));

    let (_, pr) = file_of(num("pipe_r"));
    let (_, pw) = file_of(num("pipe_w"));
    let (FileKind::Pipe(a), FileKind::Pipe(b)) = (&pr.kind, &pw.kind) else {
        panic!("pipes: {pr:?} {pw:?}")
    };
    assert_eq!(a.id, b.id);
    assert_eq!((a.end, b.end), (PipeEnd::Read, PipeEnd::Write));
    assert_eq!(a.data, b"hello pipe");
    assert!(b.data.is_empty(), "pipe data saved twice");
    assert!(a.capacity >= 4096);
    assert_ne!(pr.id, pw.id);

    let (ff, f) = file_of(num("file"));
    let (fd2, f2) = file_of(num("dup"));
    assert_eq!(ff.file, fd2.file, "dup'ed fds share one open file");
    assert_eq!(f.id, f2.id);
    assert_eq!(f.position, 1234);
    assert_eq!(f.flags & 3, libc::O_RDWR as u32);
    let FileKind::Regular(reg) = &f.kind else {
        panic!("{f:?}")
    };
    assert_eq!(reg.file.size, 5000);
    assert!(!reg.file.deleted && !reg.has_contents);

    let (gfd, g) = file_of(num("gone"));
    assert!(gfd.cloexec);
    assert_eq!(g.flags & 0o2000000, 0, "O_CLOEXEC is per fd");
    let FileKind::Regular(gone) = &g.kind else {
        panic!("{g:?}")
    };
    assert!(gone.file.deleted && gone.has_contents);
    assert_eq!(sink.blob(&gone.contents), b"deleted content");
    assert!(!gone.file.path.ends_with(b" (deleted)"));

    let (_, e) = file_of(num("eventfd"));
    assert_eq!(
        e.kind,
        FileKind::EventFd(ckpt_image::EventFd {
            count: 42,
            semaphore: false
        })
    );
    assert_ne!(e.flags & libc::O_NONBLOCK as u32, 0);

    let (_, ep) = file_of(num("epoll"));
    let FileKind::Epoll(epoll) = &ep.kind else {
        panic!("{ep:?}")
    };
    assert_eq!(epoll.targets.len(), 2);
    let t0 = epoll
        .targets
        .iter()
        .find(|t| t.fd == num("pipe_r"))
        .unwrap();
    assert_eq!((t0.file, t0.data), (pr.id, 0xabcdef));
    assert_ne!(t0.events & libc::EPOLLIN as u32, 0);
    let t1 = epoll
        .targets
        .iter()
        .find(|t| t.fd == num("eventfd"))
        .unwrap();
    assert_eq!((t1.file, t1.data), (e.id, 77));
    assert_ne!(t1.events & libc::EPOLLET as u32, 0);

    let (_, t) = file_of(num("timerfd"));
    let FileKind::TimerFd(tf) = t.kind else {
        panic!("{t:?}")
    };
    assert_eq!(tf.clock, libc::CLOCK_MONOTONIC);
    assert_eq!(tf.interval_ns, 5_000_000_000);
    assert!(tf.value_ns > 90_000_000_000 && tf.value_ns <= 100_000_000_000);

    let (_, s) = file_of(num("signalfd"));
    assert_eq!(
        s.kind,
        FileKind::SignalFd(ckpt_image::SignalFd {
            mask: 1 << (libc::SIGUSR2 - 1)
        })
    );

    let (_, m) = file_of(num("memfd"));
    let FileKind::MemFd(mf) = &m.kind else {
        panic!("{m:?}")
    };
    assert_eq!(mf.name, b"ckptmem");
    assert_eq!(mf.size, 10);
    assert_eq!(mf.seals, libc::F_SEAL_SHRINK as u32);
    assert_eq!(sink.blob(&mf.contents), b"memfd data");

    let (_, ino) = file_of(num("inotify"));
    let FileKind::Inotify(ino) = &ino.kind else {
        panic!("{ino:?}")
    };
    assert_eq!(ino.watches.len(), 1);
    let w = &ino.watches[0];
    assert_eq!(
        w.mask & (libc::IN_CREATE | libc::IN_DELETE),
        libc::IN_CREATE | libc::IN_DELETE
    );
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir.path()).unwrap();
    assert_eq!((w.inode, w.dev), (md.ino(), md.dev()));
    assert_eq!(w.path, dir.path().as_os_str().as_encoded_bytes());

    let (_, n) = file_of(num("null"));
    assert!(matches!(&n.kind, FileKind::CharDevice(c) if c.path == b"/dev/null"));

    // The process still has everything: the pipe data was not consumed.
    ckpt_sys::proc::kill(p.pid, libc::SIGUSR1).unwrap();
    let l = p.wait_for("PIPE");
    assert_eq!(l, "PIPE n=10 data=hello pipe eventfd=42 pos=1234");
}

#[test]
fn signals_handlers_pending_and_timers() {
    let dir = TempDir::new("signals");
    let bin = compile_c("signals", SIGNALS_C);
    let marker = dir.path().join("go");
    let p = Proc::start(Command::new(&bin).arg(&marker));
    let ready = p.wait_for("READY");
    let handler = hex_field(&ready, "handler");
    let altstack = hex_field(&ready, "altstack");
    let rtmin: i32 = field(&ready, "rtmin").parse().unwrap();
    let mut sink = NullSink::default();
    let cap = capture(p.pid, &mut opts(), &mut sink).expect("capture");
    let img = cap.image().clone();
    cap.release().unwrap();
    let proc_ = &img.processes[0];
    let usr1 = proc_.sigactions[libc::SIGUSR1 as usize - 1];
    assert_eq!(usr1.handler, handler);
    assert_ne!(usr1.flags & libc::SA_RESTART as u64, 0);
    assert_ne!(usr1.restorer, 0);
    assert_eq!(proc_.sigactions[libc::SIGUSR2 as usize - 1].handler, 0);

    let t = &proc_.threads[0];
    assert_eq!(t.blocked, 1 << (libc::SIGUSR2 - 1) | 1 << (rtmin + 3 - 1));
    assert_eq!(t.pending.len(), 1, "{:?}", t.pending);
    let s = &t.pending[0];
    assert_eq!((s.signo, s.code), (libc::SIGUSR2, -1));
    assert_eq!(i32::from_ne_bytes(s.raw[24..28].try_into().unwrap()), 555);
    assert_eq!(s.raw.len(), 128);
    assert_eq!(proc_.shared_pending.len(), 1);
    let s = &proc_.shared_pending[0];
    assert_eq!((s.signo, s.code), (rtmin + 3, -1));
    assert_eq!(i32::from_ne_bytes(s.raw[24..28].try_into().unwrap()), 777);

    assert_eq!(t.altstack.sp, altstack);
    assert_eq!(t.altstack.size, 65536);
    assert_ne!(t.clear_child_tid, 0);
    assert_ne!(t.rseq.address, 0);

    assert_eq!(proc_.itimers.len(), 3);
    assert!(proc_.itimers[0].value_ns > 90_000_000_000);
    assert_eq!(proc_.posix_timers.len(), 1);
    let pt = proc_.posix_timers[0];
    assert_eq!(
        (pt.clock, pt.signo, pt.value, pt.notify),
        (libc::CLOCK_MONOTONIC, rtmin + 5, 99, 0)
    );
    assert_eq!(pt.interval_ns, 1_000_000_000);
    assert!(pt.value_ns > 190_000_000_000);

    // The process still gets both signals with their values.
    std::fs::write(&marker, b"").unwrap();
    assert_eq!(
        p.wait_for("GOT"),
        format!("GOT sig={} code=-1 value=555", libc::SIGUSR2)
    );
    assert_eq!(
        p.wait_for("GOT"),
        format!("GOT sig={} code=-1 value=777", rtmin + 3)
    );
    p.wait_for("DONE");
}

#[test]
fn kill_after_capture_leaves_a_zombie_for_the_parent() {
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(30));
    let mut sink = NullSink::default();
    let cap = capture(pid, &mut DumpOptions::default(), &mut sink).expect("capture");
    cap.kill().unwrap();
    let st = child.try_wait().unwrap().expect("dead at once");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

#[test]
fn sleep_interrupted_in_a_syscall_finishes_normally() {
    let t = Instant::now();
    let mut child = Command::new("sleep").arg("0.4").spawn().unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(100));
    let mut sink = NullSink::default();
    let cap = capture(pid, &mut opts(), &mut sink).expect("capture");
    let Registers::X8664(r) = &cap.image().processes[0].threads[0].regs else {
        panic!()
    };
    assert_eq!(r.orig_rax, libc::SYS_clock_nanosleep as u64);
    cap.release().unwrap();
    let st = child.wait().unwrap();
    assert!(st.success());
    let d = t.elapsed();
    assert!(
        d >= Duration::from_millis(400) && d < Duration::from_secs(3),
        "{d:?}"
    );
}

#[test]
fn refuses_missing_zombie_traced_and_self() {
    // Missing.
    let mut c = Command::new("true").spawn().unwrap();
    let gone = c.id() as i32;
    c.wait().unwrap();
    let e = capture(gone, &mut opts(), &mut NullSink::default())
        .err()
        .expect("error");
    assert!(matches!(e, Error::NoSuchProcess { .. }), "{e}");
    assert_eq!(e.to_string(), format!("pid {gone} does not exist"));

    // Zombie.
    let mut z = Command::new("true").spawn().unwrap();
    let zpid = z.id() as i32;
    wait_until("zombie", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{zpid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
            .unwrap_or(false)
    });
    let e = capture(zpid, &mut opts(), &mut NullSink::default())
        .err()
        .expect("error");
    assert_eq!(e.to_string(), format!("pid {zpid} is a zombie"));
    z.wait().unwrap();

    // Ourselves.
    let me = std::process::id() as i32;
    let e = capture(me, &mut opts(), &mut NullSink::default())
        .err()
        .expect("error");
    assert!(matches!(e, Error::Ourselves { .. }), "{e}");

    // Traced by someone else.
    let tracer_bin = compile_c("tracer", TRACER_C);
    let mut target = Command::new("sleep").arg("100").spawn().unwrap();
    let tpid = target.id() as i32;
    let tracer = Proc::start(Command::new(&tracer_bin).arg(tpid.to_string()));
    tracer.wait_for("ATTACHED");
    let e = capture(tpid, &mut opts(), &mut NullSink::default())
        .err()
        .expect("error");
    assert_eq!(
        e.to_string(),
        format!("pid {tpid} is already traced by pid {}", tracer.pid)
    );
    assert!(target.try_wait().unwrap().is_none());
    drop(tracer);
    target.kill().unwrap();
    target.wait().unwrap();
}

#[test]
fn unsupported_fd_is_refused_and_process_resumed() {
    let p = Proc::start(Command::new("python3").args([
        "-c",
        // An MPTCP socket (protocol 262): a kind ckpt does not save.
        "import socket,time,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\nprint('READY fd=%d' % s.fileno(), flush=True)\ni=0\nwhile True:\n  i+=1\n  print('tick=%d' % i, flush=True)\n  time.sleep(0.005)\n",
    ]));
    let ready = p.wait_for("READY");
    let fd: i32 = field(&ready, "fd").parse().unwrap();
    let e = capture(p.pid, &mut opts(), &mut NullSink::default())
        .err()
        .expect("error");
    assert_eq!(
        e.to_string(),
        format!("fd {fd}: MPTCP socket is not supported yet")
    );
    // Resumed: ticks go on, and no tracer is left.
    p.wait_for("tick=");
    p.wait_for("tick=");
    let st = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap();
    assert!(st.contains("TracerPid:\t0"), "{st}");
    // No scratch mapping left behind either.
    assert!(p.alive());
}

const SECCOMP_C: &str = r#"
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* getitimer (which ckpt injects) kills the process. */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getitimer, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {4, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        printf("ERROR seccomp\n");
        return 1;
    }
    printf("READY\n");
    for (long i = 1;; i++) {
        printf("tick=%ld\n", i);
        struct timespec ts = {0, 3000000};
        nanosleep(&ts, NULL);
    }
}
"#;

#[test]
fn seccomp_filtered_process_survives_injection() {
    let bin = compile_c("seccomp", SECCOMP_C);
    let p = Proc::start(&mut Command::new(&bin));
    p.wait_for("READY");
    let cap = capture(p.pid, &mut opts(), &mut NullSink::default()).expect("capture");
    let creds = cap.image().processes[0].creds.clone();
    assert_eq!(cap.image().processes[0].itimers.len(), 3);
    cap.release().unwrap();
    assert_eq!(creds.seccomp_mode, 2);
    assert!(creds.no_new_privs);
    let a: i64 = field(&p.wait_for("tick="), "tick").parse().unwrap();
    let b: i64 = field(&p.wait_for("tick="), "tick").parse().unwrap();
    assert_eq!(b, a + 1);
    assert!(p.alive());
}

#[test]
fn stopped_process_stays_stopped() {
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    ckpt_sys::proc::kill(pid, libc::SIGSTOP).unwrap();
    let state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string()
            })
            .unwrap_or_default()
    };
    wait_until("stopped", Duration::from_secs(5), || state() == "T");
    let cap = capture(pid, &mut opts(), &mut NullSink::default()).expect("capture");
    assert_eq!(cap.image().processes[0].state, "T");
    cap.release().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(state(), "T", "still stopped after the dump");
    ckpt_sys::proc::kill(pid, libc::SIGCONT).unwrap();
    wait_until("running again", Duration::from_secs(5), || state() == "S");
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

const SHM_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t big = 256UL << 20;
    char *sh = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    strcpy(sh + 4096, "page one");
    strcpy(sh + 1000 * 4096, "page thousand");
    int mfd = memfd_create("shm3", 0);
    ftruncate(mfd, 3 * 4096);
    char *m = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    strcpy(m + 2 * 4096, "memfd page two");
    int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
    char *sv = shmat(id, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    strcpy(sv + 4096, "sysv");
    printf("READY sh=%p m=%p sv=%p shmid=%d\n", sh, m, sv, id);
    for (;;) pause();
}
"#;

fn rss_kb_of(pid: i32, start: u64) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut inside = false;
    for l in smaps.lines() {
        if let Some((range, _)) = l.split_once(' ') {
            if let Some((a, _)) = range.split_once('-') {
                if let Ok(a) = u64::from_str_radix(a, 16) {
                    inside = a == start;
                    continue;
                }
            }
        }
        if inside && l.starts_with("Rss:") {
            return l.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no vma at {start:#x}");
}

#[test]
fn shared_memory_holes_are_not_touched() {
    let bin = compile_c("shm", SHM_C);
    let p = Proc::start(&mut Command::new(&bin));
    let ready = p.wait_for("READY");
    let (sh, m, sv) = (
        hex_field(&ready, "sh"),
        hex_field(&ready, "m"),
        hex_field(&ready, "sv"),
    );
    let shm_before = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap();
    let mut sink = MemSink::default();
    let cap = capture(p.pid, &mut opts(), &mut sink).expect("capture");
    let img = cap.image().clone();
    cap.release().unwrap();
    let proc_ = &img.processes[0];
    let vma = |a: u64| proc_.vmas.iter().find(|v| v.start == a).unwrap();
    let VmaBacking::SharedMemory(s) = &vma(sh).backing else {
        panic!("{:?}", vma(sh))
    };
    assert_eq!(s.kind, ckpt_image::ShmKind::AnonymousShared);
    assert_eq!(s.size, 256 << 20);
    assert_eq!(&sink.read(sh + 4096, 8).unwrap(), b"page one");
    assert_eq!(&sink.read(sh + 1000 * 4096, 13).unwrap(), b"page thousand");
    // Holes are saved as zeros, without being read (which would allocate them).
    assert_eq!(sink.read(sh + 500 * 4096, 4096).unwrap(), vec![0u8; 4096]);
    assert!(sink.read(sh + (256 << 20) - 4096, 4096).is_some());
    assert!(
        rss_kb_of(p.pid, sh) <= 8,
        "holes were touched: Rss {} kB",
        rss_kb_of(p.pid, sh)
    );
    let shm_after = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap();
    let rss_shmem = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("RssShmem"))
            .unwrap()
            .to_string()
    };
    assert_eq!(rss_shmem(&shm_before), rss_shmem(&shm_after));

    // memfd mapped past its end: the pages beyond are left out.
    let VmaBacking::SharedMemory(s) = &vma(m).backing else {
        panic!()
    };
    assert_eq!((s.kind, s.size), (ckpt_image::ShmKind::Memfd, 3 * 4096));
    assert_eq!(&sink.read(m + 2 * 4096, 14).unwrap(), b"memfd page two");
    assert!(sink.read(m + 3 * 4096, 8).is_none());

    let VmaBacking::SharedMemory(s) = &vma(sv).backing else {
        panic!()
    };
    assert_eq!(s.kind, ckpt_image::ShmKind::SysvShm);
    let shmid = field(&ready, "shmid").parse::<i32>().unwrap();
    assert_eq!(s.id, shmid as u64);
    // The segment's contents are saved once, with the segment (removed:
    // IPC_RMID was done), not with the mapping.
    assert!(sink.read(sv + 4096, 4).is_none());
    let seg = img.sysv_shm.iter().find(|x| x.perm.id == shmid).unwrap();
    assert!(seg.removed);
    assert_eq!(seg.size, 8192);
    assert_eq!(&sink.blob(&seg.contents)[4096..4100], b"sysv");
    assert!(p.alive());
}

const RECEIVER_C: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static volatile long count, sum;
static void h(int s, siginfo_t *si, void *u) { (void)s; (void)u; count++; sum += si->si_value.sival_int; }
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    printf("READY\n");
    for (;;) {
        printf("count=%ld sum=%ld\n", count, sum);
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}
"#;

const SENDER_C: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    pid_t pid = atoi(argv[1]);
    int n = atoi(argv[2]);
    for (int i = 1; i <= n; i++) {
        union sigval v = {.sival_int = i};
        while (sigqueue(pid, SIGRTMIN, v) != 0) usleep(100);
        if (i % 4 == 0) usleep(200);
    }
    return 0;
}
"#;

#[test]
fn no_signal_is_lost_across_repeated_captures() {
    let recv = compile_c("receiver", RECEIVER_C);
    let send = compile_c("sender", SENDER_C);
    let p = Proc::start(&mut Command::new(&recv));
    p.wait_for("READY");
    let n = 3000i64;
    let mut sender = Command::new(&send)
        .args([p.pid.to_string(), n.to_string()])
        .spawn()
        .unwrap();
    let mut captures = 0;
    let mut pending_seen = 0;
    while sender.try_wait().unwrap().is_none() {
        let cap = capture(p.pid, &mut opts(), &mut NullSink::default()).expect("capture");
        let pr = &cap.image().processes[0];
        pending_seen += pr.shared_pending.len() + pr.threads[0].pending.len();
        cap.release().unwrap();
        captures += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(sender.wait().unwrap().success());
    let want = format!("count={n} sum={}", n * (n + 1) / 2);
    let t = Instant::now();
    loop {
        let l = p.wait_for("count=");
        if l == want {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "last: {l}, want {want}"
        );
    }
    eprintln!("{captures} captures during the storm, {pending_seen} pending signals seen");
    assert!(captures > 3);
}

const CHURN_C: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
static void *quick(void *a) { return a; }
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("READY\n");
    for (long i = 1;; i++) {
        pthread_t t[4];
        for (int k = 0; k < 4; k++) pthread_create(&t[k], NULL, quick, NULL);
        for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
        if (i % 200 == 0) printf("rounds=%ld\n", i);
    }
}
"#;

#[test]
fn threads_coming_and_going_while_freezing() {
    let bin = compile_c("churn", CHURN_C);
    let p = Proc::start(&mut Command::new(&bin));
    p.wait_for("READY");
    for _ in 0..20 {
        let cap = capture(p.pid, &mut opts(), &mut NullSink::default()).expect("capture");
        let threads = &cap.image().processes[0].threads;
        assert_eq!(threads[0].tid, p.pid);
        assert!(threads.len() <= 5);
        cap.release().unwrap();
        p.wait_for("rounds=");
    }
    assert!(p.alive());
}

#[test]
fn terminal_fds_are_ttys() {
    // python's pty.fork: the child runs on a new pseudo-terminal, its controlling one.
    let script = "import os, pty, sys, time, fcntl, termios, struct\n\
pid, fd = pty.fork()\n\
if pid == 0:\n    time.sleep(100)\n    os._exit(0)\n\
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', 33, 101, 0, 0))\n\
print('READY child=%d' % pid, flush=True)\n\
while True:\n    try:\n        os.read(fd, 1024)\n    except OSError:\n        time.sleep(0.01)\n";
    let p = Proc::start(Command::new("python3").args(["-c", script]));
    let ready = p.wait_for("READY");
    let child: i32 = field(&ready, "child").parse().unwrap();
    let link = || {
        std::fs::read_link(format!("/proc/{child}/fd/0"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    wait_until("the child on its pty", Duration::from_secs(5), || {
        link().starts_with("/dev/pts/")
    });
    std::thread::sleep(Duration::from_millis(50));
    let index: i32 = link().trim_start_matches("/dev/pts/").parse().unwrap();
    let cap = capture(child, &mut opts(), &mut NullSink::default()).expect("capture");
    let img = cap.image().clone();
    cap.release().unwrap();
    let proc_ = &img.processes[0];
    let f0 = img.file(proc_.fds[0].file).unwrap();
    let FileKind::Tty(t) = &f0.kind else {
        panic!("{f0:?}")
    };
    assert_eq!(t.index, index);
    assert!(t.is_controller);
    assert_eq!(t.termios.len(), 44);
    assert_eq!((t.win_rows, t.win_cols), (33, 101));
    assert_eq!(t.foreground_pgrp, proc_.pgid);
    assert_eq!(proc_.sid, child);
    // 0, 1, 2: one open file (dup'ed by pty.fork).
    assert_eq!(proc_.fds[1].file, proc_.fds[0].file);
    ckpt_sys::proc::kill(child, libc::SIGKILL).unwrap();
}

/// A process holding both ends of a pty with bytes buffered both ways:
/// output "out1" written on the slave, input "line1\npart" written to the
/// master (echoed into the output). On SIGUSR1 it reads what the master
/// and the slave have, then ends the unfinished line and reads it.
const PTY_PAIR_PY: &str = r#"
import os, sys, time, fcntl, termios, struct, signal
m, s = os.openpty()
fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack('HHHH', 20, 70, 3, 4))
os.write(s, b'out1\n')
os.write(m, b'line1\npart')
time.sleep(0.2)
def report(*_):
    os.set_blocking(m, False)
    out = os.read(m, 4096)
    line = os.read(s, 4096)
    os.write(m, b'\n')
    rest = os.read(s, 4096)
    print('GOT out=%r line=%r rest=%r' % (out, line, rest), flush=True)
signal.signal(signal.SIGUSR1, report)
print('READY tty=%s' % os.ttyname(s), flush=True)
while True:
    signal.pause()
"#;

#[test]
fn pty_pair_with_buffered_bytes_is_saved_and_put_back() {
    let p = Proc::start(Command::new("python3").args(["-c", PTY_PAIR_PY]));
    let ready = p.wait_for("READY");
    let index: u32 = field(&ready, "tty")
        .trim_start_matches("/dev/pts/")
        .parse()
        .unwrap();
    let cap = capture(p.pid, &mut opts(), &mut NullSink::default()).expect("capture");
    let img = cap.image().clone();
    cap.release().unwrap();
    assert_eq!(img.ptys.len(), 1, "{:?}", img.ptys);
    let pair = &img.ptys[0];
    assert_eq!(pair.index, index);
    assert_eq!(
        (
            pair.win_rows,
            pair.win_cols,
            pair.win_xpixel,
            pair.win_ypixel
        ),
        (20, 70, 3, 4)
    );
    assert_eq!(pair.input_lines, vec![b"line1\n".to_vec()]);
    assert_eq!(pair.input_pending, b"part");
    assert_eq!(pair.output, b"out1\r\nline1\r\npart");
    assert!(!pair.peer_closed && !pair.locked && !pair.packet);
    assert_eq!(pair.termios.len(), 44);
    // Both ends point at the pair.
    let ends: Vec<_> = img
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::Tty(t) => Some((t.role, t.pair)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [
            (ckpt_image::TtyRole::Master, pair.id),
            (ckpt_image::TtyRole::Slave, pair.id)
        ]
    );
    // The process finds its bytes as they were.
    signal(p.pid, libc::SIGUSR1).unwrap();
    let got = p.wait_for("GOT");
    assert_eq!(
        got,
        "GOT out=b'out1\\r\\nline1\\r\\npart' line=b'line1\\n' rest=b'part\\n'"
    );
}

#[test]
fn pty_master_whose_slave_is_outside_is_refused_by_name() {
    // The master here, its slave in a process that is not a descendant
    // (forked twice: its parent exited).
    let script = "import os, time\n\
m, s = os.openpty()\n\
if os.fork() == 0:\n    if os.fork() == 0:\n        print('HOLDER pid=%d' % os.getpid(), flush=True)\n        time.sleep(100)\n    os._exit(0)\n\
os.wait()\n\
os.close(s)\n\
print('READY', flush=True)\n\
time.sleep(100)\n";
    let p = Proc::start(Command::new("python3").args(["-c", script]));
    wait_until("READY and HOLDER", Duration::from_secs(10), || {
        let o = p.output();
        o.contains("READY") && o.contains("HOLDER pid=")
    });
    let out = p.output();
    // Two processes print: Python writes a line's text and its newline
    // apart, so READY may fall inside the holder's line, or before it.
    let at = out.find("HOLDER").unwrap();
    let line = out[at..].lines().next().unwrap().trim_end_matches("READY");
    let holder: i32 = field(line, "pid").parse().unwrap();
    let e = capture(p.pid, &mut opts(), &mut NullSink::default())
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("its slave is open in pid {holder} (python3)")),
        "{msg}"
    );
    assert!(p.alive());
    ckpt_sys::proc::kill(holder, libc::SIGKILL).unwrap();
}

/// 10,000 fds on one file: separate open()s (different flags, some at the
/// same position) and dup()s of earlier ones, interleaved. Which fds share
/// an open file description is decided in n log n kcmp calls (it used to
/// take n^2/2: 66 s frozen for this many).
const MANY_FDS_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#define N 10000
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    if (rl.rlim_max < N + 64 || setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        printf("ERROR RLIMIT_NOFILE hard limit %lu is below %d\n", (unsigned long)rl.rlim_max, N + 64);
        return 1;
    }
    close_range(3, ~0U, 0); /* fds inherited from the test harness */
    int first = open(argv[1], O_RDWR | O_CREAT, 0600);
    if (first < 0 || write(first, "0123456789", 10) != 10) { printf("ERROR create\n"); return 1; }
    for (int i = 1; i < N; i++) {
        int fd;
        if (i % 5 == 0 || i % 7 == 3) {
            fd = open(argv[1], (i % 2 ? O_RDWR : O_RDONLY) | (i % 4 == 0 ? O_APPEND : 0));
            if (fd >= 0) lseek(fd, i % 3, SEEK_SET);
        } else {
            int src = i - 1 - i % 4;
            fd = dup(first + (src < 0 ? 0 : src));
        }
        if (fd != first + i) { printf("ERROR fd %d is not %d\n", fd, first + i); return 1; }
    }
    lseek(first, 3, SEEK_SET);
    printf("READY first=%d\n", first);
    for (;;) pause();
}
"#;

#[test]
fn ten_thousand_fds_on_one_file_are_grouped_fast() {
    const N: usize = 10_000;
    let dir = TempDir::new("manyfds");
    let bin = ckpt_testkit::compile_c_in(&dir, "manyfds", MANY_FDS_C);
    let f = dir.path().join("f");
    let p = Proc::spawn(&dir, &bin, &[f.to_str().unwrap()]);
    let ready = p.wait_for("READY");
    let first: i32 = field(&ready, "first").parse().unwrap();
    // The program's pattern: description of fd first + i, with its flags
    // and position.
    let mut desc = vec![0usize; N];
    let mut opens: Vec<(u32, u64)> = vec![(libc::O_RDWR as u32, 3)];
    for i in 1..N {
        if i % 5 == 0 || i % 7 == 3 {
            let acc = if i % 2 == 1 {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            };
            let append = if i % 4 == 0 { libc::O_APPEND } else { 0 };
            desc[i] = opens.len();
            opens.push(((acc | append) as u32, (i % 3) as u64));
        } else {
            desc[i] = desc[(i - 1).saturating_sub(i % 4)];
        }
    }

    let t = Instant::now();
    let cap = capture(p.pid, &mut opts(), &mut NullSink::default()).expect("capture");
    let took = t.elapsed();
    let frozen = cap.release().unwrap();
    eprintln!("10,000 fds: capture {took:?}, frozen {frozen:?}");
    assert!(
        took < Duration::from_secs(1),
        "capturing 10,000 fds took {took:?}"
    );
    assert!(p.alive());

    let (img, _) = {
        let cap = capture(p.pid, &mut opts(), &mut NullSink::default()).expect("capture");
        cap.into_image().unwrap()
    };
    let proc_ = &img.processes[0];
    let mut file_of_desc: Vec<Option<u32>> = vec![None; opens.len()];
    let mut ids = std::collections::HashSet::new();
    for (i, &d) in desc.iter().enumerate() {
        let fd = first + i as i32;
        let f = proc_.fds.iter().find(|f| f.fd == fd).expect("fd saved");
        match file_of_desc[d] {
            None => {
                assert!(ids.insert(f.file), "fd {fd}: open file {} reused", f.file);
                file_of_desc[d] = Some(f.file);
                let of = img.file(f.file).unwrap();
                let (flags, pos) = opens[d];
                let mask = (libc::O_ACCMODE | libc::O_APPEND) as u32;
                assert_eq!(of.flags & mask, flags, "fd {fd}");
                assert_eq!(of.position, pos, "fd {fd}");
                assert!(matches!(of.kind, FileKind::Regular(_)), "{of:?}");
            }
            Some(id) => assert_eq!(f.file, id, "fd {fd} shares an earlier fd's description"),
        }
    }
    assert_eq!(ids.len(), opens.len());
    // Open files are numbered in the order of their lowest fd.
    let mut seen = Vec::new();
    for f in &proc_.fds {
        if !seen.contains(&f.file) {
            seen.push(f.file);
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ids in order of lowest fd"
    );
}
