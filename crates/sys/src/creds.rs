//! Credentials of the calling thread: the ids file access is checked
//! against, switched to another user's and back, and access(2) with them.
//!
//! The kernel checks an open, a chdir, an `access(2)` with `AT_EACCESS`
//! against the thread's **fs** uid, fs gid and supplementary groups, and
//! its effective capabilities. Changing the fsuid from 0 to another id
//! drops the filesystem capabilities (`CAP_DAC_OVERRIDE`,
//! `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`, `CAP_CHOWN`, `CAP_FSETID`, ...)
//! from the effective set, and changing it back to 0 raises them again
//! (capabilities(7), "Effect of user ID changes on capabilities"): root
//! with another user's fs ids opens files exactly as that user would, and
//! keeps the other capabilities it has (`CAP_SETUID`, `CAP_SYS_PTRACE`...).
//!
//! Everything here makes raw system calls, which act on the calling
//! thread only (glibc's `setgroups`/`setfsuid` wrappers signal every
//! thread of the process to change them all, and would wait for threads
//! that do not exist in a child made by a raw clone3), and an [`FsSwitch`]
//! allocates nothing once made: it can be used in a child forked from a
//! multi-threaded process.
//!
//! Every change of the fs ids is a change of credentials for the kernel,
//! which then also clears the thread's parent-death signal and sets the
//! process's dumpable flag to `fs.suid_dumpable` (commit_creds); callers
//! that care restore them ([`dumpable`], [`set_dumpable`]).

use crate::{Error, Result};
use std::ffi::CStr;

fn os(op: &'static str) -> Error {
    Error::Os {
        op,
        tid: 0,
        source: std::io::Error::last_os_error(),
    }
}

fn denied(op: &'static str) -> Error {
    Error::Os {
        op,
        tid: 0,
        source: std::io::Error::from_raw_os_error(libc::EPERM),
    }
}

/// The ids file access is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsIds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl FsIds {
    /// The calling thread's.
    pub fn current() -> Result<FsIds> {
        // SAFETY: a null list with size 0 only asks for the count.
        let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<u32>()) };
        if n < 0 {
            return Err(os("getgroups"));
        }
        let mut groups = vec![0u32; n as usize];
        // SAFETY: the kernel writes at most `groups.len()` gids into the live buffer.
        let got = unsafe { libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr()) };
        if got < 0 {
            return Err(os("getgroups"));
        }
        groups.truncate(got as usize);
        Ok(FsIds {
            uid: fsuid(),
            gid: fsgid(),
            groups,
        })
    }
}

/// An invalid id: setfsuid/setfsgid with it change nothing and return the
/// current value.
const NO_ID: u32 = u32::MAX;

/// The calling thread's fsuid.
pub fn fsuid() -> u32 {
    // SAFETY: integer argument; an invalid id changes nothing.
    unsafe { libc::syscall(libc::SYS_setfsuid, NO_ID) as u32 }
}

/// The calling thread's fsgid.
pub fn fsgid() -> u32 {
    // SAFETY: integer argument; an invalid id changes nothing.
    unsafe { libc::syscall(libc::SYS_setfsgid, NO_ID) as u32 }
}

/// geteuid(2).
pub fn geteuid() -> u32 {
    // SAFETY: no arguments; cannot fail.
    unsafe { libc::geteuid() }
}

/// setgroups(2) of the calling thread only.
pub fn set_groups(groups: &[u32]) -> Result<()> {
    // SAFETY: the kernel reads `groups.len()` gids from the live slice.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r < 0 {
        return Err(os("setgroups"));
    }
    Ok(())
}

/// setfsuid(2) of the calling thread. The call returns the previous
/// fsuid whether it worked or not; as setfsuid(2) advises, a second call
/// (with an invalid id, which changes nothing) tells: EPERM when the
/// fsuid is not `uid` afterwards.
pub fn set_fsuid(uid: u32) -> Result<()> {
    // SAFETY: integer argument.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    if fsuid() != uid {
        return Err(denied("setfsuid"));
    }
    Ok(())
}

/// setfsgid(2) of the calling thread, checked like [`set_fsuid`].
pub fn set_fsgid(gid: u32) -> Result<()> {
    // SAFETY: integer argument.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    if fsgid() != gid {
        return Err(denied("setfsgid"));
    }
    Ok(())
}

/// Switches the calling thread's fs ids and groups to another user's
/// ([`enter`](FsSwitch::enter)) and back to the ones it had when the
/// switch was made ([`leave`](FsSwitch::leave)). Needs `CAP_SETUID` and
/// `CAP_SETGID` (unless the ids are the thread's own).
#[derive(Clone, Debug)]
pub struct FsSwitch {
    to: FsIds,
    back: FsIds,
}

impl FsSwitch {
    /// A switch from the calling thread's current fs ids to `to`.
    pub fn new(to: FsIds) -> Result<FsSwitch> {
        Ok(FsSwitch {
            to,
            back: FsIds::current()?,
        })
    }

    /// The ids [`enter`](FsSwitch::enter) takes.
    pub fn ids(&self) -> &FsIds {
        &self.to
    }

    /// Take the other user's fs ids: groups, fsgid, fsuid (each checked).
    /// On failure the thread may be left between the two sets: call
    /// [`leave`](FsSwitch::leave), or give up the thread.
    pub fn enter(&self) -> Result<()> {
        set_groups(&self.to.groups)?;
        set_fsgid(self.to.gid)?;
        set_fsuid(self.to.uid)
    }

    /// Back to the thread's own fs ids: fsuid (with it the filesystem
    /// capabilities), fsgid, groups.
    pub fn leave(&self) -> Result<()> {
        set_fsuid(self.back.uid)?;
        set_fsgid(self.back.gid)?;
        set_groups(&self.back.groups)
    }
}

/// access(2) of `path` for `mode` (`R_OK`, `W_OK`, `X_OK`, `F_OK`) with
/// the process's **real** uid and gid, following symlinks.
pub fn access(path: &CStr, mode: i32) -> Result<()> {
    // SAFETY: `path` is NUL-terminated.
    let r = unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD, path.as_ptr(), mode) };
    if r < 0 {
        return Err(os("access"));
    }
    Ok(())
}

/// faccessat2(path, mode, AT_EACCESS): access(2) with the calling thread's
/// fs ids, groups and effective capabilities, following symlinks: the
/// checks an open or chdir by this thread gets. Linux 5.8 or later
/// (ENOSYS before; glibc's emulation, which would use the effective uid
/// rather than the fsuid, is not used).
pub fn eaccess(path: &CStr, mode: i32) -> Result<()> {
    // SAFETY: `path` is NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            mode,
            libc::AT_EACCESS,
        )
    };
    if r < 0 {
        return Err(os("faccessat2(AT_EACCESS)"));
    }
    Ok(())
}

/// prctl(PR_GET_DUMPABLE): 0, 1 (SUID_DUMP_USER) or 2 (SUID_DUMP_ROOT).
pub fn dumpable() -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_prctl, libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if r < 0 {
        return Err(os("prctl(PR_GET_DUMPABLE)"));
    }
    Ok(r as i32)
}

/// prctl(PR_SET_DUMPABLE): 0 or 1.
pub fn set_dumpable(value: i32) -> Result<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_prctl, libc::PR_SET_DUMPABLE, value, 0, 0, 0) };
    if r < 0 {
        return Err(os("prctl(PR_SET_DUMPABLE)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clone::{fork_with_pid, Forked};

    /// Runs `f` in a forked child (credential changes stay there); its
    /// result is the child's exit code.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        match fork_with_pid(None).unwrap() {
            Forked::Child => crate::sys::exit_now(f()),
            Forked::Parent(pid) => match crate::sys::wait_child_exit(pid).unwrap() {
                crate::sys::ExitKind::Exited(c) => c,
                other => panic!("child: {other:?}"),
            },
        }
    }

    #[test]
    fn current_ids_are_the_processs() {
        let ids = FsIds::current().unwrap();
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((ids.uid, ids.gid), (uid, gid));
        assert_eq!(fsuid(), uid);
        assert_eq!(geteuid(), uid);
    }

    #[test]
    fn switch_takes_the_users_rights_and_gives_them_back() {
        if geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // Made before the fork: the child of a multi-threaded process may
        // not allocate.
        let sw = FsSwitch::new(FsIds {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        })
        .unwrap();
        let groups = |buf: &mut [u32; 64]| {
            // SAFETY: the kernel writes at most 64 gids into the buffer.
            let n = unsafe { libc::syscall(libc::SYS_getgroups, 64, buf.as_mut_ptr()) };
            n.max(0) as usize
        };
        let code = in_child(|| {
            let shadow = c"/etc/shadow";
            let mut buf = [0u32; 64];
            if eaccess(shadow, libc::R_OK).is_err() {
                return 11; // root may read it
            }
            if sw.enter().is_err() {
                return 12;
            }
            if (fsuid(), fsgid()) != (65534, 65534) || geteuid() != 0 {
                return 13;
            }
            let n = groups(&mut buf);
            if buf[..n] != [65534] {
                return 19;
            }
            match eaccess(shadow, libc::R_OK) {
                Err(e) if e.errno() == Some(libc::EACCES) => {}
                _ => return 14, // nobody may not, even with euid 0
            }
            if crate::setup::open(shadow, libc::O_RDONLY, 0).is_ok() {
                return 15;
            }
            if sw.leave().is_err() {
                return 16;
            }
            let n = groups(&mut buf);
            if (fsuid(), fsgid()) != (sw.back.uid, sw.back.gid) || buf[..n] != sw.back.groups[..] {
                return 17;
            }
            match crate::setup::open(shadow, libc::O_RDONLY, 0) {
                Ok(fd) => {
                    let _ = crate::setup::close(fd);
                    0
                }
                Err(_) => 18, // the capabilities came back
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_refused_fsuid_is_an_error() {
        let code = in_child(|| {
            // Without CAP_SETUID (here: after dropping every uid to nobody)
            // setfsuid(0) "succeeds" without changing anything.
            if geteuid() == 0 {
                // SAFETY: integer arguments; this child's own ids.
                let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
                if r != 0 {
                    return 20;
                }
            }
            match set_fsuid(0) {
                Err(e) if e.errno() == Some(libc::EPERM) => 0,
                _ => 21,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn invalid_ids_are_refused() {
        assert!(set_fsuid(NO_ID).is_err());
        assert!(set_fsgid(NO_ID).is_err());
    }
}
