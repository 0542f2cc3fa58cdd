//! cgroup membership. Before the stubs exist, the saved cgroup
//! directories missing here are made again, parents first, with their
//! owner, mode and saved control files ([`prepare`]); existing ones are
//! left as they are. The stub then joins its saved cgroup v2 group and the
//! cgroup of every v1 hierarchy it was in ([`join`]), so that its memory
//! is charged there; a process that had its own cgroup namespace first
//! joins the namespace's roots, makes the namespace (unshare, injected)
//! and then goes to its cgroups ([`enter_ns`]). Threads are created in
//! their process's cgroups and moved where they were ([`join_threads`]).
//!
//! Hierarchies are found in the restorer's mounts (/proc/self/mountinfo)
//! by their controllers or name=; one the process must join that is not
//! mounted here is refused by name. Every write is the restorer's own (it
//! gets no right it does not have); a cgroup equal to the restorer's own
//! needs no write.

use crate::error::{os_msg, Error, Result};
use crate::remote::Remote;
use crate::{CgroupRoot, Report};
use ckpt_image::{CgroupDir, CgroupPath, Process};
use ckpt_sys::cgroupfs::{self, CgroupMount};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the restorer sees: its cgroups and the mounted hierarchies (read
/// when first needed: most processes are in the restorer's own cgroups).
pub(crate) struct Here<'r> {
    own: Vec<(String, Vec<u8>)>,
    mounts: std::cell::OnceCell<Vec<CgroupMount>>,
    roots: &'r [CgroupRoot],
}

impl Here<'_> {
    pub(crate) fn read(roots: &[CgroupRoot]) -> Here<'_> {
        Here {
            roots,
            own: cgroupfs::parse_cgroup_file(
                &std::fs::read("/proc/self/cgroup").unwrap_or_default(),
            ),
            mounts: std::cell::OnceCell::new(),
        }
    }

    fn mounts(&self) -> &[CgroupMount] {
        self.mounts.get_or_init(cgroupfs::cgroup_mounts)
    }

    /// The root `c`'s hierarchy is moved under, if any.
    fn root_of(&self, h: &str) -> Option<&[u8]> {
        let named = self.roots.iter().find(|r| {
            r.hierarchy
                .as_deref()
                .is_some_and(|x| cgroupfs::same_hierarchy(x, h) && x.is_empty() == h.is_empty())
        });
        named
            .or_else(|| {
                let v1 = !h.is_empty();
                self.roots.iter().find(|r| v1 && r.hierarchy.is_none())
            })
            .map(|r| &r.path[..])
            .filter(|p| *p != b"/")
    }

    /// Where saved cgroup `c` goes here (under its --cgroup-root).
    fn place(&self, c: &CgroupPath) -> CgroupPath {
        let Some(root) = self.root_of(&c.hierarchy) else {
            return c.clone();
        };
        let mut path = root.strip_suffix(b"/").unwrap_or(root).to_vec();
        if c.path != b"/" {
            path.extend_from_slice(&c.path);
        }
        CgroupPath {
            hierarchy: c.hierarchy.clone(),
            path,
        }
    }

    fn is_own(&self, c: &CgroupPath) -> bool {
        let c = &self.place(c);
        self.own.iter().any(|(h, p)| {
            *p == c.path
                && h.is_empty() == c.hierarchy.is_empty()
                && cgroupfs::same_hierarchy(h, &c.hierarchy)
        })
    }

    /// The directory of `c` here.
    fn dir(&self, c: &CgroupPath) -> std::result::Result<PathBuf, String> {
        let c = &self.place(c);
        let path = String::from_utf8_lossy(&c.path);
        if !path.starts_with('/') || path.split('/').any(|x| x == "..") {
            return Err(format!("cgroup {path:?}: not a cgroup path"));
        }
        cgroupfs::find_dir(self.mounts(), &c.hierarchy, &c.path).ok_or_else(|| {
            format!(
                "cgroup {}: the process was in this cgroup, and the hierarchy {} is not mounted here: mount it first",
                shown(c),
                name(&c.hierarchy)
            )
        })
    }
}

/// How a cgroup is named in messages: "/a/b" (v2), "name=x:/a/b" (v1).
fn shown(c: &CgroupPath) -> String {
    let path = String::from_utf8_lossy(&c.path);
    if c.hierarchy.is_empty() {
        path.into_owned()
    } else {
        format!("{}:{path}", c.hierarchy)
    }
}

fn name(h: &str) -> String {
    if h.is_empty() {
        "cgroup v2".into()
    } else {
        format!("cgroup v1 {h:?}")
    }
}

/// The cgroups the process joins at once: its namespace's roots when it
/// had its own namespace, else its own cgroups (v2 and v1).
fn first_cgroups(p: &Process) -> Vec<CgroupPath> {
    if !p.cgroup_ns_roots.is_empty() {
        return p.cgroup_ns_roots.clone();
    }
    final_cgroups(p)
}

fn final_cgroups(p: &Process) -> Vec<CgroupPath> {
    let v2 = (!p.cgroup.is_empty()).then(|| CgroupPath {
        hierarchy: String::new(),
        path: p.cgroup.clone(),
    });
    v2.into_iter().chain(p.cgroups_v1.iter().cloned()).collect()
}

/// Every cgroup the process or a thread of it must join.
fn all_joins(p: &Process) -> Vec<CgroupPath> {
    let mut v: Vec<CgroupPath> = final_cgroups(p)
        .into_iter()
        .chain(p.cgroup_ns_roots.iter().cloned())
        .chain(p.threads.iter().flat_map(|t| t.cgroups_v1.iter().cloned()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A saved directory missing here, to be made.
#[derive(Debug)]
pub(crate) struct Make<'a> {
    pub(crate) path: PathBuf,
    /// None: a directory on the way to a cgroup moved by --cgroup-root.
    pub(crate) saved: Option<&'a CgroupDir>,
}

/// The saved directories of the processes missing here (parents first,
/// once each); those of hierarchies not mounted here are left out (a
/// cgroup to join there is refused by [`check`]).
pub(crate) fn plan_dirs<'a>(procs: &[&'a Process], here: &Here) -> Vec<Make<'a>> {
    let mut out: Vec<Make> = Vec::new();
    for d in procs.iter().flat_map(|p| p.cgroup_dirs.iter()) {
        let Ok(path) = here.dir(&d.dir) else { continue };
        if out.iter().any(|m| m.path == path) || path.exists() {
            continue;
        }
        out.push(Make {
            path,
            saved: Some(d),
        });
    }
    // Under a --cgroup-root: the directories on the way to each cgroup.
    for c in procs.iter().flat_map(|p| all_joins(p)) {
        if here.root_of(&c.hierarchy).is_none() || here.is_own(&c) {
            continue;
        }
        let Ok(dir) = here.dir(&c) else { continue };
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for path in missing {
            if !out.iter().any(|m| m.path == path) {
                out.push(Make { path, saved: None });
            }
        }
    }
    out.sort_by_key(|m| m.path.components().count());
    out
}

/// The directories the restore will make (paths under them need not
/// exist yet when checked).
pub(crate) fn will_make(image: &ckpt_image::Image, opts: &crate::RestoreOptions) -> Vec<PathBuf> {
    if opts.ignore_cgroups {
        return Vec::new();
    }
    let procs: Vec<&Process> = image.processes.iter().collect();
    plan_dirs(&procs, &Here::read(&opts.cgroup_roots))
        .into_iter()
        .map(|m| m.path)
        .collect()
}

/// Each cgroup to join is in a hierarchy mounted here, and exists or is
/// made; saved owners other than root and the requester are refused for
/// a requester other than root.
pub(crate) fn check(p: &Process, here: &Here<'_>, requester: Option<u32>, r: &mut Report) {
    let made = plan_dirs(&[p], here);
    for c in all_joins(p) {
        if here.is_own(&c) {
            continue;
        }
        match here.dir(&c) {
            Err(e) => r.errors.push(e),
            Ok(dir) if !dir.exists() && !made.iter().any(|m| m.path == dir) => r.errors.push(format!(
                "cgroup {}: the process was in this cgroup, which does not exist here ({} is missing) and was not saved",
                shown(&c),
                dir.display()
            )),
            Ok(_) => {}
        }
    }
    let Some(uid) = requester.filter(|&u| u != 0) else {
        return;
    };
    for m in &made {
        let Some(d) = m.saved else { continue };
        let owners = std::iter::once(d.uid).chain(d.files.iter().map(|f| f.uid));
        if owners.into_iter().any(|o| o != 0 && o != uid) {
            r.errors.push(format!(
                "cgroup {}: the image gives it (or its files) to another user than {uid}, who the restore is for",
                m.path.display()
            ));
        }
    }
}

/// Make the missing saved directories of the live processes of the tree
/// (parents first); nothing with `ignore`.
pub(crate) fn prepare(
    image: &ckpt_image::Image,
    tree: &crate::tree::TreePlan,
    opts: &crate::RestoreOptions,
) -> Result<()> {
    if opts.ignore_cgroups {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let procs: Vec<&Process> = tree
        .nodes
        .iter()
        .filter(|n| n.zombie.is_none())
        .map(|n| &image.processes[n.image])
        .collect();
    let here = Here::read(&opts.cgroup_roots);
    let made = plan_dirs(&procs, &here);
    for m in &made {
        make_dir(m)?;
    }
    tracing::info!(dirs = made.len(), elapsed = ?t0.elapsed(), "cgroup directories made");
    Ok(())
}

fn cg_err(path: &Path, what: String) -> Error {
    Error::Cgroup {
        path: path.display().to_string(),
        what,
    }
}

/// One directory: mkdir, its control files' values, owners and modes.
fn make_dir(m: &Make) -> Result<()> {
    let io = |what: &str, e: std::io::Error| cg_err(&m.path, format!("{what}: {}", os_msg(&e)));
    match std::fs::create_dir(&m.path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io("making it again", e)),
    }
    tracing::debug!(dir = %m.path.display(), "made a cgroup directory");
    let Some(d) = m.saved else {
        return inherit_cpuset(&m.path);
    };
    // cpuset's cpus and mems first: a cpuset without them takes no task.
    let mut files: Vec<_> = d.files.iter().filter(|f| f.value.is_some()).collect();
    files.sort_by_key(|f| !f.name.starts_with("cpuset."));
    for f in files {
        let v = f.value.as_deref().unwrap_or_default();
        write_value(&m.path, &f.name, v)?;
    }
    for f in &d.files {
        set_owner(&m.path.join(&f.name), f.uid, f.gid, f.mode)
            .map_err(|e| io(&format!("{}: owner and mode", f.name), e))?;
    }
    set_owner(&m.path, d.uid, d.gid, d.mode).map_err(|e| io("owner and mode", e))
}

/// A cpuset made on the way to a moved cgroup takes no task without cpus
/// and mems: its parent's.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if let Ok(v) = std::fs::read(parent.join(f)) {
            write_value(dir, f, &v)?;
        }
    }
    Ok(())
}

fn set_owner(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(path)?;
    if md.uid() != uid || md.gid() != gid {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    if md.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Write a saved control file value; devices.list is rebuilt from its
/// lines (deny all, then allow each), net_prio.ifpriomap line by line
/// for the interfaces there are here.
fn write_value(dir: &Path, name: &str, v: &[u8]) -> Result<()> {
    let w = |file: &str, data: &[u8]| {
        std::fs::write(dir.join(file), data).map_err(|e| {
            cg_err(
                dir,
                format!(
                    "writing {:?} to {file}: {}",
                    String::from_utf8_lossy(data),
                    os_msg(&e)
                ),
            )
        })
    };
    let lines = || v.split(|&c| c == b'\n').filter(|l| !l.is_empty());
    match name {
        "devices.list" => {
            w("devices.deny", b"a")?;
            lines().try_for_each(|l| w("devices.allow", l))
        }
        "net_prio.ifpriomap" => {
            for l in lines() {
                let ifname = l.split(|&c| c == b' ').next().unwrap_or_default();
                if Path::new("/sys/class/net")
                    .join(std::ffi::OsStr::from_bytes(ifname))
                    .exists()
                {
                    w(name, l)?;
                }
            }
            Ok(())
        }
        _ => {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            if v.is_empty() {
                return Ok(());
            }
            w(name, v)
        }
    }
}

/// Move task `id` into cgroup `c` (`file`: cgroup.procs for a process,
/// tasks for a v1 thread).
fn move_into(here: &Here, c: &CgroupPath, id: i32, file: &str) -> Result<()> {
    if here.is_own(c) {
        return Ok(());
    }
    let whole = || shown(&here.place(c));
    let dir = here.dir(c).map_err(|what| Error::Cgroup {
        path: whole(),
        what,
    })?;
    std::fs::write(dir.join(file), id.to_string()).map_err(|e| Error::Cgroup {
        path: whole(),
        what: format!(
            "moving {id} into it ({}/{file}): {}",
            dir.display(),
            os_msg(&e)
        ),
    })?;
    tracing::debug!(id, cgroup = %dir.display(), "joined a saved cgroup");
    Ok(())
}

/// Move `pid` (the stub, one thread) into its first cgroups.
pub(crate) fn join(pid: i32, p: &Process, roots: &[CgroupRoot]) -> Result<()> {
    let here = Here::read(roots);
    for c in first_cgroups(p) {
        move_into(&here, &c, pid, "cgroup.procs")?;
    }
    Ok(())
}

/// A process that had its own cgroup namespace: make it (in the
/// namespace's roots, joined first) and move into its own cgroups.
pub(crate) fn enter_ns(
    main: &mut Remote,
    pid: i32,
    p: &Process,
    roots: &[CgroupRoot],
) -> Result<()> {
    if p.cgroup_ns_roots.is_empty() {
        return Ok(());
    }
    main.call(
        "unshare(CLONE_NEWCGROUP)",
        libc::SYS_unshare,
        &[libc::CLONE_NEWCGROUP as u64],
    )?;
    let here = Here::read(roots);
    for c in final_cgroups(p) {
        if !p.cgroup_ns_roots.contains(&c) {
            move_into(&here, &c, pid, "cgroup.procs")?;
        }
    }
    Ok(())
}

/// Move the threads saved in other v1 cgroups than their process's.
pub(crate) fn join_threads(
    p: &Process,
    tids: &BTreeMap<i32, i32>,
    roots: &[CgroupRoot],
) -> Result<()> {
    let elsewhere = |t: &ckpt_image::Thread| t.cgroups_v1.iter().any(|c| !p.cgroups_v1.contains(c));
    if !p.threads.iter().any(elsewhere) {
        return Ok(());
    }
    let here = Here::read(roots);
    for t in p.threads.iter().filter(|t| !t.cgroups_v1.is_empty()) {
        let Some(&tid) = tids.get(&t.tid) else {
            continue;
        };
        for c in t.cgroups_v1.iter().filter(|c| !p.cgroups_v1.contains(c)) {
            move_into(&here, c, tid, "tasks")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg(h: &str, p: &str) -> CgroupPath {
        CgroupPath {
            hierarchy: h.into(),
            path: p.as_bytes().to_vec(),
        }
    }

    #[test]
    fn plans_missing_dirs_once_and_refuses_unmounted() {
        let here = Here {
            own: vec![("name=a".into(), b"/".to_vec())],
            mounts: vec![CgroupMount {
                hierarchy: "name=a".into(),
                root: b"/".to_vec(),
                mount_point: PathBuf::from("/nonexistent-ckpt-test"),
            }]
            .into(),
            roots: &[],
        };
        let dir = |p: &str| CgroupDir {
            dir: cg("name=a", p),
            ..Default::default()
        };
        let p = Process {
            cgroups_v1: vec![cg("name=a", "/x/y"), cg("name=b", "/z")],
            cgroup_dirs: vec![
                dir("/x"),
                dir("/x/y"),
                dir("/x"),
                CgroupDir {
                    dir: cg("name=b", "/z"),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let m = plan_dirs(&[&p], &here);
        let paths: Vec<_> = m.iter().map(|m| m.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/nonexistent-ckpt-test/x"),
                PathBuf::from("/nonexistent-ckpt-test/x/y")
            ]
        );
        assert!(here
            .dir(&cg("name=b", "/z"))
            .unwrap_err()
            .contains("\"name=b\" is not mounted here"));
        assert!(here.is_own(&cg("name=a", "/")));
        assert!(!here.is_own(&cg("", "/")));
    }

    #[test]
    fn roots_move_v1_cgroups_and_name_v2_only_by_name() {
        let roots = [
            CgroupRoot {
                hierarchy: None,
                path: b"/new".to_vec(),
            },
            CgroupRoot {
                hierarchy: Some("name=a".into()),
                path: b"/".to_vec(),
            },
        ];
        let here = Here {
            own: vec![("cpu".into(), b"/new/x".to_vec())],
            mounts: Vec::new().into(),
            roots: &roots,
        };
        assert_eq!(here.place(&cg("cpu", "/x")), cg("cpu", "/new/x"));
        assert_eq!(here.place(&cg("cpu", "/")), cg("cpu", "/new"));
        assert_eq!(here.place(&cg("name=a", "/x")), cg("name=a", "/x"));
        assert_eq!(here.place(&cg("", "/x")), cg("", "/x"));
        assert!(here.is_own(&cg("cpu", "/x")));
    }
}
