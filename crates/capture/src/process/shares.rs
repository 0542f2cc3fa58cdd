//! Kernel tables processes of the tree share (clone flags without
//! CLONE_THREAD): fd tables (CLONE_FILES), cwd/root/umask (CLONE_FS) and
//! signal handlers (CLONE_SIGHAND), found with kcmp. A restore rebuilds a
//! table shared by a parent with its children (the child forked with the
//! flag); any other sharing is refused here, at the dump, by name.
//! (Address spaces shared between processes are refused before freezing,
//! `tree.rs`; SysV semaphore undo lists cannot be told apart by kcmp when
//! a process has none, and are left to the SysV IPC support.)

use crate::error::{Error, Result};
use crate::tree::{classes_of, Member};
use ckpt_image::Process;
use ckpt_sys::kcmp::Kind;
use ckpt_sys::Pid;
use std::collections::HashMap;

/// Fill `Process.shares` of `processes` (in the order of `members`).
pub(crate) fn detect(members: &[Member], processes: &mut [Process]) -> Result<()> {
    let live: Vec<Pid> = members
        .iter()
        .filter(|m| m.zombie.is_none())
        .map(|m| m.pid)
        .collect();
    if live.len() < 2 {
        return Ok(());
    }
    let parent: HashMap<Pid, Pid> = members.iter().map(|m| (m.pid, m.parent)).collect();
    let index: HashMap<Pid, usize> = processes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pid, i))
        .collect();
    for (kind, table) in [
        (Kind::Files, "fd table"),
        (Kind::Fs, "working directory, root and umask"),
        (Kind::Sighand, "signal handlers"),
    ] {
        for class in classes_of(kind, &live)? {
            let Some((&top, rest)) = class.split_first() else {
                continue;
            };
            for &pid in rest {
                let p = parent.get(&pid).copied().unwrap_or(0);
                if !class.contains(&p) {
                    return Err(Error::SharedTable {
                        pid,
                        with: top,
                        table,
                    });
                }
                let s = &mut processes[index[&pid]].shares;
                match kind {
                    Kind::Files => s.files = top,
                    Kind::Fs => s.fs = top,
                    _ => s.sighand = top,
                }
            }
            if rest.is_empty() {
                continue;
            }
            tracing::debug!(table, owner = top, sharers = ?rest, "shared kernel table");
        }
    }
    Ok(())
}
