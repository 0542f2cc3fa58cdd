//! Dirty tracking kept in the process between dumps, for incremental
//! dumps: a userfaultfd in asynchronous write-protect mode
//! (UFFD_FEATURE_WP_ASYNC, Linux 6.7+) over the private anonymous areas.
//! The kernel itself lifts the protection of a page at its first write and
//! remembers it as written; PAGEMAP_SCAN reports the pages written since
//! the last scan and protects them again in the same walk. Nothing ever
//! waits on this userfaultfd: no handler is needed, and the process is
//! never stopped by it.
//!
//! The process keeps two close-on-exec fds of ckpt's at high numbers (it
//! must hold the userfaultfd for the tracking to last beyond the dump):
//! the userfaultfd, and a memfd named `ckpt-track` whose one line says
//! since which dump (imageId) the pages are tracked, or `pending` while a
//! dump that re-armed the tracking has not committed its image yet. A dump
//! never saves these two fds, so a restored process has no tracking (its
//! next dump is a full one). A process that closes them, or replaces
//! them, loses its tracking the same way: nothing else changes for it,
//! except that it cannot register its own userfaultfd on these areas
//! (a VMA has one userfaultfd).

use super::vmas::MapEntry;
use crate::error::{Error, Result, SysCtx};
use crate::freeze::Frozen;
use crate::procfs;
use ckpt_sys::mm::{
    page_is, PageRegion, Pagemap, ScanQuery, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING,
};
use ckpt_sys::userfaultfd::{
    Uffd, UFFDIO_REGISTER_MODE_WP, UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_UNPOPULATED,
    UFFD_USER_MODE_ONLY,
};
use ckpt_sys::{Injector, Pid};

/// The /proc/PID/fd links of ckpt's two fds.
const STATE_LINK: &[u8] = b"/memfd:ckpt-track (deleted)";
const UFFD_LINK: &[u8] = b"anon_inode:[userfaultfd]";
const FEATURES: u64 = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
/// Areas larger than this are tracked only when at least an eighth of
/// them is in memory: protecting an area installs a marker in every page
/// table entry of it, page tables included (a sparse reservation of many
/// GiB would cost its page tables).
const SPARSE: u64 = 1 << 30;

/// What the state memfd says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Since {
    /// Pages are tracked since the dump with this imageId.
    Image(Vec<u8>),
    /// A dump re-armed the tracking and did not finish.
    Pending,
}

/// ckpt's fds found in a process.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub uffd_fd: i32,
    pub state_fd: i32,
    /// None: the fds are there but not usable (another process's, or
    /// their state unreadable): to be closed.
    pub since: Option<Since>,
}

/// The fd numbers ckpt keeps in `pid` (none when not tracked): never saved
/// as the process's own.
pub(crate) fn own_fds(found: &Option<Found>) -> Vec<i32> {
    match found {
        Some(f) => vec![f.uffd_fd, f.state_fd],
        None => Vec::new(),
    }
}

/// Look for ckpt's fds in `pid` (/proc/PID/fd links and the state line).
pub(crate) fn find(pid: Pid) -> Result<Option<Found>> {
    let fds = procfs::list_numbered(pid, &format!("/proc/{pid}/fd"))?;
    // The state fd is one of the last: look from the top.
    for &fd in fds.iter().rev() {
        let Ok(link) = procfs::readlink(pid, &format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        if link != STATE_LINK {
            continue;
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default();
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|t| t.strip_prefix(k).map(str::to_string))
        };
        let uffd_fd: Option<i32> = field("uffd=").and_then(|v| v.parse().ok());
        let owner: Option<Pid> = field("pid=").and_then(|v| v.parse().ok());
        let Some(uffd_fd) = uffd_fd else {
            return Ok(Some(Found {
                uffd_fd: -1,
                state_fd: fd,
                since: None,
            }));
        };
        let usable = owner == Some(pid) && uffd_features(pid, uffd_fd) & FEATURES == FEATURES;
        let since = match field("since=").as_deref() {
            _ if !usable => None,
            Some("pending") => Some(Since::Pending),
            Some(hex) => from_hex(hex).map(Since::Image),
            None => None,
        };
        return Ok(Some(Found {
            uffd_fd,
            state_fd: fd,
            since,
        }));
    }
    Ok(None)
}

/// The features of a userfaultfd of `pid` (its fdinfo "API:\taa:F:I"
/// line, F in hex); 0 when `fd` is not one.
fn uffd_features(pid: Pid, fd: i32) -> u64 {
    match procfs::readlink(pid, &format!("/proc/{pid}/fd/{fd}")) {
        Ok(l) if l == UFFD_LINK => {}
        _ => return 0,
    }
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("API:"))
        .and_then(|v| v.trim().split(':').nth(1))
        .and_then(|f| u64::from_str_radix(f, 16).ok())
        .unwrap_or(0)
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether an area is worth tracking: private anonymous memory that can be
/// written (PROT_NONE reservations are not), not too sparse.
pub(crate) fn worth_tracking(e: &MapEntry) -> bool {
    let len = e.end - e.start;
    e.perms[0] == b'r'
        && e.perms[1] == b'w'
        && e.perms[3] == b'p'
        && (len <= SPARSE || e.rss_kb.saturating_add(e.swap_kb) * 1024 * 8 >= len)
}

/// The tracking of one process, with our duplicate of its userfaultfd.
pub(crate) struct Tracking {
    pid: Pid,
    uffd: Uffd,
    uffd_fd: i32,
    state_fd: i32,
}

impl Tracking {
    /// The tracking `found` in `pid`, usable (see [`Found::since`]).
    pub fn open(pid: Pid, found: &Found) -> Result<Tracking> {
        let fd = ckpt_sys::proc::pidfd::fd_of(pid, found.uffd_fd).ctx(pid, || {
            format!("taking its userfaultfd (fd {})", found.uffd_fd)
        })?;
        Ok(Tracking {
            pid,
            uffd: Uffd::from_fd(fd, pid),
            uffd_fd: found.uffd_fd,
            state_fd: found.state_fd,
        })
    }

    /// Create the tracking in the frozen process (injected calls in its
    /// main thread): a userfaultfd (user faults only: nothing waits on an
    /// asynchronous one) and the state memfd, both moved to high
    /// close-on-exec fds; `stale` (ckpt fds that cannot be used) are
    /// closed first. Nothing is registered yet ([`Tracking::track`]).
    pub fn arm(frozen: &mut Frozen, stale: Option<&Found>) -> Result<Tracking> {
        let pid = frozen.pid;
        let base = high_fd_base(pid)?;
        let mut inj = crate::remote::leader_injector(frozen)?;
        let made = make_fds(&mut inj, pid, base, stale);
        let fin = inj.finish();
        frozen.set_exit_kill(false)?;
        if let Ok(left) = &fin {
            for si in left {
                let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
                let _ = ckpt_sys::proc::tgkill(pid, pid, signo);
            }
        }
        fin.ctx(pid, || "restoring the registers of the main thread".into())?;
        let (uffd_fd, state_fd) = made?;
        let fd = ckpt_sys::proc::pidfd::fd_of(pid, uffd_fd as i32)
            .ctx(pid, || "taking its new userfaultfd".into())?;
        let t = Tracking {
            pid,
            uffd: Uffd::from_fd(fd, pid),
            uffd_fd: uffd_fd as i32,
            state_fd: state_fd as i32,
        };
        let got = t.uffd.api(FEATURES).ctx(pid, || {
            "UFFDIO_API for asynchronous write protection".into()
        })?;
        if got & FEATURES != FEATURES {
            return Err(Error::Vma {
                pid,
                start: 0,
                end: 0,
                name: String::new(),
                what: "this kernel has no asynchronous write protection (Linux 6.7+)".into(),
            });
        }
        t.set_state(None)?;
        tracing::debug!(pid, uffd_fd, state_fd, "dirty tracking armed");
        Ok(t)
    }

    /// Write the state line: tracked since `since`, or pending.
    pub fn set_state(&self, since: Option<&[u8]>) -> Result<()> {
        let path = format!("/proc/{}/fd/{}", self.pid, self.state_fd);
        let since = since.map_or("pending".to_string(), ckpt_image::chain::id_hex);
        let line = format!(
            "ckpt-track 1 pid={} uffd={} since={since}\n",
            self.pid, self.uffd_fd
        );
        std::fs::write(&path, line).map_err(|e| Error::Io {
            pid: self.pid,
            what: format!("writing the dirty tracking state ({path})"),
            source: e,
        })
    }

    /// Start tracking `[start, end)`: register it and protect it. False
    /// when the kernel refuses (the area changed, or is of a kind that
    /// cannot be tracked).
    pub fn track(&self, start: u64, end: u64) -> bool {
        let len = end - start;
        match self.uffd.register(start, len, UFFDIO_REGISTER_MODE_WP) {
            Ok(()) => {}
            // EBUSY: registered already (with this userfaultfd or another).
            Err(e) if e.errno() == Some(libc::EBUSY) => {}
            Err(_) => return false,
        }
        self.uffd.writeprotect(start, len, true).is_ok()
    }

    /// The pages of `[start, end)` written since the last scan (present,
    /// swapped, or discarded: neither), protecting them again when
    /// `rearm`. None when part of the range is not tracked.
    pub fn written(
        &self,
        pm: &Pagemap,
        start: u64,
        end: u64,
        rearm: bool,
    ) -> Result<Option<Vec<PageRegion>>> {
        let q = ScanQuery {
            flags: PM_SCAN_CHECK_WPASYNC | if rearm { PM_SCAN_WP_MATCHING } else { 0 },
            mask: page_is::WRITTEN,
            returned: page_is::PRESENT | page_is::SWAPPED | page_is::PFNZERO,
            ..Default::default()
        };
        let mut out = Vec::new();
        match pm.scan(start, end, &q, &mut out) {
            Ok(()) => Ok(Some(out)),
            Err(e) if e.errno() == Some(libc::EPERM) => Ok(None),
            Err(e) => Err(e).ctx(self.pid, || {
                format!("PAGEMAP_SCAN of written pages at {start:#x}-{end:#x}")
            }),
        }
    }
}

/// Where ckpt's fds go: near the soft RLIMIT_NOFILE of the process, at
/// most 1000 (a higher fd would grow its fd table).
fn high_fd_base(pid: Pid) -> Result<u64> {
    let path = format!("/proc/{pid}/limits");
    let text = procfs::read_string(pid, &path)?;
    let soft = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1024);
    Ok(soft.saturating_sub(8).clamp(3, 1000))
}

/// The injected calls of [`Tracking::arm`]: (userfaultfd fd, state fd).
/// On failure, what was made is closed again.
fn make_fds(inj: &mut Injector, pid: Pid, base: u64, stale: Option<&Found>) -> Result<(u64, u64)> {
    let call = |inj: &mut Injector, name: &str, nr: i64, args: &[u64]| {
        inj.syscall(name, nr, args)
            .ctx(pid, || format!("arming dirty tracking: {name}"))
    };
    if let Some(s) = stale {
        for fd in [s.uffd_fd, s.state_fd].into_iter().filter(|&fd| fd >= 0) {
            let _ = inj.syscall_raw(libc::SYS_close, &[fd as u64]);
        }
    }
    let mut made: Vec<u64> = Vec::new();
    let r = (|| -> Result<(u64, u64)> {
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
        let u = call(inj, "userfaultfd", libc::SYS_userfaultfd, &[flags])?;
        made.push(u);
        let hu = call(
            inj,
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            &[u, libc::F_DUPFD_CLOEXEC as u64, base],
        )?;
        made.push(hu);
        call(inj, "close", libc::SYS_close, &[u])?;
        made.retain(|&x| x != u);
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let scratch = call(
            inj,
            "mmap",
            libc::SYS_mmap,
            &[0, 4096, prot, flags, u64::MAX, 0],
        )?;
        let m = inj
            .mem()
            .write(scratch, b"ckpt-track\0")
            .ctx(pid, || "writing the memfd name".into())
            .and_then(|()| {
                call(
                    inj,
                    "memfd_create",
                    libc::SYS_memfd_create,
                    &[scratch, libc::MFD_CLOEXEC as u64],
                )
            });
        call(inj, "munmap", libc::SYS_munmap, &[scratch, 4096])?;
        let m = m?;
        made.push(m);
        let hm = call(
            inj,
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            &[m, libc::F_DUPFD_CLOEXEC as u64, base],
        )?;
        made.push(hm);
        call(inj, "close", libc::SYS_close, &[m])?;
        Ok((hu, hm))
    })();
    if r.is_err() {
        for fd in made {
            let _ = inj.syscall_raw(libc::SYS_close, &[fd]);
        }
    }
    r
}
