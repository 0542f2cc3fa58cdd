//! The fixtures of tests/fixtures dumped and restored, with what each must
//! show afterwards. The same scenario runs through the `ckpt` binary (the
//! e2e tests) and through the libraries (the ckpt-restore tests): each
//! passes its own [`DumpRestore`].

use crate::checks::{assert_fileoffset_continues, assert_interpreter_state_kept};
use crate::feed::LineFeed;
use crate::fixtures::fixture;
use crate::proc::{signal, Proc};
use crate::require;
use crate::temp::TempDir;
use crate::text::{assert_steps, tail, values};
use std::path::Path;

/// How a test saves a process and brings it back.
pub trait DumpRestore {
    /// Dump `p` into `image`, killing it, and reap it.
    fn dump(&self, p: &mut Proc, image: &Path);
    /// Restore `image`, saved from `p` (now gone), at p's pid; the restored
    /// process writes to `p.out`.
    fn restore(&self, image: &Path, p: &Proc) -> Proc;
}

/// Spawn `prog args` in `dir`, wait for READY and `warmup` more lines,
/// dump it (killing it) into `dir/img.ckpt` and restore it; check that it
/// goes on at the same pid without starting over. Returns the restored
/// process and the number of output lines before the dump.
pub fn roundtrip(
    via: &dyn DumpRestore,
    dir: &TempDir,
    prog: impl AsRef<Path>,
    args: &[&str],
    warmup: usize,
) -> (Proc, usize) {
    let mut p = Proc::spawn(dir, prog, args);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(warmup);
    let image = dir.join("img.ckpt");
    via.dump(&mut p, &image);
    let before = p.line_count();
    let r = via.restore(&image, &p);
    assert_eq!(r.pid, p.pid, "restored at another pid");
    r.wait_more_lines(3);
    let out = r.output();
    assert_eq!(
        out.matches("READY").count(),
        1,
        "the restored process started over:\n{}",
        tail(&out)
    );
    assert!(!out.contains("ERROR"), "{}", tail(&out));
    (r, before)
}

/// `threads`: four threads pass a token under a mutex; the total goes on
/// by one across the restore.
pub fn threads(via: &dyn DumpRestore) {
    let dir = TempDir::new("threads");
    let (r, before) = roundtrip(via, &dir, fixture("threads"), &["5"], 12);
    r.wait_more_lines(12);
    let totals = values(&r.output(), "total=");
    assert!(totals.len() > before + 8);
    assert_steps(&totals, 1, None, "token passing");
}

/// `sleeper` in each blocking call: it wakes after the restore, not early
/// (the fixture checks the time slept).
pub fn sleepers(via: &dyn DumpRestore) {
    for mode in ["sleep", "read", "poll", "futex"] {
        let dir = TempDir::new(&format!("sleep-{mode}"));
        let (r, before) = roundtrip(via, &dir, fixture("sleeper"), &[mode, "40"], 2);
        r.wait_more_lines(3);
        let out = r.output();
        assert!(
            out.lines().skip(before).any(|l| l.starts_with("wake")),
            "{mode}: {}",
            tail(&out)
        );
    }
}

/// `pipe`: the data buffered in a pipe at the dump is read back after.
pub fn pipe_buffer(via: &dyn DumpRestore) {
    let dir = TempDir::new("pipe");
    let (r, before) = roundtrip(via, &dir, fixture("pipe"), &["30", "10"], 5);
    let l = r.wait_line_after(before, |l| l.starts_with("pipe_data="));
    assert!(l.ends_with(" ok"), "{l}");
}

/// `fileoffset`: a file and a deleted file, each read on from its saved
/// offset (see [`assert_fileoffset_continues`]).
pub fn file_offsets(via: &dyn DumpRestore) {
    let dir = TempDir::new("files");
    let data = dir.join("data.txt");
    let text: String = (0..200).map(|i| format!("line{i:04}|")).collect();
    std::fs::write(&data, &text).unwrap();
    let args = [data.to_str().unwrap(), "3", "10"];
    let (r, before) = roundtrip(via, &dir, fixture("fileoffset"), &args, 10);
    // Two reads of each fd after the restore: the fixture checks each read
    // against where the one before left the fd.
    let second = |l: &str| l.starts_with("deleted_data=");
    let n = r.wait_line_after(before, second);
    r.wait_line_after(r.output().lines().position(|l| l == n).unwrap() + 1, second);
    assert_fileoffset_continues(&r.output(), before, text.len() as i64);
}

/// `fdkinds`: each tick checks the eventfd count, the epoll ready set and
/// the timerfd period; a drain (every 10th tick) what the eventfd and the
/// pipe held. One drain after the restore at least.
pub fn fd_kinds(via: &dyn DumpRestore) {
    let dir = TempDir::new("fdkinds");
    let (r, before) = roundtrip(via, &dir, fixture("fdkinds"), &["20"], 12);
    r.wait_more_lines(15);
    r.wait_line_after(before, |l| l.starts_with("drained"));
}

/// `signals`: handlers on the alternate stack, and the signals pending at
/// the dump delivered (with their siginfo) once unblocked after it.
pub fn signals(via: &dyn DumpRestore) {
    let dir = TempDir::new("signals");
    let marker = dir.join("unblock");
    let args = ["0", marker.to_str().unwrap(), "10"];
    let (r, _) = roundtrip(via, &dir, fixture("signals"), &args, 12);
    std::fs::write(&marker, b"").unwrap();
    r.wait_line(|l| l.starts_with("signals_ok"));
    let out = r.output();
    assert!(
        out.contains("usr2_delivered si_code=-1 si_value=24301"),
        "{}",
        tail(&out)
    );
    assert!(out.contains("on_altstack=1"), "{}", tail(&out));
}

/// `avx`: vector registers loaded once and checked in a loop keep their
/// values, frozen in a sleep and in user code.
pub fn avx(via: &dyn DumpRestore) {
    crate::require!(require::cpu_flag("avx"));
    for args in [&["200000", "25", "ymm"][..], &["3000000", "0"][..]] {
        let dir = TempDir::new("avx");
        let (r, before) = roundtrip(via, &dir, fixture("avx"), args, 3);
        r.wait_line_after(before, |l| l.starts_with("avx_ok"));
        r.wait_more_lines(3);
        assert!(!r.output().contains("avx_mismatch"));
    }
}

/// `state.py` and `state.pl`: an interpreter's heap (see
/// [`assert_interpreter_state_kept`]).
pub fn interpreters(via: &dyn DumpRestore) {
    crate::require!(
        require::tool("python3", "apt-get install python3"),
        require::tool("perl", "apt-get install perl")
    );
    for (interp, script) in [("python3", "state.py"), ("perl", "state.pl")] {
        let dir = TempDir::new(interp);
        let (r, before) = roundtrip(via, &dir, interp, &[fixture(script).to_str().unwrap()], 5);
        r.wait_more_lines(5);
        assert!(r.line_count() > before + 5, "{interp}");
        assert_interpreter_state_kept(&r, before, interp);
    }
}

/// What the `pipes_echo` fixture at `pid`, its stdout read by `feed`,
/// finds in its stdin now: the `got=` lines it prints on SIGUSR1.
pub fn echoed(feed: &mut LineFeed, pid: i32) -> Vec<String> {
    signal(pid, nix::sys::signal::Signal::SIGUSR1 as i32).expect("SIGUSR1 to pipes_echo");
    feed.until(|l| l == "drained")
        .into_iter()
        .filter_map(|l| l.strip_prefix("got=").map(str::to_string))
        .collect()
}
