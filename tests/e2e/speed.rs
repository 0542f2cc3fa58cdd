//! Issue 16: a short freeze for `dump --leave-running` whatever the memory
//! size, incremental dumps and their chains (restore, show, flatten,
//! ckptfs), lazy restore, and a dumper killed in the middle of a snapshot.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `speedhog MIB MODE`: MIB MiB of anonymous memory; page i holds the
/// 8-byte word `word(i, g)` repeated, g the last generation that wrote it
/// (0 at the start). Prints `READY sum=S pages=N addr=A`.
/// - SIGUSR1 (any mode): generation g+1 rewrites 1% of the pages (those
///   with `(i * 2654435761 + g) % 100 == 0`), then `DIRTY gen=G sum=S`;
/// - SIGUSR2: `SUM sum=S gap_us=U` (U: the longest gap of the idle loop
///   since the last report, in µs);
/// - MODE idle: sleeps 1 ms at a time (measuring gaps);
/// - MODE scan: sums all its memory again and again, `PASS sum=S` each time;
/// - MODE write: writes a counter into its pages in turn (the sum of the
///   first word of every page changes), `W n` every 1000 writes.
const SPEEDHOG: &str = r#"
#include "fixture.h"
#include <signal.h>
#include <sys/mman.h>

static volatile sig_atomic_t want_dirty, want_sum;
static void on_usr1(int s) { (void)s; want_dirty = 1; }
static void on_usr2(int s) { (void)s; want_sum = 1; }

static uint64_t word(uint64_t i, uint64_t g)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ (g + 7) * 0xC2B2AE3D27D4EB4FULL;
    x ^= x >> 29; x *= 0xBF58476D1CE4E5B9ULL; x ^= x >> 32;
    /* Half of the pages compress (a repeated byte pattern), half do not. */
    return (i % 2) ? x : (x & 0x0101010101010101ULL) * 0x61;
}

static void fill_page(uint64_t *p, uint64_t i, uint64_t g)
{
    uint64_t w = word(i, g);
    for (size_t k = 0; k < 512; k++) {
        p[k] = (i % 2) ? w + k : w;
    }
}

static uint64_t sum_all(const uint64_t *m, size_t words)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t k = 0; k < words; k++)
        h = (h ^ m[k]) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv)
{
    fx_init();
    size_t mib = (size_t)arg_long(argc, argv, 1, 16);
    const char *mode = argc > 2 ? argv[2] : "idle";
    size_t len = mib << 20, pages = len / 4096;
    uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap");
    for (size_t i = 0; i < pages; i++) fill_page(m + i * 512, i, 0);
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    uint64_t gen = 0, writes = 0;
    say("READY sum=%016llx pages=%zu addr=%p", (unsigned long long)sum_all(m, len / 8), pages, (void *)m);
    int64_t last = mono_ns(), gap = 0;
    for (;;) {
        if (!strcmp(mode, "scan")) {
            say("PASS sum=%016llx", (unsigned long long)sum_all(m, len / 8));
            msleep(1);
        } else if (!strcmp(mode, "write")) {
            for (int k = 0; k < 1000; k++, writes++)
                m[(writes * 7919 % pages) * 512] = writes;
            say("W %llu", (unsigned long long)writes);
            msleep(1);
        } else {
            msleep(1);
        }
        int64_t t = mono_ns();
        if (t - last > gap) gap = t - last;
        last = t;
        if (want_dirty) {
            want_dirty = 0;
            for (size_t i = 0; i < pages; i++)
                if ((i * 2654435761ULL + gen) % 100 == 0) fill_page(m + i * 512, i, gen + 1);
            gen++;
            say("DIRTY gen=%llu sum=%016llx", (unsigned long long)gen,
                (unsigned long long)sum_all(m, len / 8));
            last = mono_ns();
        }
        if (want_sum) {
            want_sum = 0;
            say("SUM sum=%016llx gap_us=%lld", (unsigned long long)sum_all(m, len / 8),
                (long long)(gap / 1000));
            gap = 0;
            last = mono_ns();
        }
    }
}
"#;

fn speedhog() -> PathBuf {
    c_fixture("speedhog", SPEEDHOG)
}

/// The fixture's page word, as in C.
fn word(i: u64, g: u64) -> u64 {
    let mut x =
        (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (g + 7).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    if i % 2 == 1 {
        x
    } else {
        (x & 0x0101_0101_0101_0101).wrapping_mul(0x61)
    }
}

fn dirtied(i: u64, gen_before: u64) -> bool {
    (i.wrapping_mul(2_654_435_761) + gen_before).is_multiple_of(100)
}

fn field_of<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// "frozen X ms" of `ckpt dump`'s report.
fn frozen_ms(report: &str) -> f64 {
    let at = report
        .find("(frozen ")
        .unwrap_or_else(|| panic!("no freeze in {report:?}"));
    report[at + 8..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad freeze in {report:?}"))
}

/// Run `ckpt dump` with `args`; its report (stderr), required to succeed.
fn dump(args: &[&str]) -> String {
    let o = ckpt_run(&[&["dump"], args].concat());
    assert!(
        o.status.success(),
        "ckpt dump {args:?} failed: {}",
        stderr_of(&o)
    );
    stderr_of(&o)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Ask the process for its checksum (SIGUSR2): the `SUM` line's sum and gap.
fn ask_sum(p: &Proc) -> (String, u64) {
    let start = p.line_count();
    signal(p.pid, libc::SIGUSR2).unwrap();
    let l = p.wait_line_after(start, |l| l.starts_with("SUM "));
    (
        field_of(&l, "sum=").to_string(),
        field_of(&l, "gap_us=").parse().unwrap(),
    )
}

#[test]
fn leave_running_freeze_does_not_grow_with_memory() {
    let dir = TempDir::new("freeze");
    let mut frozen = Vec::new();
    for mib in [64usize, 512] {
        let d = TempDir::new(&format!("freeze{mib}"));
        let p = Proc::spawn(&d, speedhog(), &[&mib.to_string(), "idle"]);
        let ready = p.wait_for("READY");
        let sum = field_of(&ready, "sum=").to_string();
        let img = dir.join(format!("{mib}.ckpt"));
        // The least of three: the machine may be busy with other work.
        let mut best = f64::MAX;
        let mut seen = Vec::new();
        for _ in 0..3 {
            ask_sum(&p);
            let report = dump(&[&p.pid.to_string(), "-o", path_str(&img), "--leave-running"]);
            assert!(report.contains("(snapshot)"), "not a snapshot: {report}");
            best = best.min(frozen_ms(&report));
            seen.push(ask_sum(&p).1 / 1000);
        }
        eprintln!(
            "{mib} MiB: frozen {best:.1} ms (least of 3); the process saw gaps of {seen:?} ms"
        );
        frozen.push(best);
        // The snapshot holds the memory of its instant.
        let r = ckpt_ok(&["restore", "--detach", "--new-pid", path_str(&img)]);
        let rp = Proc::adopt(r.trim().parse().unwrap(), &p.out);
        assert_eq!(ask_sum(&rp).0, sum, "{mib} MiB: restored memory differs");
        drop(rp);
        assert!(p.alive());
    }
    // 8 times the memory: a freeze that grows with it would take far more
    // (copying 512 MiB while frozen: 0.3-1 s here).
    assert!(
        frozen[1] < 150.0 && frozen[1] < frozen[0] + 100.0,
        "frozen {:.1} ms at 64 MiB, {:.1} ms at 512 MiB",
        frozen[0],
        frozen[1]
    );
}

#[test]
fn incremental_chain_restores_shows_flattens_and_reads_through_ckptfs() {
    let dir = TempDir::new("chain");
    let store = dir.mkdir("store");
    let img = |n: &str| store.join(format!("{n}.ckpt"));
    let mut p = Proc::spawn(&dir, speedhog(), &["64", "idle"]);
    let ready = p.wait_for("READY");
    let pages: u64 = field_of(&ready, "pages=").parse().unwrap();
    let addr = u64::from_str_radix(field_of(&ready, "addr=").trim_start_matches("0x"), 16).unwrap();
    let pid = p.pid.to_string();
    let dirty = |p: &Proc| {
        let start = p.line_count();
        signal(p.pid, libc::SIGUSR1).unwrap();
        let l = p.wait_line_after(start, |l| l.starts_with("DIRTY "));
        field_of(&l, "sum=").to_string()
    };

    let r = dump(&[
        &pid,
        "-o",
        path_str(&img("base")),
        "--leave-running",
        "--track",
    ]);
    assert!(r.contains("(pre-copy)"), "{r}");
    let r = dump(&[
        &pid,
        "-o",
        path_str(&img("inc0")),
        "--leave-running",
        "--parent",
        path_str(&img("base")),
    ]);
    assert!(r.contains("(incremental)"), "{r}");
    // The tracking now goes back to inc0, not base: a full dump, said so.
    let r = dump(&[
        &pid,
        "-o",
        path_str(&img("full")),
        "--leave-running",
        "--parent",
        path_str(&img("base")),
    ]);
    assert!(
        r.contains("note: a full dump") && r.contains("(pre-copy)"),
        "{r}"
    );

    let s1 = dirty(&p);
    let r = dump(&[
        &pid,
        "-o",
        path_str(&img("inc1")),
        "--leave-running",
        "--parent",
        path_str(&img("full")),
    ]);
    assert!(r.contains("(incremental)"), "{r}");
    let s2 = dirty(&p);
    assert_ne!(s1, s2);
    // The last one kills the process.
    let r = dump(&[
        &pid,
        "-o",
        path_str(&img("inc2")),
        "--parent",
        path_str(&img("inc1")),
    ]);
    assert!(r.contains("(incremental)"), "{r}");
    p.reap();

    let size = |n: &str| std::fs::metadata(img(n)).unwrap().len();
    eprintln!(
        "sizes: full {} inc1 {} inc2 {}",
        size("full"),
        size("inc1"),
        size("inc2")
    );
    for n in ["inc1", "inc2"] {
        assert!(
            size(n) * 20 <= size("full"),
            "{n}: {} bytes for 1% of the pages changed, the full dump {}",
            size(n),
            size("full")
        );
    }
    let show = ckpt_ok(&["show", path_str(&img("inc2"))]);
    assert!(show.contains("chain: 3 images found (complete)"), "{show}");

    // ckptfs: a page unchanged since `full` read through inc2.
    let unchanged = (0..pages)
        .find(|&i| i > 0 && !dirtied(i, 0) && !dirtied(i, 1))
        .unwrap();
    let page = read_through_ckptfs(&store, "inc2", p.pid, addr + unchanged * 4096);
    let w = word(unchanged, 0);
    let expect: Vec<u8> = (0..512u64)
        .flat_map(|k| {
            (if unchanged % 2 == 1 {
                w.wrapping_add(k)
            } else {
                w
            })
            .to_ne_bytes()
        })
        .collect();
    assert!(
        page == expect,
        "page {unchanged} read through ckptfs differs"
    );

    // Restore the chain, then its flattened image.
    let rp = restore_detached(&img("inc2"), &p.out, p.pid);
    assert_eq!(ask_sum(&rp).0, s2, "memory of the restored chain differs");
    let mut rp = rp;
    rp.kill();
    let flat = dir.join("flat.ckpt");
    ckpt_ok(&["flatten", path_str(&img("inc2")), "-o", path_str(&flat)]);
    let show = ckpt_ok(&["show", path_str(&flat)]);
    assert!(
        !show.contains("chain:") && show.contains("ckpt.flattened"),
        "{show}"
    );
    let mut rp = restore_detached(&flat, &p.out, p.pid);
    assert_eq!(ask_sum(&rp).0, s2, "memory of the flattened image differs");
    rp.kill();
}

/// One page of `pid` at `addr` in image `name` of `store`, read through a
/// ckptfs mount (`ckpt mount`).
fn read_through_ckptfs(store: &Path, name: &str, pid: i32, addr: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    need(require::path("/dev/fuse", "a FUSE device (modprobe fuse)"));
    let mnt = TempDir::new("mnt");
    let mut child = ckpt()
        .args(["mount", "--store", path_str(store), path_str(mnt.path())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ckpt mount");
    let mem = mnt.join(format!("{name}/{pid}/mem"));
    wait_until("the ckptfs mount", Duration::from_secs(20), || mem.exists());
    let mut page = vec![0u8; 4096];
    let r = std::fs::File::open(&mem).and_then(|f| f.read_exact_at(&mut page, addr));
    let _ = Command::new("umount").arg(mnt.path()).status();
    let _ = child.kill();
    let _ = child.wait();
    r.unwrap_or_else(|e| panic!("reading {} at {addr:#x}: {e}", mem.display()));
    page
}

/// `ckpt restore --detach --lazy`: the pid and how long until it returned.
fn restore_lazy(img: &Path) -> (i32, Duration) {
    restore_lazy_env(img, &[])
}

fn restore_lazy_env(img: &Path, env: &[(&str, &str)]) -> (i32, Duration) {
    let t = Instant::now();
    let o = ckpt()
        .args(["restore", "--detach", "--lazy", path_str(img)])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run ckpt");
    assert!(
        o.status.success(),
        "ckpt restore --lazy failed: {}",
        o.status
    );
    (stdout_of(&o).trim().parse().unwrap(), t.elapsed())
}

#[test]
fn lazy_restore_of_a_process_that_touches_all_its_memory() {
    let dir = TempDir::new("lazy");
    let mut p = Proc::spawn(&dir, speedhog(), &["256", "scan"]);
    let ready = p.wait_for("READY");
    let sum = field_of(&ready, "sum=").to_string();
    p.wait_line(|l| l.starts_with("PASS"));
    let img = dir.join("img.ckpt");
    dump_kill(&mut p, &img);
    let start = p.line_count();
    let (pid, took) = restore_lazy(&img);
    eprintln!("lazy restore of 256 MiB: running after {took:?}");
    assert_eq!(pid, p.pid);
    let r = Proc::adopt(pid, &p.out);
    // Its first passes after the restore read every page at once.
    for k in 0..3 {
        let l = r.wait_line_after(start + k, |l| {
            l.starts_with("PASS") || l.starts_with("ERROR")
        });
        assert_eq!(
            field_of(&l, "sum="),
            sum,
            "pass {k} after the lazy restore: {l}"
        );
    }
    // Once every page is in, the process is let go: not traced, no fd of ours.
    wait_until("the lazy restore to end", Duration::from_secs(60), || {
        status_field(pid, "TracerPid").as_deref() == Some("0")
    });
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(!fds.iter().any(|l| l.contains("userfaultfd")), "{fds:?}");
    drop(r);
}

#[test]
fn lazy_restore_never_leaves_the_process_hanging() {
    let dir = TempDir::new("lazybad");
    let mut p = Proc::spawn(&dir, speedhog(), &["256", "idle"]);
    let ready = p.wait_for("READY");
    let sum = field_of(&ready, "sum=").to_string();
    let img = dir.join("img.ckpt");
    dump_kill(&mut p, &img);
    let copy = dir.join("copy.ckpt");
    std::fs::copy(&img, &copy).unwrap();

    // The prefetch held back (test hook) so that pages are still missing
    // when the image turns unreadable, or when the server is killed.
    let slow = [("CKPT_TEST_DELAY_MS", "3000")];

    // The image turns unreadable: the next fault (the checksum reads every
    // page) kills the process.
    let (pid, _) = restore_lazy_env(&img, &slow);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let mut r = Proc::adopt(pid, &p.out);
    signal(pid, libc::SIGUSR2).unwrap();
    outcome(&r, &sum, "the image was truncated", true);
    r.kill();

    // The server dies: the kernel kills the process (PTRACE_O_EXITKILL).
    let (pid, _) = restore_lazy_env(&copy, &slow);
    let server: i32 = status_field(pid, "TracerPid").unwrap().parse().unwrap();
    assert_ne!(server, 0, "the lazy restore's server is not the tracer");
    signal(server, libc::SIGKILL).unwrap();
    let mut r = Proc::adopt(pid, &p.out);
    outcome(&r, &sum, "the server was killed", true);
    r.kill();

    // Undisturbed, it ends with every page in.
    let (pid, _) = restore_lazy(&copy);
    let mut r = Proc::adopt(pid, &p.out);
    outcome(&r, &sum, "undisturbed", false);
    r.kill();
}

/// The process is gone (killed) within a few seconds (`killed`: expected,
/// unless the server had every page in first), or runs with its memory
/// intact; never stuck, never on wrong memory.
fn outcome(r: &Proc, sum: &str, what: &str, killed: bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if !r.alive() {
            assert!(killed, "{what}: the process died");
            eprintln!("{what}: the process was killed");
            return;
        }
        if status_field(r.pid, "TracerPid").as_deref() == Some("0") {
            if killed {
                // The tracer is gone; a SIGKILL may still be on its way
                // (TracerPid is 0 before the process is a zombie).
                std::thread::sleep(Duration::from_millis(300));
                if !r.alive() {
                    eprintln!("{what}: the process was killed");
                    return;
                }
                // Every page was in before the disturbance (a loaded
                // machine): it runs on, and its memory must be whole.
                eprintln!("{what}: the process was let go first, with all its pages");
            }
            assert_eq!(
                ask_sum(r).0,
                sum,
                "{what}: the process runs on wrong memory"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{what}: pid {} neither died nor finished (state {})",
        r.pid,
        proc_state(r.pid)
    );
}

#[test]
fn dumper_killed_mid_snapshot_lets_the_process_go() {
    let dir = TempDir::new("killdump");
    let p = Proc::spawn(&dir, speedhog(), &["128", "write"]);
    p.wait_for("READY");
    p.wait_line(|l| l.starts_with("W "));
    let log = dir.join("dump.log");
    let img = dir.join("img.ckpt");
    // Slowed down at every phase (CKPT_TEST_DELAY_MS), so that the copy
    // after the freeze is caught in the middle.
    let mut dumper = ckpt()
        .args([
            "-v",
            "dump",
            &p.pid.to_string(),
            "-o",
            path_str(&img),
            "--leave-running",
        ])
        .env("CKPT_TEST_DELAY_MS", "400")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the snapshot to be taken", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("released")
    });
    std::thread::sleep(Duration::from_millis(100));
    // The dumping worker is a child of the ckpt command: kill both.
    let worker = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        dumper.id(),
        dumper.id()
    ))
    .unwrap_or_default();
    for w in worker.split_whitespace() {
        signal(w.parse().unwrap(), libc::SIGKILL).unwrap();
    }
    let _ = dumper.kill();
    let _ = dumper.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("snapshot copied"),
        "the copy ended before the kill:\n{text}"
    );
    // The process goes on writing: never stuck on a protected page.
    let n = p.line_count();
    p.wait_more_lines(20);
    assert!(p.line_count() >= n + 20);
    assert!(!Path::new(&img).exists());
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", p.pid))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(!fds.iter().any(|l| l.contains("userfaultfd")), "{fds:?}");
}
