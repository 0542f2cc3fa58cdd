//! Process state, set by system calls injected into the process being
//! built once its memory is in place: /proc/PID/exe and the mm fields,
//! working directory (a deleted one made again), umask, personality,
//! per-process prctls, membarrier registrations, the audit login uid
//! (here); seccomp filters (seccomp.rs); cgroup membership, v2 and v1,
//! and cgroup namespace (cgroup.rs); SysV IPC objects (sysv.rs, made before the stub);
//! credentials (creds.rs), signal handlers and pending signals
//! (signals.rs), interval and POSIX timers (timers.rs), resource limits
//! (rlimits.rs), and the threads with their state and registers
//! (thread.rs).

pub(crate) mod cgroup;
pub(crate) mod creds;
pub(crate) mod rlimits;
pub(crate) mod seccomp;
pub(crate) mod signals;
pub(crate) mod sysv;
pub(crate) mod thread;
pub(crate) mod timers;

use crate::error::Result;
use crate::mem::layout::Layout;
use crate::remote::{u64s, Allow, Batcher, Remote};
use ckpt_image::Process;
use ckpt_sys::creds::FsSwitch;

const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;

/// mm, exe, cwd, umask, personality, handlers, itimers, limits, prctls.
/// The calls that need no result go into `b` (the caller runs it); the
/// executable is opened and a working directory made before. `last_now`:
/// no credential is changed later, so the flags [`finish`] would set go
/// with these.
pub(crate) fn set_state(
    main: &mut Remote,
    b: &mut Batcher,
    (image, p): (&ckpt_image::Image, &Process),
    scratch: u64,
    (as_saved, last_now, exe_fd): (Option<&FsSwitch>, bool, Option<u64>),
) -> Result<()> {
    let pid = main.tid;
    // A deleted working directory the process also holds at an fd: the
    // one made again for that fd.
    let held = p.cwd_identity.deleted.then(|| {
        p.fds.iter().find(|fd| {
            matches!(image.file(fd.file).map(|f| &f.kind),
                Some(ckpt_image::FileKind::Directory(d))
                    if (d.dev, d.inode) == (p.cwd_identity.dev, p.cwd_identity.inode))
        })
    });
    let held = held.flatten().map(|fd| fd.fd);
    let (opened, chdir) = open_exe_and_chdir(main, (p, held, exe_fd), scratch, as_saved)?;
    let exe_fd = exe_fd.unwrap_or(opened);
    // The rest into the caller's batch (one round trip).
    if chdir {
        let at = b.string(main, &p.cwd)?;
        b.push(
            main,
            format!("chdir to {}", String::from_utf8_lossy(&p.cwd)),
            libc::SYS_chdir,
            &[at],
            Allow::Nothing,
        )?;
    }
    if !p.root.is_empty() && p.root != b"/" {
        // The root after the working directory, whose path is from the
        // old root (the batch so far runs first).
        b.flush(main)?;
        set_root(main, p, scratch, as_saved)?;
    }
    set_mm(main, b, p, scratch, exe_fd)?;
    if exe_fd != u64::from(u32::MAX) {
        b.push(
            main,
            "close".into(),
            libc::SYS_close,
            &[exe_fd],
            Allow::Nothing,
        )?;
    }
    b.push(
        main,
        "umask".into(),
        libc::SYS_umask,
        &[u64::from(p.umask)],
        Allow::Nothing,
    )?;
    b.push(
        main,
        "personality".into(),
        libc::SYS_personality,
        &[u64::from(p.personality)],
        Allow::Nothing,
    )?;
    signals::set_handlers(main, b, p, scratch)?;
    timers::set_itimers(main, b, p, scratch)?;
    set_prctls(main, b, p)?;
    set_membarrier(main, b, p)?;
    if last_now {
        for (name, args) in last_prctls(p, false) {
            b.push(main, name.into(), libc::SYS_prctl, &args, Allow::Nothing)?;
        }
    }
    set_login_uid(main, p, scratch)?;
    // Limits, from outside, only where they differ.
    rlimits::set_limits(pid, p)?;
    rlimits::set_oom_score_adj(pid, p);
    rlimits::set_coredump_filter(pid, p);
    Ok(())
}

/// /proc/PID/exe: an fd of the executable, opened in the target (u32::MAX
/// for none); and the working directory. Both with the saved user's rights
/// where the restore takes them. True when the plain chdir to the saved
/// working directory is left to the caller's batch (with the restorer's
/// rights and batches of calls).
fn open_exe_and_chdir(
    main: &mut Remote,
    (p, held, opened): (&Process, Option<i32>, Option<u64>),
    scratch: u64,
    as_saved: Option<&FsSwitch>,
) -> Result<(u64, bool)> {
    let mut exe_fd = u64::from(u32::MAX);
    let open_exe = opened.is_none() && exe_to_open(p).is_some();
    let plain_cwd = !p.cwd.is_empty() && !p.cwd_identity.deleted && held.is_none();
    let later = plain_cwd && as_saved.is_none() && main.batched();
    if !open_exe && (later || (p.cwd.is_empty() && !p.cwd_identity.deleted)) {
        return Ok((exe_fd, later));
    }
    creds::with_rights(main, as_saved, scratch, |main| {
        if open_exe {
            exe_fd = main.open(
                &format!(
                    "open of the executable {}",
                    String::from_utf8_lossy(&p.exe.path)
                ),
                scratch,
                &p.exe.path,
                libc::O_RDONLY | libc::O_CLOEXEC,
            )?;
        }
        if let Some(fd) = held {
            main.call(
                "fchdir to the deleted working directory",
                libc::SYS_fchdir,
                &[fd as u64],
            )?;
        } else if p.cwd_identity.deleted {
            deleted_cwd(main, p, scratch)?;
        } else if !p.cwd.is_empty() && !later {
            main.write_cstr(scratch, &p.cwd)?;
            main.call(
                &format!("chdir to {}", String::from_utf8_lossy(&p.cwd)),
                libc::SYS_chdir,
                &[scratch],
            )?;
        }
        Ok(())
    })?;
    Ok((exe_fd, later))
}

/// The root directory (chroot), once the files, the executable and the
/// working directory were opened by their paths here; with the saved
/// user's rights where the restore takes them. Nothing to do when the
/// process already has it (one shares it: CLONE_FS).
fn set_root(
    main: &mut Remote,
    p: &Process,
    scratch: u64,
    as_saved: Option<&FsSwitch>,
) -> Result<()> {
    if p.root.is_empty() || p.root == b"/" {
        return Ok(());
    }
    let now = std::fs::read_link(format!("/proc/{}/root", main.tid)).ok();
    if now.is_some_and(|r| r.as_os_str().as_encoded_bytes() == p.root.as_slice()) {
        return Ok(());
    }
    let t = std::time::Instant::now();
    creds::with_rights(main, as_saved, scratch, |main| {
        main.write_cstr(scratch, &p.root)?;
        main.call(
            &format!("chroot to {}", String::from_utf8_lossy(&p.root)),
            libc::SYS_chroot,
            &[scratch],
        )?;
        Ok(())
    })?;
    tracing::debug!(root = %String::from_utf8_lossy(&p.root), elapsed = ?t.elapsed(), "root directory set");
    Ok(())
}

/// A working directory that was deleted: a directory made again next to
/// where it was (or in /tmp) under a free name, with its owner, mode and
/// times, entered, and removed (the process is then in a deleted
/// directory, as saved).
fn deleted_cwd(main: &mut Remote, p: &Process, scratch: u64) -> Result<()> {
    let id = &p.cwd_identity;
    let names = crate::fds::temp_names(crate::fds::strip_deleted(&id.path), id.inode);
    for name in &names {
        let what = |op: &str| {
            format!(
                "{op} of {} (the deleted working directory)",
                name.to_string_lossy()
            )
        };
        main.write_cstr(scratch, name.as_bytes())?;
        let r = main.raw(
            &what("mkdir"),
            libc::SYS_mkdir,
            &[scratch, u64::from(id.mode & 0o7777)],
        )?;
        if r == -(libc::EEXIST as i64) || r == -(libc::EACCES as i64) || r == -(libc::ENOENT as i64)
        {
            continue;
        }
        if r < 0 {
            return Err(crate::error::Error::Io {
                context: format!("thread {}: {}", main.tid, what("mkdir")),
                error: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        let set = (|| {
            main.call(
                &what("lchown"),
                libc::SYS_lchown,
                &[scratch, u64::from(id.uid), u64::from(id.gid)],
            )?;
            main.call(
                &what("chmod"),
                libc::SYS_chmod,
                &[scratch, u64::from(id.mode & 0o7777)],
            )?;
            main.call(&what("chdir"), libc::SYS_chdir, &[scratch])?;
            let times = crate::remote::u64s(&[
                id.atime_ns.div_euclid(1_000_000_000) as u64,
                id.atime_ns.rem_euclid(1_000_000_000) as u64,
                id.mtime_ns.div_euclid(1_000_000_000) as u64,
                id.mtime_ns.rem_euclid(1_000_000_000) as u64,
            ]);
            main.write(scratch + 0x800, &times)?;
            main.call(
                &what("utimensat"),
                libc::SYS_utimensat,
                &[libc::AT_FDCWD as u64, scratch, scratch + 0x800, 0],
            )?;
            Ok(())
        })();
        let rm = main.call(&what("rmdir"), libc::SYS_rmdir, &[scratch]);
        set?;
        rm?;
        return Ok(());
    }
    Err(crate::error::Error::Stub {
        pid: main.tid,
        what: format!(
            "no free name to make the deleted working directory {} again",
            String::from_utf8_lossy(&id.path)
        ),
    })
}

/// membarrier registrations (per address space).
fn set_membarrier(main: &mut Remote, b: &mut Batcher, p: &Process) -> Result<()> {
    // The REGISTER commands, as MEMBARRIER_CMD_GET_REGISTRATIONS reports
    // them: GLOBAL_EXPEDITED, PRIVATE_EXPEDITED, ..._SYNC_CORE, ..._RSEQ.
    for cmd in [1u32 << 2, 1 << 4, 1 << 6, 1 << 8] {
        if p.membarrier & cmd != 0 {
            b.push(
                main,
                format!("membarrier(register {cmd:#x})"),
                libc::SYS_membarrier,
                &[u64::from(cmd), 0, 0],
                Allow::Nothing,
            )?;
        }
    }
    Ok(())
}

/// The audit login uid, where it differs from the stub's (only the
/// process itself may write its /proc/self/loginuid, with
/// CAP_AUDIT_CONTROL to change one already set).
fn set_login_uid(main: &mut Remote, p: &Process, scratch: u64) -> Result<()> {
    let path = format!("/proc/{}/loginuid", main.tid);
    let Ok(now) = std::fs::read_to_string(&path) else {
        return Ok(()); // a kernel without audit: no login uid
    };
    if now.trim().parse::<u32>().ok() == Some(p.login_uid) {
        return Ok(());
    }
    let what = format!("setting the login uid {}", p.login_uid as i32);
    let fd = main.open(
        &what,
        scratch,
        b"/proc/self/loginuid",
        libc::O_WRONLY | libc::O_CLOEXEC,
    )?;
    let text = (p.login_uid as i32).to_string();
    main.write(scratch, text.as_bytes())?;
    let r = main.call(&what, libc::SYS_write, &[fd, scratch, text.len() as u64]);
    main.call("close", libc::SYS_close, &[fd])?;
    r.map(drop)
}

/// The mm fields (code, data, brk, stack, arguments, environment, auxv)
/// and /proc/PID/exe, with PR_SET_MM_MAP.
fn set_mm(
    main: &mut Remote,
    b: &mut Batcher,
    p: &Process,
    scratch: u64,
    exe_fd: u64,
) -> Result<()> {
    let m = &p.mm;
    let auxv: Vec<u64> = m.auxv.iter().flat_map(|&(k, v)| [k, v]).collect();
    // The map points at the auxv: both in one batch.
    b.room(main, &[auxv.len() * 8, 13 * 8])?;
    let auxv_at = if auxv.is_empty() {
        0
    } else {
        b.data(main, &u64s(&auxv), scratch + 0x1000)?
    };
    let mut map = u64s(&[
        m.start_code,
        m.end_code,
        m.start_data,
        m.end_data,
        m.start_brk,
        m.brk,
        m.start_stack,
        m.arg_start,
        m.arg_end,
        m.env_start,
        m.env_end,
        auxv_at,
    ]);
    map.extend_from_slice(&((auxv.len() * 8) as u32).to_ne_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    let at = b.data(main, &map, scratch)?;
    b.push(
        main,
        "prctl(PR_SET_MM_MAP)".into(),
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, at, map.len() as u64, 0],
        Allow::Nothing,
    )
}

/// Timer slack, child subreaper, THP disabled, no_new_privs, where set.
fn set_prctls(main: &mut Remote, b: &mut Batcher, p: &Process) -> Result<()> {
    let mut calls = Vec::new();
    if p.timer_slack_ns != 0 {
        calls.push((
            "prctl(PR_SET_TIMERSLACK)",
            [libc::PR_SET_TIMERSLACK as u64, p.timer_slack_ns, 0, 0, 0],
        ));
    }
    if p.child_subreaper {
        calls.push((
            "prctl(PR_SET_CHILD_SUBREAPER)",
            [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0],
        ));
    }
    if p.thp_disabled {
        calls.push((
            "prctl(PR_SET_THP_DISABLE)",
            [libc::PR_SET_THP_DISABLE as u64, 1, 0, 0, 0],
        ));
    }
    if p.creds.no_new_privs {
        calls.push((
            "prctl(PR_SET_NO_NEW_PRIVS)",
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
        ));
    }
    for (name, args) in calls {
        b.push(main, name.into(), libc::SYS_prctl, &args, Allow::Nothing)?;
    }
    Ok(())
}

/// What is set last, once every thread has its credentials: the dumpable
/// flag and the parent-death signal (credential changes reset both; a
/// change of ids leaves the process dumpable only if fs.suid_dumpable
/// says so: a process saved dumpable is made so again); then the
/// trampoline goes. `set_early`: no credential is changed, and the flags
/// were set with the process state ([`last_prctls`]).
pub(crate) fn finish(
    main: &mut Remote,
    p: &Process,
    l: &Layout,
    set_creds: bool,
    set_early: bool,
) -> Result<()> {
    if !set_early {
        for (name, args) in last_prctls(p, set_creds) {
            main.call(name, libc::SYS_prctl, &args)?;
        }
    }
    // Memory-deny-write-execute once the memory is made: it refuses new
    // executable mappings, and no process can lift it.
    if p.mdwe != 0 {
        main.call(
            "prctl(PR_SET_MDWE)",
            libc::SYS_prctl,
            &[PR_SET_MDWE, u64::from(p.mdwe), 0, 0, 0],
        )?;
    }
    main.call(
        "munmap of the trampoline",
        libc::SYS_munmap,
        &[l.tramp, l.tramp_len],
    )?;
    Ok(())
}

/// prctl(PR_SET_MDWE) (Linux 6.3), which libc may lack.
const PR_SET_MDWE: u64 = 65;

/// The dumpable flag (when it was not, or credentials are set) and the
/// parent-death signal: prctl arguments.
pub(crate) fn last_prctls(p: &Process, set_creds: bool) -> Vec<(&'static str, [u64; 2])> {
    let mut v = Vec::new();
    if !p.dumpable || set_creds {
        v.push((
            "prctl(PR_SET_DUMPABLE)",
            [libc::PR_SET_DUMPABLE as u64, u64::from(p.dumpable)],
        ));
    }
    v.push((
        "prctl(PR_SET_PDEATHSIG)",
        [libc::PR_SET_PDEATHSIG as u64, p.parent_death_signal as u64],
    ));
    v
}

/// The executable to open for /proc/PID/exe (PR_SET_MM_MAP): none when
/// it was deleted, or is the restorer's own (already the stub's).
pub(crate) fn exe_to_open(p: &Process) -> Option<&[u8]> {
    let open = !p.exe.path.is_empty() && !p.exe.deleted && !same_file_as_ours(&p.exe.path);
    open.then_some(&p.exe.path[..])
}

/// Whether `path` is the restorer's own executable (then /proc/PID/exe is
/// already right and PR_SET_MM_MAP could not replace it while it is mapped).
fn same_file_as_ours(path: &[u8]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let p = String::from_utf8_lossy(path);
    match (std::fs::metadata(&*p), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
