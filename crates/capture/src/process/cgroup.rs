//! cgroup membership: the cgroup v2 path, the cgroup of every v1
//! hierarchy (per process, and per thread where a thread is elsewhere),
//! the directories to make again at restore (those outside the dumper's
//! own cgroup: the ancestors of each such cgroup, the cgroup and its
//! descendants, with their owner, mode and some control files), and the
//! root of the process's own cgroup namespace.

use crate::error::{Error, IoCtx, Result, SysCtx};
use crate::procfs;
use ckpt_image::{CgroupDir, CgroupFile, CgroupPath, Process, Thread};
use ckpt_sys::cgroupfs::{self, CgroupMount};
use ckpt_sys::Pid;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Directories saved under one cgroup at most (a bigger subtree is cut,
/// said in the log).
const MAX_DIRS: usize = 1000;

/// Control files whose value is saved with a directory, by controller
/// (written back only into directories the restore makes).
const VALUES: &[(&str, &[&str])] = &[
    ("", &["notify_on_release", "cgroup.clone_children"]),
    ("cpuset", &["cpuset.cpus", "cpuset.mems"]),
    (
        "cpu",
        &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
    ),
    (
        "memory",
        &[
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.swappiness",
        ],
    ),
    ("devices", &["devices.list"]),
    ("net_prio", &["net_prio.ifpriomap"]),
    ("net_cls", &["net_cls.classid"]),
    ("pids", &["pids.max"]),
    ("blkio", &["blkio.weight"]),
];

/// The cgroup v2 path of the process ("0::PATH" of /proc/PID/cgroup, as
/// seen from our cgroup namespace); empty without cgroup v2.
pub(crate) fn v2_path(pid: Pid) -> Result<Vec<u8>> {
    let raw = procfs::read(pid, &format!("/proc/{pid}/cgroup"))?;
    Ok(cgroupfs::parse_cgroup_file(&raw)
        .into_iter()
        .find_map(|(h, p)| h.is_empty().then_some(p))
        .unwrap_or_default())
}

fn v1_of(raw: &[u8]) -> Vec<CgroupPath> {
    cgroupfs::parse_cgroup_file(raw)
        .into_iter()
        .filter(|(h, _)| !h.is_empty())
        .map(|(hierarchy, path)| CgroupPath { hierarchy, path })
        .collect()
}

/// Save the v1 membership of the process and its threads, the
/// directories to make again and its cgroup namespace's root.
/// The dumper's own v1 cgroups and cgroup namespace, read once for a
/// whole tree ([`save`] compares each process with them).
pub(crate) struct Own {
    v1: Vec<CgroupPath>,
    /// The inode of our cgroup namespace (None: unreadable).
    ns: Option<u64>,
}

impl Own {
    /// Ours now (`pid`: the process dumped, for errors).
    pub(crate) fn read(pid: Pid) -> Result<Own> {
        let own =
            std::fs::read("/proc/self/cgroup").ctx(pid, || "reading /proc/self/cgroup".into())?;
        Ok(Own {
            v1: v1_of(&own),
            ns: std::fs::metadata("/proc/self/ns/cgroup")
                .map(|m| m.ino())
                .ok(),
        })
    }
}

pub(crate) fn save(
    pid: Pid,
    process: &mut Process,
    threads: &mut [Thread],
    own: &Own,
) -> Result<()> {
    let raw = procfs::read(pid, &format!("/proc/{pid}/cgroup"))?;
    process.cgroups_v1 = v1_of(&raw);
    for t in threads.iter_mut().filter(|t| t.tid != pid) {
        let path = format!("/proc/{pid}/task/{}/cgroup", t.tid);
        let mine = v1_of(&procfs::read(pid, &path)?);
        if mine != process.cgroups_v1 {
            t.cgroups_v1 = mine;
        }
    }
    let mut wanted: Vec<&CgroupPath> = process
        .cgroups_v1
        .iter()
        .chain(threads.iter().flat_map(|t| t.cgroups_v1.iter()))
        .filter(|c| !own.v1.contains(c))
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut dirs = Vec::new();
    // Our mounts only for a process outside our cgroups (most are not).
    let mounts = if wanted.is_empty() {
        Vec::new()
    } else {
        cgroupfs::cgroup_mounts()
    };
    for c in wanted {
        dirs_of(pid, c, &mounts, &mut dirs)?;
    }
    process.cgroup_dirs = dirs;
    process.cgroup_ns_roots = ns_roots(pid, &raw, own.ns)?;
    Ok(())
}

/// The directories of cgroup `c`: its ancestors, itself, its descendants
/// (parents first), appended to `out` unless there already.
fn dirs_of(
    pid: Pid,
    c: &CgroupPath,
    mounts: &[CgroupMount],
    out: &mut Vec<CgroupDir>,
) -> Result<()> {
    let Some(top) = cgroupfs::find_dir(mounts, &c.hierarchy, b"/") else {
        // Not mounted here: its directories cannot be read (the restore
        // needs them to exist, and says so).
        tracing::warn!(pid, hierarchy = %c.hierarchy, "cgroup hierarchy not mounted: its directories are not saved");
        return Ok(());
    };
    let mut paths: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    for comp in c.path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        cur.push(b'/');
        cur.extend_from_slice(comp);
        paths.push(cur.clone());
    }
    if let Some(me) = paths.pop() {
        descendants(&top, &me, &mut paths);
    }
    for p in paths {
        if out
            .iter()
            .any(|d| d.dir.hierarchy == c.hierarchy && d.dir.path == p)
        {
            continue;
        }
        let dir = top.join(std::ffi::OsStr::from_bytes(&p[1..]));
        let md = std::fs::metadata(&dir)
            .ctx(pid, || format!("stat cgroup directory {}", dir.display()))?;
        out.push(CgroupDir {
            dir: CgroupPath {
                hierarchy: c.hierarchy.clone(),
                path: p,
            },
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            files: files_of(&dir, &c.hierarchy),
        });
    }
    Ok(())
}

/// `me` and the directories below it (breadth first, at most MAX_DIRS).
fn descendants(top: &Path, me: &[u8], out: &mut Vec<Vec<u8>>) {
    let first = out.len();
    out.push(me.to_vec());
    let mut i = first;
    while i < out.len() {
        let dir = top.join(std::ffi::OsStr::from_bytes(&out[i][1..]));
        let Ok(rd) = std::fs::read_dir(&dir) else {
            i += 1;
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if out.len() - first >= MAX_DIRS {
                tracing::warn!(cgroup = %dir.display(), "more than {MAX_DIRS} cgroups below: the rest is not saved");
                return;
            }
            let mut p = out[i].clone();
            p.push(b'/');
            p.extend_from_slice(e.file_name().as_bytes());
            out.push(p);
        }
        i += 1;
    }
}

/// The control files of a directory worth saving: the values of
/// VALUES for the hierarchy's controllers, and any file owned by
/// someone other than root (with its mode).
fn files_of(dir: &Path, hierarchy: &str) -> Vec<CgroupFile> {
    let ctls: Vec<&str> = std::iter::once("").chain(hierarchy.split(',')).collect();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut names: Vec<_> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(md) = e.metadata() else { continue };
        let valued = VALUES
            .iter()
            .any(|(c, files)| ctls.contains(c) && files.contains(&name.as_str()));
        let owned = md.uid() != 0 || md.gid() != 0;
        if !valued && !owned {
            continue;
        }
        out.push(CgroupFile {
            value: if valued {
                std::fs::read(e.path()).ok()
            } else {
                None
            },
            name,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        });
    }
    out
}

/// In a cgroup namespace other than ours: the namespace's root in each
/// hierarchy (its path from here, less what the process sees inside).
fn ns_roots(pid: Pid, outside: &[u8], ours: Option<u64>) -> Result<Vec<CgroupPath>> {
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/cgroup"))
        .map(|m| m.ino())
        .ctx(pid, || "stat /proc/PID/ns/cgroup".into())?;
    if ours == Some(theirs) {
        return Ok(Vec::new());
    }
    let inside = ckpt_sys::proc::cgroup_in_own_ns(pid).ctx(pid, || {
        "reading its cgroups inside its cgroup namespace".into()
    })?;
    let inside = cgroupfs::parse_cgroup_file(&inside);
    let mut roots = Vec::new();
    for (h, out_path) in cgroupfs::parse_cgroup_file(outside) {
        let Some((_, in_path)) = inside.iter().find(|(ih, _)| *ih == h) else {
            continue;
        };
        let root = if in_path == b"/" {
            Some(out_path.clone())
        } else {
            out_path.strip_suffix(&in_path[..]).map(<[u8]>::to_vec)
        };
        let Some(mut root) = root.filter(|_| !in_path.starts_with(b"/..")) else {
            return Err(Error::Parse {
                pid,
                file: format!("/proc/{pid}/cgroup"),
                line: 0,
                what: format!(
                    "hierarchy {h:?}: the process is at {} outside its cgroup namespace's root ({} inside): ckpt cannot save that",
                    String::from_utf8_lossy(&out_path),
                    String::from_utf8_lossy(in_path)
                ),
            });
        };
        if root.is_empty() {
            root = b"/".to_vec();
        }
        roots.push(CgroupPath {
            hierarchy: h,
            path: root,
        });
    }
    Ok(roots)
}
