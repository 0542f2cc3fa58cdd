//! check(): everything that would stop a restore here, found before
//! anything is touched.

use crate::error::os_msg;
use crate::plan::fds::{plan_fds, FdEnv};
use crate::plan::memory::{pair_vdso, parse_maps, plan_memory};
use crate::stub::holder_of;
use crate::{Report, RestoreOptions};
use ckpt_image::{Arch, FileIdentity, Image, ImageReader, Process, ReadAt, Registers};
use ckpt_sys::{setup, sys};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_RESOURCE: u32 = 24;

/// The process an image restores: the root of the dump.
pub fn root_process(image: &Image) -> Result<&Process, String> {
    match image.processes.len() {
        0 => Err("the image holds no process".into()),
        1 => Ok(&image.processes[0]),
        n => Err(format!(
            "the image holds {n} processes; this version restores single processes only"
        )),
    }
}

/// Credentials of the calling process, from /proc/self/status.
pub(crate) struct OwnCreds {
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_eff: u64,
}

pub(crate) fn own_creds() -> OwnCreds {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let nums = |k: &str| -> Vec<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let four = |v: Vec<u64>| -> [u32; 4] {
        let mut a = [0u32; 4];
        for (i, x) in v.into_iter().take(4).enumerate() {
            a[i] = x as u32;
        }
        a
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    OwnCreds {
        uids: four(nums("Uid:")),
        gids: four(nums("Gid:")),
        groups: nums("Groups:").into_iter().map(|g| g as u32).collect(),
        cap_eff,
    }
}

impl OwnCreds {
    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }
}

/// Whether the image's credentials differ from the restorer's.
pub(crate) fn creds_differ(p: &Process, own: &OwnCreds) -> bool {
    let c = &p.creds;
    let mine: BTreeSet<u32> = own.groups.iter().copied().collect();
    let theirs: BTreeSet<u32> = c.groups.iter().copied().collect();
    [c.ruid, c.euid, c.suid, c.fsuid] != own.uids
        || [c.rgid, c.egid, c.sgid, c.fsgid] != own.gids
        || mine != theirs
}

/// Compare a saved file identity with the file now at its path.
fn file_state(what: &str, id: &FileIdentity, report: &mut Report) {
    let path = String::from_utf8_lossy(crate::plan::fds::strip_deleted(&id.path)).into_owned();
    match std::fs::metadata(&path) {
        Err(e) => report
            .errors
            .push(format!("{what}: {path}: {}", os_msg(&e))),
        Ok(m) => {
            if id.size == 0 && id.mtime_ns == 0 {
                return;
            }
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            if m.size() != id.size || mtime != id.mtime_ns {
                report.warnings.push(format!(
                    "{what}: {path} changed since the dump (size {} -> {}, mtime {} -> {})",
                    id.size,
                    m.size(),
                    id.mtime_ns,
                    mtime
                ));
            }
        }
    }
}

fn local_cpu_flags() -> BTreeSet<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Ids the restored process needs, and who holds them now.
pub(crate) fn taken_ids(p: &Process) -> Vec<(i32, &'static str, String, bool)> {
    let mut out = Vec::new();
    for (i, t) in p.threads.iter().enumerate() {
        let id = if i == 0 { p.pid } else { t.tid };
        if let Some((holder, zombie)) = holder_of(id) {
            out.push((id, if i == 0 { "pid" } else { "tid" }, holder, zombie));
        }
    }
    if p.threads.is_empty() {
        if let Some((holder, zombie)) = holder_of(p.pid) {
            out.push((p.pid, "pid", holder, zombie));
        }
    }
    out
}

pub fn check<R: ReadAt>(reader: &ImageReader<R>, opts: &RestoreOptions) -> Report {
    let mut r = Report::default();
    let image = reader.image();
    let p = match root_process(image) {
        Ok(p) => p,
        Err(e) => {
            r.errors.push(e);
            return r;
        }
    };

    // Machine.
    if image.host.arch != Arch::X8664 {
        r.errors.push(format!(
            "the image is for {:?}; this machine is x86_64",
            image.host.arch
        ));
    }
    let page = setup::page_size();
    if image.host.page_size != 0 && u64::from(image.host.page_size) != page {
        r.errors.push(format!(
            "the image has {}-byte pages; this machine has {page}",
            image.host.page_size
        ));
    }
    let (xcr0, _) = sys::xsave_info();
    let missing = image.host.cpu.xcr0 & !xcr0;
    if missing != 0 {
        r.errors.push(format!(
            "the image's CPU enabled XSAVE features {:#x} (XCR0 {:#x}) that this machine lacks (XCR0 {xcr0:#x}); its code may use them",
            missing, image.host.cpu.xcr0
        ));
    }
    for t in &p.threads {
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
        }
    }
    if p.threads.is_empty() {
        r.errors.push(format!("pid {}: no threads saved", p.pid));
    }
    if !image.host.cpu.flags.is_empty() {
        let local = local_cpu_flags();
        if !local.is_empty() {
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
    }

    // vdso: same layout as ours (the stub is a fork of us), same code if saved.
    let own_maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap_or_default());
    match pair_vdso(&p.vmas, &own_maps) {
        Err(e) => r.errors.push(e),
        Ok(pairs) => {
            if let Some((mine, saved)) = pairs.iter().find(|(m, _)| m.name == "[vdso]") {
                let len = (saved.end - saved.start) as usize;
                let mut theirs = vec![0u8; len];
                if reader.read_memory(p.pid, saved.start, &mut theirs).is_ok() {
                    let ours = ckpt_sys::remote::ProcMem::open(sys::getpid())
                        .and_then(|m| m.read_vec(mine.start, len));
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

    // Files.
    if p.exe.path.is_empty() {
        r.warnings
            .push("the image does not name the executable".into());
    } else if p.exe.deleted {
        r.warnings.push(format!(
            "the executable {} was deleted; /proc/PID/exe will not point at it",
            String::from_utf8_lossy(&p.exe.path)
        ));
    } else {
        file_state("executable", &p.exe, &mut r);
    }
    let mem = plan_memory(image, p, page);
    r.errors.extend(mem.errors);
    r.warnings.extend(mem.warnings);
    let mut seen = BTreeSet::new();
    for (what, id) in &mem.files {
        if seen.insert(id.path.clone()) {
            file_state(what, id, &mut r);
        }
    }
    let fds = plan_fds(image, p, &FdEnv::current(), &mut |_| Ok(Vec::new()));
    r.errors.extend(fds.errors);
    r.warnings.extend(fds.warnings);
    for (what, path) in &fds.opens {
        let path = String::from_utf8_lossy(path);
        if let Err(e) = std::fs::metadata(&*path) {
            r.errors.push(format!("{what}: {}", os_msg(&e)));
        }
    }
    if !p.cwd.is_empty() {
        let cwd = String::from_utf8_lossy(&p.cwd);
        match std::fs::metadata(&*cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => r
                .errors
                .push(format!("working directory {cwd}: not a directory")),
            Err(e) => r
                .errors
                .push(format!("working directory {cwd}: {}", os_msg(&e))),
        }
    }
    if !p.root.is_empty() && p.root != b"/" {
        r.errors.push(format!(
            "the process ran with root directory {}; this version does not restore a chroot",
            String::from_utf8_lossy(&p.root)
        ));
    }

    // Ids.
    for (id, kind, holder, zombie) in taken_ids(p) {
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
    for t in &p.posix_timers {
        if t.notify == 4 && !p.threads.iter().any(|th| th.tid == t.notify_tid) {
            r.errors.push(format!(
                "POSIX timer {} signals thread {}, which is not in the image",
                t.id, t.notify_tid
            ));
        }
    }

    // Limits and credentials.
    let own = own_creds();
    let can_raise = own.has_cap(CAP_SYS_RESOURCE);
    for l in &p.rlimits {
        let name = if l.name.is_empty() {
            format!("resource {}", l.resource)
        } else {
            format!("RLIMIT_{}", l.name.trim_start_matches("RLIMIT_"))
        };
        match setup::prlimit(0, l.resource, None) {
            Ok((_, hard)) => {
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
    if creds_differ(p, &own) && !(own.has_cap(CAP_SETUID) && own.has_cap(CAP_SETGID)) {
        let c = &p.creds;
        r.errors.push(format!(
            "the process ran as uid {} gid {} (groups {:?}); the restorer (uid {} gid {}) cannot switch to them",
            c.euid, c.egid, c.groups, own.uids[1], own.gids[1]
        ));
    }
    if p.creds.seccomp_mode != 0 {
        r.errors.push(format!(
            "the process runs under seccomp (mode {}); its filters are not in the image and it would run unconfined",
            p.creds.seccomp_mode
        ));
    }
    r
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}
