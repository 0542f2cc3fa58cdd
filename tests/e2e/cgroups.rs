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
    fn mount(dir: &TempDir) -> Hierarchy {
        let name = format!("ckpte2e{}", std::process::id());
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
    fn drop(&mut self) {
        self.clear();
        let _ = Command::new("umount").arg(&self.at).output();
    }
}

#[test]
fn v1_process_and_thread_cgroups_and_empty_dirs_come_back() {
    let dir = TempDir::new("cgroupv1");
    let bin = c_fixture("cgthreads", THREADED);
    let h = Hierarchy::mount(&dir);
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
