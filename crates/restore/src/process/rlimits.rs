//! Resource limits (set from outside with prlimit, only where they differ)
//! and the OOM score adjustment.

use super::creds::OwnCreds;
use crate::error::{Result, SysContext};
use crate::Report;
use ckpt_image::Process;
use ckpt_sys::proc;

const CAP_SYS_RESOURCE: u32 = 24;
/// Resources prlimit knows (RLIM_NLIMITS).
const RLIM_NLIMITS: u32 = 16;

/// The saved limits, where they differ from the stub's.
pub(crate) fn set_limits(pid: i32, p: &Process) -> Result<()> {
    let mut set = 0;
    for l in &p.rlimits {
        let cur = proc::prlimit(pid, l.resource, None)
            .ctx(|| format!("pid {pid}: reading RLIMIT_{}", l.name))?;
        if cur != (l.soft, l.hard) {
            proc::prlimit(pid, l.resource, Some((l.soft, l.hard))).ctx(|| {
                format!(
                    "pid {pid}: setting RLIMIT_{} to soft {} hard {}",
                    l.name, l.soft, l.hard
                )
            })?;
            set += 1;
        }
    }
    tracing::debug!(changed = set, "resource limits set");
    Ok(())
}

/// /proc/PID/oom_score_adj, best effort: lowering it needs CAP_SYS_RESOURCE
/// (check() warns when it cannot be).
pub(crate) fn set_oom_score_adj(pid: i32, p: &Process) {
    let oom = format!("/proc/{pid}/oom_score_adj");
    let cur = std::fs::read_to_string(&oom)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if cur != Some(p.oom_score_adj) {
        if let Err(e) = std::fs::write(&oom, p.oom_score_adj.to_string()) {
            tracing::debug!(error = %e, value = p.oom_score_adj, "oom_score_adj not set");
        }
    }
}

/// /proc/PID/coredump_filter, from outside, when saved.
pub(crate) fn set_coredump_filter(pid: i32, p: &Process) {
    if p.coredump_filter == 0 {
        return;
    }
    let path = format!("/proc/{pid}/coredump_filter");
    if let Err(e) = std::fs::write(&path, format!("{:#x}", p.coredump_filter)) {
        tracing::debug!(error = %e, value = p.coredump_filter, "coredump_filter not set");
    }
}

/// The restorer's own oom_score_adj (what the stub starts with).
pub(crate) fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The restorer's own OOM score adjustment and hard limits (or why a
/// limit could not be read), read once for all the processes checked.
pub(crate) struct OwnLimits {
    oom: i32,
    hard: Vec<std::result::Result<u64, String>>,
}

impl OwnLimits {
    pub(crate) fn read() -> OwnLimits {
        OwnLimits {
            oom: own_oom_score_adj(),
            hard: (0..RLIM_NLIMITS)
                .map(|res| {
                    proc::prlimit(0, res, None)
                        .map(|(_, hard)| hard)
                        .map_err(|e| e.to_string())
                })
                .collect(),
        }
    }
}

/// Limits this kernel does not know, and hard limits above the restorer's
/// (`mine`) that it may not raise; an OOM score adjustment it may not set.
pub(crate) fn check(p: &Process, own: &OwnCreds, mine: &OwnLimits, r: &mut Report) {
    let can_raise = own.has_cap(CAP_SYS_RESOURCE);
    let oom = mine.oom;
    if !(-1000..=1000).contains(&p.oom_score_adj) {
        r.errors.push(format!(
            "oom_score_adj {} is not a value the kernel takes (-1000..1000)",
            p.oom_score_adj
        ));
    } else if p.oom_score_adj < oom && !can_raise {
        r.warnings.push(format!(
            "oom_score_adj {} cannot be restored: lowering it below the restorer's {oom} needs CAP_SYS_RESOURCE; the process gets {oom}",
            p.oom_score_adj
        ));
    }
    for l in &p.rlimits {
        if l.resource >= RLIM_NLIMITS {
            r.errors.push(format!(
                "resource {}: not a resource limit this kernel knows (0..{RLIM_NLIMITS})",
                l.resource
            ));
            continue;
        }
        let name = if l.name.is_empty() {
            format!("resource {}", l.resource)
        } else {
            format!("RLIMIT_{}", l.name.trim_start_matches("RLIMIT_"))
        };
        match &mine.hard[l.resource as usize] {
            &Ok(hard) => {
                if l.hard > hard && !can_raise {
                    r.errors.push(format!(
                        "{name}: the saved hard limit {} is above this user's {} (raising it needs CAP_SYS_RESOURCE)",
                        fmt_limit(l.hard),
                        fmt_limit(hard)
                    ));
                }
            }
            Err(e) => r
                .warnings
                .push(format!("{name}: cannot read the current limit: {e}")),
        }
    }
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}
