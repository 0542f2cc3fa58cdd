//! cgroup v2 membership: the process is moved into the cgroup it was in
//! (by path, in the restorer's view of the hierarchy) as soon as the stub
//! exists, so that its memory is charged there; its threads, created
//! later, follow it.

use crate::error::{Error, Result};
use crate::Report;
use ckpt_image::Process;
use std::path::PathBuf;

/// Where the cgroup v2 hierarchy is mounted (from our mountinfo).
fn mount_point() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(
            left.split_whitespace().nth(4)?.replace("\\040", " "),
        ))
    })
}

/// The calling process's cgroup v2 path.
fn own_cgroup() -> Option<Vec<u8>> {
    let raw = std::fs::read("/proc/self/cgroup").ok()?;
    raw.split(|&c| c == b'\n')
        .find_map(|l| l.strip_prefix(b"0::"))
        .map(<[u8]>::to_vec)
}

/// The directory of the saved cgroup; None when nothing is to be done (no
/// saved cgroup, or the restorer's own).
fn target(p: &Process) -> std::result::Result<Option<PathBuf>, String> {
    if p.cgroup.is_empty() || own_cgroup().as_deref() == Some(&p.cgroup[..]) {
        return Ok(None);
    }
    let path = String::from_utf8_lossy(&p.cgroup).into_owned();
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!("cgroup {path:?}: not a cgroup path"));
    }
    let Some(root) = mount_point() else {
        return Err(format!(
            "cgroup {path}: the process was in this cgroup v2 group, and no cgroup v2 hierarchy is mounted here"
        ));
    };
    Ok(Some(root.join(path.trim_start_matches('/'))))
}

/// The saved cgroup must exist.
pub(crate) fn check(p: &Process, r: &mut Report) {
    match target(p) {
        Err(e) => r.errors.push(e),
        Ok(Some(dir)) if !dir.join("cgroup.procs").exists() => r.errors.push(format!(
            "cgroup {}: the process was in this cgroup, which does not exist here ({} is missing)",
            String::from_utf8_lossy(&p.cgroup),
            dir.display()
        )),
        _ => {}
    }
}

/// Move `pid` (the stub) into the saved cgroup.
pub(crate) fn join(pid: i32, p: &Process) -> Result<()> {
    let dir = match target(p) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(()),
        Err(what) => {
            return Err(Error::Cgroup {
                path: String::from_utf8_lossy(&p.cgroup).into_owned(),
                what,
            })
        }
    };
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|e| Error::Cgroup {
        path: String::from_utf8_lossy(&p.cgroup).into_owned(),
        what: format!(
            "moving pid {pid} into it ({}/cgroup.procs): {}",
            dir.display(),
            crate::error::os_msg(&e)
        ),
    })?;
    tracing::debug!(pid, cgroup = %dir.display(), "joined the saved cgroup");
    Ok(())
}
