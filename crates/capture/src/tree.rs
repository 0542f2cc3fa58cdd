//! The tree of processes a dump saves: the root and, unless `--no-tree`,
//! every descendant. What cannot be saved is refused by name before any
//! process is touched (processes sharing an address space, threads that do
//! not stop); then every process is frozen top-down (a frozen process
//! cannot fork, so once each is frozen its children are final) and the
//! tree walked again until nothing new appears. Zombies are recorded, not
//! seized. Every error path lets every frozen process go as it was.

use crate::error::{Error, Result};
use crate::freeze::{self, check_target, describe_thread, Frozen};
use crate::procfs::{self, Stat};
use ckpt_sys::kcmp::{self, Kind};
use ckpt_sys::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One process of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub pid: Pid,
    /// Its parent in the tree (0 for the root).
    pub parent: Pid,
    /// Its children in the tree, ascending.
    pub children: Vec<Pid>,
    /// A zombie: its wait status (stat field 52); not seized.
    pub zombie: Option<i32>,
}

/// Every live process of the tree frozen, zombies recorded. Dropping it
/// lets every process go on as it was.
pub(crate) struct FrozenTree {
    /// DFS pre-order, the root first (the image's order).
    pub members: Vec<Member>,
    /// The frozen processes, in the order of `members` (zombies left out).
    pub frozen: Vec<Frozen>,
    pub started: Instant,
}

/// Rounds of the freezing walk before giving up on a tree that keeps
/// changing (processes being reparented into it).
const MAX_ROUNDS: usize = 10;

/// A process's state letter and, for a zombie, its wait status.
fn state_of(pid: Pid) -> Option<(String, i32)> {
    let st = Stat::read(pid, &format!("/proc/{pid}/stat")).ok()?;
    Some((st.state(), st.stat.exit_code.unwrap_or(0)))
}

/// The tree under `root` as /proc shows it now (nothing is touched):
/// DFS pre-order.
fn walk(root: Pid) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    let mut stack = vec![(root, 0)];
    let mut seen = BTreeSet::new();
    while let Some((pid, parent)) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let zombie = match state_of(pid) {
            None if pid == root => return Err(Error::NoSuchProcess { pid }),
            None => continue, // gone meanwhile
            Some((s, code)) if s == "Z" || s == "X" => {
                if let Some(e) = freeze::headless(pid) {
                    return Err(e);
                }
                Some(code)
            }
            Some(_) => None,
        };
        let children = if zombie.is_some() {
            Vec::new()
        } else {
            match procfs::list_children(pid) {
                Ok(c) => c,
                Err(_) if pid != root && state_of(pid).is_none() => continue,
                Err(e) => return Err(e),
            }
        };
        for &c in children.iter().rev() {
            stack.push((c, pid));
        }
        out.push(Member {
            pid,
            parent,
            children,
            zombie,
        });
    }
    Ok(out)
}

/// Refuse what cannot be saved, before anything is touched: `--no-tree`
/// with children; a process another tracer holds, or we may not dump
/// (checked for every member); processes sharing an address space;
/// threads in uninterruptible sleep that do not leave it.
pub(crate) fn check(root: Pid, whole_tree: bool) -> Result<Vec<Member>> {
    let members = walk(root)?;
    check_namespaces(&members[..if whole_tree { members.len() } else { 1 }])?;
    if !whole_tree {
        let kids = &members[0].children;
        if !kids.is_empty() {
            let list: Vec<String> = kids.iter().map(|c| c.to_string()).collect();
            return Err(Error::HasChildren {
                pid: root,
                children: list.join(", "),
            });
        }
        check_sleepers(&members)?;
        return Ok(members);
    }
    let me = freeze::Me::read(root)?;
    for m in members.iter().skip(1).filter(|m| m.zombie.is_none()) {
        match freeze::check_target_as(m.pid, &me) {
            Err(Error::NoSuchProcess { .. }) | Err(Error::Zombie { .. }) => {}
            r => r?,
        }
    }
    check_shared_memory(&members)?;
    check_sleepers(&members)?;
    Ok(members)
}

/// PF_IO_WORKER: a thread the kernel runs for an io_uring instance.
const PF_IO_WORKER: u64 = 0x10;

/// Namespaces are not saved; the processes come back in the restorer's.
/// Where that would change what a process sees of itself, it is refused
/// by name: another pid namespace (its own pids, and pid 1's duties;
/// ckpt's injected calls would also name it by pids it does not know),
/// another user namespace (its ids as it sees them), another time
/// namespace (its clocks); or one of these made for its children
/// (unshare before a fork). Checked for each process's own namespaces
/// first: a child in one says so, not its parent that made it. (A kernel
/// without a kind of namespace has no links to compare.)
fn check_namespaces(members: &[Member]) -> Result<()> {
    const KINDS: [(&str, &str, &str); 5] = [
        ("pid", "is in a pid namespace", "pid namespaces"),
        (
            "user",
            "is in a user namespace",
            "user namespaces and their id maps",
        ),
        (
            "time",
            "is in a time namespace",
            "time namespaces and their clock offsets",
        ),
        (
            "pid_for_children",
            "made a pid namespace for its children (unshare CLONE_NEWPID)",
            "pid namespaces",
        ),
        (
            "time_for_children",
            "made a time namespace for its children (unshare CLONE_NEWTIME)",
            "time namespaces and their clock offsets",
        ),
    ];
    for (link, what, kind) in KINDS {
        // Compared with ckpt's own namespace of that kind (its pid
        // namespace for pid_for_children).
        let own = link.trim_end_matches("_for_children");
        let Ok(ours) = std::fs::read_link(format!("/proc/self/ns/{own}")) else {
            continue;
        };
        for m in members.iter().filter(|m| m.zombie.is_none()) {
            match std::fs::read_link(format!("/proc/{}/ns/{link}", m.pid)) {
                Ok(t) if t != ours => {
                    return Err(Error::NotPermitted {
                        pid: m.pid,
                        why: format!(
                            "{what} ({}) other than ckpt's ({}): {kind} are not saved",
                            t.display(),
                            ours.display()
                        ),
                    })
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Two live members sharing one mm (kcmp KCMP_VM): a vfork child and its
/// parent, or CLONE_VM. Processes are sorted by the kernel's order of
/// their mm, so equal neighbours are found in n log n comparisons.
fn check_shared_memory(members: &[Member]) -> Result<()> {
    let live: Vec<Pid> = members
        .iter()
        .filter(|m| m.zombie.is_none())
        .map(|m| m.pid)
        .collect();
    if live.len() < 2 {
        return Ok(());
    }
    // A vfork child usually execs or exits within milliseconds (make,
    // gcc, a shell's pipelines): wait a little for that before refusing.
    let deadline = Instant::now() + VFORK_WAIT;
    loop {
        let shared = classes_of(Kind::Vm, &live)?
            .into_iter()
            .find(|c| c.len() > 1);
        let Some(class) = shared else {
            return Ok(());
        };
        if Instant::now() > deadline {
            return Err(Error::SharesMemory {
                pid: class[1],
                with: class[0],
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long a dump waits for a vfork child to exec or exit.
const VFORK_WAIT: Duration = Duration::from_secs(2);

/// `pids` split into classes of processes sharing their `kind` table
/// (kcmp order), each class in the order of `pids`. A process that exited
/// meanwhile is its own class.
pub(crate) fn classes_of(kind: Kind, pids: &[Pid]) -> Result<Vec<Vec<Pid>>> {
    let mut cmp = |a: usize, b: usize| match kcmp::kcmp(kind, pids[a], pids[b], 0, 0) {
        Ok(o) => Ok(o),
        Err(e) if e.errno() == Some(libc::ESRCH) => Ok(pids[a].cmp(&pids[b])),
        Err(e) => Err(e),
    };
    let classes =
        crate::fds::classes((0..pids.len()).collect(), &mut cmp).map_err(|source| Error::Sys {
            pid: pids[0],
            what: "comparing the processes' kernel tables".into(),
            source,
        })?;
    Ok(classes
        .into_iter()
        .map(|mut c| {
            c.sort_unstable();
            c.into_iter().map(|i| pids[i]).collect()
        })
        .collect())
}

/// Threads in uninterruptible sleep ("D") are given [`freeze::STOP_TIMEOUT`]
/// to leave it; one that does not would never stop for us: refused now,
/// before anything is seized, with what it waits in.
fn check_sleepers(members: &[Member]) -> Result<()> {
    let deadline = Instant::now() + freeze::STOP_TIMEOUT;
    for m in members.iter().filter(|m| m.zombie.is_none()) {
        let Ok(tids) = procfs::list_tids(m.pid) else {
            continue;
        };
        for tid in tids {
            loop {
                let path = format!("/proc/{}/task/{tid}/stat", m.pid);
                let stat = Stat::read(m.pid, &path).ok();
                if let Some(st) = stat
                    .as_ref()
                    .filter(|s| u64::from(s.stat.flags) & PF_IO_WORKER != 0)
                {
                    // The kernel's io_uring threads (SQPOLL, io-wq
                    // workers) never stop for a tracer.
                    return Err(Error::NotPermitted {
                        pid: m.pid,
                        why: format!(
                            "thread {tid} ({}) is an io_uring kernel thread: io_uring instances cannot be saved",
                            st.stat.comm
                        ),
                    });
                }
                let asleep = stat.is_some_and(|s| s.state() == "D");
                if !asleep {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::WontStop {
                        pid: m.pid,
                        tid,
                        secs: freeze::STOP_TIMEOUT.as_secs(),
                        state: describe_thread(m.pid, tid),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    Ok(())
}

impl FrozenTree {
    /// Freeze `root` and (with `whole_tree`) every descendant, top-down,
    /// until a walk of the frozen tree finds nothing new. The first walk
    /// is `checked`, what [`check`] found and checked just before (when
    /// not empty): its processes are not checked again.
    pub fn freeze(root: Pid, whole_tree: bool, checked: Vec<Member>) -> Result<FrozenTree> {
        let mut t = FrozenTree {
            members: Vec::new(),
            frozen: Vec::new(),
            started: Instant::now(),
        };
        let mut frozen: BTreeMap<Pid, Frozen> = BTreeMap::new();
        let r = t.freeze_rounds(root, whole_tree, &mut frozen, checked);
        // In the members' order, whatever happened: dropping `t` lets
        // every one go.
        t.frozen = t
            .members
            .iter()
            .filter_map(|m| frozen.remove(&m.pid))
            .collect();
        t.frozen.extend(frozen.into_values());
        r?;
        t.started = t.frozen.first().map_or(t.started, |f| f.started);
        Ok(t)
    }

    /// Rounds of: walk the tree; ask every process not frozen yet to stop
    /// (all of them before waiting for any); wait for the stops. Done when
    /// a walk finds nothing new (a frozen process cannot fork).
    fn freeze_rounds(
        &mut self,
        root: Pid,
        whole_tree: bool,
        frozen: &mut BTreeMap<Pid, Frozen>,
        checked: Vec<Member>,
    ) -> Result<()> {
        let pre_checked: BTreeSet<Pid> = checked.iter().map(|m| m.pid).collect();
        let mut first = Some(checked).filter(|c| !c.is_empty());
        for _ in 0..MAX_ROUNDS {
            let found = match first.take() {
                Some(c) if whole_tree => c,
                Some(c) => c.into_iter().take(1).collect(),
                None if whole_tree => walk(root)?,
                None => walk(root)?.into_iter().take(1).collect(),
            };
            let mut begun: Vec<Pid> = Vec::new();
            for m in found.iter().filter(|m| m.zombie.is_none()) {
                if frozen.contains_key(&m.pid) {
                    continue;
                }
                let checked = pre_checked.contains(&m.pid);
                if let Some(f) = self.begin_one(m.pid, root, checked)? {
                    frozen.insert(m.pid, f);
                    begun.push(m.pid);
                }
            }
            for pid in &begun {
                let f = frozen.get_mut(pid).expect("just begun");
                match f.complete() {
                    Ok(()) => {}
                    Err(Error::NoSuchProcess { .. }) | Err(Error::Exited { .. })
                        if *pid != root =>
                    {
                        frozen.remove(pid); // gone meanwhile: let go
                    }
                    Err(e) => return Err(e),
                }
            }
            if begun.is_empty() {
                let mut members = found;
                if !whole_tree {
                    members.truncate(1);
                    members[0].children.clear();
                }
                self.members = members;
                return Ok(());
            }
        }
        Err(Error::Sys {
            pid: root,
            what: "freezing the tree".into(),
            source: ckpt_sys::Error::Unexpected {
                tid: root,
                what: format!("processes kept joining it after {MAX_ROUNDS} rounds"),
            },
        })
    }

    /// Start freezing one process found by the walk: None when it is a
    /// zombie or gone by now (not an error, but for the root). `checked`:
    /// [`check`] checked it just before (seizing a zombie fails as it
    /// does for a process gone).
    fn begin_one(&self, pid: Pid, root: Pid, checked: bool) -> Result<Option<Frozen>> {
        if pid != root && !checked {
            match state_of(pid) {
                None => return Ok(None),
                Some((s, _)) if s == "Z" || s == "X" => return Ok(None),
                Some(_) => {}
            }
            match check_target(pid) {
                Err(Error::NoSuchProcess { .. }) | Err(Error::Zombie { .. }) => return Ok(None),
                r => r?,
            }
        }
        match Frozen::begin(pid) {
            Ok(f) => Ok(Some(f)),
            Err(Error::NoSuchProcess { .. }) | Err(Error::Exited { .. }) if pid != root => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Threads frozen, in all.
    pub fn threads(&self) -> usize {
        self.frozen.iter().map(|f| f.threads.len()).sum()
    }

    /// The frozen process `pid`.
    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut Frozen> {
        self.frozen.iter_mut().find(|f| f.pid == pid)
    }

    /// How long the tree has been frozen so far.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Let every process go on exactly as it was; the first error (all are
    /// let go whatever happens).
    pub fn release(mut self) -> Result<Duration> {
        let mut first = None;
        for f in std::mem::take(&mut self.frozen) {
            if let Err(e) = f.release() {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(self.elapsed()),
        }
    }

    /// SIGKILL every process of the tree while we hold it (all first, then
    /// wait for each, children before parents so that none is reparented
    /// alive), until each is dead or a zombie.
    pub fn kill(mut self) -> Result<Duration> {
        let d = self.elapsed();
        for f in &self.frozen {
            let _ = ckpt_sys::proc::kill(f.pid, libc::SIGKILL);
        }
        let mut first = None;
        for f in std::mem::take(&mut self.frozen).into_iter().rev() {
            if let Err(e) = f.kill() {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(d),
        }
    }
}
