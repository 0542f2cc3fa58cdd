//! cgroup v1 membership: a process and one of its threads in sub-cgroups
//! of a named v1 hierarchy mounted for the test, an empty sub-cgroup and
//! a control file given to another user; the dump is restored after the
//! directories are gone (they are made again), and refused while the
//! hierarchy is not mounted. Needs root to mount the hierarchy: fails
//! loudly when mounting is impossible.

use crate::util::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const THREADED: &str = r#"
#include "fixture.h"
#include <pthread.h>
#include <sys/syscall.h>

static volatile int tid;

static void *run(void *arg)
{
    (void)arg;
    tid = syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

int main(void)
{
    pthread_t t;
    fx_init();
    if (pthread_create(&t, NULL, run, NULL))
        fail("pthread_create");
    while (!tid)
        usleep(1000);
    say("READY tid=%d", tid);
    for (long n = 0;; n++) {
        say("tick=%ld", n);
        usleep(30000);
    }
}
"#;

/// A named cgroup v1 hierarchy mounted on a temp dir; on drop its
/// sub-cgroups are removed (deepest first) and it is unmounted.
struct Hierarchy {
    name: String,
    at: PathBuf,
}

fn mount(name: &str, at: &Path) -> std::io::Result<std::process::Output> {
    Command::new("mount")
        .args([
            "-t",
            "cgroup",
            "-o",
            &format!("none,name={name}"),
            "ckpt-e2e",
        ])
        .arg(at)
        .output()
}

impl Hierarchy {
    /// `tag` makes the name unique among the tests of this run.
    fn mount(dir: &TempDir, tag: &str) -> Hierarchy {
        let name = format!("ckpte2e{tag}{}", std::process::id());
        let at = dir.join("cg");
        std::fs::create_dir_all(&at).unwrap();
        let o = mount(&name, &at).expect("running mount");
        assert!(
            o.status.success(),
            "cannot mount a cgroup v1 named hierarchy (name={name}) on {}: {}",
            at.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        Hierarchy { name, at }
    }

    fn remount(&self) {
        let o = mount(&self.name, &self.at).expect("running mount");
        assert!(
            o.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn umount(&self) {
        let o = Command::new("umount").arg(&self.at).output().unwrap();
        assert!(
            o.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Remove every sub-cgroup (deepest first).
    fn clear(&self) {
        let mut dirs = Vec::new();
        let mut todo = vec![self.at.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                    todo.push(e.path());
                }
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            wait_until(
                &format!("rmdir {}", d.display()),
                std::time::Duration::from_secs(5),
                || std::fs::remove_dir(&d).is_ok(),
            );
        }
    }

    /// The path of `id`'s cgroup in this hierarchy, from `file`.
    fn cgroup_of(&self, file: &str) -> String {
        let text = std::fs::read_to_string(file).unwrap();
        let key = format!(":name={}:", self.name);
        text.lines()
            .find_map(|l| l.split_once(&key).map(|(_, p)| p.to_string()))
            .unwrap_or_else(|| panic!("{file} has no line for name={}:\n{text}", self.name))
    }
}

impl Drop for Hierarchy {
    /// The kernel keeps an unmounted v1 hierarchy while it still has
    /// cgroups (removed ones go away asynchronously), and ends an empty
    /// one asynchronously: it is waited for, mounted and unmounted again
    /// now and then, until it is gone from /proc/self/cgroup, so that no
    /// test leaves a hierarchy behind (it would show in every process's
    /// /proc/PID/cgroup).
    fn drop(&mut self) {
        self.clear();
        let _ = Command::new("umount").arg(&self.at).output();
        let key = format!(":name={}:", self.name);
        for i in 1..=60 {
            let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            if !text.contains(&key) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            // Its end is asynchronous too: remount only now and then.
            if i % 20 == 0 && mount(&self.name, &self.at).is_ok_and(|o| o.status.success()) {
                let _ = Command::new("umount").arg(&self.at).output();
            }
        }
        eprintln!("cgroup hierarchy name={} is still there", self.name);
    }
}

#[test]
fn v1_process_and_thread_cgroups_and_empty_dirs_come_back() {
    let dir = TempDir::new("cgroupv1");
    let bin = c_fixture("cgthreads", THREADED);
    let h = Hierarchy::mount(&dir, "v1");
    let (a, t, empty) = (h.at.join("a"), h.at.join("a/t"), h.at.join("a/empty"));
    for d in [&a, &t, &empty] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(empty.join("notify_on_release"), "1").unwrap();
    std::os::unix::fs::chown(a.join("cgroup.procs"), Some(65534), Some(65534)).unwrap();
    let mut p = Proc::spawn(&dir, &bin, &[]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let tid: i32 = ready.trim_start_matches("READY tid=").parse().unwrap();
    std::fs::write(a.join("cgroup.procs"), p.pid.to_string()).unwrap();
    std::fs::write(t.join("tasks"), tid.to_string()).unwrap();
    let (pid_file, tid_file) = (
        format!("/proc/{}/task/{}/cgroup", p.pid, p.pid),
        format!("/proc/{}/task/{tid}/cgroup", p.pid),
    );
    assert_eq!(h.cgroup_of(&pid_file), "/a");
    assert_eq!(h.cgroup_of(&tid_file), "/a/t");

    let image = dir.join("cg.ckpt");
    dump_kill(&mut p, &image);
    h.clear();
    assert!(!a.exists());

    // Not mounted: refused, naming the hierarchy.
    h.umount();
    let o = ckpt_run(&["restore", "--detach", image.to_str().unwrap()]);
    let err = stderr_of(&o);
    assert!(!o.status.success(), "restored without the hierarchy: {err}");
    assert!(
        err.contains(&format!("name={}", h.name)) && err.contains("not mounted"),
        "{err}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", p.pid)).exists(),
        "the refused restore left pid {} behind",
        p.pid
    );

    h.remount();
    let q = restore_detached(&image, &p.out, p.pid);
    q.wait_more_lines(2);
    assert_eq!(h.cgroup_of(&pid_file), "/a", "the process's cgroup");
    assert_eq!(h.cgroup_of(&tid_file), "/a/t", "the thread's cgroup");
    assert!(empty.is_dir(), "the empty cgroup is made again");
    assert_eq!(
        std::fs::read_to_string(empty.join("notify_on_release")).unwrap(),
        "1\n"
    );
    assert_eq!(
        std::fs::metadata(a.join("cgroup.procs")).unwrap().uid(),
        65534
    );
    assert!(!q.output().contains("ERROR"), "{}", tail(&q.output()));
    drop(q);
}

/// Joins the cgroup whose tasks file is argv[1], makes a cgroup namespace
/// there, and prints the line of /proc/self/cgroup containing argv[2]
/// (what it sees inside) every tick.
const NS: &str = r#"
#include "fixture.h"
#include <sched.h>

static void seen(const char *key, char *out, size_t n)
{
    char line[512];
    FILE *f = fopen("/proc/self/cgroup", "r");
    out[0] = 0;
    if (!f)
        fail("open /proc/self/cgroup");
    while (fgets(line, sizeof line, f))
        if (strstr(line, key)) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, n, "%s", strrchr(line, ':') + 1);
        }
    fclose(f);
}

int main(int argc, char **argv)
{
    char cg[512];
    FILE *t;
    fx_init();
    if (argc < 3 || !(t = fopen(argv[1], "w")))
        fail("open %s", argc > 1 ? argv[1] : "?");
    fprintf(t, "%d\n", getpid());
    if (fclose(t))
        fail("joining the cgroup");
    if (unshare(CLONE_NEWCGROUP))
        fail("unshare: %s", strerror(errno));
    say("READY");
    for (long n = 0;; n++) {
        seen(argv[2], cg, sizeof cg);
        say("tick=%ld cg=%s", n, cg);
        usleep(30000);
    }
}
"#;

#[test]
fn a_cgroup_namespace_comes_back_rooted_at_its_cgroup() {
    let dir = TempDir::new("cgroupns");
    let bin = c_fixture("cgns", NS);
    let h = Hierarchy::mount(&dir, "ns");
    let ns = h.at.join("ns");
    std::fs::create_dir(&ns).unwrap();
    let key = format!("name={}", h.name);
    let tasks = ns.join("tasks");
    let mut p = Proc::spawn(&dir, &bin, &[tasks.to_str().unwrap(), &key]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_line(|l| l.ends_with("cg=/"));
    let file = format!("/proc/{}/cgroup", p.pid);
    assert_eq!(h.cgroup_of(&file), "/ns");
    let image = dir.join("ns.ckpt");
    dump_kill(&mut p, &image);
    h.clear();

    let q = restore_detached(&image, &p.out, p.pid);
    let n = q.line_count();
    q.wait_more_lines(2);
    assert_eq!(h.cgroup_of(&file), "/ns", "its cgroup, from outside");
    let after = q.output().lines().skip(n).collect::<Vec<_>>().join("\n");
    assert!(
        after.contains("cg=/") && !after.contains("cg=/ns"),
        "inside: {after}"
    );
    let ino = |p: &str| std::fs::metadata(p).unwrap().ino();
    assert_ne!(
        ino(&format!("/proc/{}/ns/cgroup", q.pid)),
        ino("/proc/self/ns/cgroup"),
        "its own cgroup namespace"
    );
    drop(q);
}
