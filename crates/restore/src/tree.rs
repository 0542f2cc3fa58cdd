//! The tree of processes an image restores (pure: planned from the image,
//! its refusals reported by check()): in which order the stubs are forked
//! and by whom, which kernel tables a child shares with its parent, and how
//! each process gets its session and process group back.
//!
//! Creation order is depth first from the root, children in the saved
//! order but group leaders first; each stub forks its children one after
//! the other. A child whose subtree joins a group made in an earlier
//! sibling's subtree is forked once those subtrees exist
//! (`Node::wait_before`), so everything a process depends on exists (and
//! has its session and group) when it is made; independent siblings set
//! themselves up at the same time.
//!
//! - Sessions: a process that led its session calls setsid() as soon as it
//!   is forked (before its children, which inherit it). Any other process
//!   must be in its parent's session; processes in a session from outside
//!   the image (the dumper's shell) join the restorer's.
//! - Groups: a group leader makes its group (setpgid(0, 0)); a member of a
//!   group whose leader is in the image joins it once the leader exists
//!   (at once when the leader came first, else after every process is
//!   forked); a member of a group from outside the image joins the
//!   restorer's group (the root: it stays in it).
//! - A group of a restored session whose leader is gone (exited and reaped,
//!   its members alive or zombies) is made by a helper: the parent of its
//!   first member (in creation order) forks it at the group's id just before
//!   that member; it makes the group (setpgid(0, 0)), every member joins it
//!   when forked, and it exits once the tree exists, reaped by that parent
//!   before the parent's fds are placed. The group outlives it, as it did
//!   its leader.
//! - A child that shared its parent's fd table (CLONE_FILES) or fs
//!   (CLONE_FS) is forked with that flag; other sharing is refused.
//! - Zombies are forked at their pid, take their session and group, and
//!   exit with their saved wait status; stopped processes come back stopped.

use ckpt_image::{Image, Process};
use std::collections::HashMap;

/// How a process gets its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The one it is forked in (its parent's, or the restorer's for the root).
    Inherit,
    /// Its own (setpgid(0, 0)).
    Own,
    /// The group of the process with this creation index.
    Of(usize),
    /// The restorer's.
    Restorer,
    /// The group made by helper `k` (`TreePlan::helpers`): its leader is gone.
    Helper(usize),
}

/// A short-lived process that makes a process group whose leader is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helper {
    /// The group's id: the pid the helper is forked at.
    pub pgid: i32,
    /// Creation index of the process that forks it (and reaps it).
    pub parent: usize,
    /// Creation index of the child it is forked just before (the group's
    /// first member).
    pub before: usize,
}

/// One process of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Its index in `Image::processes`.
    pub image: usize,
    pub pid: i32,
    /// Creation index of its parent; None for the root (the restorer's child).
    pub parent: Option<usize>,
    /// Creation indices of its children, in the order they are forked.
    pub children: Vec<usize>,
    /// Clone flags shared with the parent (CLONE_FILES, CLONE_FS).
    pub share: u64,
    /// Creation index of the process whose fd table it uses (itself unless
    /// CLONE_FILES).
    pub table: usize,
    pub setsid: bool,
    pub group: Group,
    /// The group is joined once every process is forked.
    pub group_late: bool,
    /// A zombie: the wait status it exits with.
    pub zombie: Option<i32>,
    /// Its command name (what a zombie shows).
    pub comm: Vec<u8>,
    /// Stopped (job control) when it was dumped.
    pub stopped: bool,
    /// The signal to stop it with: the one that stopped it when that
    /// still stops it now (default action, not blocked), else SIGSTOP.
    pub stop_signal: i32,
    /// Its parent forks it only once the subtrees of its earlier siblings
    /// exist: a process of its subtree joins a group made in one of them.
    /// Otherwise siblings are forked one after the other without waiting,
    /// and their parent waits for all of them at the end.
    pub wait_before: bool,
}

/// The whole tree.
#[derive(Debug, Clone, Default)]
pub struct TreePlan {
    /// In creation order; the root first.
    pub nodes: Vec<Node>,
    /// Image index -> creation index.
    pub order_of: Vec<usize>,
    /// Helpers making the groups whose leader is gone.
    pub helpers: Vec<Helper>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl TreePlan {
    /// Creation index of each process's fd-table owner, by image index.
    pub fn table_owners(&self) -> Vec<usize> {
        let mut v = vec![0; self.order_of.len()];
        for n in &self.nodes {
            v[n.image] = self.nodes[n.table].image;
        }
        v
    }
}

/// Plan the tree of `image` (see the module documentation).
pub fn plan_tree(image: &Image) -> TreePlan {
    let mut t = TreePlan::default();
    let procs = &image.processes;
    if procs.is_empty() {
        t.errors.push("the image holds no process".into());
        return t;
    }
    let index: HashMap<i32, usize> = procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
    order(image, &index, &mut t);
    if !t.errors.is_empty() {
        return t;
    }
    for c in 0..t.nodes.len() {
        sessions(image, &index, &mut t, c);
        shares(image, &mut t, c);
        let p = &procs[t.nodes[c].image];
        if p.state == "Z" {
            t.nodes[c].zombie = Some(p.exit_status);
            if p.exit_status & 0x80 != 0 {
                t.warnings.push(format!(
                    "pid {}: a zombie killed by signal {} with a core dump; it comes back without the core-dump flag",
                    p.pid,
                    p.exit_status & 0x7f
                ));
            }
        }
        t.nodes[c].stopped = p.state == "T";
        t.nodes[c].stop_signal = stop_signal_of(p);
    }
    plan_waits(&mut t);
    t
}

/// [`Node::wait_before`] of every process. Subtrees are contiguous in
/// creation order; a process of `c`'s subtree depends on an earlier
/// sibling's subtree when it joins (not late) a group whose leader, or
/// whose helper's first member, is there.
fn plan_waits(t: &mut TreePlan) {
    let n = t.nodes.len();
    let mut end = vec![0; n];
    for c in (0..n).rev() {
        end[c] = t.nodes[c].children.last().map_or(c + 1, |&k| end[k]);
    }
    for i in 0..n {
        let Some(&first) = t.nodes[i].children.first() else {
            continue;
        };
        for j in 1..t.nodes[i].children.len() {
            let c = t.nodes[i].children[j];
            let needs = (c..end[c]).any(|d| {
                let dep = match t.nodes[d].group {
                    Group::Of(l) if !t.nodes[d].group_late => Some(l),
                    Group::Helper(k) => Some(t.helpers[k].before),
                    _ => None,
                };
                dep.is_some_and(|l| (first..c).contains(&l))
            });
            t.nodes[c].wait_before = needs;
        }
    }
}

/// The signal that stops `p` again as it was stopped: the saved one when
/// it is a job-control signal that takes its default action (a handler
/// would run instead, a blocked one would stay pending), else SIGSTOP.
fn stop_signal_of(p: &Process) -> i32 {
    let sig = p.stop_signal;
    let job = matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
    let default = p
        .sigactions
        .get((sig - 1).max(0) as usize)
        .is_some_and(|a| a.handler == 0);
    let blocked = p
        .threads
        .first()
        .is_some_and(|t| t.blocked & (1u64 << ((sig - 1).max(0))) != 0);
    if job && default && !blocked {
        sig
    } else {
        libc::SIGSTOP
    }
}

/// Creation order: depth first from the root, group leaders first among
/// siblings. Every process must be reached once.
fn order(image: &Image, index: &HashMap<i32, usize>, t: &mut TreePlan) {
    let procs = &image.processes;
    t.order_of = vec![usize::MAX; procs.len()];
    let mut stack: Vec<(usize, Option<usize>)> = vec![(0, None)];
    while let Some((i, parent)) = stack.pop() {
        let p = &procs[i];
        if t.order_of[i] != usize::MAX {
            t.errors.push(format!(
                "pid {}: listed as a child twice in the image",
                p.pid
            ));
            continue;
        }
        let c = t.nodes.len();
        t.order_of[i] = c;
        if let Some(q) = parent {
            t.nodes[q].children.push(c);
        }
        t.nodes.push(Node {
            image: i,
            pid: p.pid,
            parent,
            children: Vec::new(),
            share: 0,
            table: c,
            setsid: false,
            group: Group::Inherit,
            group_late: false,
            zombie: None,
            comm: p.comm.clone(),
            stopped: false,
            stop_signal: libc::SIGSTOP,
            wait_before: false,
        });
        let mut kids: Vec<usize> = Vec::new();
        for k in &p.children {
            match index.get(k) {
                Some(&ki) => kids.push(ki),
                None => t
                    .errors
                    .push(format!("pid {}: its child {k} is not in the image", p.pid)),
            }
        }
        // Leaders first (stable), pushed in reverse to pop in order.
        kids.sort_by_key(|&k| procs[k].pgid != procs[k].pid);
        for &k in kids.iter().rev() {
            stack.push((k, Some(c)));
        }
    }
    for (i, p) in procs.iter().enumerate() {
        if t.order_of[i] == usize::MAX {
            t.errors.push(format!(
                "pid {}: not a descendant of the root (pid {}) in the image",
                p.pid, procs[0].pid
            ));
        }
    }
}

/// Session and process group of process `c` (creation index).
fn sessions(image: &Image, index: &HashMap<i32, usize>, t: &mut TreePlan, c: usize) {
    let procs = &image.processes;
    let n = &t.nodes[c];
    let p = &procs[n.image];
    let parent = n.parent.map(|q| &procs[t.nodes[q].image]);
    let inside = |id: i32| index.contains_key(&id);
    let mut setsid = false;
    if p.sid == p.pid {
        setsid = true;
    } else if let Some(q) = parent {
        let both_outside = !inside(p.sid) && !inside(q.sid);
        if p.sid != q.sid && !both_outside {
            t.errors.push(format!(
                "pid {} is in session {} but its parent (pid {}) is in session {}: ckpt cannot restore a process outside its parent's session",
                p.pid, p.sid, q.pid, q.sid
            ));
        }
    } else if inside(p.sid) {
        t.errors.push(format!(
            "pid {} (the root) is in session {}, led by a process of the image",
            p.pid, p.sid
        ));
    }
    let session_inside = inside(p.sid);
    let (group, late) = if p.pgid == p.pid {
        // setsid() makes the group too.
        (if setsid { Group::Inherit } else { Group::Own }, false)
    } else if let Some(&li) = index.get(&p.pgid) {
        let leader = &procs[li];
        if leader.sid != p.sid {
            t.errors.push(format!(
                "pid {}: its process group {} is led by a process of another session ({})",
                p.pid, p.pgid, leader.sid
            ));
        }
        let lc = t.order_of[li];
        let parent_settled = n
            .parent
            .is_some_and(|q| !t.nodes[q].group_late && procs[t.nodes[q].image].pgid == p.pgid);
        if parent_settled && !setsid {
            (Group::Inherit, false)
        } else {
            (Group::Of(lc), lc > c)
        }
    } else if session_inside {
        match (t.helpers.iter().position(|h| h.pgid == p.pgid), n.parent) {
            (Some(k), _) => (Group::Helper(k), false),
            (None, Some(q)) => {
                t.helpers.push(Helper {
                    pgid: p.pgid,
                    parent: q,
                    before: c,
                });
                (Group::Helper(t.helpers.len() - 1), false)
            }
            (None, None) => {
                t.errors.push(format!(
                    "pid {} (the root): its process group {} lost its leader (pid {} is not in the image); ckpt cannot make that group for the root",
                    p.pid, p.pgid, p.pgid
                ));
                (Group::Inherit, false)
            }
        }
    } else {
        // A group from outside the image, in the restorer's session.
        match parent {
            None => (Group::Inherit, false),
            Some(q) if q.pgid == p.pgid => (Group::Inherit, false),
            Some(_) => (Group::Restorer, false),
        }
    };
    let n = &mut t.nodes[c];
    n.setsid = setsid;
    n.group = group;
    n.group_late = late;
}

/// Kernel tables process `c` shares with its parent.
fn shares(image: &Image, t: &mut TreePlan, c: usize) {
    let procs = &image.processes;
    let n = &t.nodes[c];
    let p = &procs[n.image];
    let s = p.shares;
    let parent = n.parent.map(|q| (q, &procs[t.nodes[q].image]));
    let mut share = 0u64;
    let mut table = c;
    let mut check = |owner: i32, table_name: &str, flag: i32, parent_owner: fn(&Process) -> i32| {
        if owner == 0 {
            return false;
        }
        match parent {
            Some((_, q)) if q.pid == owner || parent_owner(q) == owner => {
                share |= flag as u64;
                true
            }
            _ => {
                t.errors.push(format!(
                    "pid {} shares its {table_name} with pid {owner}, which is not its parent: ckpt restores only tables a parent shares with its children",
                    p.pid
                ));
                false
            }
        }
    };
    if check(s.files, "fd table", libc::CLONE_FILES, |q| q.shares.files) {
        if let Some((q, _)) = parent {
            table = t.nodes[q].table;
        }
    }
    check(
        s.fs,
        "working directory, root and umask",
        libc::CLONE_FS,
        |q| q.shares.fs,
    );
    if s.sighand != 0 {
        t.errors.push(format!(
            "pid {} shares its signal handlers with pid {} (CLONE_SIGHAND): ckpt cannot restore that",
            p.pid, s.sighand
        ));
    }
    if s.vm != 0 {
        t.errors.push(format!(
            "pid {} shares its address space with pid {} (vfork, CLONE_VM): ckpt cannot restore that",
            p.pid, s.vm
        ));
    }
    if let (true, Some((q, _))) = (table != c, parent) {
        let owner = &procs[t.nodes[q].image];
        if owner.fds != p.fds {
            t.errors.push(format!(
                "pid {} shares the fd table of pid {}, but the image gives them different fds",
                p.pid, owner.pid
            ));
        }
    }
    let n = &mut t.nodes[c];
    n.share = share;
    n.table = table;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_(pid: i32, pgid: i32, sid: i32, children: &[i32]) -> Process {
        Process {
            pid,
            pgid,
            sid,
            children: children.to_vec(),
            state: "S".into(),
            ..Default::default()
        }
    }

    fn image(p: Vec<Process>) -> Image {
        Image {
            processes: p,
            ..Default::default()
        }
    }

    #[test]
    fn a_shell_job_in_the_restorers_session() {
        // The root leads its group in an outside session; a pipeline of
        // two children in a group led by the second (leaders first).
        let img = image(vec![
            proc_(10, 10, 1, &[11, 12]),
            proc_(11, 12, 1, &[]),
            proc_(12, 12, 1, &[]),
        ]);
        let t = plan_tree(&img);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let pids: Vec<i32> = t.nodes.iter().map(|n| n.pid).collect();
        assert_eq!(pids, [10, 12, 11]);
        assert_eq!(t.nodes[0].group, Group::Own);
        assert!(!t.nodes[0].setsid);
        assert_eq!(t.nodes[1].group, Group::Own);
        assert_eq!(t.nodes[2].group, Group::Of(1));
        assert!(!t.nodes[2].group_late);
        assert_eq!(t.nodes[0].children, [1, 2]);
        // 11 joins the group of its earlier sibling 12: forked once 12's
        // subtree exists.
        assert!(t.nodes[2].wait_before);
        assert!(!t.nodes[1].wait_before);
    }

    #[test]
    fn independent_siblings_are_forked_without_waiting() {
        // Children in the root's group, and one leading its own group with
        // a child of its own in it: nobody waits for an earlier sibling.
        let img = image(vec![
            proc_(50, 50, 1, &[51, 52, 53]),
            proc_(51, 50, 1, &[]),
            proc_(52, 52, 1, &[54]),
            proc_(53, 50, 1, &[]),
            proc_(54, 52, 1, &[]),
        ]);
        let t = plan_tree(&img);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert!(t.nodes.iter().all(|n| !n.wait_before), "{:?}", t.nodes);
        // A later sibling's child joining 52's group waits for 52.
        let mut img = img;
        img.processes[3].children = vec![55];
        img.processes.push(proc_(55, 52, 1, &[]));
        let t = plan_tree(&img);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let c53 = t.order_of[3];
        assert!(t.nodes[c53].wait_before);
    }

    #[test]
    fn a_session_leader_and_a_member_joining_a_later_leader() {
        // 20 leads a session; its child 21 is in the group of 22, a child
        // of 21 forked after it.
        let img = image(vec![
            proc_(20, 20, 20, &[21]),
            proc_(21, 22, 20, &[22]),
            proc_(22, 22, 20, &[]),
        ]);
        let t = plan_tree(&img);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert!(t.nodes[0].setsid);
        assert_eq!(t.nodes[0].group, Group::Inherit);
        assert_eq!(t.nodes[1].group, Group::Of(2));
        assert!(t.nodes[1].group_late);
        assert_eq!(t.nodes[2].group, Group::Own);
    }

    #[test]
    fn outside_groups_and_refusals() {
        // A child in an outside group other than its parent's joins the
        // restorer's; a group whose leader is gone in a restored session
        // gets a helper; a session that is not the parent's is refused.
        let img = image(vec![
            proc_(30, 5, 1, &[31, 32, 33]),
            proc_(31, 6, 1, &[]),
            proc_(32, 32, 32, &[34]),
            proc_(33, 33, 33, &[]),
            proc_(34, 99, 32, &[]),
        ]);
        let t = plan_tree(&img);
        assert_eq!(t.nodes[0].group, Group::Inherit);
        let n31 = &t.nodes[t.order_of[1]];
        assert_eq!(n31.group, Group::Restorer);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let n34 = t.order_of[4];
        assert_eq!(t.nodes[n34].group, Group::Helper(0));
        assert_eq!(
            t.helpers,
            [Helper {
                pgid: 99,
                parent: t.order_of[2],
                before: n34
            }]
        );

        let mut img = img;
        img.processes[4].sid = 33;
        let t = plan_tree(&img);
        assert!(
            t.errors
                .iter()
                .any(|e| e.contains("in session 33 but its parent")),
            "{:?}",
            t.errors
        );
    }

    #[test]
    fn zombies_stops_and_shared_tables() {
        let mut z = proc_(41, 40, 1, &[]);
        z.state = "Z".into();
        z.exit_status = 3 << 8;
        let mut s = proc_(42, 40, 1, &[]);
        s.state = "T".into();
        s.shares.files = 40;
        s.shares.fs = 40;
        let img = image(vec![proc_(40, 40, 1, &[41, 42]), z, s]);
        let t = plan_tree(&img);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(t.nodes[1].zombie, Some(3 << 8));
        assert!(t.nodes[2].stopped);
        assert_eq!(
            t.nodes[2].share,
            (libc::CLONE_FILES | libc::CLONE_FS) as u64
        );
        assert_eq!(t.nodes[2].table, 0);
        assert_eq!(t.table_owners(), [0, 1, 0]);

        let mut img = img;
        img.processes[2].shares.files = 41;
        img.processes[2].shares.sighand = 40;
        let t = plan_tree(&img);
        assert_eq!(t.errors.len(), 2, "{:?}", t.errors);
    }
}
