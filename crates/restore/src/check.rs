//! check(): everything that would stop a restore here, found before
//! anything is touched.

use crate::error::os_msg;
use crate::fds::{self, place, plan_tree as plan_tree_fds, strip_deleted, FdEnv, FdPlan};
use crate::mem::layout::{pair_vdso, parse_maps};
use crate::mem::{plan_memory_shared, shared_objects, vmas::Backing, MemPlan};
use crate::process::creds::{creds_differ, own_creds, OwnCreds};
use crate::process::{rlimits, timers};
use crate::stub::holder_with;
use crate::tree::plan_tree;
use crate::{Report, RestoreOptions};
use ckpt_image::{Arch, FileIdentity, Image, ImageReader, Process, ReadAt, Registers, RunKind};
use ckpt_sys::creds::{self, FsIds, FsSwitch};
use ckpt_sys::{mm, proc, ptrace};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;

/// Capabilities a restorer needs to restore another user's process (which
/// it then opens the files of with that user's rights, see [`open_as`]).
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_RAWIO: u32 = 17;

/// A path the restore opens, for the access check: (what, path, access(2)
/// mode).
pub(crate) type AccessItem = (String, CString, i32);

/// What the check reads of this machine and of the restorer once for all
/// the processes of an image (each process of a tree would read the
/// same), and the files compared so far with their findings (a tree's
/// processes map the same files).
struct Host<'r> {
    mmap_min_addr: u64,
    pid_max: i64,
    limits: rlimits::OwnLimits,
    cgroups: crate::process::cgroup::Here<'r>,
    /// (what, identity, mapped privately) -> what [`file_state`] found.
    files: Vec<((String, FileIdentity, bool), Report)>,
}

impl<'r> Host<'r> {
    fn read(opts: &'r RestoreOptions) -> Host<'r> {
        Host {
            mmap_min_addr: mmap_min_addr(),
            pid_max: pid_max(),
            limits: rlimits::OwnLimits::read(),
            cgroups: crate::process::cgroup::Here::read(&opts.cgroup_roots),
            files: Vec::new(),
        }
    }

    /// [`file_state`], once per file (its findings repeated for the
    /// processes after the first).
    fn file_state(
        &mut self,
        what: &str,
        id: &FileIdentity,
        private: bool,
        force: bool,
        r: &mut Report,
    ) {
        let known = self
            .files
            .iter()
            .find(|((w, i, p), _)| w == what && *p == private && i == id);
        let found = match known {
            Some((_, found)) => found,
            None => {
                let mut found = Report::default();
                file_state(what, id, private, force, &mut found);
                self.files
                    .push(((what.to_string(), id.clone(), private), found));
                &self.files[self.files.len() - 1].1
            }
        };
        r.errors.extend(found.errors.iter().cloned());
        r.warnings.extend(found.warnings.iter().cloned());
    }
}

/// The access(2) mode an open with `flags` needs.
pub(crate) fn access_mode(flags: i32) -> i32 {
    if flags & libc::O_PATH != 0 {
        libc::F_OK
    } else {
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => libc::W_OK,
            libc::O_RDWR => libc::R_OK | libc::W_OK,
            _ => libc::R_OK,
        }
    }
}

/// Compare a saved file identity with the file now at its path: what
/// identifies its contents (size, mtime, ctime, which no one can set,
/// inode and its generation) must be the same, else the restored process
/// would run other code or data than it had.
/// A file mapped only shared (`private` false) holds its own data: a
/// change is a warning, unless it is no regular file any more. Refusals
/// become loud warnings with `force`.
fn file_state(what: &str, id: &FileIdentity, private: bool, force: bool, report: &mut Report) {
    let path = String::from_utf8_lossy(strip_deleted(&id.path)).into_owned();
    let m = match std::fs::metadata(&path) {
        Err(e) => {
            report
                .errors
                .push(format!("{what}: {path}: {}", os_msg(&e)));
            return;
        }
        Ok(m) => m,
    };
    let mut diffs = Vec::new();
    let mut strict = private;
    if !m.is_file() {
        diffs.push("not a regular file now".to_string());
        strict = true;
    } else if id.size == 0 && id.mtime_ns == 0 && id.ctime_ns == 0 {
        return; // nothing saved to compare with
    }
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    if m.size() != id.size {
        diffs.push(format!("size {} -> {}", id.size, m.size()));
    }
    if ns(m.mtime(), m.mtime_nsec()) != id.mtime_ns {
        diffs.push("modification time".to_string());
    }
    if id.ctime_ns != 0 && ns(m.ctime(), m.ctime_nsec()) != id.ctime_ns {
        diffs.push("change time (written or replaced in place)".to_string());
    }
    if id.inode != 0 && m.ino() != id.inode {
        diffs.push(format!("inode {} -> {} (another file)", id.inode, m.ino()));
    } else if let Some(g) = id.generation {
        let now = std::fs::File::open(&path)
            .ok()
            .and_then(|f| ckpt_sys::fs::inode_generation(std::os::fd::AsRawFd::as_raw_fd(&f)).ok());
        if now.is_some_and(|n| n != g) {
            diffs.push("inode generation (another file)".to_string());
        }
    }
    if diffs.is_empty() {
        return;
    }
    let msg = format!(
        "{what}: {path} is not the file that was saved ({}): the restored process would run with other code or data",
        diffs.join(", ")
    );
    if !strict {
        report.warnings.push(format!(
            "{what}: {path} changed since the dump ({}); it is mapped shared: the process sees it as it is now",
            diffs.join(", ")
        ));
    } else if force {
        report.warnings.push(format!("--force-files: {msg}"));
    } else {
        report
            .errors
            .push(format!("{msg}; --force-files restores with it anyway"));
    }
}

fn local_cpu_flags() -> &'static BTreeSet<String> {
    // Read once: the flags do not change while the machine runs, and
    // /proc/cpuinfo is slow to read (a check of a tree needs it per
    // process, for the address space size).
    static FLAGS: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    })
}

/// Ids the restored process needs, and who holds them now. `groups`:
/// the groups and sessions of /proc, scanned once for all the processes
/// of a restore (None until needed).
pub(crate) fn taken_ids(
    p: &Process,
    groups: &mut Option<crate::stub::Groups>,
) -> Vec<(i32, &'static str, String, bool)> {
    let mut out = Vec::new();
    for (i, t) in p.threads.iter().enumerate() {
        let id = if i == 0 { p.pid } else { t.tid };
        if let Some((holder, zombie)) = holder_with(id, groups) {
            out.push((id, if i == 0 { "pid" } else { "tid" }, holder, zombie));
        }
    }
    if p.threads.is_empty() {
        if let Some((holder, zombie)) = holder_with(p.pid, groups) {
            out.push((p.pid, "pid", holder, zombie));
        }
    }
    out
}

/// Check the image can be restored here (see [`crate::check()`]).
pub fn check<R: ReadAt>(reader: &ImageReader<R>, opts: &RestoreOptions) -> Report {
    check_and_open_as(reader, opts).0
}

/// The result of [`check_once`]: the report, and what the restore that
/// follows needs of it ([`crate::restore_checked`]).
#[derive(Debug)]
pub struct Checked {
    pub report: Report,
    pub(crate) as_saved: Option<FsIds>,
}

/// [`check`] for a restore that follows at once: its result is handed to
/// [`crate::restore_checked`], which does not check again.
pub fn check_once<R: ReadAt>(reader: &ImageReader<R>, opts: &RestoreOptions) -> Checked {
    let (report, as_saved) = check_and_open_as(reader, opts);
    Checked { report, as_saved }
}

/// [`check`], and the ids the restore is to open the image's paths with
/// (see [`open_as`]). Each process of the image is checked; a finding
/// several processes share is said once, with their pids.
pub(crate) fn check_and_open_as<R: ReadAt>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
) -> (Report, Option<FsIds>) {
    let mut r = Report::default();
    let image = reader.image();
    // The groups and sessions of live processes (one pass over /proc, for
    // saved ids that are free as pids): read meanwhile.
    let scan = std::thread::Builder::new()
        .name("ckpt-groups".into())
        .spawn(crate::stub::Groups::scan)
        .ok();
    let tree = plan_tree(image);
    r.errors.extend(tree.errors.iter().cloned());
    r.warnings.extend(tree.warnings.iter().cloned());
    if tree.nodes.is_empty() || !r.errors.is_empty() {
        return (r, None);
    }
    let live: Vec<&Process> = tree
        .nodes
        .iter()
        .filter(|n| n.zombie.is_none())
        .map(|n| &image.processes[n.image])
        .collect();
    let root = &image.processes[0];
    let own = own_creds();
    check_machine(image, &live, &mut r);
    if let Some(first) = live.first() {
        check_vdso(reader, first, &mut r);
    }
    // The fds of the whole tree, and what the processes map of each other's.
    let procs: Vec<&Process> = image.processes.iter().collect();
    let keep = shared_objects(image);
    let fds = plan_tree_fds(
        image,
        &procs,
        &tree.table_owners(),
        &keep,
        &FdEnv {
            tcp_close: opts.tcp_close,
            ..FdEnv::for_restore(opts)
        },
        &mut |_| Ok(Vec::new()),
    );
    let cgroup_dirs = crate::process::cgroup::will_make(image, opts);
    check_fds(&fds, &cgroup_dirs, &mut r);
    if !opts.tcp_close {
        fds::check_net(&fds, &mut r);
    }
    for p in &live {
        fds::check_terminals(image, p, &mut r);
    }
    fds::check_image_terminals(image, opts, &mut r);
    let mut tree = tree;
    r.warnings
        .extend(fds::adjust_tree(&mut tree, &opts.terminal, &fds));
    let shared: BTreeMap<u64, i32> = fds
        .keep
        .iter()
        .enumerate()
        .map(|(j, &(_, id))| (id, fds.stage + place::CTL_KEEP + j as i32))
        .collect();
    // Whose rights bound what the image may ask (spec/security.md §3).
    let who = requester(reader, opts, &own);
    let as_saved = open_as(root, &own, || who == Requester::Restorer);
    let mut each = PerProcess::default();
    let mut groups = scan.and_then(|h| h.join().ok());
    let mut host = Host::read(opts);
    for p in &live {
        let mut pr = Report::default();
        check_chain(reader, p, &mut pr);
        check_ids(p, opts, &mut groups, &mut pr);
        check_process(
            image,
            p,
            &fds,
            &shared,
            (&own, &who),
            as_saved.as_ref(),
            (opts, &mut host),
            &mut pr,
        );
        each.add(p.pid, pr);
    }
    each.merge_into(image.processes.len() > 1, &mut r);
    fds::check_creating(&fds, &mut r);
    // A unix socket to be bound where a live one listens: the restore
    // would take its name away (whoever restores).
    fds::check_names(&fds, &mut r);
    crate::process::sysv::check(reader, &mut r);
    tracing::debug!(
        errors = r.errors.len(),
        warnings = r.warnings.len(),
        "checked"
    );
    (r, as_saved)
}

/// An incremental image needs its chain of parent images.
fn check_chain<R: ReadAt>(reader: &ImageReader<R>, p: &Process, r: &mut Report) {
    let in_parent = p.memory.iter().any(|m| m.kind == RunKind::Parent);
    if let (true, Some(e)) = (in_parent, reader.chain_error()) {
        r.errors.push(format!(
            "the image is incremental and its parent images cannot be read: {e}"
        ));
    }
}

/// Findings of each process, said once for all the processes that share
/// one ("pids 12, 13: ...").
#[derive(Default)]
struct PerProcess {
    /// (message, is an error, pids), in the order first found.
    found: Vec<(String, bool, Vec<i32>)>,
}

impl PerProcess {
    fn add(&mut self, pid: i32, r: Report) {
        let all = r
            .errors
            .into_iter()
            .map(|e| (e, true))
            .chain(r.warnings.into_iter().map(|w| (w, false)));
        for (m, err) in all {
            match self.found.iter_mut().find(|(f, e, _)| *f == m && *e == err) {
                Some((_, _, pids)) => pids.push(pid),
                None => self.found.push((m, err, vec![pid])),
            }
        }
    }

    fn merge_into(self, tree: bool, r: &mut Report) {
        for (m, err, pids) in self.found {
            let named = pids.len() == 1
                && (m.starts_with(&format!("pid {} ", pids[0]))
                    || m.starts_with(&format!("pid {}:", pids[0])));
            let m = if !tree || named {
                m
            } else if pids.len() == 1 {
                format!("pid {}: {m}", pids[0])
            } else {
                let mut list: Vec<String> = pids.iter().take(5).map(|p| p.to_string()).collect();
                if pids.len() > 5 {
                    list.push(format!("... ({} processes)", pids.len()));
                }
                format!("pids {}: {m}", list.join(", "))
            };
            if err {
                r.errors.push(m);
            } else {
                r.warnings.push(m);
            }
        }
    }
}

/// The fd plan's own findings, the paths it opens, and the fds the stubs
/// need open at once against RLIMIT_NOFILE (they raise their soft limit
/// to the hard one).
fn check_fds(fds: &FdPlan, cgroup_dirs: &[std::path::PathBuf], r: &mut Report) {
    r.errors.extend(fds.errors.iter().cloned());
    r.warnings.extend(fds.warnings.iter().cloned());
    // Sizes of the regular files opened, for the offsets below.
    let mut sizes: std::collections::HashMap<&[u8], u64> = Default::default();
    for (what, raw) in &fds.opens {
        let path = String::from_utf8_lossy(raw);
        // A dangling symlink is fine to open with O_PATH|O_NOFOLLOW (the
        // open itself reports any other use).
        match std::fs::metadata(&*path) {
            Ok(m) if m.is_file() => {
                sizes.insert(raw, m.len());
            }
            Ok(_) => {}
            Err(e) => {
                // In a cgroup directory the restore makes first.
                let made = cgroup_dirs
                    .iter()
                    .any(|d| std::path::Path::new(&*path).starts_with(d));
                if !made
                    && !std::fs::symlink_metadata(&*path).is_ok_and(|m| m.file_type().is_symlink())
                {
                    r.errors.push(format!("{what}: {}", os_msg(&e)));
                }
            }
        }
    }
    for (what, path, size, pos) in &fds.offsets {
        if let Some(&now) = sizes.get(&path[..]).filter(|&&now| now < *pos) {
            r.warnings.push(format!(
                "{what}: the file is {now} bytes now and was {size} at the dump: the fd's offset {pos} is past its end (truncated or replaced since the dump)"
            ));
        }
    }
    let need = place::fds_needed(fds);
    if let Ok((_, hard)) = proc::prlimit(0, libc::RLIMIT_NOFILE, None) {
        if need > hard {
            let most = fds
                .procs
                .iter()
                .max_by_key(|p| p.places.len())
                .map(|p| format!(" (pid {} has {} fds)", p.pid, p.places.len()))
                .unwrap_or_default();
            r.errors.push(format!(
                "restoring needs {need} fds open at once{most}, over this restorer's hard limit of {hard} (RLIMIT_NOFILE): raise it (ulimit -Hn) first"
            ));
        }
    }
}

/// Everything of one live process: files, ids, timers, limits,
/// credentials, what its image may ask for, seccomp.
#[allow(clippy::too_many_arguments)]
fn check_process(
    image: &Image,
    p: &Process,
    fds: &FdPlan,
    shared: &BTreeMap<u64, i32>,
    (own, who): (&OwnCreds, &Requester),
    as_saved: Option<&FsIds>,
    (opts, host): (&RestoreOptions, &mut Host<'_>),
    r: &mut Report,
) {
    let mem = check_files(image, p, shared, (opts.force_files, host), r);
    crate::mem::vmas::check_addresses(
        p,
        task_size(),
        host.mmap_min_addr,
        own.has_cap(CAP_SYS_RAWIO),
        r,
    );
    timers::check(p, r);
    fds::locks::check(image, p, r);
    rlimits::check(p, own, &host.limits, r);
    crate::process::creds::check_requester(p, who, own, r);
    let threads_differ = p.threads.iter().any(|t| t.creds.is_some());
    if (creds_differ(p, own) || threads_differ)
        && !(own.has_cap(CAP_SETUID) && own.has_cap(CAP_SETGID))
    {
        let c = &p.creds;
        r.errors.push(format!(
            "the process ran as uid {} gid {} (groups {:?}){}; the restorer (uid {} gid {}) cannot switch to them",
            c.euid,
            c.egid,
            c.groups,
            if threads_differ { ", some threads with other ids" } else { "" },
            own.uids[1],
            own.gids[1]
        ));
    }
    security(p, own, fds, &mem, (as_saved, host.pid_max), r);
    crate::process::seccomp::check(image, p, r);
    if !opts.ignore_cgroups {
        let for_user = match who {
            Requester::Restorer => None,
            Requester::User(u) | Requester::Nobody { uid: u, .. } => Some(*u),
        };
        crate::process::cgroup::check(p, &host.cgroups, for_user, r);
    }
}

/// The machine: architecture, page size, XSAVE features, CPU flags.
fn check_machine(image: &Image, live: &[&Process], r: &mut Report) {
    if image.host.arch != Arch::X8664 {
        r.errors.push(format!(
            "the image is for {:?}; this machine is x86_64",
            image.host.arch
        ));
    }
    let page = mm::page_size();
    if image.host.page_size != 0 && u64::from(image.host.page_size) != page {
        r.errors.push(format!(
            "the image has {}-byte pages; this machine has {page}",
            image.host.page_size
        ));
    }
    let (xcr0, _) = ptrace::xsave_info();
    let missing = image.host.cpu.xcr0 & !xcr0;
    if missing != 0 {
        r.errors.push(format!(
            "the image's CPU enabled XSAVE features {:#x} (XCR0 {:#x}) that this machine lacks (XCR0 {xcr0:#x}); its code may use them",
            missing, image.host.cpu.xcr0
        ));
    }
    let task_size = task_size();
    for t in live.iter().flat_map(|p| &p.threads) {
        crate::process::thread::check_registers(t, xcr0, task_size, &mut r.errors);
        match &t.regs {
            Registers::X8664(x) => {
                if x.xfeatures & !xcr0 != 0 {
                    r.errors.push(format!(
                        "thread {}: its register state uses XSAVE features {:#x} this machine lacks",
                        t.tid,
                        x.xfeatures & !xcr0
                    ));
                }
            }
            Registers::None => r
                .errors
                .push(format!("thread {}: no registers saved", t.tid)),
            other => r.errors.push(format!(
                "thread {}: registers of kind {}, which this restore does not know",
                t.tid,
                other.name()
            )),
        }
    }
    for p in live.iter().filter(|p| p.threads.is_empty()) {
        r.errors.push(format!("pid {}: no threads saved", p.pid));
    }
    if image.host.cpu.flags.is_empty() {
        return;
    }
    let local = local_cpu_flags();
    if local.is_empty() {
        return;
    }
    let miss: Vec<&String> = image
        .host
        .cpu
        .flags
        .iter()
        .filter(|f| !local.contains(*f))
        .collect();
    if !miss.is_empty() {
        r.warnings.push(format!(
            "this CPU lacks flags the dump's CPU had: {}",
            miss.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
}

/// The end of the user address space (TASK_SIZE_MAX): 47 bits, or 56
/// with 5-level paging (the kernel leaves the CPU's la57 flag only then).
pub(crate) fn task_size() -> u64 {
    let page = mm::page_size();
    if local_cpu_flags().contains("la57") {
        (1u64 << 56) - page
    } else {
        (1u64 << 47) - page
    }
}

/// kernel.pid_max: the largest pid (the kernel's limit when unreadable).
fn pid_max() -> i64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// vm.mmap_min_addr: mappings below it need CAP_SYS_RAWIO.
pub(crate) fn mmap_min_addr() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65536)
}

/// The vdso: same layout as ours (the stub is a fork of us), same code if
/// saved; and the kernel release.
fn check_vdso<R: ReadAt>(reader: &ImageReader<R>, p: &Process, r: &mut Report) {
    let image = reader.image();
    let own_maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap_or_default());
    match pair_vdso(&p.vmas, &own_maps) {
        Err(e) => r.errors.push(e),
        Ok(pairs) => {
            if let Some((mine, saved)) = pairs.iter().find(|(m, _)| m.name == "[vdso]") {
                let len = (saved.end - saved.start) as usize;
                let mut theirs = vec![0u8; len];
                if reader.read_memory(p.pid, saved.start, &mut theirs).is_ok() {
                    let ours =
                        mm::ProcMem::open(proc::getpid()).and_then(|m| m.read_vec(mine.start, len));
                    if let Ok(ours) = ours {
                        if ours != theirs && theirs.iter().any(|&b| b != 0) {
                            r.errors.push(format!(
                                "the vdso of this kernel ({}) differs from the image's ({}): the saved code calls into it at fixed offsets",
                                kernel_release(),
                                image.host.kernel_release
                            ));
                        }
                    }
                }
            }
        }
    }
    if !image.host.kernel_release.is_empty() && image.host.kernel_release != kernel_release() {
        r.warnings.push(format!(
            "dumped on kernel {}, restoring on {}",
            image.host.kernel_release,
            kernel_release()
        ));
    }
}

/// The files of one process: the executable, mapped files, the working
/// directory, the root. Returns the memory plan for the security checks.
fn check_files(
    image: &Image,
    p: &Process,
    shared: &BTreeMap<u64, i32>,
    (force, host): (bool, &mut Host<'_>),
    r: &mut Report,
) -> MemPlan {
    if p.exe.path.is_empty() {
        r.warnings
            .push("the image does not name the executable".into());
    } else if p.exe.deleted {
        r.warnings.push(format!(
            "the executable {} was deleted; /proc/PID/exe will not point at it",
            String::from_utf8_lossy(&p.exe.path)
        ));
    } else {
        host.file_state("executable", &p.exe, true, force, r);
    }
    let mem = plan_memory_shared(image, p, mm::page_size(), shared);
    r.errors.extend(mem.errors.iter().cloned());
    r.warnings.extend(mem.warnings.iter().cloned());
    let mut seen = BTreeSet::new();
    for (what, id) in &mem.files {
        if seen.insert(id.path.clone()) {
            let private = mem.private_files.contains(&id.path);
            host.file_state(what, id, private, force, r);
        }
    }
    if !p.cwd.is_empty() && !p.cwd_identity.deleted {
        existing_dir("working directory", &p.cwd, r);
    }
    if !p.root.is_empty() && p.root != b"/" {
        existing_dir("(chroot) root directory", &p.root, r);
    }
    mem
}

/// An error unless `path` is a directory here ("working directory /x:
/// not a directory").
fn existing_dir(what: &str, path: &[u8], r: &mut Report) {
    let path = String::from_utf8_lossy(path);
    match std::fs::metadata(&*path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => r.errors.push(format!("{what} {path}: not a directory")),
        Err(e) => r.errors.push(format!("{what} {path}: {}", os_msg(&e))),
    }
}

/// The saved pid and tids: free, held by a zombie about to go, or taken.
fn check_ids(
    p: &Process,
    opts: &RestoreOptions,
    groups: &mut Option<crate::stub::Groups>,
    r: &mut Report,
) {
    for (id, kind, holder, zombie) in taken_ids(p, groups) {
        if opts.new_pid {
            r.warnings.push(format!(
                "{kind} {id} is in use by {holder}: the process gets new ids (glibc's cached thread ids will then be stale)"
            ));
        } else if zombie {
            r.warnings.push(format!(
                "{kind} {id} is held by {holder}; restore waits up to {} s for it to be reaped",
                crate::ZOMBIE_WAIT.as_secs()
            ));
        } else {
            r.errors.push(format!("{kind} {id} is in use by {holder}"));
        }
    }
}

/// The ids the restore opens the image's paths with (files, mapped files,
/// the executable, the working directory), where they are not the
/// restorer's own: the saved process's fs uid, fs gid and groups when it
/// ran as another user (and the restorer may switch to them) and the image
/// is not the restorer's own (`restorers_own`, asked only then: see
/// [`Requester`]). None: the restorer's own ids, for its own
/// process, for an image it wrote itself and vouches for, and for a
/// restorer without privileges (which cannot restore another user's
/// process at all). spec/security.md, section 3.
fn open_as(p: &Process, own: &OwnCreds, restorers_own: impl FnOnce() -> bool) -> Option<FsIds> {
    let other_user = creds_differ(p, own) && own.has_cap(CAP_SETUID) && own.has_cap(CAP_SETGID);
    if !other_user || restorers_own() {
        return None;
    }
    let c = &p.creds;
    Some(FsIds {
        uid: c.fsuid,
        gid: c.fsgid,
        groups: c.groups.clone(),
    })
}

/// What an image may not ask for, whoever restores it: the image is data
/// anyone with write access to it could have written (spec/security.md).
fn security(
    p: &Process,
    own: &OwnCreds,
    fds: &FdPlan,
    mem: &MemPlan,
    (as_saved, pid_max): (Option<&FsIds>, i64),
    r: &mut Report,
) {
    check_id_values(p, pid_max, r);
    check_paths(p, fds, mem, r);
    check_caps(p, own, r);
    // Files are opened with the rights of the user the process ran as:
    // - another user's process from an image the restorer did not write
    //   itself: a child takes that user's fs ids and checks each file (the
    //   restore then opens them with those ids too, so that a path changed
    //   since gives nothing more);
    // - a restorer without privileges: its own rights (what the restore
    //   will run into anyway, said before anything starts).
    let check_other = as_saved.is_some();
    let check_own = !creds_differ(p, own) && own.uids[1] != 0;
    if check_other || check_own {
        check_access(p, fds, mem, as_saved, r);
    }
}

/// Ids: real pids, not 0, negative or past pid_max.
fn check_id_values(p: &Process, pid_max: i64, r: &mut Report) {
    let ids =
        std::iter::once(("pid", p.pid)).chain(p.threads.iter().skip(1).map(|t| ("tid", t.tid)));
    for (kind, id) in ids {
        if id <= 0 || i64::from(id) > pid_max {
            r.errors
                .push(format!("{kind} {id} is not a valid id (1..={pid_max})"));
        }
    }
}

/// Paths restore opens: absolute and canonical, as the kernel reports
/// them (an image with `..` or relative paths was crafted).
fn check_paths(p: &Process, fds: &FdPlan, mem: &MemPlan, r: &mut Report) {
    let mut paths: Vec<(String, &[u8])> = Vec::new();
    if !p.exe.path.is_empty() && !p.exe.deleted {
        paths.push(("the executable".into(), &p.exe.path));
    }
    if !p.cwd.is_empty() && !p.cwd_identity.deleted {
        paths.push(("working directory".into(), &p.cwd));
    }
    for (what, path) in &fds.opens {
        paths.push((what.clone(), path));
    }
    for (what, id) in &mem.files {
        paths.push((what.clone(), strip_deleted(&id.path)));
    }
    for f in &mem.recreate {
        paths.push((f.what.clone(), f.path.as_bytes()));
    }
    for (what, path) in &paths {
        if let Some(why) = path_problem(path) {
            r.errors.push(format!(
                "{what}: {}: {why}",
                String::from_utf8_lossy(path).replace('\0', "\\0")
            ));
        }
    }
}

const CAP_SYS_CHROOT: u32 = 18;

/// Capabilities: never more than the restorer holds.
fn check_caps(p: &Process, own: &OwnCreds, r: &mut Report) {
    let c = &p.creds;
    let wanted = c.cap_permitted | c.cap_effective | c.cap_inheritable | c.cap_ambient;
    let extra = wanted & !own.cap_prm;
    if extra != 0 {
        r.errors.push(format!(
            "the process had capabilities {} ({extra:#x}) that the restorer does not have",
            cap_names(extra)
        ));
    }
    if !p.root.is_empty() && p.root != b"/" && own.cap_eff & (1 << CAP_SYS_CHROOT) == 0 {
        r.errors.push(format!(
            "the process ran with root directory {}: putting it back (chroot) needs CAP_SYS_CHROOT, which the restorer does not have",
            String::from_utf8_lossy(&p.root)
        ));
    }
    let bnd_lost = c.cap_bounding & !own.cap_bounding;
    if bnd_lost != 0 && extra == 0 {
        r.warnings.push(format!(
            "the restorer's capability bounding set lacks {} that the process's had",
            cap_names(bnd_lost)
        ));
    }
}

/// Whether the saved user may open every path the restore opens (with
/// that user's ids when `as_saved`, else the restorer's own).
fn check_access(
    p: &Process,
    fds: &FdPlan,
    mem: &MemPlan,
    as_saved: Option<&FsIds>,
    r: &mut Report,
) {
    let c = &p.creds;
    let check_other = as_saved.is_some();
    let mut items: Vec<AccessItem> = Vec::new();
    let cstr = |b: &[u8]| CString::new(b.to_vec()).ok();
    if !p.exe.path.is_empty() && !p.exe.deleted {
        if let Some(cs) = cstr(&p.exe.path) {
            items.push(("the executable".into(), cs, libc::R_OK | libc::X_OK));
        }
    }
    if !p.cwd.is_empty() && !p.cwd_identity.deleted {
        if let Some(cs) = cstr(&p.cwd) {
            items.push(("working directory".into(), cs, libc::X_OK));
        }
    }
    fds::access_items(fds, c, check_other, &mut items, r);
    for s in &mem.steps {
        if let Backing::File { path, flags, .. } = &s.backing {
            items.push((s.what.clone(), path.clone(), access_mode(*flags)));
        }
    }
    let result = if let Some(ids) = as_saved {
        access_as(ids, &items)
    } else {
        Ok(access_here(&items))
    };
    match result {
        Ok(denied) => {
            for (i, errno) in denied {
                let (what, path, mode) = &items[i];
                r.errors.push(format!(
                    "{what}: {}: uid {} gid {} may not {} it ({}){}",
                    path.to_string_lossy(),
                    c.fsuid,
                    c.fsgid,
                    mode_name(*mode),
                    os_msg(&std::io::Error::from_raw_os_error(errno)),
                    if check_other {
                        "; restoring another user's process only opens what that user could"
                    } else {
                        ""
                    }
                ));
            }
        }
        Err(e) => r.errors.push(format!(
            "cannot check the files of uid {} with its own rights: {e}",
            c.fsuid
        )),
    }
}

/// access(2) of each item with this process's own (real) ids.
fn access_here(items: &[AccessItem]) -> Vec<(usize, i32)> {
    let mut denied = Vec::new();
    for (i, (_, path, mode)) in items.iter().enumerate() {
        if let Err(e) = creds::access(path, *mode) {
            denied.push((i, e.errno().unwrap_or(libc::EACCES)));
        }
    }
    denied
}

/// The owner and mode of the image file being read, when it is one (the
/// reader says: [`ReadAt::file_owner`]); readers of memory buffers have
/// no file.
fn image_file<R: ReadAt>(reader: &ImageReader<R>) -> Option<(u32, u32)> {
    reader.source().file_owner()
}

/// Who a restore is for: whose rights bound what the image may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requester {
    /// The restorer itself: an image file of its own (owned by its
    /// effective uid, writable by nobody else: it wrote it and vouches for
    /// it), or an image its caller gave as bytes.
    Restorer,
    /// User `uid`: the owner of the image file, or the user a restore is
    /// made for ([`RestoreOptions::requester`], ckptfs's caller).
    User(u32),
    /// An image file others may have written (group- or world-writable):
    /// nobody answers for it.
    Nobody { uid: u32, mode: u32 },
}

/// Who the restore of `reader` is for (see [`Requester`]).
pub(crate) fn requester<R: ReadAt>(
    reader: &ImageReader<R>,
    opts: &RestoreOptions,
    own: &OwnCreds,
) -> Requester {
    if let Some(uid) = opts.requester {
        return Requester::User(uid);
    }
    match image_file(reader) {
        None => Requester::Restorer,
        Some((uid, mode)) if mode & 0o022 != 0 => Requester::Nobody { uid, mode },
        Some((uid, _)) if uid == own.uids[1] => Requester::Restorer,
        Some((uid, _)) => Requester::User(uid),
    }
}

/// Why `path` is not one the kernel would report for an open file.
pub(crate) fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.contains(&0) {
        return Some("has a NUL byte");
    }
    if !path.starts_with(b"/") {
        return Some("not an absolute path");
    }
    if path.split(|&b| b == b'/').any(|c| c == b"." || c == b"..") {
        return Some("has '.' or '..' components (not a canonical path)");
    }
    None
}

fn mode_name(mode: i32) -> &'static str {
    match mode {
        m if m == libc::R_OK | libc::W_OK => "read and write",
        m if m == libc::W_OK | libc::X_OK => "create files in",
        m if m == libc::R_OK | libc::X_OK => "read and execute",
        m if m == libc::W_OK => "write",
        m if m == libc::X_OK => "enter",
        m if m == libc::F_OK => "reach",
        _ => "read",
    }
}

const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

fn cap_names(bits: u64) -> String {
    (0..64)
        .filter(|i| bits & (1u64 << i) != 0)
        .map(|i| match CAP_NAMES.get(i) {
            Some(n) => format!("cap_{n}"),
            None => format!("cap_{i}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Which of `items` (what, path, access(2) mode) the user of `ids` may
/// not access: a child takes those fs ids and groups and drops its
/// capabilities, as the restore does to open them ([`FsSwitch`]), and asks
/// access(2) with them.
/// Returns (index, errno) of each denied one.
fn access_as(ids: &FsIds, items: &[AccessItem]) -> Result<Vec<(usize, i32)>, String> {
    use ckpt_sys::clone::{fork_with_pid, Forked};
    if items.is_empty() {
        return Ok(Vec::new());
    }
    /// The record that ends the child's answer.
    const DONE: u32 = u32::MAX - 1;
    let switch = FsSwitch::new(ids.clone()).map_err(|e| e.to_string())?;
    let (uid, gid) = (ids.uid, ids.gid);
    let (rfd, wfd) = ckpt_sys::fds::pipe::pipe2(libc::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (rfd, wfd) = (rfd.into_raw_fd(), wfd.into_raw_fd());
    match fork_with_pid(None) {
        Ok(Forked::Child) => {
            // Only async-signal-safe calls here: the caller may have threads.
            let _ = ckpt_sys::fds::close(rfd);
            let report = |i: u32, e: &ckpt_sys::Error| {
                let mut rec = [0u8; 8];
                rec[..4].copy_from_slice(&i.to_le_bytes());
                rec[4..].copy_from_slice(&e.errno().unwrap_or(libc::EACCES).to_le_bytes());
                let _ = ckpt_sys::fds::write_fd(wfd, &rec);
            };
            if let Err(e) = switch.enter() {
                report(u32::MAX, &e);
                proc::exit_now(1)
            }
            for (i, (_, path, mode)) in items.iter().enumerate() {
                if let Err(e) = creds::eaccess(path, *mode) {
                    report(i as u32, &e);
                }
            }
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&DONE.to_le_bytes());
            let _ = ckpt_sys::fds::write_fd(wfd, &rec);
            proc::exit_now(0)
        }
        Ok(Forked::Parent(child)) => {
            let _ = ckpt_sys::fds::close(wfd);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match ckpt_sys::fds::read(rfd, &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.errno() == Some(libc::EINTR) => continue,
                    Err(_) => break,
                }
            }
            let _ = ckpt_sys::fds::close(rfd);
            proc::wait::reap_blocking(child);
            let mut denied = Vec::new();
            for rec in buf.chunks_exact(8) {
                let i = u32::from_le_bytes(rec[..4].try_into().expect("4 bytes"));
                let errno = i32::from_le_bytes(rec[4..].try_into().expect("4 bytes"));
                if i == u32::MAX {
                    return Err(format!(
                        "taking uid {uid} gid {gid}: {}",
                        os_msg(&std::io::Error::from_raw_os_error(errno))
                    ));
                }
                if i == DONE {
                    return Ok(denied);
                }
                denied.push((i as usize, errno));
            }
            // Killed before the end: the rest was not checked.
            Err(format!(
                "the child checking as uid {uid} gid {gid} ended before it was done"
            ))
        }
        Err(e) => {
            let _ = ckpt_sys::fds::close(rfd);
            let _ = ckpt_sys::fds::close(wfd);
            Err(e.to_string())
        }
    }
}

/// This boot's id (/proc/sys/kernel/random/boot_id).
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> OwnCreds {
        OwnCreds {
            uids: [0; 4],
            gids: [0; 4],
            groups: vec![0],
            cap_eff: u64::MAX >> 23,
            cap_prm: u64::MAX >> 23,
            cap_bounding: u64::MAX >> 23,
        }
    }

    fn nobodys() -> Process {
        let mut p = Process::default();
        let c = &mut p.creds;
        (c.ruid, c.euid, c.suid, c.fsuid) = (65534, 65534, 65534, 65534);
        (c.rgid, c.egid, c.sgid, c.fsgid) = (65534, 65534, 65534, 65534);
        c.groups = vec![65534, 100];
        p
    }

    #[test]
    fn paths_are_opened_as_the_saved_user_only_for_others_untrusted_images() {
        let own = root();
        let nobody = nobodys();
        let ids = FsIds {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 100],
        };
        assert_eq!(open_as(&nobody, &own, || false), Some(ids));
        // The restorer's own image: vouched for.
        assert_eq!(open_as(&nobody, &own, || true), None);
        // Its own process: its own rights, and the image is not looked at.
        let mut mine = Process::default();
        mine.creds.groups = vec![0];
        assert_eq!(open_as(&mine, &own, || panic!("asked")), None);
        // A restorer that cannot switch (check refuses such an image).
        let weak = OwnCreds {
            cap_eff: 0,
            ..root()
        };
        assert_eq!(open_as(&nobody, &weak, || false), None);
    }

    #[test]
    fn the_requester_is_the_option_or_the_image_files_owner() {
        let bytes = ckpt_image::fuzzing::sample_image();
        let reader = ImageReader::new(bytes.as_slice()).unwrap();
        let own = root();
        // Bytes of the caller's: the caller answers for them.
        assert_eq!(
            requester(&reader, &RestoreOptions::default(), &own),
            Requester::Restorer
        );
        // ckptfs says for whom.
        let opts = RestoreOptions {
            requester: Some(65534),
            ..Default::default()
        };
        assert_eq!(requester(&reader, &opts, &own), Requester::User(65534));
    }

    #[test]
    fn access_as_answers_with_the_users_rights() {
        ckpt_testkit::require!(ckpt_testkit::require::root());
        let item = |p: &std::ffi::CStr, mode| (String::new(), p.to_owned(), mode);
        let items = [
            item(c"/etc/shadow", libc::R_OK),
            item(c"/tmp", libc::W_OK | libc::X_OK),
            item(c"/etc/passwd", libc::R_OK),
            item(c"/etc/passwd", libc::W_OK),
            item(c"/nonexistent/x", libc::F_OK),
        ];
        let ids = FsIds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        assert_eq!(
            access_as(&ids, &items),
            Ok(vec![
                (0, libc::EACCES),
                (3, libc::EACCES),
                (4, libc::ENOENT)
            ])
        );
        // Root itself may.
        let root = FsIds {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert_eq!(access_as(&root, &items[..4]), Ok(vec![]));
    }
}
