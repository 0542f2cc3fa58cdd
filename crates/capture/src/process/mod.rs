//! Process state: identity, memory layout, command line and environment,
//! working directory, credentials (creds.rs), signals (signals.rs), timers
//! (timers.rs), resource limits (rlimits.rs), threads (thread.rs), and the
//! values only the process itself can tell (remote.rs), merged in.

pub(crate) mod cgroup;
pub(crate) mod creds;
pub(crate) mod rlimits;
pub(crate) mod seccomp;
pub(crate) mod shares;
pub(crate) mod signals;
pub(crate) mod sysv;
pub(crate) mod thread;
pub(crate) mod timers;

use crate::error::{IoCtx, Result};
use crate::fds::{identity, strip_deleted};
use crate::procfs::{self, Stat, Status};
use crate::remote::RemoteInfo;
use ckpt_image::{FileIdentity, MmLayout, PosixTimer, Process};
use ckpt_sys::Pid;

/// What /proc tells of the process (its threads, fds, memory and the
/// values asked of it come later).
pub(crate) fn process_state(
    pid: Pid,
    stat: &Stat,
    status: &Status,
    state_before: String,
) -> Result<Process> {
    let p = |name: &str| format!("/proc/{pid}/{name}");
    let personality_path = p("personality");
    let personality = procfs::read_string(pid, &personality_path)?;
    let personality = u32::from_str_radix(personality.trim(), 16).map_err(|_| {
        procfs::parse_err(
            pid,
            &personality_path,
            1,
            format!("{personality:?} is not hex"),
        )
    })?;
    let s = &stat.stat;
    Ok(Process {
        pid,
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        state: state_before,
        comm: stat.comm.clone(),
        exe: file_identity(pid, &p("exe"))?,
        cmdline: procfs::split_nul(&procfs::read(pid, &p("cmdline"))?),
        environ: procfs::split_nul(&procfs::read(pid, &p("environ"))?),
        cwd: procfs::readlink(pid, &p("cwd"))?,
        cwd_identity: dir_identity(pid, &p("cwd"))?,
        cgroup: cgroup::v2_path(pid)?,
        root: procfs::readlink(pid, &p("root"))?,
        umask: status.radix("Umask", 8)? as u32,
        creds: creds::credentials(status)?,
        personality,
        mm: mm_layout(pid, stat)?,
        oom_score_adj: procfs::read_num(pid, &p("oom_score_adj"))?,
        exit_signal: stat.need(s.exit_signal, 38, "exit_signal")?,
        login_uid: login_uid(pid)?,
        coredump_filter: coredump_filter(pid)?,
        ..Default::default()
    })
}

/// A zombie of the tree: what its parent's wait() will want (its wait
/// status, stat field 52) and where it belongs (pid, parent, process
/// group, session); it has no memory, threads or files left.
pub(crate) fn zombie_state(pid: Pid, exit_status: i32) -> Result<Process> {
    let stat = Stat::read(pid, &format!("/proc/{pid}/stat"))?;
    let s = &stat.stat;
    Ok(Process {
        pid,
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        state: "Z".into(),
        comm: stat.comm.clone(),
        exit_status,
        exit_signal: s.exit_signal.unwrap_or(libc::SIGCHLD),
        ..Default::default()
    })
}

/// Where code, data, heap, stack, arguments and environment lie, and the
/// auxiliary vector (brk itself is asked of the process).
fn mm_layout(pid: Pid, stat: &Stat) -> Result<MmLayout> {
    let auxv_raw = procfs::read(pid, &format!("/proc/{pid}/auxv"))?;
    let mut auxv = Vec::new();
    for c in auxv_raw.chunks_exact(16) {
        let k = u64::from_ne_bytes(c[..8].try_into().expect("8 bytes"));
        let v = u64::from_ne_bytes(c[8..].try_into().expect("8 bytes"));
        auxv.push((k, v));
        if k == 0 {
            break;
        }
    }
    let s = &stat.stat;
    Ok(MmLayout {
        start_code: s.startcode,
        end_code: s.endcode,
        start_stack: s.startstack,
        start_data: stat.need(s.start_data, 45, "start_data")?,
        end_data: stat.need(s.end_data, 46, "end_data")?,
        start_brk: stat.need(s.start_brk, 47, "start_brk")?,
        brk: 0,
        arg_start: stat.need(s.arg_start, 48, "arg_start")?,
        arg_end: stat.need(s.arg_end, 49, "arg_end")?,
        env_start: stat.need(s.env_start, 50, "env_start")?,
        env_end: stat.need(s.env_end, 51, "env_end")?,
        auxv,
    })
}

/// The audit login uid; unset (u32::MAX) on a kernel without audit, which
/// has no loginuid file.
fn login_uid(pid: Pid) -> Result<u32> {
    let path = format!("/proc/{pid}/loginuid");
    if !std::path::Path::new(&path).exists()
        && std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return Ok(u32::MAX);
    }
    procfs::read_num(pid, &path)
}

/// /proc/PID/coredump_filter (hexadecimal); 0 if the kernel has none
/// (a process without memory, as the file then reads empty).
fn coredump_filter(pid: Pid) -> Result<u32> {
    let path = format!("/proc/{pid}/coredump_filter");
    let text = procfs::read_string(pid, &path)?;
    let v = text.trim();
    if v.is_empty() {
        return Ok(0);
    }
    u32::from_str_radix(v, 16)
        .map_err(|_| procfs::parse_err(pid, &path, 1, format!("{v:?} is not a hexadecimal number")))
}

/// What the process told of itself (remote.rs), its POSIX timers and the
/// signals pending for it as a whole, merged into `process`.
pub(crate) fn merge_remote(
    process: &mut Process,
    remote: &RemoteInfo,
    timers: Vec<PosixTimer>,
    shared_pending: Vec<ckpt_image::SigInfo>,
) {
    process.mm.brk = remote.brk;
    process.creds.securebits = remote.securebits;
    process.rlimits = remote.rlimits.clone();
    process.sigactions = remote.sigactions.clone();
    process.shared_pending = shared_pending;
    process.itimers = remote.itimers.clone();
    process.posix_timers = timers::with_times(timers, remote);
    process.dumpable = remote.dumpable;
    process.child_subreaper = remote.child_subreaper;
    process.parent_death_signal = remote.pdeathsig;
    process.thp_disabled = remote.thp_disabled;
    process.timer_slack_ns = remote.timer_slack_ns;
    process.mdwe = remote.mdwe;
    process.membarrier = remote.membarrier;
}

/// The identity of a directory a /proc link (cwd) points to: deleted
/// when the link says so or the directory has no links left (rmdir).
fn dir_identity(pid: Pid, link: &str) -> Result<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let target = procfs::readlink(pid, link)?;
    let (path, deleted) = strip_deleted(&target);
    let md = std::fs::metadata(link).ctx(pid, || format!("stat {link}"))?;
    Ok(identity(path, &md, deleted || md.nlink() == 0))
}

/// The identity of the file a /proc link (exe) points to.
fn file_identity(pid: Pid, link: &str) -> Result<FileIdentity> {
    let target = procfs::readlink(pid, link)?;
    let (path, deleted) = strip_deleted(&target);
    let md = std::fs::metadata(link).ctx(pid, || format!("stat {link}"))?;
    let mut id = identity(path, &md, deleted);
    if let Ok(f) = std::fs::File::open(link) {
        crate::fds::add_generation(&mut id, &f);
    }
    Ok(id)
}
