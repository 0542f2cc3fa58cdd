//! Terminals.
//!
//! - A terminal from outside the image (the shell's pty, /dev/tty) is
//!   attached to the restorer's terminal: a new description of the
//!   restorer's fd 0-2 that is a terminal (its own fd number first), else
//!   of /dev/tty; or, with [`crate::Terminal::Path`], to that terminal
//!   (opened with the restorer's rights, not the saved user's).
//! - /dev/console, /dev/ttyN and serial lines are reopened by path, with
//!   the checks any path gets, and must still be the same device.
//! - Pty pairs of the image are `pty.rs`.
//!
//! Sessions (with the tree's setsid/setpgid order, `tree.rs`): a process
//! that led its session with a pty of the image as its controlling
//! terminal takes it again right after its setsid (TIOCSCTTY, before it
//! forks the rest of its session), and each such terminal gets its saved
//! foreground group back once every process exists (TIOCSPGRP by the
//! leader). A shell job (the root of a restore with [`Terminal::Job`])
//! leads its own process group in the restorer's session, so that the
//! restorer can give it the terminal ([`hand_over`]) and act for it
//! towards the shell (the job control of `ckpt restore`); with
//! [`Terminal::Path`] the root leads a new session with that terminal.

use super::pty::{self, role, slave_rdev};
use super::{Builder, FdOp, FdPlan};
use crate::error::os_msg;
use crate::stub::{proc_fd_path, Child};
use crate::tree::{Group, TreePlan};
use crate::{Report, Terminal};
use ckpt_image::{FileKind, Image, Process, Tty, TtyRole};
use ckpt_sys::fds::tty::{self as systty, Termios};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

/// The restorer's terminal the processes are attached to, as a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTerminal {
    /// The saved settings of the terminal, put back when the job gets it.
    pub termios: Option<Termios>,
    /// The process (image index) that led the terminal's foreground group
    /// at the dump, when it is in the image (a vim run by a restored
    /// `bash -i`); None: the root's group gets the terminal.
    pub foreground: Option<usize>,
}

/// What the restorer did with its terminal for the restored process.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    /// The restorer's settings of its terminal before the restore.
    pub own_termios: Termios,
    /// The job's saved settings, put back whenever it gets the terminal.
    pub job_termios: Option<Termios>,
    /// The restored root's group (it leads it).
    pub job_pgrp: i32,
    /// The group the terminal was given to (the job's foreground group).
    pub foreground: i32,
    /// The terminal was given to the job (the restorer held it).
    pub handed: bool,
    /// The terminal given by path (`Terminal::Path`): the job leads a
    /// session of its own there; the restorer has no job control over it.
    pub path: Option<std::path::PathBuf>,
}

/// The restorer's terminal as the fd ops reach it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum TtyTarget {
    /// Its fds 0-2 and /dev/tty.
    #[default]
    Restorer,
    /// A terminal given by path.
    Path(CString),
}

/// Plan description `g`, a saved terminal.
pub(super) fn plan(b: &mut Builder, g: usize, t: &Tty) {
    let what = b.what(g);
    match role(t) {
        TtyRole::Master | TtyRole::Slave if t.pair != 0 => {
            // Made with its pair (pty.rs).
            if b.slot_of[g].is_none() {
                b.error(format!(
                    "{what}: one end of pty pair {}, which was not made",
                    t.pair
                ));
            }
        }
        TtyRole::Master => b.error(format!(
            "{what}: a pty master whose pair is not in the image"
        )),
        TtyRole::Slave if t.hung_up => {
            let (flags, s) = (b.flags(g), b.slot());
            b.op(&what, FdOp::PtyHungUp { slot: s, flags });
            b.set_fl(&what, s, flags);
            b.slot_of[g] = Some(s);
        }
        TtyRole::Console | TtyRole::Vt | TtyRole::Serial => by_path(b, g),
        // /dev/tty of a pair of the image: made with the pair.
        TtyRole::DevTty if b.slot_of[g].is_some() => {}
        TtyRole::DevTty | TtyRole::Slave | TtyRole::Unknown => attach(b, g),
        other => b.error(format!(
            "{what}: a terminal of role {other:?}, which this restore does not know"
        )),
    }
}

/// /dev/console, /dev/ttyN, a serial line: opened again by path (not
/// waiting for a carrier), then the saved status flags.
fn by_path(b: &mut Builder, g: usize) {
    let (what, flags) = (b.what(g), b.flags(g));
    let path = b.groups[g].file.path.clone();
    if let Some(s) = b.open_path(&what, &path, flags | libc::O_NOCTTY | libc::O_NONBLOCK) {
        b.set_fl(&what, s, flags);
        b.slot_of[g] = Some(s);
    }
}

/// A terminal from outside the image: the restorer's, or the one given.
fn attach(b: &mut Builder, g: usize) {
    let (what, flags) = (b.what(g), b.flags(g));
    let flags = flags | libc::O_NOCTTY;
    let s = b.slot();
    if let TtyTarget::Path(p) = &b.env.terminal {
        let path = p.clone();
        b.op(
            &what,
            FdOp::OpenTerminal {
                slot: s,
                path,
                flags,
            },
        );
        b.slot_of[g] = Some(s);
        return;
    }
    let env = b.env;
    let own = b.groups[g]
        .fds
        .iter()
        .map(|f| f.fd)
        .filter(|&n| (0..3).contains(&n))
        .map(|n| n as usize);
    let devtty = matches!(&b.groups[g].file.kind, FileKind::Tty(t) if role(t) == TtyRole::DevTty);
    let pick = own
        .clone()
        .find(|&k| env.std_tty[k])
        .or_else(|| (0..3).find(|&k| env.std_tty[k]));
    match pick {
        Some(k) if !devtty => {
            b.plan.needs_std[k] = true;
            b.op(
                &what,
                FdOp::ReopenStd {
                    slot: s,
                    std: k,
                    flags,
                },
            );
        }
        _ if env.dev_tty => b.op(&what, FdOp::OpenTty { slot: s, flags }),
        _ => {
            b.error(format!(
                "{what}: a terminal, but the restorer has none to attach it to (no tty on its fds 0-2, no /dev/tty); run ckpt restore from a terminal or give --tty PATH"
            ));
            return;
        }
    }
    b.slot_of[g] = Some(s);
}

/// Whether a saved terminal is one the restore attaches to the
/// restorer's (or the given) terminal.
fn is_attached(image: &Image, t: &Tty) -> bool {
    let of_a_pair = role(t) == TtyRole::DevTty
        && t.real_rdev != 0
        && image.ptys.iter().any(|p| slave_rdev(p) == t.real_rdev);
    matches!(role(t), TtyRole::DevTty | TtyRole::Slave | TtyRole::Unknown)
        && t.pair == 0
        && !of_a_pair
}

/// The saved settings and foreground group of the terminal a job is
/// attached to: of the root's controlling terminal if an fd is on it, else
/// of the first one.
fn job_terminal(b: &Builder) -> JobTerminal {
    let ttys: Vec<&Tty> = b
        .groups
        .iter()
        .filter_map(|g| match &g.file.kind {
            FileKind::Tty(t) if is_attached(b.image, t) => Some(t),
            _ => None,
        })
        .collect();
    let root = b.proc;
    let t = ttys
        .iter()
        .find(|t| t.is_controller && t.rdev == root.controlling_tty)
        .or(ttys.iter().find(|t| t.is_controller))
        .or(ttys.first());
    let fg = t.map_or(0, |t| t.foreground_pgrp);
    JobTerminal {
        termios: t.and_then(|t| Termios::from_bytes(&t.termios)),
        foreground: leader_of(b, fg),
    }
}

/// The image index of the process that leads group `pgrp`.
fn leader_of(b: &Builder, pgrp: i32) -> Option<usize> {
    if pgrp <= 0 {
        return None;
    }
    b.procs.iter().position(|p| p.pid == pgrp && p.pgid == pgrp)
}

/// The pair of the image that is a process's controlling terminal.
fn ctty_pair(image: &Image, p: &Process) -> Option<u32> {
    if p.controlling_tty == 0 {
        return None;
    }
    image
        .ptys
        .iter()
        .find(|q| slave_rdev(q) == p.controlling_tty)
        .map(|q| q.id)
}

/// A slot holding a slave description of pair `pair` (made if no fd of
/// the image holds one).
fn slave_slot(b: &mut Builder, ptys: &pty::State, pair: u32) -> Option<usize> {
    let held = b
        .groups
        .iter()
        .enumerate()
        .find(|(_, g)| {
            matches!(&g.file.kind, FileKind::Tty(t) if t.pair == pair && role(t) == TtyRole::Slave)
        })
        .and_then(|(g, _)| b.slot_of[g]);
    held.or_else(|| pty::extra_slave(b, ptys, pair))
}

/// The controlling terminals and foreground groups of the sessions, and
/// whether the root is attached to the restorer's terminal as a job (see
/// the module documentation). Runs after the pairs are planned.
pub(super) fn plan_sessions(b: &mut Builder, ptys: &pty::State) {
    if let TtyTarget::Path(path) = &b.env.terminal {
        // The root leads a session of its own on the given terminal.
        let path = path.clone();
        let s = b.slot();
        let what = format!("controlling terminal {}", path.to_string_lossy());
        b.op(
            &what,
            FdOp::OpenTerminal {
                slot: s,
                path,
                flags: libc::O_RDWR | libc::O_NOCTTY,
            },
        );
        b.plan.procs[0].ctty = Some(s);
        b.plan.job_terminal = Some(job_terminal(b));
    }
    let procs = b.procs;
    for (i, p) in procs.iter().enumerate() {
        let Some(pair) = ctty_pair(b.image, p) else {
            continue;
        };
        if p.sid != p.pid {
            if !procs.iter().any(|q| q.pid == p.sid) {
                b.error(format!(
                    "pid {}: its controlling terminal is pty pair {pair} of the image, but the leader of its session (pid {}) is not in the image",
                    p.pid, p.sid
                ));
            }
            continue; // it has it from its session's leader
        }
        if i == 0 && b.plan.procs[0].ctty.is_some() {
            b.error(format!(
                "--tty: pid {} has a pty of the image as its controlling terminal",
                p.pid
            ));
            continue;
        }
        match slave_slot(b, ptys, pair) {
            Some(s) => b.plan.procs[i].ctty = Some(s),
            None => b.error(format!(
                "pid {}: its controlling terminal (pty pair {pair}) was not made",
                p.pid
            )),
        }
    }
    plan_foregrounds(b, ptys);
    let root = b.proc;
    let attached = b
        .groups
        .iter()
        .any(|g| matches!(&g.file.kind, FileKind::Tty(t) if is_attached(b.image, t)));
    let external_ctty = root.controlling_tty != 0 && ctty_pair(b.image, root).is_none();
    if b.plan.job_terminal.is_none() && (attached || external_ctty) {
        b.plan.job_terminal = Some(job_terminal(b));
    }
}

/// Each pair's saved foreground group, set by its session's leader once
/// every process exists (TIOCSCTTY already made the leader's own group
/// the foreground).
fn plan_foregrounds(b: &mut Builder, ptys: &pty::State) {
    let image = b.image;
    for pair in &image.ptys {
        if pair.sid <= 0 || pair.foreground_pgrp <= 0 || pair.foreground_pgrp == pair.sid {
            continue;
        }
        let Some(leader) = b.procs.iter().position(|p| p.pid == pair.sid) else {
            continue;
        };
        match leader_of(b, pair.foreground_pgrp) {
            Some(fg) => {
                if let Some(s) = slave_slot(b, ptys, pair.id) {
                    b.plan.procs[leader].foreground.push((s, fg));
                }
            }
            None => b.warning(format!(
                "pty /dev/pts/{}: its foreground group {} at the dump is not in the image; the group of its session's leader (pid {}) gets it",
                pair.index, pair.foreground_pgrp, pair.sid
            )),
        }
    }
}

/// The root's session and group as the terminal option wants them (the
/// tree plan gives every process its saved ones): a job leads its own
/// group in the restorer's session, even if it led its session (its
/// session's terminal is the restorer's now: warned); with a terminal by
/// path it leads a new session. Returns the warnings.
pub(crate) fn adjust_tree(tree: &mut TreePlan, terminal: &Terminal, plan: &FdPlan) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(root) = tree.nodes.first_mut() else {
        return warnings;
    };
    match terminal {
        Terminal::Caller => {}
        Terminal::Job => {
            if root.setsid && plan.job_terminal.is_some() {
                root.setsid = false;
                warnings.push(format!(
                    "pid {} led its session; it comes back as a job in the restorer's session (getsid() differs)",
                    root.pid
                ));
            }
            if !root.setsid {
                root.group = Group::Own;
                root.group_late = false;
            }
        }
        Terminal::Path(_) => {
            root.setsid = true;
            root.group = Group::Inherit;
            root.group_late = false;
        }
    }
    warnings
}

/// What `check()` looks at: terminals reopened by path must be the same
/// device as at the dump.
pub(crate) fn check(image: &Image, p: &Process, r: &mut Report) {
    for fd in &p.fds {
        let Some(f) = image.file(fd.file) else {
            continue;
        };
        let FileKind::Tty(t) = &f.kind else { continue };
        if !matches!(role(t), TtyRole::Console | TtyRole::Vt | TtyRole::Serial) {
            continue;
        }
        let path = String::from_utf8_lossy(&f.path);
        match std::fs::metadata(&*path) {
            Ok(m) if m.file_type().is_char_device() && m.rdev() == t.rdev => {
                console_moved(fd.fd, &path, t, r)
            }
            Ok(m) => r.errors.push(format!(
                "fd {}: {path}: now device {}:{}, not the terminal {}:{} it was",
                fd.fd,
                libc::major(m.rdev()),
                libc::minor(m.rdev()),
                libc::major(t.rdev),
                libc::minor(t.rdev)
            )),
            Err(e) => r
                .errors
                .push(format!("fd {}: {path}: {}", fd.fd, os_msg(&e))),
        }
    }
}

/// /dev/console (and /dev/tty0) lead to another terminal than at the
/// dump: a warning (the process writes to whatever is the console now).
fn console_moved(fd: i32, path: &str, t: &Tty, r: &mut Report) {
    if t.real_rdev == 0 || t.real_rdev == t.rdev {
        return;
    }
    let now = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .ok()
        .and_then(|f| systty::real_device(f.as_raw_fd()).ok());
    if let Some(now) = now.filter(|&n| n != t.real_rdev) {
        r.warnings.push(format!(
            "fd {fd}: {path} is terminal {}:{} now, not {}:{} as at the dump",
            libc::major(now),
            libc::minor(now),
            libc::major(t.real_rdev),
            libc::minor(t.real_rdev)
        ));
    }
}

/// The terminal given by path must be a terminal that is no session's
/// controlling terminal (taking it would need stealing it from its shell,
/// which then loses its terminal).
pub(crate) fn check_target(terminal: &Terminal, r: &mut Report) {
    let Terminal::Path(path) = terminal else {
        return;
    };
    let name = path.display();
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            r.errors.push(format!("--tty {name}: {}", os_msg(&e)));
            return;
        }
    };
    let is_tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map(|f| systty::isatty(f.as_raw_fd()));
    match is_tty {
        Ok(true) => {}
        Ok(false) => r.errors.push(format!("--tty {name}: not a terminal")),
        Err(e) => r.errors.push(format!("--tty {name}: {}", os_msg(&e))),
    }
    if let Some(owner) = session_of_terminal(md.rdev()) {
        r.errors.push(format!(
            "--tty {name} is the controlling terminal of {owner}: a restored process can only be given a terminal that no session has (or run ckpt restore from that terminal)"
        ));
    }
}

/// "session S (leader pid S COMM, foreground group G)" of the session
/// whose controlling terminal device `rdev` is, found in /proc (a
/// terminal that is not ours does not tell its session).
pub fn session_of_terminal(rdev: u64) -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        // state ppid pgrp session tty_nr tpgid
        let (sid, tty_nr, tpgid) = (num(3), num(4) as u32 as u64, num(5));
        if sid != i64::from(pid) || tty_nr == 0 {
            continue;
        }
        let major = (tty_nr >> 8) & 0xfff;
        let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
        if libc::makedev(major as u32, minor as u32) == rdev {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some(format!(
                "session {sid} (leader pid {pid} {}, foreground group {tpgid})",
                comm.trim()
            ));
        }
    }
    None
}

/// FdOp::OpenTty: the restorer's controlling terminal.
pub(super) fn open_tty(c: &mut Child<'_>, slot: usize, flags: i32) -> ckpt_sys::Result<()> {
    let fd = ckpt_sys::fds::open(c"/dev/tty", flags, 0)?.into_raw_fd();
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::OpenTerminal: the terminal given by path, with the restorer's rights.
pub(super) fn open_terminal(
    c: &mut Child<'_>,
    slot: usize,
    path: &CStr,
    flags: i32,
) -> ckpt_sys::Result<()> {
    let fd = ckpt_sys::fds::open(path, flags | libc::O_NOCTTY, 0)?.into_raw_fd();
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::ReopenStd: a new description of the restorer's fd `std`.
pub(super) fn reopen_std(
    c: &mut Child<'_>,
    slot: usize,
    std: usize,
    flags: i32,
) -> ckpt_sys::Result<()> {
    let mut buf = [0u8; 40];
    let p = proc_fd_path(c.std_fd(std), &mut buf);
    let fd = ckpt_sys::fds::open(p, flags, 0)?.into_raw_fd();
    c.new_fd(slot, fd)?;
    Ok(())
}

/// Before the restored processes run: give them the terminal. A job on the
/// restorer's terminal gets the saved settings and the foreground, when
/// the restorer holds it (else at `fg`, by the caller's job control); a
/// terminal given by path gets the saved settings (the job took it as its
/// controlling terminal, which made it the foreground). None: no terminal
/// to hand over.
pub(crate) fn hand_over(
    jt: Option<&JobTerminal>,
    terminal: &Terminal,
    job_pgrp: i32,
    foreground: i32,
) -> crate::Result<Option<Handover>> {
    let (Some(jt), false) = (jt, *terminal == Terminal::Caller) else {
        return Ok(None);
    };
    let err = |what: String| {
        move |source: ckpt_sys::Error| crate::Error::Sys {
            context: what,
            source,
        }
    };
    let path = match terminal {
        Terminal::Path(p) => Some(p.clone()),
        _ => None,
    };
    let name = path
        .as_ref()
        .map_or("/dev/tty".into(), |p| p.display().to_string());
    let cpath = CString::new(name.clone()).map_err(|_| crate::Error::Stub {
        pid: job_pgrp,
        what: format!("{name}: path holds a NUL byte"),
    })?;
    let fd = match ckpt_sys::fds::open(&cpath, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC, 0) {
        Ok(fd) => fd,
        // No controlling terminal after all: nothing to hand over.
        Err(e) if path.is_none() && e.errno() == Some(libc::ENXIO) => return Ok(None),
        Err(e) => return Err(err(format!("opening {name}"))(e)),
    };
    let own_termios =
        systty::tcgets2(fd.as_raw_fd()).map_err(err(format!("reading the settings of {name}")))?;
    let handed = path.is_some()
        || systty::foreground(fd.as_raw_fd()).ok() == Some(ckpt_sys::proc::job::getpgrp());
    if handed {
        if let Some(t) = &jt.termios {
            systty::tcsets2(fd.as_raw_fd(), t)
                .map_err(err(format!("setting the job's saved settings on {name}")))?;
        }
        if path.is_none() {
            systty::set_foreground(fd.as_raw_fd(), foreground)
                .map_err(err(format!("giving {name} to process group {foreground}")))?;
        }
    }
    tracing::debug!(terminal = %name, handed, job_pgrp, "terminal handed over");
    Ok(Some(Handover {
        own_termios,
        job_termios: jt.termios,
        job_pgrp,
        foreground,
        handed,
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fd, file, none};
    use super::super::{plan_fds, FdEnv};
    use super::*;

    #[test]
    fn tty_needs_a_terminal() {
        let mut img = Image::default();
        img.files
            .push(file(1, libc::O_RDWR as u32, FileKind::Tty(Tty::default())));
        let p = Process {
            fds: vec![fd(0, 1)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 1);
        assert!(
            plan.errors[0].starts_with("fd 0: /x: a terminal"),
            "{}",
            plan.errors[0]
        );
        let env = FdEnv {
            std_open: [true; 3],
            std_tty: [false, false, true],
            dev_tty: true,
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert!(plan.errors.is_empty());
        assert!(matches!(plan.ops[0], FdOp::ReopenStd { std: 2, .. }));
        assert!(plan.job_terminal.is_some());
    }
}
