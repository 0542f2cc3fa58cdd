//! `ckpt dump` then `ckpt restore`: the process must carry on where it was.

use crate::util::*;
use std::os::unix::fs::OpenOptionsExt;

/// `scenarios::roundtrip` through the ckpt binary, on a fixture.
fn roundtrip(dir: &TempDir, prog: &str, args: &[&str], warmup: usize) -> (Proc, usize) {
    scenarios::roundtrip(&Binary, dir, fixture(prog), args, warmup)
}

#[test]
fn counter_continues_at_the_same_pid() {
    let dir = TempDir::new("counter");
    let (r, before) = roundtrip(&dir, "counter", &["0", "10"], 5);
    r.wait_more_lines(5);
    let counts = values(&r.output(), "count=");
    assert!(counts.len() > before, "no new counts after restore");
    for w in counts.windows(2) {
        assert_eq!(w[1], w[0] + 1, "count sequence broken: {counts:?}");
    }
}

#[test]
fn image_is_private_and_restorable_twice() {
    let dir = TempDir::new("twice");
    let mut p = Proc::spawn(&dir, fixture("counter"), &["0", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(3);
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&image).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "image mode {mode:o}");
    let last = *values(&p.output(), "count=").last().unwrap();
    for round in 0..2 {
        let out = dir.join(format!("after-{round}.txt"));
        // The restored process reopens the original output file (appending);
        // remember where this round starts in it.
        let start = p.line_count();
        let mut r = restore_detached(&image, &p.out, p.pid);
        r.wait_line_after(start, |l| l.starts_with("count="));
        let first = values(
            &r.output()
                .lines()
                .skip(start)
                .collect::<Vec<_>>()
                .join("\n"),
            "count=",
        )[0];
        assert_eq!(
            first,
            last + 1,
            "round {round}: restored counter did not resume at {}",
            last + 1
        );
        r.kill();
        let _ = out;
    }
}

#[test]
fn leave_running_does_not_disturb() {
    let dir = TempDir::new("leave");
    let p = Proc::spawn(&dir, fixture("counter"), &["0", "5"]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(3);
    let image = dir.join("img.ckpt");
    dump_leave_running(p.pid, &image);
    p.wait_more_lines(10);
    assert!(p.alive());
    let counts = values(&p.output(), "count=");
    for w in counts.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "count sequence broken by the dump: {counts:?}"
        );
    }
    assert!(image.exists());
}

#[test]
fn threads_keep_their_tids_and_locks() {
    scenarios::threads(&Binary);
}

#[test]
fn signals_handlers_altstack_and_pending() {
    scenarios::signals(&Binary);
}

#[test]
fn pipe_keeps_buffered_data() {
    scenarios::pipe_buffer(&Binary);
}

#[test]
fn file_offsets_and_deleted_files() {
    scenarios::file_offsets(&Binary);
}

#[test]
fn eventfd_epoll_timerfd() {
    scenarios::fd_kinds(&Binary);
}

#[test]
fn avx_registers_survive() {
    scenarios::avx(&Binary);
}

#[test]
fn sleeping_syscalls_restart() {
    scenarios::sleepers(&Binary);
}

#[test]
fn python_and_perl_keep_their_state() {
    scenarios::interpreters(&Binary);
}

#[test]
fn dump_of_missing_pid_fails_clearly() {
    let dir = TempDir::new("nopid");
    let image = dir.join("x.ckpt");
    let o = ckpt_run(&["dump", "999999", "-o", image.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("999999"), "{err}");
    assert!(!image.exists());
}

#[test]
fn failed_dump_leaves_process_running() {
    let dir = TempDir::new("faildump");
    let p = Proc::spawn(&dir, fixture("counter"), &["0", "5"]);
    p.wait_line(|l| l.starts_with("READY"));
    let o = ckpt_run(&["dump", &p.pid.to_string(), "-o", "/nonexistent-dir/x.ckpt"]);
    assert!(!o.status.success());
    p.wait_more_lines(5);
    assert!(p.alive());
}

#[test]
fn tail_follow_keeps_following() {
    // `tail -f` follows with inotify (a watch on the file) and keeps the
    // file open at its offset: both must come back.
    let dir = TempDir::new("tail-f");
    let log = dir.join("log.txt");
    std::fs::write(&log, b"line-1\n").unwrap();
    let mut p = Proc::spawn(&dir, "tail", &["-n", "+1", "-f", log.to_str().unwrap()]);
    p.wait_line(|l| l == "line-1");
    let fdinfo = (0..8)
        .filter_map(|fd| std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", p.pid)).ok())
        .any(|s| s.contains("inotify wd:"));
    assert!(
        fdinfo,
        "tail does not use inotify here: the test shows nothing"
    );
    let image = dir.join("tail.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"line-2\n").unwrap();
    }
    r.wait_line(|l| l == "line-2");
    let out = r.output();
    assert_eq!(out.matches("line-1").count(), 1, "{}", tail(&out));
}

/// Pages of file mappings: the ones written to (an initialized global in
/// the executable's .data, a private writable mapping of a file) are the
/// process's own and must come back; the others come from the file.
const COW_DATA: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static char msg[64] = "initial value in .data";
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = open(argv[1], O_RDONLY);
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    strcpy(msg, "changed at run time");
    memcpy(m, "COPIED", 6);
    printf("READY\n");
    for (long n = 0;; n++) {
        printf("n=%ld msg=%s map=%.12s\n", n, msg, m);
        usleep(20000);
    }
}
"#;

#[test]
fn written_pages_of_file_mappings_come_back() {
    let dir = TempDir::new("cow");
    let data = dir.join("data.txt");
    std::fs::write(&data, "file contents here, untouched".repeat(200)).unwrap();
    let bin = c_fixture("cow_data", COW_DATA);
    let mut p = Proc::spawn(&dir, &bin, &[data.to_str().unwrap()]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(3);
    let image = dir.join("cow.ckpt");
    dump_kill(&mut p, &image);
    let before = p.line_count();
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(before + 3);
    let out = r.output();
    let last = out.lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains("msg=changed at run time map=COPIEDontent"),
        "{}",
        tail(&out)
    );
    assert_eq!(std::fs::read(&data).unwrap()[..6], *b"file c");
}

/// Two opens of one memfd (the second through /proc); two opens of one
/// file (and an inotify watch of it), then both its
/// names unlinked; and a file
/// unlinked under the name it was opened by but still linked under
/// another: after a restore the two fds are one file again (a write
/// through one is read through the other), and the linked one is the
/// file at its other name.
#[test]
fn two_opens_of_a_deleted_file_and_a_relinked_file() {
    let dir = TempDir::new("unlinked");
    let script = r#"
import os, sys, time
d = sys.argv[1]
a = os.open(d + "/a", os.O_RDWR | os.O_CREAT, 0o644)
os.link(d + "/a", d + "/a.link")
b = os.open(d + "/a.link", os.O_RDONLY)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(os.O_NONBLOCK)
assert libc.inotify_add_watch(ino, (d + "/a").encode(), 2) == 1  # IN_MODIFY
os.unlink(d + "/a"); os.unlink(d + "/a.link")
os.write(a, b"0" * 1000)
c = os.open(d + "/c", os.O_RDWR | os.O_CREAT, 0o644)
os.link(d + "/c", d + "/c.link")
os.unlink(d + "/c")
os.write(c, b"c" * 10)
m = os.memfd_create("two")
m2 = os.open("/proc/self/fd/%d" % m, os.O_RDWR)
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
os.pwrite(m, b"memfd", 0)
print("memfd=%s" % os.pread(m2, 5, 0).decode(), flush=True)
sa, sb = os.fstat(a), os.fstat(b)
print("same=%d size=%d" % (sa.st_ino == sb.st_ino, sa.st_size), flush=True)
os.pwrite(a, b"xyz", 0)
print("through=%s" % os.pread(b, 3, 0).decode(), flush=True)
print("watched=%d" % (len(os.read(ino, 4096)) >= 16), flush=True)
sc, sl = os.fstat(c), os.stat(d + "/c.link")
print("relinked=%d pos=%d" % (sc.st_ino == sl.st_ino, os.lseek(c, 0, os.SEEK_CUR)), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("unlinked.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "memfd=memfd");
    r.wait_line(|l| l == "same=1 size=1000");
    r.wait_line(|l| l == "through=xyz");
    r.wait_line(|l| l == "watched=1");
    r.wait_line(|l| l == "relinked=1 pos=10");
}

/// A deleted working directory comes back deleted under its own name,
/// and is the directory an fd of the process holds too.
#[test]
fn deleted_working_directory_held_at_an_fd() {
    let dir = TempDir::new("delcwd");
    let script = r#"
import os, sys, time
d = sys.argv[1]
os.mkdir(d + "/w")
fd = os.open(d + "/w", os.O_RDONLY)
os.chdir(d + "/w")
os.rmdir(d + "/w")
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
print("cwd=%s" % os.readlink("/proc/self/cwd"), flush=True)
print("same=%d" % (os.fstat(fd).st_ino == os.stat(".").st_ino), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("delcwd.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == format!("cwd={d}/w (deleted)"));
    r.wait_line(|l| l == "same=1");
}

/// A pipe with O_ASYNC and a SIGIO owner (F_SETOWN, F_SETSIG) still
/// signals its owner after a restore.
#[test]
fn sigio_owner_of_a_pipe_is_kept() {
    let dir = TempDir::new("sigio");
    let script = r#"
import os, fcntl, signal, time, sys
d = sys.argv[1]
n = [0]
signal.signal(signal.SIGIO, lambda s, f: n.__setitem__(0, n[0] + 1))
r, w = os.pipe()
for fd in (r, w):
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, 10, signal.SIGIO)  # F_SETSIG
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
k = n[0]
os.write(w, b"b")
t = time.time()
while n[0] == k and time.time() - t < 5:
    time.sleep(0.01)
print("sigio=%d owner=%d" % (n[0] > k, fcntl.fcntl(r, fcntl.F_GETOWN) == os.getpid()), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("sigio.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "sigio=1 owner=1");
}

/// A device node (/dev/null's numbers, mode 0700) opened, then unlinked:
/// it comes back as such a node, deleted.
#[test]
fn deleted_device_node_is_made_again() {
    let dir = TempDir::new("deldev");
    let script = r#"
import os, stat, sys, time
d = sys.argv[1]
os.mknod(d + "/null", stat.S_IFCHR | 0o700, os.makedev(1, 3))
fd = os.open(d + "/null", os.O_RDWR)
os.unlink(d + "/null")
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
st = os.fstat(fd)
ok = st.st_mode == stat.S_IFCHR | 0o700 and st.st_rdev == os.makedev(1, 3)
print("node=%d gone=%d" % (ok, not os.path.exists(d + "/null")), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("deldev.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "node=1 gone=1");
}

/// A datagram queued, with a pipe's read end in it, on an unnamed socket
/// whose peer was closed: after a restore it is still there, and the
/// pipe in it is the process's pipe.
#[test]
fn datagram_queued_on_a_socket_whose_peer_closed() {
    let dir = TempDir::new("orphandgram");
    let script = r#"
import os, socket, sys, time
d = sys.argv[1]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
r, w = os.pipe()
socket.send_fds(a, [b"hello"], [r])
os.close(r)
a.close()
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
b.setblocking(False)
msg, fds, _, _ = socket.recv_fds(b, 100, 1)
os.write(w, b"through")
print("msg=%s pipe=%s" % (msg.decode(), os.read(fds[0], 100).decode()), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("dgram.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "msg=hello pipe=through");
}

/// A pty pair whose slave node was given to another user (as grantpt or a
/// root process does): after a restore /dev/pts/N has that owner and mode
/// again.
#[test]
fn pty_slave_owner_and_mode_are_kept() {
    let dir = TempDir::new("ptyowner");
    let script = r#"
import os, pty, sys, time
d = sys.argv[1]
m, s = pty.openpty()
os.fchown(s, 65534, 65534)
os.fchmod(s, 0o640)
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
st = os.stat(os.ttyname(s))
print("owner=%d:%d mode=%o" % (st.st_uid, st.st_gid, st.st_mode & 0o7777), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("ptyowner.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "owner=65534:65534 mode=640");
}

/// `rseqspin`: loops in a restartable sequence (glibc's registration of
/// the thread) that spins ~10 ms; the sequence either commits or is
/// aborted by the kernel. At its end, still inside, it reads its rseq_cs:
/// the kernel clears it only when it aborts, so a sequence that ends
/// normally with rseq_cs cleared was broken (a dump that injected system
/// calls while the thread stood in it, then let it go on). Prints
/// `rounds=N aborts=A` every 20 rounds; `ERROR` on a broken sequence.
const RSEQ_SPIN: &str = r#"
#include "fixture.h"
#include <sys/rseq.h>

static int spin(volatile struct rseq *rs, long iters, uint64_t *seen)
{
    __asm__ __volatile__ goto(
        ".pushsection ckpt_rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3:\n\t"
        ".long 0, 0\n\t"
        ".quad 1f, (2f-1f), 4f\n\t"
        ".popsection\n\t"
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, %[cs]\n\t"
        "1:\n\t"
        "movq %[n], %%rcx\n\t"
        "5:\n\t"
        "dec %%rcx\n\t"
        "jnz 5b\n\t"
        "movq %[cs], %%rax\n\t"
        "movq %%rax, %[seen]\n\t"
        "2:\n\t"
        ".pushsection ckpt_rseq_abort, \"ax\"\n\t"
        ".byte 0x0f, 0xb9, 0x3d\n\t"
        ".long 0x53053053\n\t"
        "4:\n\t"
        "jmp %l[aborted]\n\t"
        ".popsection\n\t"
        :
        : [cs] "m"(rs->rseq_cs), [n] "r"(iters), [seen] "m"(*seen)
        : "memory", "cc", "rax", "rcx"
        : aborted);
    return 0;
aborted:
    return 1;
}

int main(void)
{
    fx_init();
    if (__rseq_size == 0) fail("glibc registered no rseq area");
    char *tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    volatile struct rseq *rs = (volatile struct rseq *)(tp + __rseq_offset);
    say("READY");
    long rounds = 0, aborts = 0;
    for (;;) {
        uint64_t seen = 1;
        if (spin(rs, 20000000, &seen)) aborts++;
        else if (seen == 0) fail("a critical section ended normally with rseq_cs cleared (round %ld)", rounds);
        if (++rounds % 20 == 0) say("rounds=%ld aborts=%ld", rounds, aborts);
    }
}
"#;

#[test]
fn thread_stopped_in_an_rseq_critical_section_is_aborted_not_broken() {
    let dir = TempDir::new("rseq");
    let bin = c_fixture("rseqspin", RSEQ_SPIN);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_for("READY");
    // The loop spends nearly all its time inside the sequence: each dump
    // stops the thread there.
    for i in 0..5 {
        dump_leave_running(p.pid, &dir.join(format!("lr{i}.ckpt")));
    }
    let img = dir.join("img.ckpt");
    dump_kill(&mut p, &img);
    let r = restore_detached(&img, &p.out, p.pid);
    let start = r.line_count();
    r.wait_line_after(start, |l| l.starts_with("rounds="));
    let start = r.line_count();
    r.wait_line_after(start, |l| l.starts_with("rounds="));
}

/// `leases DIR`: a read lease on DIR/r (fd opened read-only) and a write
/// lease on DIR/w (write-only); counts its lease signals (SIGIO) and every
/// 20 ms prints `leases=R,W sigio=N` (F_GETLEASE of each: 0 read, 1
/// write, 2 none).
const LEASES: &str = r#"
#include "fixture.h"
#include <fcntl.h>
#include <signal.h>

static volatile sig_atomic_t sigio;
static void on_io(int s) { (void)s; sigio++; }

int main(int argc, char **argv)
{
    fx_init();
    char r[4096], w[4096];
    snprintf(r, sizeof r, "%s/r", argv[1]);
    snprintf(w, sizeof w, "%s/w", argv[1]);
    signal(SIGIO, on_io);
    int fr = open(r, O_RDONLY | O_CREAT, 0644), fw = open(w, O_WRONLY | O_CREAT, 0644);
    if (fr < 0 || fw < 0) fail("open: %s", strerror(errno));
    if (fcntl(fr, F_SETLEASE, F_RDLCK) || fcntl(fw, F_SETLEASE, F_WRLCK)) fail("F_SETLEASE: %s", strerror(errno));
    say("READY");
    for (;;) {
        say("leases=%d,%d sigio=%d", fcntl(fr, F_GETLEASE), fcntl(fw, F_GETLEASE), (int)sigio);
        usleep(20000);
    }
}
"#;

#[test]
fn leases_being_broken_stay_broken_to_what_they_were_broken_to() {
    let dir = TempDir::new("leases");
    let bin = c_fixture("leases", LEASES);
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, &bin, &[&d]);
    p.wait_for("READY");
    // Break both: a writer breaks the read lease (to none), a reader the
    // write lease (to a read lease); neither waits.
    for (f, write) in [("r", true), ("w", false)] {
        let e = std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join(f))
            .expect_err("a lease makes the open fail");
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "{f}: {e}");
    }
    // (The two SIGIOs may arrive as one.)
    let leases = format!("leases={},{} ", libc::F_UNLCK, libc::F_RDLCK);
    let start = p.line_count();
    let want = p.wait_line_after(start, |l| l.starts_with(&leases) && !l.ends_with("sigio=0"));
    let img = dir.join("img.ckpt");
    dump_kill(&mut p, &img);
    let r = restore_detached(&img, &p.out, p.pid);
    // The same leases, and no lease signal again.
    let start = r.line_count();
    let l = r.wait_line_after(start, |l| l.starts_with("leases="));
    assert_eq!(l, want);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let start = r.line_count();
    let l = r.wait_line_after(start, |l| l.starts_with("leases="));
    assert_eq!(l, want);
}

/// `sigall`: a handler for every signal that can be caught (each with
/// its own mask and flags) and an alternate stack; on SIGUSR1 it checks
/// every action with sigaction(2), then raises every signal and checks
/// that each handler ran once: `CHECK ok` or `ERROR ...`.
const SIGALL: &str = r#"
#include "fixture.h"
#include <signal.h>
#define SA_RESTORER 0x04000000

static volatile sig_atomic_t hits[65], check;
static void on(int s, siginfo_t *i, void *c) { (void)i; (void)c; hits[s]++; if (s == SIGUSR1) check = 1; }
static int skip(int s) { return s == SIGKILL || s == SIGSTOP || s == 32 || s == 33; }
static struct sigaction want(int s)
{
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_sigaction = on;
    a.sa_flags = SA_SIGINFO | (s % 2 ? SA_RESTART : 0) | (s % 3 ? SA_ONSTACK : 0);
    sigemptyset(&a.sa_mask);
    int m = (s % 30) + 1;
    sigaddset(&a.sa_mask, m == SIGKILL || m == SIGSTOP ? SIGHUP : m);
    return a;
}

int main(void)
{
    fx_init();
    static char stack[1 << 16];
    stack_t ss = { .ss_sp = stack, .ss_size = sizeof stack };
    if (sigaltstack(&ss, NULL)) fail("sigaltstack");
    for (int s = 1; s <= 64; s++) {
        if (skip(s)) continue;
        struct sigaction a = want(s);
        if (sigaction(s, &a, NULL)) fail("sigaction %d: %s", s, strerror(errno));
    }
    say("READY");
    for (;;) {
        pause();
        if (!check) continue;
        check = 0;
        for (int s = 1; s <= 64; s++) {
            if (skip(s)) continue;
            struct sigaction a, w = want(s);
            sigaction(s, NULL, &a);
            if (a.sa_sigaction != on || (a.sa_flags & ~SA_RESTORER) != w.sa_flags
                || memcmp(&a.sa_mask, &w.sa_mask, 8))
                fail("signal %d: handler %p flags %#x", s, (void *)a.sa_sigaction, a.sa_flags);
        }
        for (int s = 1; s <= 64; s++) {
            if (skip(s) || s == SIGUSR1) continue;
            int before = hits[s];
            raise(s);
            if (hits[s] != before + 1) fail("signal %d: its handler did not run", s);
        }
        say("CHECK ok");
    }
}
"#;

#[test]
fn every_signal_handler_comes_back() {
    let dir = TempDir::new("sigall");
    let bin = c_fixture("sigall", SIGALL);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_for("READY");
    let check = |p: &Proc| {
        let start = p.line_count();
        signal(p.pid, libc::SIGUSR1).unwrap();
        p.wait_line_after(start, |l| l == "CHECK ok");
    };
    check(&p);
    let img = dir.join("img.ckpt");
    dump_kill(&mut p, &img);
    let r = restore_detached(&img, &p.out, p.pid);
    check(&r);
}

/// Private mappings of shared memory objects (a memfd held at an fd, and
/// shared anonymous memory opened through /proc/self/map_files, as zdtm
/// memfd02 and shmemfd-priv do): after a restore the pages the process
/// wrote over them are its own, the others still show the object, also
/// what is written to it after the restore.
#[test]
fn private_mappings_of_shared_memory_see_the_object() {
    let dir = TempDir::new("privshm");
    let script = r#"
import ctypes, mmap, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
P = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
def raw_map(fd, size, flags, off=0):
    a = libc.mmap(None, size, RW, flags, fd, off)
    assert a and a != ctypes.c_void_p(-1).value
    return a, (ctypes.c_char * size).from_address(a)
m = os.memfd_create("privshm")
os.ftruncate(m, 3 * P)
os.pwrite(m, b"A" * P + b"B" * P + b"C" * P, 0)
_, mpriv = raw_map(m, 3 * P, mmap.MAP_PRIVATE)
mpriv[P:P + 5] = b"mine1"
a, anon = raw_map(-1, 3 * P, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
anon[0:5] = b"page0"; anon[P:P + 5] = b"page1"
f = os.open("/proc/self/map_files/%x-%x" % (a, a + 3 * P), os.O_RDWR)
_, apriv = raw_map(f, 2 * P, mmap.MAP_PRIVATE, P)
os.close(f)
apriv[P:P + 5] = b"mine2"
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
os.pwrite(m, b"later", 0)
anon[P:P + 5] = b"later"
print("memfd=%s,%s,%s" % (mpriv[0:5].decode(), mpriv[P:P + 5].decode(), mpriv[2 * P:2 * P + 5].decode()), flush=True)
print("anon=%s,%s" % (apriv[0:5].decode(), apriv[P:P + 5].decode()), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("privshm.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "memfd=later,mine1,CCCCC");
    r.wait_line(|l| l == "anon=later,mine2");
}

/// An O_PATH fd on a symlink deleted since (zdtm symlink01): the dump
/// saves its target, the restore makes it again, deleted, and
/// readlinkat(fd, "") still reads the target.
#[test]
fn o_path_fd_of_a_deleted_symlink() {
    let dir = TempDir::new("delsymlink");
    let script = r#"
import ctypes, os, stat, sys, time
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
os.symlink("/nowhere/target-of-it", d + "/l")
fd = os.open(d + "/l", os.O_PATH | os.O_NOFOLLOW)
os.unlink(d + "/l")
print("READY", flush=True)
while not os.path.exists(d + "/go"):
    time.sleep(0.01)
buf = ctypes.create_string_buffer(4096)
n = libc.readlinkat(fd, b"", buf, 4096)
link = os.readlink("/proc/self/fd/%d" % fd)
print("target=%s islnk=%d deleted=%d" % (buf.raw[:n].decode(), stat.S_ISLNK(os.fstat(fd).st_mode), link.endswith(" (deleted)")), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("delsymlink.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "target=/nowhere/target-of-it islnk=1 deleted=1");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .collect();
    assert!(left.is_empty(), "symlinks left behind: {left:?}");
}

/// A process that chrooted into a directory (zdtm chroot, chroot-file):
/// restored with the same root directory, its fds (opened before the
/// chroot, by their full paths) as they were.
#[test]
fn chrooted_process_keeps_its_root() {
    let dir = TempDir::new("chroot");
    let script = r#"
import os, sys, time
r = sys.argv[1] + "/r"
os.mkdir(r)
with open(r + "/inside", "w") as f:
    f.write("in the root")
with open(sys.argv[1] + "/outside", "w") as f:
    f.write("outside")
fd = os.open(sys.argv[1] + "/outside", os.O_RDONLY)
os.chroot(r)
print("READY", flush=True)
while not os.path.exists("/go"):
    time.sleep(0.01)
print("inside=%s outside=%s fd=%s" % (open("/inside").read(), os.path.exists(sys.argv[1] + "/outside"), os.pread(fd, 7, 0).decode()), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("chroot.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/root", r.pid)).unwrap(),
        dir.join("r")
    );
    std::fs::write(dir.join("r/go"), b"").unwrap();
    r.wait_line(|l| l == "inside=in the root outside=False fd=outside");
}

#[test]
fn bpf_maps_keep_their_entries_and_frozen_state() {
    let dir = TempDir::new("bpfmaps");
    let mut p = crate::sockets::python_fixture(&dir, "bpfmaps.py", &[]);
    p.wait_line(|l| l.starts_with("tick=3 "));
    assert!(
        p.output().contains("tick=3 ok=1 keys=13"),
        "{}",
        tail(&p.output())
    );
    let image = dir.join("bpf.ckpt");
    dump_kill(&mut p, &image);
    let before = p.line_count();
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(3);
    let out = r.output();
    let after: Vec<&str> = out.lines().skip(before).collect();
    // Each tick after the restore still sees every entry (old and new),
    // the definitions, and the array frozen.
    assert!(
        !after.is_empty() && after.iter().all(|l| l.contains(" ok=1 ")),
        "{}",
        tail(&out)
    );
}

/// An AIO context (zdtm aio00, aio01): its ring comes back at its address
/// with its head, its tail (here behind the head: the events wrap round the
/// ring's end) and the events not yet taken; the context works on.
#[test]
fn aio_ring_keeps_its_events_head_and_tail() {
    let dir = TempDir::new("aio");
    let script = r#"
import ctypes, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ctx = ctypes.c_ulong(0)
assert libc.syscall(206, 64, ctypes.byref(ctx)) == 0
ctx = ctx.value
fd = os.open("/dev/null", os.O_WRONLY)
buf = ctypes.create_string_buffer(b"x")
iocb = (ctypes.c_ubyte * 64)()
ptr = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
events = (ctypes.c_ubyte * (32 * 16))()
def header():
    return struct.unpack_from("=IIII", (ctypes.c_char * 16).from_address(ctx))[1:4]
def submit(data):
    struct.pack_into("=QIiHhIQQqQII", iocb, 0, data, 0, 0, 1, 0, fd, ctypes.addressof(buf), 1, 0, 0, 0, 0)
    assert libc.syscall(209, ctypes.c_ulong(ctx), 1, ptr) == 1
def get(n):
    got = libc.syscall(208, ctypes.c_ulong(ctx), 0, n, events, None)
    return [struct.unpack_from("=Q", events, 32 * i)[0] for i in range(got)]
nr = header()[0]
# Round the ring once (head = tail = nr - 2), then 5 events across its end.
for i in range(nr - 2):
    submit(i)
    assert get(1) == [i]
for i in range(5):
    submit(1000 + i)
before = header()
print("READY nr=%d head=%d tail=%d" % before, flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
after = header()
pending = get(16)
submit(99)
print("same=%d events=%s next=%s" % (before == after, pending, get(16)), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("aio.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "same=1 events=[1000, 1001, 1002, 1003, 1004] next=[99]");
}

/// hugetlb memory (zdtm maps09, maps10, memfd02-hugetlb): private and
/// shared MAP_HUGETLB areas and a hugetlb memfd held at an fd and mapped
/// come back as hugetlb memory, with their contents; the memfd is still
/// one object with its mapping.
#[test]
fn hugetlb_memory_stays_hugetlb_with_its_contents() {
    ckpt_testkit::require!(require::huge_pages(8));
    let dir = TempDir::new("hugetlb");
    let script = r#"
import mmap, os, sys, time
H = 2 << 20
HUGETLB = 0x40000
priv = mmap.mmap(-1, 2 * H, flags=mmap.MAP_PRIVATE | HUGETLB)
shared = mmap.mmap(-1, H, flags=mmap.MAP_SHARED | HUGETLB)
m = os.memfd_create("hugefd", os.MFD_HUGETLB)
os.ftruncate(m, H)
mfd = mmap.mmap(m, H, flags=mmap.MAP_SHARED)
priv[0:5] = b"priv0"; priv[H + 100:H + 105] = b"priv1"
shared[4096:4102] = b"shared"
mfd[7:12] = b"memfd"
def huge_areas():
    n, cur = 0, None
    for line in open("/proc/self/smaps"):
        if line.startswith("VmFlags:") and " ht" in line:
            n += 1
    return n
before = huge_areas()
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
shared2 = mmap.mmap(m, H, flags=mmap.MAP_SHARED)
print("priv=%s,%s shared=%s memfd=%s,%s areas=%d" % (
    priv[0:5].decode(), priv[H + 100:H + 105].decode(), shared[4096:4102].decode(),
    mfd[7:12].decode(), shared2[7:12].decode(), huge_areas() - before), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    // Restored from a dump that left it running (its areas read from
    // /proc/PID/maps, which shows no page sizes).
    let image = dir.join("hugetlb.ckpt");
    dump_leave_running(p.pid, &image);
    dump_kill(&mut p, &dir.join("killed.ckpt"));
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "priv=priv0,priv1 shared=shared memfd=memfd,memfd areas=1");
}

/// A pty slave whose master was closed (zdtm pty04): it comes back hung
/// up, a pty slave on which settings and writes fail with EIO and reads
/// see the end.
#[test]
fn hung_up_pty_slave_stays_hung_up() {
    let dir = TempDir::new("hungup");
    let script = r#"
import errno, os, stat, sys, termios, time
m, s = os.openpty()
os.close(m)
def err(f):
    try:
        f()
        return "ok"
    except (OSError, termios.error) as e:
        return errno.errorcode[e.args[0]]
print("READY %s" % err(lambda: termios.tcgetattr(s)), flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
st = os.fstat(s)
print("pts=%d tcgetattr=%s read=%r write=%s" % (
    stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in range(136, 144),
    err(lambda: termios.tcgetattr(s)), os.read(s, 10), err(lambda: os.write(s, b"x"))), flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY EIO");
    let image = dir.join("hungup.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "pts=1 tcgetattr=EIO read=b'' write=EIO");
}

/// A file truncated after the dump to less than a saved fd's offset: the
/// restore goes on (the file may be meant to shrink) but warns, naming the
/// fd, both sizes and the offset. An fd whose file did not shrink, or that
/// appends, gets no warning.
#[test]
fn a_file_shrunk_below_a_saved_offset_is_named_at_restore() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("shrunk");
    let (data, log) = (dir.join("data"), dir.join("log"));
    std::fs::write(&data, vec![7u8; 10000]).unwrap();
    std::fs::write(&log, vec![b'x'; 300]).unwrap();
    let script = r#"
import os, sys, time
f = os.open(sys.argv[1], os.O_RDONLY); os.read(f, 5000)
g = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND); os.write(g, b"y")
print("READY", flush=True)
while True:
    time.sleep(0.05)
"#;
    let (d, l) = (data.to_str().unwrap(), log.to_str().unwrap());
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, d, l]);
    p.wait_for("READY");
    let image = dir.join("image.ckpt");
    dump_kill(&mut p, &image);
    std::fs::write(&data, vec![7u8; 100]).unwrap();
    std::fs::write(&log, b"").unwrap();
    let out = ckpt_run(&["restore", "--detach", image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {err}");
    let _r = Proc::adopt(p.pid, &p.out);
    let want = format!(
        "{d}: the file is 100 bytes now and was 10000 at the dump: the fd's offset 5000 is past its end"
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.matches("warning").count(), 1, "{err}");
}

/// I/O priorities (ionice) are kept per thread: best-effort 2 on one, the
/// idle class on another, none on the main thread (threads cloned by the
/// restore get their cloner's: it is set back to none too).
#[test]
fn io_priorities_are_kept_per_thread() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("ioprio");
    let script = r#"
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def ioprio_set(v):
    if libc.syscall(251, 1, 0, v) != 0:
        print("ERROR ioprio_set", ctypes.get_errno(), flush=True)
tids = {}
def worker(v):
    ioprio_set(v)
    tids[v] = threading.get_native_id()
    while True:
        time.sleep(0.05)
for v in ((2 << 13) | 2, 3 << 13):
    threading.Thread(target=worker, args=(v,), daemon=True).start()
while len(tids) < 2:
    time.sleep(0.01)
print("READY", tids[(2 << 13) | 2], tids[3 << 13], flush=True)
while True:
    time.sleep(0.05)
"#;
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script]);
    let ready = p.wait_for("READY");
    assert!(!p.output().contains("ERROR"), "{}", p.output());
    let tids: Vec<i32> = ready
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    let want = [(p.pid, 0), (tids[0], (2 << 13) | 2), (tids[1], 3 << 13)];
    for (tid, ioprio) in want {
        assert_eq!(ckpt_sys::proc::sched::ioprio_get(tid).unwrap(), ioprio);
    }
    let image = dir.join("image.ckpt");
    dump_kill(&mut p, &image);
    let _r = restore_detached(&image, &p.out, p.pid);
    for (tid, ioprio) in want {
        assert_eq!(
            ckpt_sys::proc::sched::ioprio_get(tid).unwrap(),
            ioprio,
            "thread {tid}"
        );
    }
}

/// Memory-deny-write-execute (PR_SET_MDWE) still holds after the restore:
/// a writable and executable mapping is refused; and coredump_filter is
/// kept.
#[test]
fn memory_deny_write_execute_and_coredump_filter_are_kept() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("mdwe");
    let script = r#"
import ctypes, mmap, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("ERROR PR_SET_MDWE", ctypes.get_errno(), flush=True)
open("/proc/self/coredump_filter", "w").write("0x7f")
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
print("mdwe", libc.prctl(66, 0, 0, 0, 0), flush=True)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx mapped", flush=True)
except OSError:
    print("wx refused", flush=True)
while True:
    time.sleep(0.05)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    assert!(!p.output().contains("ERROR"), "{}", p.output());
    let image = dir.join("image.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    let filter = std::fs::read_to_string(format!("/proc/{}/coredump_filter", r.pid)).unwrap();
    assert_eq!(filter.trim(), "0000007f");
    std::fs::write(dir.join("go"), b"").unwrap();
    assert_eq!(r.wait_for("mdwe"), "mdwe 1");
    assert_eq!(r.wait_for("wx"), "wx refused");
}
