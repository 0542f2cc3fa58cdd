//! `--criu PATH`: ckpt next to CRIU in the same run (issues 16 and 12).
//!
//! Each row starts a fresh fixture for each tool (the same program with the
//! same arguments, so the same memory contents), runs the tool's command
//! line on it and measures the same things for both:
//!
//! - freeze, as the process sees it: the longest gap of memhog's 1 ms idle
//!   loop across a leave-running dump (median of `--reps` dumps);
//! - dump: wall time of the dump command (median of the leave-running dumps
//!   and one dump that kills the process, the default of both tools);
//! - restore: wall time of the restore command, detached, until it returns
//!   with the process running; then memhog's checksum must match;
//! - image: bytes of ckpt's image file, of CRIU's image directory;
//! - down, as the process sees it: the gap across the killing dump and the
//!   restore, reported by the restored process (of CLOCK_REALTIME: CRIU
//!   restores into a time namespace whose CLOCK_MONOTONIC goes on from the
//!   dump, so the monotonic gap would hide CRIU's downtime).
//!
//! The tree row does the same (without the memory and gap columns) on
//! benches/proctree.c, a parent and N-1 sleeping children; the restored tree
//! must have every pid back, alive, with the children under the parent.
//! Its restore is the median of `--reps` restores of the killing dump's
//! image (the tree killed and gone between them).
//! A tool that refuses or fails gets its first error line in the row.

use super::incr_lazy::IncrLazy;
use super::{
    kill_restored, load_average, median, parse_frozen, run_tool, wait_line, Hog, Opts, Run, SIGKILL,
};
use ckpt_sys::proc::{self, wait};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one tool gave on one fixture: its measures, or why not (a line
/// starting "refused", "partial" or anything else for a failure).
type Outcome<T> = Result<T, String>;

/// One of the two tools, driven through its command line.
enum Tool<'a> {
    Ckpt(&'a Opts),
    Criu(&'a Opts, &'a Path),
}

impl Tool<'_> {
    fn opts(&self) -> &Opts {
        match self {
            Tool::Ckpt(o) | Tool::Criu(o, _) => o,
        }
    }

    /// Where dump `tag` goes, made empty: ckpt writes an image file, CRIU
    /// an image directory.
    fn dest(&self, tag: &str) -> PathBuf {
        let o = self.opts();
        match self {
            Tool::Ckpt(_) => {
                let p = o.store.join(format!("vs-{tag}.ckpt"));
                let _ = std::fs::remove_file(&p);
                p
            }
            Tool::Criu(..) => {
                let p = o.dir.join("criu-images").join(tag);
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                p
            }
        }
    }

    fn remove(&self, dest: &Path) {
        let _ = match self {
            Tool::Ckpt(_) => std::fs::remove_file(dest),
            Tool::Criu(..) => std::fs::remove_dir_all(dest),
        };
    }

    /// CRIU's log for `dest` (outside the image directory, so that the
    /// image size is the images' alone).
    fn criu_log(&self, dest: &Path, what: &str) -> PathBuf {
        let logs = self.opts().dir.join("criu-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let tag = dest.file_name().unwrap().to_string_lossy();
        let log = logs.join(format!("{tag}-{what}.log"));
        let _ = std::fs::remove_file(&log);
        log
    }

    /// Dump `pid` (and, for a tool that saves trees, its descendants) to
    /// `dest`; with `leave_running` the process goes on, else it is killed.
    fn dump(&self, pid: i32, dest: &Path, leave_running: bool) -> Run {
        let o = self.opts();
        let pid = pid.to_string();
        let dest_s = dest.to_str().unwrap();
        match self {
            Tool::Ckpt(_) => {
                let mut args = vec!["dump", &pid, "-o", dest_s, "--compress", &o.compress];
                if leave_running {
                    args.push("--leave-running");
                }
                run_tool(&o.dir, &super::ckpt_bin(), &args, false)
            }
            Tool::Criu(_, bin) => {
                let log = self.criu_log(dest, "dump");
                let log_s = log.to_str().unwrap();
                // --shell-job: the fixture shares the benchmark's session
                // and process group, which are outside the dumped tree.
                let mut args = vec!["dump", "-t", &pid, "-D", dest_s, "--shell-job", "-o", log_s];
                if leave_running {
                    args.push("--leave-running");
                }
                criu_errors(run_tool(&o.dir, bin, &args, false), &log)
            }
        }
    }

    /// Restore `dest` detached: returns once the process runs.
    fn restore(&self, dest: &Path) -> Run {
        let o = self.opts();
        let dest_s = dest.to_str().unwrap();
        match self {
            Tool::Ckpt(_) => run_tool(
                &o.dir,
                &super::ckpt_bin(),
                &["restore", "--detach", dest_s],
                false,
            ),
            Tool::Criu(_, bin) => {
                let log = self.criu_log(dest, "restore");
                let log_s = log.to_str().unwrap();
                let args = ["restore", "-d", "-D", dest_s, "--shell-job", "-o", log_s];
                criu_errors(run_tool(&o.dir, bin, &args, false), &log)
            }
        }
    }
}

/// CRIU's stderr says little when it fails: put the last error of its log
/// before the final "... FAILED." in front, for the row's note (the first
/// one can be a harmless complaint, such as not being allowed to raise its
/// own RLIMIT_NOFILE).
fn criu_errors(mut r: Run, log: &Path) -> Run {
    if !r.ok() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut errors = text.lines().filter(|l| l.starts_with("Error"));
        if let Some(line) = errors.rfind(|l| !l.contains("FAILED")) {
            r.err = format!("{}\n{}", line.trim(), r.err);
        }
    }
    r
}

/// Bytes of an image: the file, or the regular files of a directory.
fn image_bytes(dest: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(dest) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    let mut total = 0;
    for e in std::fs::read_dir(dest).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() {
            image_bytes(&p)
        } else {
            e.metadata().map_or(0, |m| m.len())
        };
    }
    total
}

/// What one tool measured on one memory fixture.
struct Mem {
    /// Longest gap memhog saw during a leave-running dump (median).
    seen: Duration,
    /// The freeze ckpt reports itself (median), ms; None for CRIU.
    said: Option<f64>,
    dump: Duration,
    restore: Duration,
    image: u64,
    /// Gap the restored process saw across the killing dump and restore
    /// (of CLOCK_REALTIME: see Gaps).
    down: Duration,
    /// Gap of the idle loop before any dump (the measurement's floor).
    idle: Duration,
}

/// Is `pid` a live (not zombie) process whose name is `comm`?
fn alive_as(pid: i32, comm: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rfind(')') {
        Some(end) => {
            stat.get(stat.find('(').map_or(0, |i| i + 1)..end) == Some(comm)
                && !matches!(stat.get(end + 2..end + 3), Some("Z" | "X"))
        }
        None => false,
    }
}

/// Whether `pid` is a task named `comm`, alive or a zombie.
fn held_as(pid: i32, comm: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let name = stat.find('(').zip(stat.rfind(')'));
    name.is_some_and(|(a, b)| stat.get(a + 1..b) == Some(comm))
}

/// The parent pid of `pid`, from /proc.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Kill a memhog that a failed step may have left running, and reap it.
fn kill_hog(pid: i32) {
    if alive_as(pid, "memhog") {
        kill_restored(pid);
    }
}

fn mem_side(tool: &Tool, hog: &Path, mib: u64) -> Outcome<Mem> {
    let o = tool.opts();
    let mut h = Hog::start(hog, &o.dir, mib, "mixed");
    let pid = h.pid();
    h.ask_gap(pid);
    std::thread::sleep(Duration::from_millis(200));
    let idle = h.ask_gap(pid).mono;
    let fail = |h: &mut Hog, what: &str, r: &Run| {
        let _ = proc::kill(h.pid(), SIGKILL);
        let _ = h.child.wait();
        kill_hog(pid);
        format!("{what}: {}", r.first_err_line())
    };
    let (mut walls, mut seen, mut said) = (vec![], vec![], vec![]);
    for i in 0..o.reps {
        let dest = tool.dest(&format!("{mib}-lr{i}"));
        h.ask_gap(pid);
        let r = tool.dump(pid, &dest, true);
        tool.remove(&dest);
        if !r.ok() {
            return Err(fail(&mut h, "dump failed", &r));
        }
        seen.push(h.ask_gap(pid).mono);
        said.extend(parse_frozen(&r.err));
        walls.push(r.wall);
    }
    let dest = tool.dest(&format!("{mib}"));
    h.ask_gap(pid);
    let r = tool.dump(pid, &dest, false);
    if !r.ok() {
        tool.remove(&dest);
        return Err(fail(&mut h, "dump failed", &r));
    }
    walls.push(r.wall);
    let _ = h.child.wait();
    let image = image_bytes(&dest);
    let rest = tool.restore(&dest);
    if !rest.ok() {
        tool.remove(&dest);
        kill_hog(pid);
        return Err(format!("restore failed: {}", rest.first_err_line()));
    }
    // Both tools restore the same pid.
    let (sum, gaps) = h.ask_sum(pid);
    kill_restored(pid);
    tool.remove(&dest);
    let _ = std::fs::remove_file(&h.out);
    if sum != h.sum {
        return Err(format!("restored memory differs: sum {sum}, not {}", h.sum));
    }
    said.sort_by(f64::total_cmp);
    Ok(Mem {
        seen: median(seen),
        said: said.get(said.len() / 2).copied(),
        dump: median(walls),
        restore: rest.wall,
        image,
        down: gaps.wall,
        idle,
    })
}

/// A running benches/proctree.c: the parent first in `pids`.
struct Tree {
    child: Child,
    pids: Vec<i32>,
}

impl Tree {
    fn start(bin: &Path, dir: &Path, n: usize) -> Tree {
        let out = dir.join("proctree.out");
        let _ = std::fs::remove_file(&out);
        let child = Command::new(bin)
            .arg(n.to_string())
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start proctree");
        let (line, _) = wait_line(&out, "READY pids=", 0, Duration::from_secs(60));
        let _ = std::fs::remove_file(&out);
        let pids = line["READY pids=".len()..]
            .split(',')
            .map(|p| p.parse().expect("proctree pid"))
            .collect::<Vec<i32>>();
        assert_eq!(pids.len(), n, "proctree: {line}");
        Tree { child, pids }
    }
    fn root(&self) -> i32 {
        self.pids[0]
    }
    /// How many of the tree's processes are alive.
    fn alive(&self) -> usize {
        self.pids
            .iter()
            .filter(|&&p| alive_as(p, "proctree"))
            .count()
    }
    /// How many are alive with the parent link of the original tree.
    fn intact(&self) -> usize {
        let root = self.root();
        let kids = self.pids[1..]
            .iter()
            .filter(|&&p| alive_as(p, "proctree") && ppid_of(p) == Some(root));
        kids.count() + usize::from(alive_as(root, "proctree"))
    }
    /// Reap what ended, until none of the tree's processes is left, not
    /// even as a zombie (the killed ones become ours: this benchmark is a
    /// subreaper). A zombie left would hold its pid: the next restore
    /// waits for it, and gives up after 2 s.
    fn wait_gone(&mut self, timeout: Duration) -> bool {
        let _ = self.child.try_wait();
        let t = Instant::now();
        loop {
            while wait::reap_any().is_some() {}
            let gone = self.pids.iter().all(|&p| !held_as(p, "proctree"));
            if gone || t.elapsed() > timeout {
                return gone;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    fn kill(&mut self) {
        for &p in &self.pids {
            if alive_as(p, "proctree") {
                let _ = proc::kill(p, SIGKILL);
            }
        }
        assert!(
            self.wait_gone(Duration::from_secs(10)),
            "proctree processes survive SIGKILL"
        );
    }
}

/// What one tool measured on the tree.
struct TreeRow {
    dump: Duration,
    restore: Duration,
    image: u64,
}

fn tree_side(tool: &Tool, bin: &Path) -> Outcome<TreeRow> {
    let o = tool.opts();
    let n = o.tree;
    let mut t = Tree::start(bin, &o.dir, n);
    let refused = |t: &mut Tree, r: &Run| {
        t.kill();
        format!("refused: {}", r.first_err_line())
    };
    let mut walls = vec![];
    for i in 0..o.reps {
        let dest = tool.dest(&format!("tree-lr{i}"));
        let r = tool.dump(t.root(), &dest, true);
        tool.remove(&dest);
        if !r.ok() {
            return Err(refused(&mut t, &r));
        }
        if t.alive() != n {
            let a = t.alive();
            t.kill();
            return Err(format!(
                "partial: a leave-running dump left {a} of {n} processes running"
            ));
        }
        walls.push(r.wall);
    }
    let dest = tool.dest("tree");
    let r = tool.dump(t.root(), &dest, false);
    if !r.ok() {
        tool.remove(&dest);
        return Err(refused(&mut t, &r));
    }
    walls.push(r.wall);
    if !t.wait_gone(Duration::from_secs(5)) {
        let a = t.alive();
        t.kill();
        tool.remove(&dest);
        return Err(format!(
            "partial: {a} of {n} processes still run after the dump (the tree was not saved whole)"
        ));
    }
    let image = image_bytes(&dest);
    // The image restored `--reps` times (the tree killed and gone between
    // them): one restore of 100 small processes moves by 20% from run to
    // run on a quiet machine.
    let mut rests = vec![];
    for _ in 0..o.reps.max(1) {
        // The kernel finishes freeing the killed tree (its address spaces,
        // pids, cgroup charges) in the background: both tools start from
        // a settled machine.
        std::thread::sleep(Duration::from_millis(300));
        let rest = tool.restore(&dest);
        let intact = t.intact();
        t.kill();
        if !rest.ok() {
            tool.remove(&dest);
            return Err(format!("restore failed: {}", rest.first_err_line()));
        }
        if intact != n {
            tool.remove(&dest);
            return Err(format!(
                "partial: restored {intact} of {n} processes alive under their parent"
            ));
        }
        rests.push(rest.wall);
    }
    tool.remove(&dest);
    Ok(TreeRow {
        dump: median(walls),
        restore: median(rests),
        image,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// "ckpt CRIU ratio" cells of one measure; an error's first word stands in
/// for a value (its whole line follows the row).
/// The word a failure shows in a cell: "refused" (the tool said no),
/// "partial" (it saved part of the tree), else "failed".
fn cell_word(e: &str) -> &'static str {
    ["refused", "partial"]
        .into_iter()
        .find(|w| e.starts_with(w))
        .unwrap_or("failed")
}

fn trio<T>(ckpt: &Outcome<T>, criu: &Outcome<T>, f: impl Fn(&T) -> f64) -> String {
    let cell = |r: &Outcome<T>| match r {
        Ok(v) => format!("{:.1}", f(v)),
        Err(e) => cell_word(e).to_string(),
    };
    let ratio = match (ckpt, criu) {
        (Ok(a), Ok(b)) if f(b) > 0.0 => format!("{:.2}", f(a) / f(b)),
        _ => "-".into(),
    };
    format!("{:>8} {:>8} {:>6}", cell(ckpt), cell(criu), ratio)
}

fn ratio<T>(ckpt: &Outcome<T>, criu: &Outcome<T>, f: impl Fn(&T) -> f64) -> String {
    match (ckpt, criu) {
        (Ok(a), Ok(b)) if f(b) > 0.0 => format!("{:.2}", f(a) / f(b)),
        (Err(e), _) => format!("ckpt {}", cell_word(e)),
        _ => "CRIU failed".into(),
    }
}

fn notes<T>(ckpt: &Outcome<T>, criu: &Outcome<T>) {
    for (who, r) in [("ckpt", ckpt), ("CRIU", criu)] {
        if let Err(e) = r {
            println!("{:>16}   {who}: {e}", "");
        }
    }
}

/// Leave the disk quiet before the next measurement: CRIU does not fsync
/// its images, so their writeback would otherwise land on what follows.
fn settle() {
    let _ = Command::new("sync").status();
}

fn criu_version(criu: &Path) -> String {
    let out = Command::new(criu).arg("--version").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let text = text.unwrap_or_else(|e| panic!("cannot run {}: {e}", criu.display()));
    let v = text.lines().find_map(|l| l.strip_prefix("Version:"));
    assert!(v.is_some(), "{} --version: {text:?}", criu.display());
    v.unwrap_or_default().trim().to_string()
}

/// The comparison: mixed-data rows at `--criu-sizes`, then the tree row.
pub(crate) fn compare(o: &Opts, criu: &Path, hog: &Path, tree: &Path) {
    let version = criu_version(criu);
    let (ck, cr) = (Tool::Ckpt(o), Tool::Criu(o, criu));
    println!();
    println!(
        "ckpt vs CRIU {version} ({}; ckpt --compress {}; mixed data; a fresh fixture per tool; {} leave-running dump(s) + 1 killing dump each; load {})",
        criu.display(),
        o.compress,
        o.reps,
        load_average()
    );
    println!(
        "{:>16} | {:^24} | {:^24} | {:^24} | {:^24} | {:>8} | {:^17}",
        "", "freeze ms, seen", "dump ms", "restore ms", "image MiB", "ckpt", "down ms, seen"
    );
    let head = format!("{:>8} {:>8} {:>6}", "ckpt", "CRIU", "ratio");
    println!(
        "{:>16} | {head} | {head} | {head} | {head} | {:>8} | {:>8} {:>8}",
        "fixture", "frozen", "ckpt", "CRIU"
    );
    let mut rows = vec![];
    let mut idle = vec![];
    for &size in &o.criu_sizes {
        let a = mem_side(&ck, hog, size);
        settle();
        let b = mem_side(&cr, hog, size);
        settle();
        idle.extend(a.iter().chain(b.iter()).map(|m| m.idle));
        println!(
            "{:>16} | {} | {} | {} | {} | {:>8} | {:>8} {:>8}",
            format!("{size} MiB mixed"),
            trio(&a, &b, |m| ms(m.seen)),
            trio(&a, &b, |m| ms(m.dump)),
            trio(&a, &b, |m| ms(m.restore)),
            trio(&a, &b, |m| mib(m.image)),
            a.as_ref()
                .ok()
                .and_then(|m| m.said)
                .map_or("-".into(), |f| format!("{f:.1}")),
            a.as_ref()
                .map_or("-".into(), |m| format!("{:.1}", ms(m.down))),
            b.as_ref()
                .map_or("-".into(), |m| format!("{:.1}", ms(m.down))),
        );
        notes(&a, &b);
        rows.push((size, a, b));
    }
    let a = tree_side(&ck, tree);
    settle();
    let b = tree_side(&cr, tree);
    let none = format!("{:>8} {:>8} {:>6}", "-", "-", "-");
    println!(
        "{:>16} | {none} | {} | {} | {} | {:>8} | {:>8} {:>8}",
        format!("tree of {}", o.tree),
        trio(&a, &b, |t| ms(t.dump)),
        trio(&a, &b, |t| ms(t.restore)),
        trio(&a, &b, |t| mib(t.image)),
        "-",
        "-",
        "-"
    );
    notes(&a, &b);
    settle();
    let extra = o
        .criu_sizes
        .last()
        .map(|&size| (size, super::incr_lazy::measure(o, hog, size)));
    if let Some((size, x)) = &extra {
        print_incr_lazy(*size, x, rows.last().and_then(|r| r.1.as_ref().ok()));
    }
    summary(&rows, &a, &b, &idle, extra.as_ref());
}

/// The lines of the incremental dump and the lazy restore (ckpt alone).
fn print_incr_lazy(size: u64, x: &Outcome<IncrLazy>, full: Option<&Mem>) {
    match x {
        Ok(x) => {
            println!(
                "{size} MiB mixed, ckpt alone: incremental dump after 1% of the pages were rewritten: {:.1} MiB vs the base's {:.1} MiB ({:.3}); dump {:.1} ms, restore of the chain {:.1} ms",
                mib(x.inc),
                mib(x.base),
                x.ratio(),
                ms(x.inc_dump),
                ms(x.chain_restore)
            );
            println!(
                "{size} MiB mixed, ckpt alone: restore --lazy: running after {:.1} ms (regular restore above: {})",
                ms(x.lazy),
                full.map_or("-".into(), |m| format!("{:.1} ms", ms(m.restore)))
            );
        }
        Err(e) => println!("{size} MiB mixed, ckpt alone: incremental dump and lazy restore: {e}"),
    }
}

/// The floor of the `seen` columns, and the targets of issues 16 and 12 as
/// ratios.
fn summary(
    rows: &[(u64, Outcome<Mem>, Outcome<Mem>)],
    tree_ckpt: &Outcome<TreeRow>,
    tree_criu: &Outcome<TreeRow>,
    idle: &[Duration],
    extra: Option<&(u64, Outcome<IncrLazy>)>,
) {
    if let (Some(lo), Some(hi)) = (idle.iter().min(), idle.iter().max()) {
        println!(
            "seen = longest gap of the fixture's 1 ms sleep loop; idle (200 ms, no dump): {:.1}-{:.1} ms",
            ms(*lo),
            ms(*hi)
        );
    }
    if let Some((size, a, b)) = rows.last() {
        println!(
            "targets, ckpt/CRIU at {size} MiB (issue 16): freeze <= 0.05: {}; dump <= 0.80: {}; restore <= 0.50: {}",
            ratio(a, b, |m| ms(m.seen)),
            ratio(a, b, |m| ms(m.dump)),
            ratio(a, b, |m| ms(m.restore)),
        );
    }
    if let Some((size, x)) = extra {
        let (inc, lazy) = match x {
            Ok(x) => (
                format!("{:.3}", x.ratio()),
                format!("{:.2}", ms(x.lazy) / 50.0),
            ),
            Err(_) => ("failed".into(), "failed".into()),
        };
        println!(
            "targets, ckpt alone at {size} MiB (issue 16): incremental/base with 1% rewritten <= 0.05: {inc}; lazy restore / 50 ms <= 1: {lazy}"
        );
    }
    println!(
        "targets, ckpt/CRIU on the tree (issue 12): dump <= 0.50: {}; restore <= 0.50: {}",
        ratio(tree_ckpt, tree_criu, |t| ms(t.dump)),
        ratio(tree_ckpt, tree_criu, |t| ms(t.restore)),
    );
    println!("load at the end: {}", load_average());
}
