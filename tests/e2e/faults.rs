//! Faults during a dump or a restore: the target exiting or being
//! signalled mid-dump, `ckpt dump` / `ckpt restore` killed at every point,
//! a full disk, concurrent dumps, a debugger already attached, a restore
//! racing for its pid. Whatever happens: a clear error or a correct
//! result, never a hang, never a target left stopped, traced or changed,
//! never a half-restored process or a partial image.

use crate::util::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// Spawn the target fixture and wait until it counts.
fn start_target(dir: &TempDir, mib: u32, interval_ms: u32, exit_ms: u32) -> Proc {
    let p = Proc::spawn(
        dir,
        target_fixture(),
        &[
            &mib.to_string(),
            &interval_ms.to_string(),
            &exit_ms.to_string(),
            "1",
        ],
    );
    p.wait_line(|l| l.starts_with("READY"));
    p
}

/// The target goes on as before: free, counting, no ERROR from its own
/// checks (count sequence and memory checksum).
fn assert_goes_on(p: &Proc, what: &str) {
    assert!(p.alive(), "{what}: the target died:\n{}", tail(&p.output()));
    assert_free(p.pid, what);
    p.wait_more_lines(3);
    let out = p.output();
    assert!(!out.contains("ERROR"), "{what}: {}", tail(&out));
    // The output file is shared by the targets of the test: the counts of
    // this one follow its READY line.
    let mine = out.rsplit_once("READY").map(|x| x.1).unwrap_or(&out);
    let counts = values(mine, "count=");
    for w in counts.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: count sequence broken");
    }
}

/// No temp file of `name` is left in `dir` (the worker of a killed dump
/// removes its temp file shortly after its caller died).
fn assert_no_temp(dir: &Path, name: &str, what: &str) {
    let prefix = format!("{name}.tmp.");
    let t = Instant::now();
    loop {
        let left = files_starting(dir, &prefix);
        if left.is_empty() {
            return;
        }
        if t.elapsed() > Duration::from_secs(5) {
            panic!("{what}: temp files left: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An image that exists must be whole: `ckpt show` reads it.
fn assert_valid_image(image: &Path, what: &str) {
    let o = ckpt_timeout(&["show", image.to_str().unwrap()], LIMIT);
    assert!(
        o.status.success(),
        "{what}: the image is not valid: {}",
        stderr_of(&o)
    );
}

fn sigkill(pid: u32) {
    let _ = signal(pid as i32, libc::SIGKILL);
}

#[test]
fn target_exits_during_dump() {
    // The target exits on its own after 0..~60 ms while dumps of it run
    // (slowed down by the test hook so that the exit falls inside them).
    for round in 0..16u32 {
        let dir = TempDir::new("exits");
        let exit_ms = (round * 37) % 61;
        let mut p = Proc::spawn(
            &dir,
            target_fixture(),
            &["2", "5", &exit_ms.to_string(), "1"],
        );
        let image = dir.join("img.ckpt");
        let mut args = vec![
            "dump".to_string(),
            p.pid.to_string(),
            "-o".into(),
            image.display().to_string(),
        ];
        if round % 2 == 0 {
            args.push("--leave-running".into());
        }
        let o = run_timeout(
            ckpt()
                .args(&args)
                .env("CKPT_TEST_DELAY_MS", (round % 4 * 5).to_string()),
            LIMIT,
        );
        let what = format!("round {round} (exit after {exit_ms} ms)");
        if o.status.success() {
            assert_valid_image(&image, &what);
        } else {
            let err = assert_clean_failure(&o, &what);
            assert!(err.contains(&p.pid.to_string()), "{what}: {err}");
            assert!(!image.exists(), "{what}: failed but left an image");
        }
        assert_no_temp(dir.path(), "img.ckpt", &what);
        // It exits (by itself, or killed by the dump): never stopped on the way.
        if p.alive() {
            assert_free(p.pid, &what);
        }
        p.kill();
    }
}

#[test]
fn target_killed_or_signalled_during_dump() {
    for round in 0..12u32 {
        let dir = TempDir::new("sigdump");
        let mut p = start_target(&dir, 2, 5, 0);
        let pid = p.pid;
        let image = dir.join("img.ckpt");
        let sig = [libc::SIGKILL, libc::SIGTERM, libc::SIGSEGV][round as usize % 3];
        let delay = Duration::from_millis(u64::from(round * 7 % 40));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = signal(pid, sig);
        });
        let o = run_timeout(
            ckpt()
                .args([
                    "dump",
                    &pid.to_string(),
                    "-o",
                    image.to_str().unwrap(),
                    "--leave-running",
                ])
                .env("CKPT_TEST_DELAY_MS", "5"),
            LIMIT,
        );
        killer.join().unwrap();
        let what = format!("round {round} (signal {sig} after {delay:?})");
        if o.status.success() {
            assert_valid_image(&image, &what);
        } else {
            let err = assert_clean_failure(&o, &what);
            assert!(err.contains(&pid.to_string()), "{what}: {err}");
            assert!(!image.exists(), "{what}: failed but left an image");
        }
        assert_no_temp(dir.path(), "img.ckpt", &what);
        // The signal kills it (it has no handler for these), once let go.
        let t = Instant::now();
        while p.alive() {
            assert_free(pid, &what);
            assert!(t.elapsed() < LIMIT, "{what}: still alive after {sig}");
            std::thread::sleep(Duration::from_millis(5));
        }
        p.kill();
    }
}

#[test]
fn sigusr1_storm_during_dumps() {
    let dir = TempDir::new("storm");
    let p = start_target(&dir, 4, 5, 0);
    let pid = p.pid;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let storm = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = signal(pid, libc::SIGUSR1);
            n += 1;
            if n & 63 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        n
    });
    let mut ok = 0;
    for round in 0..10 {
        let image = dir.join(format!("img{round}.ckpt"));
        let o = ckpt_timeout(
            &[
                "dump",
                &pid.to_string(),
                "-o",
                image.to_str().unwrap(),
                "--leave-running",
            ],
            LIMIT,
        );
        let what = format!("round {round}");
        if o.status.success() {
            ok += 1;
            assert_valid_image(&image, &what);
        } else {
            assert_clean_failure(&o, &what);
            assert!(!image.exists());
        }
        assert_free(pid, &what);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = storm.join().unwrap();
    assert!(sent > 100, "the storm sent only {sent} signals");
    assert_goes_on(&p, "after the storm");
    let usr1 = values(&p.output(), "usr1=");
    assert!(
        usr1.last().copied().unwrap_or(0) > 0,
        "no SIGUSR1 was handled"
    );
    eprintln!("sigusr1_storm_during_dumps: {sent} signals, {ok} of 10 dumps succeeded");
    // A storm must not make every dump fail.
    assert!(
        ok >= 5,
        "only {ok} of 10 dumps under a SIGUSR1 storm succeeded"
    );
}

/// Kill `ckpt dump` at `delay` after its start; check the target and the
/// output directory. Returns whether the dump had completed.
fn kill_dump_at(
    p: &Proc,
    dir: &TempDir,
    delay: Duration,
    hook_ms: u64,
    leave_running: bool,
) -> bool {
    let image = dir.join("k.ckpt");
    let _ = std::fs::remove_file(&image);
    let mut cmd = ckpt();
    cmd.args([
        "dump",
        &p.pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "-q",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if leave_running {
        cmd.arg("--leave-running");
    }
    if hook_ms > 0 {
        cmd.env("CKPT_TEST_DELAY_MS", hook_ms.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(delay);
    sigkill(child.id());
    let st = child.wait().unwrap();
    let what =
        format!("dump killed after {delay:?} (hook {hook_ms} ms, leave_running {leave_running})");
    assert_no_temp(dir.path(), "k.ckpt", &what);
    if image.exists() {
        // It got as far as the commit: the image must be whole, and the
        // process killed unless --leave-running.
        assert_valid_image(&image, &what);
        if !leave_running {
            let t = Instant::now();
            while p.alive() {
                assert!(
                    t.elapsed() < LIMIT,
                    "{what}: image committed, process not killed"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            return true;
        }
        assert_goes_on(p, &what);
        return true;
    }
    assert!(
        !st.success(),
        "{what}: ckpt dump succeeded without an image"
    );
    assert_goes_on(p, &what);
    false
}

/// How long a whole `ckpt dump --leave-running` of `p` takes here and now.
fn dump_time(p: &Proc, dir: &TempDir, hook_ms: u64) -> Duration {
    let image = dir.join("timing.ckpt");
    let t = Instant::now();
    let o = run_timeout(
        ckpt()
            .args([
                "dump",
                &p.pid.to_string(),
                "-o",
                image.to_str().unwrap(),
                "--leave-running",
                "-q",
            ])
            .env("CKPT_TEST_DELAY_MS", hook_ms.to_string()),
        LIMIT,
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    let _ = std::fs::remove_file(&image);
    t.elapsed()
}

/// `n` delays evenly over 0..1.2 × `whole`, then 2 × and 4 × `whole`
/// (which certainly see the dump through).
fn sweep(whole: Duration, n: u32) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n).map(|i| whole * 6 * i / (5 * n)).collect();
    v.push(whole * 2);
    v.push(whole * 4);
    v
}

#[test]
fn dump_killed_at_every_point() {
    let _turn = heavy();
    let dir = TempDir::new("killdump");
    let mut p = start_target(&dir, 8, 5, 0);
    let mut completed = 0;
    let mut total = 0;
    // With the phase hook: every phase boundary and the middle of the
    // injected queries are hit (7 pauses of 25 ms); then without it, over
    // the whole dump. The sweeps are measured here, as the machine is now.
    for hook in [25, 0] {
        let whole = (0..3).map(|_| dump_time(&p, &dir, hook)).min().unwrap();
        for d in sweep(whole, 30) {
            total += 1;
            if kill_dump_at(&p, &dir, d, hook, true) {
                completed += 1;
            }
        }
    }
    eprintln!("dump_killed_at_every_point: {completed} of {total} killed dumps had completed");
    assert!(completed >= 2, "the sweeps did not cover the whole dump");
    // Coverage, not speed: some dumps must really have been cut short.
    assert!(
        total - completed >= 3,
        "only {} of {total} killed dumps were cut short: the sweep missed the dump",
        total - completed
    );
    // Default mode (kill after the commit): killed before the commit, the
    // process must go on; after it, it is gone and the image is whole.
    let whole = dump_time(&p, &dir, 25);
    for d in sweep(whole, 10) {
        if kill_dump_at(&p, &dir, d, 25, false) {
            p.reap();
            p = start_target(&dir, 8, 5, 0);
        }
    }
}

/// Kill `ckpt restore --detach` at `delay`; returns whether it restored.
fn kill_restore_at(image: &Path, out: &Path, pid: i32, delay: Duration) -> bool {
    let mut child = ckpt()
        .args(["restore", "--detach", image.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    sigkill(child.id());
    let _ = child.wait();
    let what = format!("restore killed after {delay:?}");
    // Either nothing is left at the pid (a stub or a half-built process is
    // killed with its restorer), or the whole process runs and counts on.
    let t = Instant::now();
    loop {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        try_reap(pid);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = status_field(pid, "State").unwrap_or_default();
        if comm.trim() == "target" && !state.starts_with('Z') {
            // Restored (or about to be detached): it must count on.
            let r = Proc::adopt(pid, out);
            let before = r.line_count();
            let deadline = Instant::now() + Duration::from_secs(5);
            while r.line_count() < before + 3 {
                if !r.alive() {
                    // Killed with its restorer before it was let go.
                    wait_gone(pid);
                    return false;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: a half-restored process is left at pid {pid}: {}",
                    proc_state(pid)
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_free(pid, &what);
            assert!(
                !r.output().contains("ERROR"),
                "{what}: {}",
                tail(&r.output())
            );
            drop(r); // kills and reaps it: the pid is free for the next round
            return true;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: pid {pid} held by {comm:?} ({})",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn restore_killed_at_every_point() {
    let _turn = heavy();
    let dir = TempDir::new("killrestore");
    let mut p = start_target(&dir, 16, 5, 0);
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    let bytes = std::fs::read(&image).unwrap();
    let mtime = std::fs::metadata(&image).unwrap().modified().unwrap();
    // How long a whole restore takes here and now.
    let t = Instant::now();
    let mut r = restore_detached(&image, &p.out, p.pid);
    let whole = t.elapsed();
    r.kill();
    let delays = sweep(whole, 40);
    let mut restored = 0;
    for d in &delays {
        if kill_restore_at(&image, &p.out, p.pid, *d) {
            restored += 1;
        }
        assert!(
            std::fs::read(&image).unwrap() == bytes,
            "the image changed (restore killed after {d:?})"
        );
        assert_eq!(
            std::fs::metadata(&image).unwrap().modified().unwrap(),
            mtime
        );
    }
    eprintln!(
        "restore_killed_at_every_point: {restored} of {} killed restores (of {whole:?}) had completed",
        delays.len()
    );
    assert!(restored >= 2, "the sweep did not cover the whole restore");
    // Coverage, not speed: at least a few restores must really have been
    // cut short (on a loaded machine more of them finish first, which is fine).
    assert!(
        delays.len() - restored >= 3,
        "only {} of {} killed restores were cut short: the sweep missed the restore",
        delays.len() - restored,
        delays.len()
    );
    // And the image still restores.
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(3);
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(o.status.success(), "mount tmpfs: {}", stderr_of(&o));
        Tmpfs(dir.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_during_dump() {
    let dir = TempDir::new("diskfull");
    let mnt = dir.join("small");
    let _fs = Tmpfs::mount(&mnt, "1m");
    let p = start_target(&dir, 8, 5, 0);
    for leave in [true, false] {
        let image = mnt.join("img.ckpt");
        let mut args = vec![
            "dump".to_string(),
            p.pid.to_string(),
            "-o".into(),
            image.display().to_string(),
        ];
        if leave {
            args.push("--leave-running".into());
        }
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = ckpt_timeout(&a, LIMIT);
        let what = format!("dump into a 1 MiB tmpfs (leave_running {leave})");
        let err = assert_clean_failure(&o, &what);
        assert!(err.contains("No space left on device"), "{what}: {err}");
        let left = files_starting(&mnt, "");
        assert!(left.is_empty(), "{what}: files left: {left:?}");
        assert_goes_on(&p, &what);
    }
}

#[test]
fn two_dumps_at_once() {
    let dir = TempDir::new("twodumps");
    let p = start_target(&dir, 2, 5, 0);
    let a = dir.join("a.ckpt");
    let b = dir.join("b.ckpt");
    // The first dump is slowed down (50 ms per phase) so the second one
    // certainly starts while it holds the process.
    let first = ckpt()
        .args([
            "dump",
            &p.pid.to_string(),
            "-o",
            a.to_str().unwrap(),
            "--leave-running",
        ])
        .env("CKPT_TEST_DELAY_MS", "50")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while status_field(p.pid, "TracerPid").as_deref() == Some("0") {
        assert!(t.elapsed() < LIMIT, "the first dump never attached");
        std::thread::sleep(Duration::from_millis(1));
    }
    let o = ckpt_timeout(
        &[
            "dump",
            &p.pid.to_string(),
            "-o",
            b.to_str().unwrap(),
            "--leave-running",
        ],
        LIMIT,
    );
    let err = assert_clean_failure(&o, "second dump");
    assert!(err.contains("already traced"), "{err}");
    assert!(!b.exists());
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "first dump: {}", stderr_of(&first));
    assert_valid_image(&a, "first dump");
    assert_goes_on(&p, "after two dumps");
}

#[test]
fn dump_of_a_process_under_gdb() {
    require!(require::tool("gdb", "apt-get install gdb"));
    let dir = TempDir::new("gdb");
    let p = start_target(&dir, 1, 5, 0);
    let gdb = Command::new("gdb")
        .args([
            "-q",
            "-nx",
            "-batch",
            "-p",
            &p.pid.to_string(),
            "-ex",
            "shell sleep 3",
            "-ex",
            "info inferiors",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb (apt-get install gdb)");
    let gdb_pid = gdb.id().to_string();
    let t = Instant::now();
    while status_field(p.pid, "TracerPid").as_deref() != Some(gdb_pid.as_str()) {
        assert!(
            t.elapsed() < LIMIT,
            "gdb never attached: {}",
            proc_state(p.pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let image = dir.join("img.ckpt");
    let o = ckpt_timeout(
        &["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()],
        LIMIT,
    );
    let err = assert_clean_failure(&o, "dump under gdb");
    assert!(
        err.contains(&format!("already traced by pid {gdb_pid}")),
        "{err}"
    );
    assert!(!image.exists());
    // gdb's session is unaffected: it still holds the process, and ends normally.
    assert_eq!(
        status_field(p.pid, "TracerPid").as_deref(),
        Some(gdb_pid.as_str())
    );
    let g = gdb.wait_with_output().unwrap();
    let gout = String::from_utf8_lossy(&g.stdout).to_string() + &String::from_utf8_lossy(&g.stderr);
    assert!(g.status.success(), "gdb: {gout}");
    assert!(
        gout.contains(&format!("process {}", p.pid)),
        "gdb lost its inferior: {gout}"
    );
    assert_goes_on(&p, "after gdb detached");
}

/// Start `sleep 30` at exactly `pid` (via ns_last_pid; retried, since other
/// processes may take it first). None if it could not be had.
fn occupy_pid(pid: i32) -> Option<std::process::Child> {
    for _ in 0..200 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_err() {
            return None;
        }
        let c = Command::new("sleep").arg("30").spawn().unwrap();
        if c.id() as i32 == pid {
            return Some(c);
        }
        let mut c = c;
        let _ = c.kill();
        let _ = c.wait();
    }
    None
}

#[test]
fn restore_racing_for_its_pid() {
    let dir = TempDir::new("pidrace");
    let mut p = start_target(&dir, 1, 5, 0);
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    let pid = p.pid;

    // Another process takes the pid first: a clear error, nothing built.
    let mut holder = occupy_pid(pid).expect("could not start a process at the saved pid");
    let o = ckpt_timeout(&["restore", "--detach", image.to_str().unwrap()], LIMIT);
    let err = assert_clean_failure(&o, "restore onto a taken pid");
    assert!(
        err.contains(&format!("pid {pid} is in use by \"sleep\"")),
        "{err}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    wait_gone(pid);

    // Two restores at once: one wins, the other fails clearly; only one
    // process, whole.
    for round in 0..3 {
        let spawn = || {
            ckpt()
                .args(["restore", "--detach", image.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let wins: Vec<_> = [&a, &b]
            .into_iter()
            .filter(|o| o.status.success())
            .collect();
        assert_eq!(
            wins.len(),
            1,
            "round {round}: {} restores succeeded:\n{}\n{}",
            wins.len(),
            stderr_of(&a),
            stderr_of(&b)
        );
        let loser = if a.status.success() { &b } else { &a };
        let err = assert_clean_failure(loser, "the losing restore");
        assert!(err.contains(&pid.to_string()), "{err}");
        let mut r = Proc::adopt(pid, &p.out);
        r.wait_more_lines(3);
        assert_free(pid, "the winning restore");
        assert!(!r.output().contains("ERROR"), "{}", tail(&r.output()));
        r.kill();
    }
}

/// A small deterministic generator for the moments of the signals.
struct Rand(u64);
impl Rand {
    fn new() -> Rand {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        eprintln!("seed {seed}");
        Rand(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The dump worker of a `ckpt dump` just started (its child), once it
/// exists; None if ckpt ended first.
fn dump_worker(child: &mut std::process::Child) -> Option<i32> {
    let ckpt_pid = child.id();
    let t = Instant::now();
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{ckpt_pid}/task/{ckpt_pid}/children"))
            .unwrap_or_default();
        if let Some(w) = kids.split_whitespace().next() {
            return w.parse::<i32>().ok();
        }
        if t.elapsed() > LIMIT || child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::yield_now();
    }
}

/// The dump worker killed with SIGKILL at random moments of the dump of a
/// process of several threads, which are asked together (each system
/// call started in every thread before any is waited for; the phase hook
/// holds them there on the injector's registers): every thread goes on
/// as it was (the fixture checks its token order, counts and tids on
/// every turn), and no temp file is left.
#[test]
fn sigkill_of_the_worker_while_threads_are_asked_together() {
    let _turn = heavy();
    let dir = TempDir::new("killthreads");
    let p = Proc::spawn(&dir, fixture("threads"), &["5"]);
    p.wait_line(|l| l.contains("round="));
    let cut = kill_workers(&p, &dir, 8, &|what| {
        assert!(p.alive(), "{what}: the target died:\n{}", tail(&p.output()));
        assert_free(p.pid, what);
        p.wait_more_lines(8);
        let out = p.output();
        assert!(!out.contains("ERROR"), "{what}: {}", tail(&out));
    });
    assert!(cut >= 4, "only {cut} of 16 dumps were cut short");
}

/// `ckpt dump --leave-running` of `p` in a process group of its own
/// (with the phase hook `hook_ms`), started.
fn dump_in_own_group(p: &Proc, image: &Path, hook_ms: u64) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = ckpt();
    cmd.args([
        "dump",
        &p.pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "--leave-running",
        "-q",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .process_group(0);
    if hook_ms > 0 {
        cmd.env("CKPT_TEST_DELAY_MS", hook_ms.to_string());
    }
    cmd.spawn().unwrap()
}

/// The signals blocked in process `pid` (its main thread), as a mask; 0
/// once it has gone.
fn blocked_signals(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Wait for a child with a time limit (then kill it and fail).
fn wait_limited(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("{what}: ckpt did not end");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGINT, SIGTERM and SIGHUP sent to the process group of a `ckpt dump
/// --leave-running` of a 300 MB process at random moments (what Ctrl-C,
/// `timeout` or a service manager do): the dump is cancelled cleanly
/// (exit 128 + signal, no image, no temp file) or had completed (exit 0,
/// a whole image); the target always goes on untouched.
#[test]
fn signals_to_the_dumps_process_group_cancel_it_cleanly() {
    let _turn = heavy();
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("groupsig");
    let p = start_target(&dir, 300, 5, 0);
    let image = dir.join("g.ckpt");
    let mut rnd = Rand::new();
    let (mut cancelled, mut completed) = (0, 0);
    for hook in [20u64, 0] {
        let whole = (0..2).map(|_| dump_time(&p, &dir, hook)).min().unwrap();
        for round in 0..12u64 {
            let sig = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP][(round % 3) as usize];
            let _ = std::fs::remove_file(&image);
            let mut child = dump_in_own_group(&p, &image, hook);
            let delay = Duration::from_micros(rnd.below(whole.as_micros() as u64 * 11 / 10));
            std::thread::sleep(delay);
            // ckpt holds these signals from its first steps on; before
            // that (exec, loading) one ends it the default way.
            let handled = blocked_signals(child.id()) & (1 << (sig - 1)) != 0;
            let _ = ckpt_sys::proc::kill(-(child.id() as i32), sig);
            let what = format!(
                "signal {sig} to the group after {delay:?} (hook {hook} ms, {})",
                if handled { "held" } else { "not held yet" }
            );
            let (st, err) = wait_with_stderr(&mut child, &what);
            assert_no_temp(dir.path(), "g.ckpt", &what);
            match st.code() {
                Some(0) => {
                    assert_valid_image(&image, &what);
                    completed += 1;
                }
                Some(c) if c == 128 + sig => {
                    assert!(!image.exists(), "{what}: cancelled, yet an image exists");
                    assert!(err.contains("cancelled"), "{what}: {err}");
                    cancelled += 1;
                }
                // A signal that comes before ckpt has started handling
                // them (in the first milliseconds: exec, loading) ends it
                // the default way, before it touched anything.
                None if st.signal() == Some(sig) && !handled => {
                    assert!(!image.exists(), "{what}: killed, yet an image exists");
                }
                _ => panic!(
                    "{what}: ckpt ended with {st:?} (signal {:?}): {err}",
                    st.signal()
                ),
            }
            assert_goes_on(&p, &what);
        }
    }
    eprintln!("{cancelled} dumps cancelled, {completed} completed");
    assert!(
        cancelled >= 6,
        "only {cancelled} of 24 signals cancelled a dump"
    );
}

/// The dump worker killed with SIGKILL at random moments (the injected
/// queries included, with the phase hook): the target is never killed,
/// stopped or changed, and no temp file is left.
#[test]
fn sigkill_of_the_dump_worker_never_harms_the_target() {
    let _turn = heavy();
    let dir = TempDir::new("killworker");
    let p = start_target(&dir, 300, 5, 0);
    let cut = kill_workers(&p, &dir, 10, &|what| assert_goes_on(&p, what));
    assert!(cut >= 5, "only {cut} of 20 dumps were cut short");
}

/// `rounds` dumps (`--leave-running`) of `p` with the phase hook and as
/// many without, each with its worker SIGKILLed at a random moment of a
/// whole dump's time; after each, no temp file is left, an image exists
/// only if the dump succeeded (killed after its commit: then it is
/// whole), and `check` holds for the target. The number of dumps cut
/// short.
fn kill_workers(p: &Proc, dir: &TempDir, rounds: u32, check: &dyn Fn(&str)) -> u32 {
    let image = dir.join("w.ckpt");
    let mut rnd = Rand::new();
    let mut cut = 0;
    for hook in [20u64, 0] {
        let whole = (0..2).map(|_| dump_time(p, dir, hook)).min().unwrap();
        for _ in 0..rounds {
            let _ = std::fs::remove_file(&image);
            let mut child = dump_in_own_group(p, &image, hook);
            let worker = dump_worker(&mut child);
            let delay = Duration::from_micros(rnd.below(whole.as_micros() as u64));
            std::thread::sleep(delay);
            if let Some(w) = worker {
                let _ = ckpt_sys::proc::kill(w, libc::SIGKILL);
            }
            let what = format!("worker killed after {delay:?} (hook {hook} ms)");
            let st = wait_limited(&mut child, &what);
            assert_no_temp(dir.path(), "w.ckpt", &what);
            if st.success() {
                assert_valid_image(&image, &what);
            } else {
                assert!(!image.exists(), "{what}: failed, yet an image exists");
                cut += 1;
            }
            check(&what);
        }
    }
    cut
}

/// SIGTERM, SIGINT or SIGHUP to the process group of a `ckpt restore
/// --detach` of a 300 MB process at random moments: the restore is
/// cancelled (exit 128 + signal, nothing left at the pid) or had
/// completed (exit 0, the process runs); never a hang, never a
/// half-built process; the image is unchanged.
#[test]
fn signals_cancel_a_restore_cleanly() {
    let _turn = heavy();
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let dir = TempDir::new("sigrestore");
    let mut p = start_target(&dir, 300, 5, 0);
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    // (Not the bytes: a copy of a 300 MB image in the test process would
    // count in the peak RSS of every child it spawns meanwhile.)
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.len(), m.modified().unwrap())
    };
    let before = stamp(&image);
    let t = Instant::now();
    let mut r = restore_detached(&image, &p.out, p.pid);
    let whole = t.elapsed();
    r.kill();
    let mut rnd = Rand::new();
    let (mut cancelled, mut completed) = (0, 0);
    for round in 0..16u64 {
        let sig = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP][(round % 3) as usize];
        let mut child = restore_cmd(&image).process_group(0).spawn().unwrap();
        let delay = Duration::from_micros(rnd.below(whole.as_micros() as u64 * 11 / 10));
        std::thread::sleep(delay);
        let _ = ckpt_sys::proc::kill(-(child.id() as i32), sig);
        let what = format!("signal {sig} to the restore's group after {delay:?}");
        let (st, err) = wait_with_stderr(&mut child, &what);
        match st.code() {
            Some(0) => {
                completed += 1;
                let mut q = Proc::adopt(p.pid, &p.out);
                q.kill();
            }
            Some(c) if c == 128 + sig => {
                assert!(err.contains("cancelled"), "{what}: {err}");
                cancelled += 1;
            }
            // Before it could catch anything: it had started nothing.
            None if st.signal() == Some(sig) => cancelled += 1,
            _ => panic!("{what}: ckpt restore ended with {st:?}: {err}"),
        }
        // Nothing left at the pid (a cancelled one is killed and reaped).
        let t = Instant::now();
        while Path::new(&format!("/proc/{}", p.pid)).exists() {
            ckpt_sys::proc::wait::try_reap(p.pid);
            assert!(t.elapsed() < LIMIT, "{what}: pid {} left", p.pid);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stamp(&image), before, "{what}: the image changed");
    }
    eprintln!("{cancelled} restores cancelled, {completed} completed");
    assert!(
        cancelled >= 4,
        "only {cancelled} of 16 signals cancelled a restore"
    );
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(3);
}

/// The `sharing` fixture: a parent and two children (shared memory, one
/// open file, an eventfd, a socket pair, one shared fd table), each
/// checking its invariants; their pids once they run.
fn start_tree(dir: &TempDir) -> (Proc, [i32; 3]) {
    let file = dir.join("shared.txt");
    let p = Proc::spawn(dir, fixture("sharing"), &[file.to_str().unwrap(), "5"]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let field = |k: &str| -> i32 {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k}= in {ready:?}"))
    };
    let pids = [field("parent"), field("c1"), field("c2")];
    p.wait_line(|l| l.starts_with("p tick=3 "));
    (p, pids)
}

/// Every process of the tree goes on as before: free (not stopped, not
/// traced), each still ticking, no ERROR from their checks.
fn assert_tree_goes_on(p: &Proc, pids: &[i32; 3], what: &str) {
    for &pid in pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid),
            "{what}: pid {pid} died:\n{}",
            tail(&p.output())
        );
        assert_free(pid, what);
    }
    let n = p.line_count();
    for who in ["p", "c1", "c2"] {
        p.wait_line_after(n, |l| l.starts_with(&format!("{who} tick=")));
    }
    let out = p.output();
    assert!(!out.contains("ERROR"), "{what}: {}", tail(&out));
}

/// A dump of a whole tree cancelled by SIGINT, SIGTERM or SIGHUP to its
/// process group, or cut by SIGKILL of its worker, at random moments (the
/// phase hook makes every phase last): every process of the tree goes on
/// as it was, no temp file is left, and an image that exists is whole.
#[test]
fn a_cancelled_or_killed_dump_of_a_tree_leaves_every_process_as_it_was() {
    let _turn = heavy();
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("treefaults");
    let (p, pids) = start_tree(&dir);
    let image = dir.join("t.ckpt");
    let mut rnd = Rand::new();
    let hook = 15u64;
    let whole = (0..2).map(|_| dump_time(&p, &dir, hook)).min().unwrap();
    let (mut cut, mut completed) = (0, 0);
    for round in 0..16u64 {
        let _ = std::fs::remove_file(&image);
        let mut child = dump_in_own_group(&p, &image, hook);
        let delay = Duration::from_micros(rnd.below(whole.as_micros() as u64));
        let what = if round < 9 {
            let sig = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP][(round % 3) as usize];
            std::thread::sleep(delay);
            let _ = signal(-(child.id() as i32), sig);
            format!("signal {sig} to the group after {delay:?}")
        } else {
            let ckpt_pid = child.id();
            let t = Instant::now();
            let worker = loop {
                let kids =
                    std::fs::read_to_string(format!("/proc/{ckpt_pid}/task/{ckpt_pid}/children"))
                        .unwrap_or_default();
                if let Some(w) = kids.split_whitespace().next() {
                    break w.parse::<i32>().ok();
                }
                if t.elapsed() > LIMIT || child.try_wait().unwrap().is_some() {
                    break None;
                }
                std::thread::yield_now();
            };
            std::thread::sleep(delay);
            if let Some(w) = worker {
                let _ = signal(w, libc::SIGKILL);
            }
            format!("worker killed after {delay:?}")
        };
        let st = wait_limited(&mut child, &what);
        assert_no_temp(dir.path(), "t.ckpt", &what);
        if st.success() {
            assert_valid_image(&image, &what);
            completed += 1;
        } else {
            assert!(
                !image.exists(),
                "{what}: failed ({st:?}, signal {:?}), yet an image exists",
                st.signal()
            );
            cut += 1;
        }
        assert_tree_goes_on(&p, &pids, &what);
    }
    eprintln!("{cut} dumps cut short, {completed} completed");
    assert!(cut >= 6, "only {cut} of 16 dumps were cut short");
}

/// The `sharing` tree dumped (killed) into `dir`/t.ckpt, and gone: the
/// fixture (its output file), the tree's pids, and the image.
fn killed_tree(dir: &TempDir) -> (Proc, [i32; 3], std::path::PathBuf) {
    let (mut p, pids) = start_tree(dir);
    let image = dir.join("t.ckpt");
    dump_kill(&mut p, &image);
    for &pid in &pids {
        wait_gone(pid);
    }
    (p, pids, image)
}

/// `ckpt restore --detach IMAGE`, its stderr piped.
fn restore_cmd(image: &Path) -> Command {
    let mut c = ckpt();
    c.args(["restore", "--detach", image.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The exit status and stderr (piped) of a ckpt command, waited for with
/// a time limit.
fn wait_with_stderr(
    child: &mut std::process::Child,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let st = wait_limited(child, what);
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (st, err)
}

/// None of `pids` is left, not even as a zombie (reaped where ours).
fn assert_pids_gone(pids: &[i32], what: &str) {
    let t = Instant::now();
    for &pid in pids {
        loop {
            try_reap(pid);
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            assert!(t.elapsed() < LIMIT, "{what}: pid {pid} left");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// SIGTERM, SIGINT or SIGHUP to the process group of a `ckpt restore
/// --detach` of a tree at random moments: cancelled (exit 128 + signal)
/// with none of the tree's pids left (never a part of the tree), or
/// completed.
#[test]
fn signals_cancel_a_tree_restore_cleanly() {
    let _turn = heavy();
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let dir = TempDir::new("treerestore");
    let (p, pids, image) = killed_tree(&dir);
    let t = Instant::now();
    let mut r = restore_detached(&image, &p.out, p.pid);
    let whole = t.elapsed();
    r.kill();
    for &pid in &pids {
        let _ = signal(pid, libc::SIGKILL);
        wait_gone(pid);
    }
    let mut rnd = Rand::new();
    let (mut cancelled, mut completed) = (0, 0);
    for round in 0..12u64 {
        let sig = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP][(round % 3) as usize];
        let mut child = restore_cmd(&image).process_group(0).spawn().unwrap();
        let delay = Duration::from_micros(rnd.below(whole.as_micros() as u64 * 11 / 10));
        std::thread::sleep(delay);
        let _ = signal(-(child.id() as i32), sig);
        let what = format!("signal {sig} to the restore's group after {delay:?}");
        let (st, err) = wait_with_stderr(&mut child, &what);
        match st.code() {
            Some(0) => {
                // Restored (the signal may then have reached the tree
                // too: it is in the restore's process group).
                completed += 1;
                for &pid in &pids {
                    let _ = signal(pid, libc::SIGKILL);
                }
            }
            Some(c) if c == 128 + sig => {
                assert!(err.contains("cancelled"), "{what}: {err}");
                cancelled += 1;
            }
            None if st.signal() == Some(sig) => cancelled += 1,
            _ => panic!("{what}: ckpt restore ended with {st:?}: {err}"),
        }
        assert_pids_gone(&pids, &what);
    }
    eprintln!("{cancelled} restores cancelled, {completed} completed");
    assert!(
        cancelled >= 3,
        "only {cancelled} of 12 signals cancelled a restore"
    );
}

/// A process of the tree killed while the tree is restored (processes are
/// built while the rest of the tree is still being made): the restore
/// fails at once, saying why, with none of the tree's pids left; or, when
/// the process was already built, it completes.
#[test]
fn a_process_killed_while_its_tree_is_restored_fails_it_cleanly() {
    let _turn = heavy();
    let dir = TempDir::new("treekill");
    let (_p, pids, image) = killed_tree(&dir);
    let mut rnd = Rand::new();
    let (mut failed, mut completed) = (0, 0);
    for round in 0..12u64 {
        let victim = pids[1 + (round % 2) as usize];
        let mut child = restore_cmd(&image).spawn().unwrap();
        let t = Instant::now();
        while !Path::new(&format!("/proc/{victim}")).exists()
            && child.try_wait().unwrap().is_none()
            && t.elapsed() < LIMIT
        {
            std::thread::yield_now();
        }
        let delay = Duration::from_micros(rnd.below(3000));
        std::thread::sleep(delay);
        let _ = signal(victim, libc::SIGKILL);
        let what = format!("pid {victim} killed {delay:?} after it appeared");
        let t = Instant::now();
        let (st, err) = wait_with_stderr(&mut child, &what);
        let took = t.elapsed();
        if st.success() {
            completed += 1;
            for &pid in &pids {
                let _ = signal(pid, libc::SIGKILL);
            }
        } else {
            assert!(
                took < Duration::from_secs(10),
                "{what}: the restore took {took:?} to fail: {err}"
            );
            assert!(err.contains("restore of"), "{what}: {err}");
            failed += 1;
        }
        assert_pids_gone(&pids, &what);
    }
    eprintln!("{failed} restores failed, {completed} completed");
    assert!(failed >= 3, "only {failed} of 12 kills failed a restore");
}
