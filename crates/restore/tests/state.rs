//! State that single processes keep and share (issue 12): SysV IPC,
//! deleted files and other nodes, O_PATH and namespace fds, pidfds, epoll
//! watches of closed fds, fanotify, timerfd expiry, memory advice, locks
//! and guard pages, membarrier, the login uid, cgroup v2 membership and
//! seccomp filters. Each test runs a real program, dumps it with
//! ckpt-capture, restores it with ckpt-restore, and the program (which
//! checks its own state every tick, printing ERROR when something is
//! off) goes on.

mod common;
use ckpt_restore::RestoreOptions;
use common::*;

/// Spawn `bin` in `dir`, wait for READY and a few ticks; the READY line.
fn start(dir: &TempDir, bin: &std::path::Path, args: &[&str]) -> (Proc, String) {
    need(require::root());
    let p = Proc::spawn(dir, bin, args);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    p.wait_line(|l| l.starts_with("tick="));
    (p, ready)
}

/// Restore `image`, and wait for the restored process to tick twice.
fn restore_and_tick(image: &std::path::Path, p: &Proc) -> Proc {
    let before = p.line_count();
    let r = restore(image, &RestoreOptions::default()).unwrap_or_else(|e| panic!("restore: {e}"));
    assert_eq!(r.pid, p.pid);
    let q = restored(&r, &p.out);
    q.wait_line_after(before, |l| l.starts_with("tick="));
    q.wait_more_lines(2);
    q
}

const SYSV: &str = r#"
#include "fixture.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#define SIZE (3 * 4096 + 100)
struct msg { long t; char d[32]; };
static int ids[3] = {-1, -1, -1};
/* A failing run removes what it made (a dump kills it: nothing runs). */
static void cleanup(void) {
    if (ids[0] >= 0) shmctl(ids[0], IPC_RMID, NULL);
    if (ids[1] >= 0) semctl(ids[1], 0, IPC_RMID);
    if (ids[2] >= 0) msgctl(ids[2], IPC_RMID, NULL);
}
int main(void) {
    fx_init();
    atexit(cleanup);
    int shm = ids[0] = shmget(IPC_PRIVATE, SIZE, 0640);
    char *a = shmat(shm, NULL, 0);
    char *a2 = shmat(shm, NULL, SHM_RDONLY);
    if (shm < 0 || a == (void *)-1 || a2 == (void *)-1) fail("shm: %s", strerror(errno));
    for (int i = 0; i < SIZE; i++) a[i] = (char)(i * 7 + 1);
    int rm = shmget(IPC_PRIVATE, 8192, 0600);
    char *r = shmat(rm, NULL, 0);
    if (rm < 0 || r == (void *)-1) fail("rm: %s", strerror(errno));
    memset(r + 4096, 0x5a, 4096);
    shmctl(rm, IPC_RMID, NULL);
    int sem = ids[1] = semget(IPC_PRIVATE, 2, 0600);
    unsigned short v[2] = {3, 7};
    struct sembuf op[2] = {{0, 1, 0}, {0, -1, 0}};
    if (sem < 0 || semctl(sem, 0, SETALL, v) || semop(sem, op, 2)) fail("sem: %s", strerror(errno));
    int q = ids[2] = msgget(IPC_PRIVATE, 0600);
    struct msg m = {5, "first"};
    if (q < 0 || msgsnd(q, &m, 6, 0)) fail("msg: %s", strerror(errno));
    m.t = 9;
    strcpy(m.d, "second");
    msgsnd(q, &m, 7, 0);
    say("READY shm=%d rm=%d sem=%d msg=%d", shm, rm, sem, q);
    for (long t = 1;; t++) {
        for (int i = 0; i < SIZE; i++)
            if (a[i] != (char)(i * 7 + 1) || a2[i] != a[i]) fail("shm byte %d", i);
        for (int i = 0; i < 8192; i++)
            if (r[i] != (i < 4096 ? 0 : 0x5a)) fail("removed shm byte %d", i);
        if (semctl(sem, 0, GETVAL) != 3 || semctl(sem, 1, GETVAL) != 7) fail("sem values");
        struct msqid_ds ds;
        if (msgctl(q, IPC_STAT, &ds) || ds.msg_qnum != 2) fail("msg queue: %s", strerror(errno));
        struct msg got;
        if (msgrcv(q, &got, 32, 0, MSG_COPY | IPC_NOWAIT) != 6 || got.t != 5 || strcmp(got.d, "first"))
            fail("first message");
        if (msgrcv(q, &got, 32, 1, MSG_COPY | IPC_NOWAIT) != 7 || got.t != 9 || strcmp(got.d, "second"))
            fail("second message");
        struct shmid_ds sd;
        if (shmctl(rm, IPC_STAT, &sd) || !(sd.shm_perm.mode & SHM_DEST)) fail("removed segment not removed");
        say("tick=%ld", t);
        msleep(20);
    }
}
"#;

/// `ipcrm` of what the test made, whatever happens.
struct Ipc(Vec<(ckpt_sys::ipc::Kind, i32)>);

impl Drop for Ipc {
    fn drop(&mut self) {
        for &(k, id) in &self.0 {
            let _ = ckpt_sys::ipc::remove(k, id);
        }
    }
}

#[test]
fn sysv_ipc_comes_back_with_its_ids_and_contents() {
    use ckpt_sys::ipc::Kind;
    let dir = TempDir::new("sysv");
    let bin = compile_c("sysvuse", SYSV);
    let (mut p, ready) = start(&dir, &bin, &[]);
    let id = |k: &str| field(&ready, k).parse::<i32>().unwrap();
    let (shm, rm, sem, msg) = (id("shm"), id("rm"), id("sem"), id("msg"));
    let _cleanup = Ipc(vec![(Kind::Shm, shm), (Kind::Sem, sem), (Kind::Msg, msg)]);
    let image = dump_kill(&mut p, &dir);
    let img = ckpt_image::ImageReader::open(&image).unwrap();
    let i = img.image();
    assert_eq!(i.sysv_shm.len(), 2, "{:?}", i.sysv_shm);
    assert!(i.sysv_shm.iter().any(|s| s.perm.id == rm && s.removed));
    assert_eq!(i.sysv_sem.len(), 1);
    assert_eq!(i.sysv_sem[0].values, vec![3, 7]);
    assert_eq!(i.sysv_msg[0].messages.len(), 2);
    // The removed segment went with the process; the others are still
    // there, unchanged: reused.
    assert!(ckpt_sys::ipc::shm_stat(rm).is_err());
    let report = ckpt_restore::check(&img, &RestoreOptions::default());
    assert!(report.is_ok(), "{report}");
    assert!(
        report.warnings.iter().any(|w| w.contains("unchanged")),
        "{report}"
    );
    let mut q = restore_and_tick(&image, &p);
    q.kill();
    // Gone: made again with their ids.
    for (k, id) in [(Kind::Shm, shm), (Kind::Sem, sem), (Kind::Msg, msg)] {
        ckpt_sys::ipc::remove(k, id).unwrap();
    }
    let mut q = restore_and_tick(&image, &p);
    let sysvipc = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        sysvipc
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&shm.to_string())),
        "{sysvipc}"
    );
    q.kill();
    // A segment changed since the dump is not taken over.
    ckpt_sys::ipc::ShmAttach::new(shm, 4096, true)
        .unwrap()
        .write(0, b"changed");
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("shared memory segment {shm}")),
        "{e}"
    );
}

const FILES: &str = r#"
#include "fixture.h"
#include <fcntl.h>
#include <semaphore.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#define MIB (1 << 20)
int main(int argc, char **argv) {
    fx_init();
    if (argc < 2 || chdir(argv[1])) fail("chdir");
    int f = open("sparse", O_RDWR | O_CREAT, 0600);
    if (f < 0 || pwrite(f, "head", 4, 0) != 4 || pwrite(f, "tail", 4, MIB) != 4) fail("sparse");
    if (ftruncate(f, 2 * MIB) || fchmod(f, 0641) || fchown(f, 1234, 5678)) fail("sparse meta: %s", strerror(errno));
    struct timespec ts[2] = {{1000000000, 5}, {1100000000, 7}};
    if (futimens(f, ts) || unlink("sparse")) fail("sparse times");
    if (mkdir("gone", 0755)) fail("mkdir");
    int d = open("gone", O_RDONLY | O_DIRECTORY);
    if (d < 0 || chmod("gone", 0711) || rmdir("gone")) fail("gone");
    if (mkfifo("fifo", 0620) || chmod("fifo", 0620)) fail("mkfifo");
    int ff = open("fifo", O_RDWR | O_NONBLOCK);
    if (ff < 0 || write(ff, "abc", 3) != 3 || unlink("fifo")) fail("fifo");
    if (symlink("/etc/hostname", "lnk")) fail("symlink");
    int l = open("lnk", O_PATH | O_NOFOLLOW);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {AF_UNIX, "sock"};
    if (l < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa)) fail("bind");
    int sp = open("sock", O_PATH);
    if (sp < 0 || close(s) || unlink("sock")) fail("socket node");
    int ns = open("/proc/self/ns/net", O_RDONLY);
    int uts = open("/proc/self/ns/uts", O_RDONLY);
    if (ns < 0 || uts < 0) fail("ns");
    /* POSIX shared memory, deleted (shm_unlink) and mapped; a named
       semaphore (argv[2]) whose value lives in /dev/shm. */
    char name[64];
    snprintf(name, sizeof name, "/ckpt-state-%d", getpid());
    int pshm = shm_open(name, O_RDWR | O_CREAT, 0640);
    if (pshm < 0 || ftruncate(pshm, 8192) || pwrite(pshm, "posix", 5, 4096) != 5 || shm_unlink(name)) fail("shm_open");
    char *pm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, pshm, 0);
    sem_t *sem = sem_open(argv[2], O_CREAT, 0600, 5);
    if (pm == MAP_FAILED || sem == SEM_FAILED) fail("sem_open: %s", strerror(errno));
    if (mkdir("cwd", 0750) || chdir("cwd") || rmdir("../cwd")) fail("cwd");
    say("READY f=%d d=%d fifo=%d lnk=%d sock=%d ns=%d uts=%d pshm=%d", f, d, ff, l, sp, ns, uts, pshm);
    for (long t = 1;; t++) {
        struct stat st;
        if (fstat(f, &st) || st.st_size != 2 * MIB || (st.st_mode & 07777) != 0641 ||
            st.st_uid != 1234 || st.st_gid != 5678 || st.st_nlink != 0)
            fail("sparse stat size=%ld mode=%o uid=%d gid=%d", (long)st.st_size, st.st_mode, st.st_uid, st.st_gid);
        if (st.st_mtim.tv_sec != 1100000000 || st.st_mtim.tv_nsec != 7) fail("sparse mtime %ld", (long)st.st_mtim.tv_sec);
        if (st.st_blocks * 512 > 256 * 1024) fail("sparse file has %ld blocks: holes lost", (long)st.st_blocks);
        char b[5] = {0};
        if (pread(f, b, 4, 0) != 4 || strcmp(b, "head")) fail("head");
        if (pread(f, b, 4, MIB) != 4 || strcmp(b, "tail")) fail("tail");
        if (pread(f, b, 4, 1000) != 4 || memcmp(b, "\0\0\0\0", 4)) fail("hole");
        if (fstat(d, &st) || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0711 || st.st_nlink != 0)
            fail("deleted dir mode=%o nlink=%ld", st.st_mode, (long)st.st_nlink);
        int n = 0;
        if (ioctl(ff, FIONREAD, &n) || n != 3) fail("fifo holds %d bytes", n);
        if (fstat(ff, &st) || !S_ISFIFO(st.st_mode) || (st.st_mode & 0777) != 0620 || st.st_nlink != 0) fail("fifo stat");
        if (fstatat(l, "", &st, AT_EMPTY_PATH) || !S_ISLNK(st.st_mode)) fail("O_PATH symlink");
        char target[64] = {0};
        if (readlinkat(l, "", target, sizeof target) != 13 || strcmp(target, "/etc/hostname")) fail("symlink target");
        if (fstatat(sp, "", &st, AT_EMPTY_PATH) || !S_ISSOCK(st.st_mode) || st.st_nlink != 0) fail("O_PATH socket");
        struct stat a, b2;
        if (fstat(ns, &a) || stat("/proc/self/ns/net", &b2) || a.st_ino != b2.st_ino) fail("net ns");
        if (fstat(uts, &a) || stat("/proc/self/ns/uts", &b2) || a.st_ino != b2.st_ino) fail("uts ns");
        char cwd[256];
        if (getcwd(cwd, sizeof cwd) || errno != ENOENT) fail("cwd is not deleted");
        if (stat(".", &st) || (st.st_mode & 07777) != 0750 || st.st_nlink != 0) fail("cwd mode %o", st.st_mode);
        if (pread(pshm, b, 5, 4096) != 5 || memcmp(b, "posix", 5) || memcmp(pm + 4096, "posix", 5)) fail("posix shm");
        pm[100] = (char)t; /* the mapping and the fd are one object */
        if (pread(pshm, b, 1, 100) != 1 || b[0] != (char)t) fail("posix shm mapping and fd differ");
        int v = 0;
        if (sem_getvalue(sem, &v) || v != 5) fail("semaphore value %d", v);
        say("tick=%ld", t);
        msleep(20);
    }
}
"#;

#[test]
fn deleted_files_nodes_o_path_and_namespace_fds() {
    let dir = TempDir::new("deleted");
    let bin = compile_c("deleted", FILES);
    let work = dir.mkdir("work");
    let sem = format!("/ckpt-state-sem-{}", std::process::id());
    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _sem = Unlink(format!("/dev/shm/sem.{}", &sem[1..]));
    let (mut p, ready) = start(&dir, &bin, &[work.to_str().unwrap(), &sem]);
    let image = dump_kill(&mut p, &dir);
    let img = ckpt_image::ImageReader::open(&image).unwrap();
    let sparse = img
        .image()
        .files
        .iter()
        .find_map(|f| match &f.kind {
            ckpt_image::FileKind::Regular(r) if r.has_contents && r.file.size == 2 << 20 => {
                Some(r.clone())
            }
            _ => None,
        })
        .expect("the deleted file");
    assert_eq!(sparse.contents.size, 4096 + 4096, "{sparse:?}");
    assert_eq!(sparse.extents.len(), 2, "{sparse:?}");
    let q = restore_and_tick(&image, &p);
    let link = |fd: &str| {
        std::fs::read_link(format!("/proc/{}/fd/{}", q.pid, field(&ready, fd)))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let f = link("f");
    assert!(f.starts_with(work.to_str().unwrap()), "{f}");
    assert!(f.ends_with(" (deleted)"), "{f}");
    let pshm = link("pshm");
    assert!(
        pshm.starts_with("/dev/shm/") && pshm.ends_with(" (deleted)"),
        "{pshm}"
    );
    // Nothing left behind where the nodes were made again.
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}"); // lnk
}

const KINDS: &str = r#"
#include "fixture.h"
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#define PIDFD_THREAD O_EXCL
static volatile int thread_tid;
static void *thr(void *x) {
    (void)x;
    thread_tid = gettid();
    for (;;) pause();
}
static int pidfd_open(int pid, unsigned flags) { return syscall(SYS_pidfd_open, pid, flags); }
static int pidfd_signal0(int fd) { return syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0); }
static int64_t real_ns(void) { return now_ns(CLOCK_REALTIME); }
int main(int argc, char **argv) {
    fx_init();
    if (argc < 2) fail("usage");
    pthread_t t;
    pthread_create(&t, NULL, thr, NULL);
    while (!thread_tid) msleep(1);
    int self = pidfd_open(getpid(), 0);
    int th = pidfd_open(thread_tid, PIDFD_THREAD);
    pid_t c = fork();
    if (c == 0) _exit(3);
    int dead = pidfd_open(c, 0);
    waitpid(c, NULL, 0);
    if (self < 0 || th < 0 || dead < 0) fail("pidfds: %s", strerror(errno));
    int e = eventfd(0, EFD_NONBLOCK);
    int e2 = dup(e);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1234};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev)) fail("epoll_ctl");
    close(e);
    int nul = open("/dev/null", O_RDONLY); /* takes e's number */
    struct epoll_event pev = {.events = EPOLLIN, .data.u64 = 0x5e1f};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, self, &pev)) fail("epoll_ctl pidfd");
    int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
    if (fan < 0 || fanotify_mark(fan, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD, AT_FDCWD, argv[1]))
        fail("fanotify: %s", strerror(errno));
    int64_t delay = 3000000000LL;
    int tf = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    int64_t real_due = real_ns() + delay;
    struct itimerspec its = {{0, 0}, {real_due / 1000000000, real_due % 1000000000}};
    if (timerfd_settime(tf, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL)) fail("tf");
    int tm = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int64_t mono_due = mono_ns() + delay;
    struct itimerspec rel = {{0, 200000000}, {delay / 1000000000, delay % 1000000000}};
    if (timerfd_settime(tm, 0, &rel, NULL)) fail("tm");
    say("READY tid=%d self=%d th=%d dead=%d ep=%d nul=%d e=%d tf=%d tm=%d", thread_tid, self, th, dead, ep, nul, e, tf, tm);
    int tf_fired = 0, tm_fired = 0;
    for (long n = 1;; n++) {
        if (pidfd_signal0(self) || pidfd_signal0(th)) fail("pidfd of a live task: %s", strerror(errno));
        if (pidfd_signal0(dead) == 0 || errno != ESRCH) fail("pidfd of a dead process works");
        uint64_t one = 1;
        if (write(e2, &one, 8) != 8) fail("eventfd write");
        struct epoll_event got;
        if (epoll_wait(ep, &got, 1, 0) != 1 || got.data.u64 != 0x1234) fail("epoll of the closed fd");
        if (read(e2, &one, 8) != 8) fail("eventfd read");
        if (n % 5 == 0) {
            char path[256];
            snprintf(path, sizeof path, "%s/f%ld", argv[1], n);
            int w = open(path, O_WRONLY | O_CREAT, 0600);
            close(w);
            char buf[4096];
            ssize_t r = read(fan, buf, sizeof buf);
            struct fanotify_event_metadata *m = (void *)buf;
            if (r < (ssize_t)sizeof *m || !(m->mask & FAN_CLOSE_WRITE)) fail("no fanotify event (%zd)", r);
            if (m->fd >= 0) close(m->fd);
            unlink(path);
        }
        uint64_t exp;
        if (!tf_fired && read(tf, &exp, 8) == 8) {
            tf_fired = 1;
            say("fired=tf late_ms=%ld", (long)((real_ns() - real_due) / 1000000));
        }
        if (!tm_fired && read(tm, &exp, 8) == 8) {
            tm_fired = 1;
            say("fired=tm late_ms=%ld ticks=%lu", (long)((mono_ns() - mono_due) / 1000000), (unsigned long)exp);
        }
        say("tick=%ld", n);
        msleep(10);
    }
}
"#;

#[test]
fn pidfds_epoll_of_closed_fds_fanotify_and_exact_timerfds() {
    let dir = TempDir::new("kinds");
    let bin = compile_c("kinds", KINDS);
    let watched = dir.mkdir("watched");
    let (mut p, ready) = start(&dir, &bin, &[watched.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let image = dump_kill(&mut p, &dir);
    // The timers run on while the process is away.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let q = restore_and_tick(&image, &p);
    for fd in ["self", "th"] {
        let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", q.pid, field(&ready, fd)))
            .unwrap();
        let want = if fd == "self" {
            q.pid.to_string()
        } else {
            field(&ready, "tid")
        };
        assert!(info.contains(&format!("Pid:\t{want}\n")), "{fd}: {info}");
    }
    let tf =
        std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", q.pid, field(&ready, "tf"))).unwrap();
    assert!(tf.contains("settime flags: 03"), "{tf}");
    for t in ["tf", "tm"] {
        let l = q.wait_line(|l| l.starts_with(&format!("fired={t} ")));
        let late = field(&l, "late_ms").parse::<i64>().unwrap();
        assert!(
            (0..300).contains(&late),
            "{t} fired {late} ms after its time: {l}"
        );
    }
    let l = q.wait_line(|l| l.starts_with("fired=tm "));
    assert_eq!(field(&l, "ticks"), "1", "{l}");
    q.wait_more_lines(10);
}

const MEMFLAGS: &str = r#"
#include "fixture.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#define P 4096L
#define MADV_GUARD_INSTALL 102
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)
static char *area(long pages) {
    char *p = mmap(NULL, pages * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap");
    for (long i = 0; i < pages * P; i++) p[i] = (char)(i % 251 + 1);
    return p;
}
static uint64_t pagemap(char *a) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    uint64_t e = 0;
    pread(fd, &e, 8, (uintptr_t)a / P * 8);
    close(fd);
    return e;
}
int main(void) {
    fx_init();
    char *dc = area(4), *wf = area(4), *lo = area(4), *lf = area(4), *g = area(8);
    if (madvise(dc, 4 * P, MADV_DONTFORK) || madvise(wf, 4 * P, MADV_WIPEONFORK)) fail("madvise");
    if (mlock(lo, 4 * P) || mlock2(lf, 4 * P, MLOCK_ONFAULT)) fail("mlock: %s", strerror(errno));
    if (madvise(g + 2 * P, 2 * P, MADV_GUARD_INSTALL)) fail("guard: %s", strerror(errno));
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0)) fail("membarrier");
    int fd = open("/proc/self/loginuid", O_WRONLY);
    if (fd < 0 || write(fd, "4242", 4) != 4) fail("loginuid: %s", strerror(errno));
    close(fd);
    say("READY dc=%p wf=%p lo=%p lf=%p g=%p", dc, wf, lo, lf, g);
    for (long t = 1;; t++) {
        char *all[] = {dc, wf, lo, lf};
        for (int k = 0; k < 4; k++)
            for (long i = 0; i < 4 * P; i++)
                if (all[k][i] != (char)(i % 251 + 1)) fail("area %d byte %ld", k, i);
        for (long i = 0; i < 8 * P; i++) {
            if (i == 2 * P) i = 4 * P;
            if (g[i] != (char)(i % 251 + 1)) fail("guarded area byte %ld", i);
        }
        for (int k = 0; k < 8; k++) {
            int guard = (pagemap(g + k * P) >> 58) & 1;
            if (guard != (k == 2 || k == 3)) fail("page %d of the guarded area: guard=%d", k, guard);
        }
        long r = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
        if (!(r & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)) fail("membarrier registrations %ld", r);
        say("tick=%ld", t);
        msleep(20);
    }
}
"#;

/// The VmFlags of the mapping at `addr` of `pid`.
fn vm_flags(pid: i32, addr: u64) -> Vec<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut inside = false;
    for l in smaps.lines() {
        if let Some((range, _)) = l.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    inside = a <= addr && addr < b;
                    continue;
                }
            }
        }
        if inside {
            if let Some(f) = l.strip_prefix("VmFlags:") {
                return f.split_whitespace().map(str::to_string).collect();
            }
        }
    }
    panic!("no mapping at {addr:#x} in pid {pid}");
}

/// A cgroup v2 group of the test's own, removed on drop.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = info
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.starts_with("cgroup2 "))
                    .then(|| left.split_whitespace().nth(4).map(str::to_string))?
            })
            .unwrap_or_else(|| panic!("no cgroup v2 hierarchy is mounted:\n{info}"));
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        let dir = std::path::Path::new(&root)
            .join(own.trim_start_matches('/'))
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup(dir)
    }
    /// Its path as /proc/PID/cgroup shows it.
    fn path(&self) -> String {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = info
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.starts_with("cgroup2 "))
                    .then(|| left.split_whitespace().nth(4).map(str::to_string))?
            })
            .unwrap();
        format!("/{}", self.0.strip_prefix(root).unwrap().display())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[test]
fn madvise_mlock_guard_pages_membarrier_loginuid_and_cgroup() {
    let dir = TempDir::new("memflags");
    let bin = compile_c("memflags", MEMFLAGS);
    need(require::path(
        "/proc/self/loginuid",
        "the audit login uid (CONFIG_AUDIT)",
    ));
    let (mut p, ready) = start(&dir, &bin, &[]);
    let cg = Cgroup::new("ckpt-state");
    std::fs::write(cg.0.join("cgroup.procs"), p.pid.to_string()).unwrap();
    let want_cg = cg.path();
    let image = dump_kill(&mut p, &dir);
    let q = restore_and_tick(&image, &p);
    let addr = |k: &str| hex_field(&ready, k);
    let has = |k: &str, flag: &str| {
        let f = vm_flags(q.pid, addr(k));
        assert!(f.iter().any(|x| x == flag), "{k}: {flag} not in {f:?}");
    };
    has("dc", "dc");
    has("wf", "wf");
    has("lo", "lo");
    has("lf", "lf");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/loginuid", q.pid)).unwrap(),
        "4242"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", q.pid)).unwrap();
    assert!(
        cgroup.lines().any(|l| l == format!("0::{want_cg}")),
        "{cgroup} (want {want_cg})"
    );
    q.wait_more_lines(5);
    drop(q);

    // A cgroup that is gone: its own error, before anything starts.
    drop(cg);
    let e = restore(&image, &RestoreOptions::default()).unwrap_err();
    assert!(e.to_string().contains(&format!("cgroup {want_cg}")), "{e}");
}

const SECCOMP: &str = r#"
#include "fixture.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
static int deny(long nr, int err, unsigned flags) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog p = {4, f};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}
static int fails_with(long nr, int err) { errno = 0; return syscall(nr, 0, 0) == -1 && errno == err; }
static const char *marker;
static volatile int synced, installed;
static void *thr(void *x) {
    (void)x;
    while (!installed) msleep(1);
    if (deny(SYS_getppid, 92, 0)) fail("thread filter: %s", strerror(errno));
    for (;;) {
        if (!fails_with(SYS_uname, 91) || !fails_with(SYS_getppid, 92)) fail("thread filters");
        struct stat st;
        if (!synced && stat(marker, &st) == 0) {
            /* The main thread's filter must be the very object under ours. */
            int r = deny(SYS_getpgid, 94, SECCOMP_FILTER_FLAG_TSYNC);
            if (r != 0) fail("tsync: %d %s", r, strerror(errno));
            say("tsync=ok");
            synced = 1;
        }
        msleep(10);
    }
}
int main(int argc, char **argv) {
    fx_init();
    if (argc < 2) fail("usage");
    marker = argv[1];
    pthread_t t;
    pthread_create(&t, NULL, thr, NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || deny(SYS_uname, 91, SECCOMP_FILTER_FLAG_TSYNC))
        fail("main filter: %s", strerror(errno));
    installed = 1;
    msleep(50);
    say("READY");
    for (long n = 1;; n++) {
        if (!fails_with(SYS_uname, 91)) fail("main: uname allowed");
        if (!synced && fails_with(SYS_getppid, 92)) fail("main: the thread's filter applies to main");
        if (synced && (!fails_with(SYS_getppid, 92) || !fails_with(SYS_getpgid, 94))) fail("main: not synced");
        say("tick=%ld synced=%d", n, synced);
        msleep(20);
    }
}
"#;

#[test]
fn seccomp_filters_are_installed_again_shared_as_saved() {
    let dir = TempDir::new("seccomp");
    let bin = compile_c("seccomped", SECCOMP);
    let marker = dir.join("go");
    let (mut p, _) = start(&dir, &bin, &[marker.to_str().unwrap()]);
    let image = dump_kill(&mut p, &dir);
    let img = ckpt_image::ImageReader::open(&image).unwrap();
    // Filter A (shared), and B on top of it for the thread.
    let table = &img.image().seccomp_filters;
    let threads: Vec<u32> = img.image().processes[0]
        .threads
        .iter()
        .map(|t| t.seccomp_filter)
        .collect();
    assert_eq!(table.len(), 2, "{table:?} {threads:?}");
    let q = restore_and_tick(&image, &p);
    let status =
        |tid: i32| std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", q.pid)).unwrap();
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", q.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    let mut counts: Vec<String> = tids
        .iter()
        .map(|&t| {
            status(t)
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp_filters:"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    counts.sort();
    assert_eq!(counts, vec!["1", "2"]);
    let before = q.line_count();
    std::fs::write(&marker, b"").unwrap();
    q.wait_line_after(before, |l| l == "tsync=ok");
    q.wait_line_after(before, |l| l.contains("synced=1"));
}
