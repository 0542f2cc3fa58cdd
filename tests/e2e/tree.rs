//! Trees of processes: `ckpt dump` saves a process and its descendants,
//! `ckpt restore` brings them back under the same pids and parents, with
//! their sessions, groups, zombies, stopped children and everything they
//! share.

use crate::util::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// pid -> (ppid, pgid, sid, state) from /proc/PID/stat.
fn stat_of(pid: i32) -> Option<(i32, i32, i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[3].parse().ok()?,
        f[0].to_string(),
    ))
}

/// `root` and its descendants, parents first.
fn tree_of(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) {
            let mut kids: Vec<i32> = rd
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|s| {
                    s.split_whitespace()
                        .filter_map(|w| w.parse().ok())
                        .collect::<Vec<i32>>()
                })
                .collect();
            kids.sort_unstable();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// The layout of a tree: pid -> (ppid, pgid, sid) (the root's ppid left out:
/// after a restore it is the restorer's, or us once it exited).
fn layout(root: i32) -> BTreeMap<i32, (i32, i32, i32)> {
    tree_of(root)
        .into_iter()
        .filter_map(|p| stat_of(p).map(|(pp, g, s, _)| (p, (if p == root { 0 } else { pp }, g, s))))
        .collect()
}

/// Kills every process of a tree (and reaps the ones that come to us) when
/// dropped.
struct Tree(Vec<i32>);

impl Tree {
    fn of(root: i32) -> Tree {
        Tree(tree_of(root))
    }
    /// After a dump killed them: wait until every one is gone (reaping the
    /// orphans that were reparented to us); their pids are free for the
    /// restore, not ours to kill any more.
    fn wait_gone(mut self) {
        for &p in &self.0 {
            wait_gone(p);
        }
        self.0.clear();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = ckpt_sys::proc::kill(p, libc::SIGKILL);
        }
        for &p in &self.0 {
            let t = Instant::now();
            while Path::new(&format!("/proc/{p}")).exists() && t.elapsed() < TIMEOUT {
                ckpt_sys::proc::wait::try_reap(p);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Dump `p`'s tree (killing it), wait until every process is gone, and
/// restore it detached: the root comes back at its pid.
fn dump_and_restore(p: &mut Proc, image: &Path) -> Tree {
    let before = Tree::of(p.pid);
    dump_kill(p, image);
    before.wait_gone();
    // And every process the dump saw: a child started after `before` was
    // read is in the image and was killed with the others (a zombie of
    // ours now, holding its pid until reaped).
    let reader = ckpt_image::ImageReader::open(image).unwrap();
    for q in &reader.image().processes {
        wait_gone(q.pid);
    }
    let q = restore_detached(image, &p.out, p.pid);
    std::mem::forget(q); // the Tree below owns it
    Tree::of(p.pid)
}

/// Lines of `out` after the first `skip` whose key=value values must go on
/// one by one (nothing lost or repeated).
fn assert_consecutive(out: &str, key: &str) {
    let v = values(out, key);
    assert!(v.len() > 3, "too few {key} lines:\n{}", tail(out));
    for w in v.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{key} jumped:\n{}", tail(out));
    }
}

#[test]
fn bash_loop_starting_children_goes_on() {
    let dir = TempDir::new("bashtree");
    let script = "i=0; while :; do i=$((i+1)); sleep 0.02 & wait $!; echo tick=$i; done";
    let mut p = Proc::spawn_cmd(&dir, Command::new("bash").args(["-c", script]));
    p.wait_line(|l| l == "tick=5");
    let image = dir.join("bash.ckpt");
    let n = p.line_count();
    let tree = dump_and_restore(&mut p, &image);
    p.wait_line_after(n, |l| l == format!("tick={}", n + 10));
    let out = p.output();
    assert!(!out.contains("ERROR"), "{out}");
    assert_consecutive(&out, "tick=");
    drop(tree);
}

#[test]
fn python_pipeline_numbers_every_line_once() {
    let dir = TempDir::new("pipeline");
    let py = fixture("pipeline.py");
    let cmd = format!("python3 {0} produce | python3 {0} number", py.display());
    let mut p = Proc::spawn_cmd(&dir, Command::new("sh").args(["-c", &cmd]));
    p.wait_line(|l| l == "count=3000");
    let image = dir.join("pipeline.ckpt");
    let before = values(&p.output(), "count=").last().copied().unwrap();
    let n = p.line_count();
    let tree = dump_and_restore(&mut p, &image);
    let want = before + 3000;
    p.wait_line_after(n, |l| l == format!("count={want}"));
    let out = p.output();
    assert!(!out.contains("ERROR"), "{}", tail(&out));
    let v = values(&out, "count=");
    for w in v.windows(2) {
        assert_eq!(w[1], w[0] + 500, "lines lost or repeated:\n{}", tail(&out));
    }
    drop(tree);
}

#[test]
fn multiprocessing_pool_with_lock_and_queue() {
    let dir = TempDir::new("pool");
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new("python3").arg(fixture("pool.py")).arg("20"),
    );
    p.wait_line(|l| l == "round=5 ok=1");
    let image = dir.join("pool.ckpt");
    let n = p.line_count();
    let tree = dump_and_restore(&mut p, &image);
    assert_eq!(tree.0.len(), 3, "the parent and its 2 workers");
    p.wait_more_lines(10);
    let out = p.output();
    assert!(
        !out.contains("ERROR") && !out.contains("ok=0"),
        "{}",
        tail(&out)
    );
    assert_consecutive(&out[out.find("round=").unwrap()..], "round=");
    assert!(values(&out, "round=").len() > n);
    drop(tree);
}

/// `READY k=v ...` values.
fn ready_field(p: &Proc, key: &str) -> i32 {
    let l = p.wait_line(|l| l.starts_with("READY"));
    l.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {l:?}"))
}

#[test]
fn zombie_stopped_child_pdeath_subreaper_and_thread_creds() {
    let dir = TempDir::new("family");
    let mut p = Proc::spawn(&dir, fixture("family"), &[]);
    let (zombie, stopped, watch) = (
        ready_field(&p, "zombie"),
        ready_field(&p, "stopped"),
        ready_field(&p, "watch"),
    );
    p.wait_line(|l| l == "tick=3");
    let shape = layout(p.pid);
    let image = dir.join("family.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    assert_eq!(layout(p.pid), shape, "pids, parents, groups and sessions");
    assert_eq!(stat_of(zombie).unwrap().3, "Z", "the zombie is one again");
    let comm = std::fs::read_to_string(format!("/proc/{zombie}/comm")).unwrap();
    assert_eq!(comm.trim(), "family");
    assert_eq!(
        stat_of(stopped).unwrap().3,
        "T",
        "the stopped child stays stopped"
    );
    let n = p.line_count();
    ckpt_sys::proc::kill(p.pid, libc::SIGUSR1).unwrap();
    p.wait_line_after(n, |l| l == format!("reaped pid={zombie} status=0x700"));
    p.wait_line_after(n, |l| l == "subreaper=1");
    ckpt_sys::proc::kill(watch, libc::SIGUSR1).unwrap();
    p.wait_line_after(n, |l| l == "pdeath=12 thread_uid=65534");
    ckpt_sys::proc::kill(stopped, libc::SIGCONT).unwrap();
    p.wait_line_after(n, |l| l == "continued=2");
    p.wait_more_lines(5);
    let out = p.output();
    assert!(!out.contains("ERROR"), "{}", tail(&out));
    drop(tree);
}

#[test]
fn shared_memory_files_and_tables_stay_shared_through_two_restores() {
    let dir = TempDir::new("sharing");
    let file = dir.join("shared.txt");
    let mut p = Proc::spawn(&dir, fixture("sharing"), &[file.to_str().unwrap(), "20"]);
    let sum = p.wait_line(|l| l.starts_with("READY"));
    let sum = sum.split_whitespace().last().unwrap();
    let sum = sum.strip_prefix("sum=").unwrap().to_string();
    p.wait_line(|l| l.starts_with("p tick=5 "));
    let kids = (ready_field(&p, "c1"), ready_field(&p, "c2"));
    let image = dir.join("sharing.ckpt");
    let mut trees = Vec::new();
    for round in 0..2 {
        let n = p.line_count();
        trees.push(dump_and_restore(&mut p, &image));
        // The 4 MiB the children never wrote since the fork are stored
        // once. (A restore gives each process its own copy: the second
        // image holds three.)
        let size = std::fs::metadata(&image).unwrap().len();
        if round == 0 {
            assert!(size < 6 << 20, "image of {size} bytes");
        }
        p.wait_line_after(n, |l| l.starts_with("p tick=") && l.contains(" peer="));
        let m = p.line_count();
        // Each sees the others' counters move, in shared anonymous memory
        // and in the memfd.
        p.wait_more_lines(30);
        let out = p.output();
        let after: Vec<&str> = out.lines().skip(m).collect();
        for who in ["p", "c1", "c2"] {
            let peers: Vec<i64> = after
                .iter()
                .filter(|l| l.starts_with(&format!("{who} tick=")))
                .map(|l| values(l, "peer=")[0])
                .collect();
            assert!(
                peers.windows(2).any(|w| w[1] > w[0]),
                "round {round}: {who} sees no peer progress:\n{}",
                tail(&out)
            );
        }
        for pid in [p.pid, kids.0, kids.1] {
            ckpt_sys::proc::kill(pid, libc::SIGUSR1).unwrap();
        }
        for who in ["p", "c1", "c2"] {
            p.wait_line_after(m, |l| l == format!("{who} sum={sum}"));
        }
        if round == 0 {
            p.wait_line_after(n, |l| l == "c2 sees100=1");
        }
        // The fd table is one for the parent and c2, another for c1.
        use ckpt_sys::kcmp::{kcmp, Kind};
        use std::cmp::Ordering::Equal;
        assert_eq!(kcmp(Kind::Files, p.pid, kids.1, 0, 0).unwrap(), Equal);
        assert_ne!(kcmp(Kind::Files, p.pid, kids.0, 0, 0).unwrap(), Equal);
        assert!(!p.output().contains("ERROR"), "{}", tail(&p.output()));
    }
    // One offset for the three writers: every line whole, each writer's
    // numbers in sequence.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for l in text.lines() {
        let (who, n) = l
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        let n: i64 = n.parse().unwrap_or_else(|_| panic!("bad line {l:?}"));
        let prev = last.insert(who, n).unwrap_or(0);
        assert_eq!(n, prev + 1, "{who}: lines lost or repeated at {l:?}");
    }
    drop(trees);
}

#[test]
fn session_leader_whose_parent_is_gone() {
    // zdtm's layout: the process forks, the child makes a session, the
    // parent exits; the child (dumped) leads a session, one of its
    // children a group, the other is in that group.
    let dir = TempDir::new("sessions");
    let p0 = Proc::spawn(&dir, fixture("sessions"), &["20"]);
    let leader = ready_field(&p0, "leader");
    let (g, h) = (ready_field(&p0, "g"), ready_field(&p0, "h"));
    let p = Proc::adopt(leader, &p0.out);
    p.wait_line(|l| l == "h=3");
    let shape = layout(leader);
    assert_eq!(shape[&leader], (0, leader, leader));
    assert_eq!(shape[&g], (leader, g, leader));
    assert_eq!(shape[&h], (leader, g, leader));
    let image = dir.join("sessions.ckpt");
    let before = Tree::of(leader);
    ckpt_ok(&["dump", &leader.to_string(), "-o", image.to_str().unwrap()]);
    before.wait_gone();
    let n = p.line_count();
    let q = restore_detached(&image, &p.out, leader);
    std::mem::forget(q);
    let tree = Tree::of(leader);
    assert_eq!(layout(leader), shape);
    p.wait_line_after(n, |l| l.starts_with("h="));
    p.wait_line_after(n, |l| l.starts_with("g="));
    drop(tree);
}

#[test]
fn a_group_whose_leader_is_gone_keeps_its_id_and_its_zombie() {
    // zdtm's zombie01: L made a group, forked M (live) and Z (a zombie)
    // as siblings, and was reaped; the group outlives its leader.
    let dir = TempDir::new("lostgroup");
    let p0 = Proc::spawn(&dir, fixture("lostgroup"), &["20"]);
    let s = ready_field(&p0, "s");
    let (l, m, z) = (
        ready_field(&p0, "l"),
        ready_field(&p0, "m"),
        ready_field(&p0, "z"),
    );
    let p = Proc::adopt(s, &p0.out);
    p.wait_line(|x| x == "m=3");
    let shape = layout(s);
    assert_eq!(shape[&m], (s, l, s));
    assert_eq!(shape[&z], (s, l, s));
    assert!(!shape.contains_key(&l));
    let image = dir.join("lostgroup.ckpt");
    let before = Tree::of(s);
    ckpt_ok(&["dump", &s.to_string(), "-o", image.to_str().unwrap()]);
    before.wait_gone();
    let n = p.line_count();
    let q = restore_detached(&image, &p.out, s);
    std::mem::forget(q);
    let tree = Tree::of(s);
    assert_eq!(layout(s), shape, "pids, parents, groups and sessions");
    assert_eq!(stat_of(z).unwrap().3, "Z", "the zombie is one again");
    assert!(stat_of(l).is_none(), "the group's helper is gone");
    p.wait_line_after(n, |x| x.starts_with("m="));
    ckpt_sys::proc::kill(s, libc::SIGUSR1).unwrap();
    p.wait_line_after(n, |x| x == format!("zombie pgid={l}"));
    p.wait_line_after(n, |x| x == format!("reaped pid={z} status=0x500"));
    assert!(!p.output().contains("ERROR"), "{}", tail(&p.output()));
    drop(tree);
}

#[test]
fn new_pid_for_a_tree_maps_pids_groups_and_sessions() {
    let dir = TempDir::new("newpid");
    let file = dir.join("shared.txt");
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new("setsid")
            .arg(fixture("sharing"))
            .arg(file.to_str().unwrap())
            .arg("20"),
    );
    p.wait_line(|l| l.starts_with("p tick=3 "));
    let image = dir.join("newpid.ckpt");
    // The saved tree goes on running: every saved pid is taken.
    dump_leave_running(p.pid, &image);
    let o = ckpt_timeout(
        &["restore", "--detach", "--new-pid", image.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    let root: i32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let tree = Tree::of(root);
    assert_ne!(root, p.pid);
    let err = stderr_of(&o);
    assert!(err.contains(&format!("pid {} -> {root}", p.pid)), "{err}");
    let shape = layout(root);
    assert_eq!(shape.len(), 3, "{shape:?}");
    for (&pid, &(ppid, pgid, sid)) in &shape {
        assert_eq!(
            (pgid, sid),
            (root, root),
            "pid {pid}: group and session mapped"
        );
        if pid != root {
            assert_eq!(ppid, root, "pid {pid}: under the new root");
        }
    }
    drop(tree);
    let old = Tree::of(p.pid);
    drop(old);
    p.kill();
}

#[test]
fn no_tree_refuses_a_parent_and_changes_nothing() {
    let dir = TempDir::new("notree");
    let p = Proc::spawn(&dir, fixture("family"), &[]);
    let _tree = Tree::of(p.pid);
    let zombie = ready_field(&p, "zombie");
    let image = dir.join("x.ckpt");
    let o = ckpt_timeout(
        &[
            "dump",
            &p.pid.to_string(),
            "-o",
            image.to_str().unwrap(),
            "--no-tree",
        ],
        Duration::from_secs(30),
    );
    let err = assert_clean_failure(&o, "--no-tree with children");
    assert!(
        err.contains(&format!("pid {} has children {zombie}, ", p.pid)),
        "{err}"
    );
    assert!(!image.exists());
    assert_free(p.pid, "after the refused dump");
    p.wait_more_lines(3);
}

#[test]
fn vfork_is_refused_by_name_and_left_alone() {
    let dir = TempDir::new("vfork");
    let p = Proc::spawn(&dir, fixture("vforker"), &[]);
    let child = ready_field(&p, "child");
    let _tree = Tree::of(p.pid);
    let image = dir.join("v.ckpt");
    let o = ckpt_timeout(
        &["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let err = assert_clean_failure(&o, "a vfork parent");
    assert!(
        err.contains(&format!(
            "pid {child} shares its address space with pid {}",
            p.pid
        )),
        "{err}"
    );
    assert_eq!(status_field(p.pid, "TracerPid").as_deref(), Some("0"));
    assert_eq!(status_field(child, "TracerPid").as_deref(), Some("0"));
    assert!(stat_of(child).is_some_and(|s| s.3 == "S"));
}

/// Time and pid namespaces are not saved: a child in its own (zdtm
/// timens_nested; a child in a new pid namespace, which the dump used to
/// wait for forever: its injected calls named it by a pid it does not
/// know) and a process that made one for its children (timens_for_kids)
/// are refused by name, before anything is stopped, and go on.
#[test]
fn time_and_pid_namespaces_are_refused_by_name() {
    // A parent whose child lives in a new time namespace (the child made
    // by unshare after CLONE_NEWTIME: its time namespace is new).
    let script = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWTIME, CLONE_NEWPID = 0x80, 0x20000000
flag = CLONE_NEWPID if sys.argv[1] == "pidkids" else CLONE_NEWTIME
assert libc.unshare(flag) == 0, ctypes.get_errno()
if sys.argv[1] in ("kids", "pidkids"):
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    print(f"READY child={pid}", flush=True)
else:
    print("READY", flush=True)
while True:
    time.sleep(0.05)
    print("tick", flush=True)
"#;
    for (arg, needle) in [
        ("kids", "is in a time namespace"),
        ("own", "made a time namespace for its children"),
        ("pidkids", "is in a pid namespace"),
    ] {
        let err = python_dump_refused(&format!("timens-{arg}"), script, arg, needle);
        assert!(
            err.contains("namespaces") && err.contains("are not saved"),
            "{err}"
        );
    }
}

/// Dump `p` (of `dir`): refused, saying `needle`, no image left, and the
/// process untraced and going on (two more lines of output). The error.
fn assert_dump_refused(dir: &TempDir, p: &Proc, needle: &str) -> String {
    let image = dir.join("refused.ckpt");
    let o = ckpt_timeout(
        &["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let err = assert_clean_failure(&o, needle);
    assert!(err.contains(needle), "{err}");
    assert!(!image.exists());
    assert_eq!(status_field(p.pid, "TracerPid").as_deref(), Some("0"));
    p.wait_more_lines(2);
    err
}

/// The end of the refusal tests' Python scripts: READY, then a tick every
/// 50 ms ([`assert_dump_refused`] checks that it goes on).
const READY_THEN_TICK: &str = r#"
print("READY", flush=True)
while True:
    time.sleep(0.05)
    print("tick", flush=True)
"#;

/// `python3 -c SCRIPT ARG` (its own temp dir `tag`; a line starting with
/// ERROR fails the test) once it says READY, with its descendants: its
/// dump is refused, saying `needle` ([`assert_dump_refused`]); the error.
fn python_dump_refused(tag: &str, script: &str, arg: &str, needle: &str) -> String {
    let dir = TempDir::new(tag);
    let p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, arg]);
    p.wait_line(|l| l.starts_with("READY"));
    let _tree = Tree::of(p.pid);
    assert_dump_refused(&dir, &p, needle)
}

#[test]
fn a_stopped_process_comes_back_stopped() {
    let dir = TempDir::new("stopped");
    let mut p = Proc::spawn(&dir, fixture("counter"), &["0", "10"]);
    p.wait_line(|l| l == "count=3");
    ckpt_sys::proc::kill(p.pid, libc::SIGSTOP).unwrap();
    let t = Instant::now();
    while stat_of(p.pid).unwrap().3 != "T" {
        assert!(t.elapsed() < TIMEOUT);
        std::thread::sleep(Duration::from_millis(2));
    }
    let image = dir.join("stopped.ckpt");
    let n = p.line_count();
    let tree = dump_and_restore(&mut p, &image);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(stat_of(p.pid).unwrap().3, "T");
    assert_eq!(p.line_count(), n, "it ran while stopped");
    ckpt_sys::proc::kill(p.pid, libc::SIGCONT).unwrap();
    p.wait_more_lines(3);
    drop(tree);
}

/// The signal that stopped `pid` (its group-stop signal, as a tracer
/// seizing it is told).
fn stop_signal_of(pid: i32) -> i32 {
    use ckpt_sys::ptrace;
    ptrace::seize(pid, 0).unwrap();
    ptrace::interrupt(pid).unwrap();
    let sig = match ptrace::wait(pid).unwrap() {
        ptrace::Stop::Event { sig, .. } => sig,
        s => panic!("{s:?}"),
    };
    ptrace::detach(pid, 0).unwrap();
    sig
}

/// Stopped by SIGTSTP, it comes back stopped by SIGTSTP (what its
/// parent's waitid(WSTOPPED) reports), not by SIGSTOP.
#[test]
fn a_process_stopped_by_sigtstp_comes_back_stopped_by_it() {
    let dir = TempDir::new("tstp");
    let mut p = Proc::spawn(&dir, fixture("counter"), &["0", "10"]);
    p.wait_line(|l| l == "count=3");
    ckpt_sys::proc::kill(p.pid, libc::SIGTSTP).unwrap();
    let t = Instant::now();
    while stat_of(p.pid).unwrap().3 != "T" {
        assert!(t.elapsed() < TIMEOUT, "SIGTSTP did not stop the fixture");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(stop_signal_of(p.pid), libc::SIGTSTP);
    let image = dir.join("tstp.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(stat_of(p.pid).unwrap().3, "T");
    assert_eq!(stop_signal_of(p.pid), libc::SIGTSTP);
    let n = p.line_count();
    ckpt_sys::proc::kill(p.pid, libc::SIGCONT).unwrap();
    p.wait_line_after(n, |l| l.starts_with("count="));
    drop(tree);
}

/// A process with 10,000 fds restores under a hard limit of 20,000 (the
/// stubs place them in place, without a second copy of the table); with
/// too low a limit, `--check` says so before anything starts.
#[test]
fn ten_thousand_fds_restore_under_twenty_thousand() {
    let dir = TempDir::new("manyfds");
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new("prlimit")
            .arg("--nofile=20000:20000")
            .arg(fixture("manyfds"))
            .arg("10000")
            .arg("20"),
    );
    p.wait_line(|l| l == "tick=2");
    let image = dir.join("many.ckpt");
    dump_kill(&mut p, &image);
    let img = image.to_str().unwrap();
    let low = run_timeout(
        Command::new("prlimit")
            .arg("--nofile=10010:10010")
            .arg(env!("CARGO_BIN_EXE_ckpt"))
            .args(["restore", "--check", img]),
        Duration::from_secs(60),
    );
    let err = assert_clean_failure(&low, "--check under 10010");
    assert!(
        err.contains("fds open at once") && err.contains("hard limit of 10010"),
        "{err}"
    );
    let n = p.line_count();
    let o = run_timeout(
        Command::new("prlimit")
            .arg("--nofile=20000:20000")
            .arg(env!("CARGO_BIN_EXE_ckpt"))
            .args(["restore", "--detach", img]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    let q = Proc::adopt(p.pid, &p.out);
    q.wait_line_after(n, |l| l.starts_with("tick="));
    assert!(!q.output().contains("ERROR"), "{}", tail(&q.output()));
}

/// Issue 16 with trees: a tree's pages are copied in the freeze (the
/// copy-on-write snapshot, the dirty tracking and incremental dumps are of
/// one process): `--track` says so and makes a full dump; `restore --lazy`
/// of a tree is refused by name, and nothing is left running.
#[test]
fn a_tree_is_copied_in_the_freeze_and_not_restored_lazily() {
    let dir = TempDir::new("treelazy");
    let file = dir.join("shared.txt");
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new("setsid")
            .arg(fixture("sharing"))
            .arg(file.to_str().unwrap())
            .arg("20"),
    );
    p.wait_line(|l| l.starts_with("p tick=3 "));
    let pid = p.pid.to_string();
    let tracked = dir.join("tracked.ckpt");
    let o = ckpt_run(&[
        "dump",
        &pid,
        "-o",
        tracked.to_str().unwrap(),
        "--leave-running",
        "--track",
    ]);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note: a full dump copied in the freeze") && err.contains("(frozen)"),
        "{err}"
    );
    let image = dir.join("tree.ckpt");
    let before = Tree::of(p.pid);
    dump_kill(&mut p, &image);
    before.wait_gone();
    let o = ckpt_timeout(
        &["restore", "--detach", "--lazy", image.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let err = stderr_of(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("restore --lazy restores one process"), "{err}");
    assert!(
        !Path::new(&format!("/proc/{}", p.pid)).exists(),
        "a refused lazy restore left pid {} behind",
        p.pid
    );
    // The same image restores the regular way.
    let root: i32 = ckpt_ok(&["restore", "--detach", image.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(root, p.pid);
    let tree = Tree::of(root);
    assert_eq!(tree.0.len(), 3, "{:?}", tree.0);
}

/// A parent with 64 MiB of private anonymous memory it filled, and four
/// children forked after, each of which rewrote 4 pages of it; and a file
/// (argv[1], 16 pages) mapped privately, every page written before the
/// fork. Everyone
/// checks its own contents every tick; SIGUSR1 to a child makes it write
/// one more page (copy-on-write must still work after a restore).
const COW_TREE: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#define PAGES 16384
#define PG 4096
static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static uint64_t *page(char *m, long i) { return (uint64_t *)(m + i * PG); }
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDONLY);
    char *f = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (f == MAP_FAILED) { perror("mmap file"); return 1; }
    for (long i = 0; i < 16; i++)
        f[i * PG] = 'A' + (char)i;
    char *m = mmap(NULL, (size_t)PAGES * PG, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    for (long i = 0; i < PAGES; i++) {
        memset(m + i * PG, (int)(i & 0xff), PG);
        *page(m, i) = (uint64_t)i * 7 + 1;
    }
    signal(SIGUSR1, on_usr1);
    int who = 0;
    pid_t kids[4];
    for (int k = 1; k <= 4; k++) {
        pid_t c = fork();
        if (c == 0) { who = k; break; }
        kids[k - 1] = c;
    }
    /* own[i]: the value page i holds in this process (0: the parent's). */
    static uint64_t own[PAGES];
    if (who) {
        for (long i = who * 16; i < who * 16 + 4; i++) {
            own[i] = ((uint64_t)who << 32) | (uint64_t)i;
            *page(m, i) = own[i];
        }
    } else {
        printf("READY addr=%p file=%p kids=%d,%d,%d,%d\n", (void *)m, (void *)f, kids[0], kids[1],
               kids[2], kids[3]);
    }
    for (long n = 0;; n++) {
        if (usr1) {
            usr1 = 0;
            long i = who * 16 + 8;
            own[i] = ((uint64_t)who << 40) | (uint64_t)i;
            *page(m, i) = own[i];
            printf("wrote who=%d page=%ld\n", who, i);
        }
        for (long i = 0; i < PAGES; i++) {
            uint64_t want = own[i] ? own[i] : (uint64_t)i * 7 + 1;
            if (*page(m, i) != want || (unsigned char)m[i * PG + 100] != (i & 0xff)) {
                printf("ERROR who=%d page %ld holds %llx, not %llx\n", who, i,
                       (unsigned long long)*page(m, i), (unsigned long long)want);
                return 1;
            }
        }
        for (long i = 0; i < 16; i++)
            if (f[i * PG] != 'A' + i || f[i * PG + 1] != 'x') {
                printf("ERROR who=%d file page %ld\n", who, i);
                return 1;
            }
        printf("ok who=%d n=%ld\n", who, n);
        usleep(30000);
    }
}
"#;

/// (Pss, Shared_Dirty, Private_Dirty) in KiB of the mapping at `addr` of `pid`.
fn smaps_of(pid: i32, addr: u64) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut inside = false;
    let (mut pss, mut shared, mut private) = (0, 0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let Some((a, _)) = f.first().and_then(|r| r.split_once('-')) {
            if f.len() >= 5 && a.len() >= 8 && u64::from_str_radix(a, 16).is_ok() {
                inside = u64::from_str_radix(a, 16).unwrap() == addr;
                continue;
            }
        }
        if !inside || f.len() < 2 {
            continue;
        }
        let v: u64 = f[1].parse().unwrap_or(0);
        match f[0] {
            "Pss:" => pss = v,
            "Shared_Dirty:" => shared = v,
            "Private_Dirty:" => private = v,
            _ => {}
        }
    }
    (pss, shared, private)
}

/// The page frame of `addr` in `pid` (pagemap, as root), and whether the
/// page is mapped by this process alone (PM_MMAP_EXCLUSIVE).
fn frame_of(pid: i32, addr: u64) -> (u64, bool) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr / 4096 * 8).unwrap();
    let v = u64::from_ne_bytes(b);
    assert!(v & (1 << 63) != 0, "pid {pid}: page {addr:#x} not present");
    (v & ((1 << 55) - 1), v & (1 << 56) != 0)
}

#[test]
fn pages_shared_after_fork_are_shared_again_after_restore() {
    ckpt_testkit::require!(ckpt_testkit::require::root());
    let _heavy = heavy();
    let dir = TempDir::new("cowtree");
    let bin = c_fixture("cowtree", COW_TREE);
    let data = dir.join("data");
    std::fs::write(&data, "x".repeat(16 * 4096)).unwrap();
    let mut p = Proc::spawn(&dir, &bin, &[data.to_str().unwrap()]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let addr =
        u64::from_str_radix(ready_value(&ready, "addr").trim_start_matches("0x"), 16).unwrap();
    let file =
        u64::from_str_radix(ready_value(&ready, "file").trim_start_matches("0x"), 16).unwrap();
    let kids: Vec<i32> = ready_value(&ready, "kids")
        .split(',')
        .map(|k| k.parse().unwrap())
        .collect();
    p.wait_line(|l| l.starts_with("ok who=4 n=2"));
    let pids: Vec<i32> = std::iter::once(p.pid).chain(kids.iter().copied()).collect();
    let before: Vec<(u64, u64, u64)> = pids.iter().map(|&q| smaps_of(q, addr)).collect();
    let image = dir.join("cowtree.ckpt");
    let n = p.line_count();
    let _tree = dump_and_restore(&mut p, &image);
    for who in 0..=4 {
        p.wait_line_after(n, |l| l.starts_with(&format!("ok who={who} ")));
    }
    let after: Vec<(u64, u64, u64)> = pids.iter().map(|&q| smaps_of(q, addr)).collect();
    eprintln!("(Pss, Shared_Dirty, Private_Dirty) KiB before {before:?} after {after:?}");
    let total_pss: u64 = after.iter().map(|a| a.0).sum();
    // 64 MiB once (plus the children's 16 KiB each), not five times.
    assert!(total_pss < 70 * 1024, "Pss of the five: {total_pss} KiB");
    for (q, a) in pids.iter().zip(&after) {
        assert!(a.1 >= 60 * 1024, "pid {q}: Shared_Dirty {} KiB", a.1);
        assert!(a.2 <= 1024, "pid {q}: Private_Dirty {} KiB", a.2);
    }
    // Page 0 is one frame in all five; a child's own page is its own.
    let f0 = frame_of(p.pid, addr);
    assert!(!f0.1, "page 0 of the parent is exclusive");
    for &k in &kids {
        assert_eq!(frame_of(k, addr), f0, "pid {k}: page 0 not shared");
    }
    // The written pages of the private file mapping too.
    let ff = frame_of(p.pid, file + 5 * 4096);
    for &k in &kids {
        assert_eq!(
            frame_of(k, file + 5 * 4096),
            ff,
            "pid {k}: file page 5 not shared"
        );
    }
    let own = frame_of(kids[0], addr + 16 * 4096);
    assert!(own.1 && own.0 != frame_of(p.pid, addr + 16 * 4096).0);
    // Copy-on-write still works: a child writes, the others keep theirs.
    let n2 = p.line_count();
    signal(kids[1], libc::SIGUSR1).unwrap();
    p.wait_line_after(n2, |l| l == "wrote who=2 page=40");
    let n3 = p.line_count();
    for who in 0..=4 {
        p.wait_line_after(n3, |l| l.starts_with(&format!("ok who={who} ")));
    }
    let out = p.output();
    assert!(!out.contains("ERROR"), "{}", tail(&out));
    assert_ne!(
        frame_of(kids[1], addr + 40 * 4096).0,
        frame_of(p.pid, addr + 40 * 4096).0
    );
}

/// `key=value` of a READY line.
fn ready_value(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

#[test]
fn pidfds_of_one_dead_process_share_its_inode() {
    let dir = TempDir::new("deadpidfds");
    let mut p = crate::sockets::python_fixture(&dir, "deadpidfds.py", &[]);
    p.wait_line(|l| l.starts_with("tick=2 "));
    assert!(
        p.output().contains("tick=2 same=1 apart=1"),
        "{}",
        tail(&p.output())
    );
    let image = dir.join("d.ckpt");
    dump_kill(&mut p, &image);
    let before = p.line_count();
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(3);
    let out = r.output();
    let after: Vec<&str> = out.lines().skip(before).collect();
    assert!(
        !after.is_empty() && after.iter().all(|l| l.ends_with(" same=1 apart=1")),
        "{}",
        tail(&out)
    );
}

#[test]
fn fds_on_proc_files_of_the_tree_are_opened_once_it_exists() {
    let dir = TempDir::new("procfds");
    let mut p = crate::sockets::python_fixture(&dir, "procfds.py", &[]);
    p.wait_line(|l| l.starts_with("tick=2 "));
    assert!(
        p.output().contains("tick=2 child=1 own=1 dir=1"),
        "{}",
        tail(&p.output())
    );
    let image = dir.join("procfds.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    let before = p.line_count();
    p.wait_more_lines(3);
    let out = p.output();
    let after: Vec<&str> = out.lines().skip(before).collect();
    assert!(
        !after.is_empty() && after.iter().all(|l| l.ends_with(" child=1 own=1 dir=1")),
        "{}",
        tail(&out)
    );
    drop(tree);
}

/// io_uring is not saved: a process whose ring has a kernel thread (an
/// SQPOLL thread, listed among its threads but never stopping for a
/// tracer; the dump used to wait for it forever) is refused by name before
/// anything is stopped, and so is a ring with no thread yet (by its fd).
#[test]
fn io_uring_is_refused_by_name_without_hanging() {
    // io_uring_setup(4 entries, params): flags at byte 8,
    // IORING_SETUP_SQPOLL = 2.
    let script = r#"
import ctypes, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
params = (ctypes.c_ubyte * 120)()
if sys.argv[1] == "sqpoll":
    struct.pack_into("I", params, 8, 2)
fd = libc.syscall(425, 4, ctypes.byref(params))
if fd < 0:
    print("ERROR io_uring_setup", ctypes.get_errno(), flush=True)
    sys.exit(1)
"#;
    let script = format!("{script}{READY_THEN_TICK}");
    for (arg, needle) in [
        (
            "sqpoll",
            "is an io_uring kernel thread: io_uring instances cannot be saved",
        ),
        ("plain", "anon_inode:[io_uring] is not supported"),
    ] {
        python_dump_refused(&format!("uring-{arg}"), &script, arg, needle);
    }
}

/// A process whose main thread called pthread_exit while another thread
/// runs shows as a zombie; it is alive and cannot be saved: refused by
/// name, as the root or as a child (it was taken for a zombie and saved as
/// one, losing its threads), and left running.
#[test]
fn a_process_without_its_main_thread_is_refused_not_taken_for_a_zombie() {
    let script = r#"
import ctypes, os, sys, threading, time
def headless():
    def run():
        while True:
            print("tick", flush=True)
            time.sleep(0.05)
    threading.Thread(target=run).start()
    time.sleep(0.2)
    ctypes.CDLL(None).pthread_exit(None)
if sys.argv[1] == "child":
    pid = os.fork()
    if pid == 0:
        headless()
    time.sleep(0.5)
    print(f"READY child={pid}", flush=True)
    time.sleep(600)
else:
    print("READY", flush=True)
    headless()
"#;
    for arg in ["root", "child"] {
        let dir = TempDir::new(&format!("headless-{arg}"));
        let p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, arg]);
        p.wait_line(|l| l.starts_with("READY"));
        std::thread::sleep(Duration::from_millis(400));
        let _tree = Tree::of(p.pid);
        assert_dump_refused(&dir, &p, "has a main thread that exited (pthread_exit)");
    }
}

/// Secret memory (memfd_secret) cannot be read from outside the process:
/// refused by name, mapped or only held by an fd, and left running.
#[test]
fn secret_memory_is_refused_by_name() {
    let script = r#"
import ctypes, mmap, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
fd = libc.syscall(447, 0)
if fd < 0:
    print("ERROR memfd_secret is not available on this kernel:", ctypes.get_errno(), flush=True)
    time.sleep(600)
os.ftruncate(fd, 4096)
if sys.argv[1] == "mapped":
    m = mmap.mmap(fd, 4096)
    m[0:6] = b"secret"
"#;
    let script = format!("{script}{READY_THEN_TICK}");
    for (arg, needle) in [
        (
            "mapped",
            "(/secretmem (deleted)): secret memory (memfd_secret) cannot be saved",
        ),
        ("fd", "fd 3: secret memory (memfd_secret) cannot be saved"),
    ] {
        python_dump_refused(&format!("secretmem-{arg}"), &script, arg, needle);
    }
}

/// A POSIX message queue (mq_open) is no file of its name: its messages
/// and attributes are not saved, so the dump refuses it by name (it used
/// to be saved as a regular file "/name", which a restore then opened,
/// or failed to), and the process goes on.
#[test]
fn posix_message_queues_are_refused_by_name() {
    let script = r#"
import ctypes, os, sys, time
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long),
                ("pad", ctypes.c_long * 4)]
name = sys.argv[1].encode()
a = Attr(0, 4, 64, 0)
q = rt.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(a))
if q < 0:
    print("ERROR mq_open", ctypes.get_errno(), flush=True)
    sys.exit(1)
rt.mq_unlink(name)
rt.mq_send(q, b"kept", 4, 0)
"#;
    let script = format!("{script}{READY_THEN_TICK}");
    let name = format!("/ckpt-test-{}", std::process::id());
    let needle = format!("fd 3: POSIX message queue {name}");
    let err = python_dump_refused("mqueue", &script, &name, &needle);
    assert!(err.contains("not supported"), "{err}");
}
