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
//! [`FsSwitch`] also drops every effective capability while switched, so
//! that what is opened is exactly what the user could open.
//!
//! Everything here acts on the calling thread only: setfsuid/setfsgid
//! (nix's, plain system calls in glibc too) and raw setgroups/getgroups,
//! capget/capset system calls (glibc's `setgroups`, which nix's calls,
//! signals every thread of the process to change them all, and would wait
//! for threads that do not exist in a child made by a raw clone3; nix has
//! no capabilities). An [`FsSwitch`] allocates nothing once made: it can
//! be used in a child forked from a multi-threaded process.
//!
//! Every change of the fs ids is a change of credentials for the kernel,
//! which then also clears the thread's parent-death signal and sets the
//! process's dumpable flag to `fs.suid_dumpable` (commit_creds); callers
//! that care restore them ([`dumpable`], [`set_dumpable`]).

use crate::{Error, OsResult, Result};
use nix::unistd::{AccessFlags, Gid, Uid};
use std::ffi::CStr;

fn os(op: &'static str) -> Error {
    crate::last_os(op, 0)
}

fn denied(op: &'static str) -> Error {
    crate::os_errno(op, 0, libc::EPERM)
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
    // An invalid id changes nothing; the call returns the current one.
    nix::unistd::setfsuid(Uid::from_raw(NO_ID)).as_raw()
}

/// The calling thread's fsgid.
pub fn fsgid() -> u32 {
    nix::unistd::setfsgid(Gid::from_raw(NO_ID)).as_raw()
}

/// geteuid(2).
pub fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
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
    nix::unistd::setfsuid(Uid::from_raw(uid));
    if fsuid() != uid {
        return Err(denied("setfsuid"));
    }
    Ok(())
}

/// setfsgid(2) of the calling thread, checked like [`set_fsuid`].
pub fn set_fsgid(gid: u32) -> Result<()> {
    nix::unistd::setfsgid(Gid::from_raw(gid));
    if fsgid() != gid {
        return Err(denied("setfsgid"));
    }
    Ok(())
}

/// capget/capset ABI version 3 (64-bit sets, in two 32-bit halves).
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The capability sets of a thread (bit n: capability n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

impl Caps {
    /// The calling thread's (capget(2)).
    pub fn current() -> Result<Caps> {
        let mut h = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let mut d = [CapData::default(); 2];
        // SAFETY: a valid version 3 header and room for the two data
        // structs version 3 writes.
        let r =
            unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
        if r < 0 {
            return Err(os("capget"));
        }
        let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
        Ok(Caps {
            effective: join(d[0].effective, d[1].effective),
            permitted: join(d[0].permitted, d[1].permitted),
            inheritable: join(d[0].inheritable, d[1].inheritable),
        })
    }

    /// Make these the calling thread's (capset(2)): effective within
    /// permitted, neither above what the thread has.
    pub fn set(&self) -> Result<()> {
        let mut h = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let half = |hi: bool| {
            let f = |v: u64| if hi { (v >> 32) as u32 } else { v as u32 };
            CapData {
                effective: f(self.effective),
                permitted: f(self.permitted),
                inheritable: f(self.inheritable),
            }
        };
        let d = [half(false), half(true)];
        // SAFETY: a valid version 3 header and the two data structs the
        // kernel reads.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
        if r < 0 {
            return Err(os("capset"));
        }
        Ok(())
    }

    /// The arguments of capset(2) for these sets, as the kernel reads them:
    /// the header (version 3, pid 0: the calling thread) in the first 8
    /// bytes, the two data structs in the next 24 (for a capset injected
    /// into another process: `capset(at, at + 8)`).
    pub fn capset_args(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&CAP_V3.to_ne_bytes());
        for (i, v) in [self.effective, self.permitted, self.inheritable]
            .into_iter()
            .enumerate()
        {
            b[8 + 4 * i..][..4].copy_from_slice(&(v as u32).to_ne_bytes());
            b[20 + 4 * i..][..4].copy_from_slice(&((v >> 32) as u32).to_ne_bytes());
        }
        b
    }
}

/// Switches the calling thread to another user's rights for file access
/// ([`enter`](FsSwitch::enter)): that user's fs uid, fs gid and groups,
/// and **no** effective capabilities, not only the filesystem ones the
/// kernel drops with the fsuid (`CAP_SYS_PTRACE`, say, would still reach
/// other processes' `/proc/PID/fd/N`, and a restorer that is not root but
/// holds `CAP_DAC_OVERRIDE` would keep it); and back to what the thread had
/// when the switch was made ([`leave`](FsSwitch::leave)). Needs
/// `CAP_SETUID` and `CAP_SETGID` (unless the ids are the thread's own).
#[derive(Clone, Debug)]
pub struct FsSwitch {
    to: FsIds,
    back: FsIds,
    caps: Caps,
}

impl FsSwitch {
    /// A switch from the calling thread's current fs ids and capabilities
    /// to `to`.
    pub fn new(to: FsIds) -> Result<FsSwitch> {
        Ok(FsSwitch {
            to,
            back: FsIds::current()?,
            caps: Caps::current()?,
        })
    }

    /// The ids [`enter`](FsSwitch::enter) takes.
    pub fn ids(&self) -> &FsIds {
        &self.to
    }

    /// The ids [`leave`](FsSwitch::leave) takes back: the thread's own.
    pub fn own_ids(&self) -> &FsIds {
        &self.back
    }

    /// The capabilities [`leave`](FsSwitch::leave) gives back: the thread's own.
    pub fn own_caps(&self) -> Caps {
        self.caps
    }

    /// The capabilities while switched: none effective, the others kept
    /// (so that they can be raised again).
    pub fn switched_caps(&self) -> Caps {
        Caps {
            effective: 0,
            ..self.caps
        }
    }

    /// Take the other user's rights: groups, fsgid, fsuid (each checked),
    /// then drop the effective capabilities. On failure the thread may be
    /// left between the two: call [`leave`](FsSwitch::leave), or give up
    /// the thread.
    pub fn enter(&self) -> Result<()> {
        set_groups(&self.to.groups)?;
        set_fsgid(self.to.gid)?;
        set_fsuid(self.to.uid)?;
        self.switched_caps().set()
    }

    /// Back to the thread's own: effective capabilities (needed for the
    /// rest), fsuid, fsgid, groups, and the capabilities once more (a fsuid
    /// going back to 0 raises the filesystem ones in any case).
    pub fn leave(&self) -> Result<()> {
        self.caps.set()?;
        set_fsuid(self.back.uid)?;
        set_fsgid(self.back.gid)?;
        set_groups(&self.back.groups)?;
        self.caps.set()
    }
}

/// access(2) of `path` for `mode` (`R_OK`, `W_OK`, `X_OK`, `F_OK`) with
/// the process's **real** uid and gid, following symlinks.
pub fn access(path: &CStr, mode: i32) -> Result<()> {
    nix::unistd::access(path, AccessFlags::from_bits_retain(mode)).op("access")
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

/// What the user database says of `uid`: its name and every group it is
/// in (its primary group first, then getgrouplist(3)); None when it has no
/// entry. Through NSS (getpwuid_r), so not for a forked child.
pub fn user_groups(uid: u32) -> Result<Option<(String, Vec<u32>)>> {
    let Some(user) = nix::unistd::User::from_uid(Uid::from_raw(uid)).op("getpwuid_r")? else {
        return Ok(None);
    };
    let name = std::ffi::CString::new(user.name.as_bytes())
        .map_err(|_| crate::os_errno("getgrouplist", 0, libc::EINVAL))?;
    let mut groups = vec![user.gid.as_raw()];
    for g in nix::unistd::getgrouplist(&name, user.gid).op("getgrouplist")? {
        if !groups.contains(&g.as_raw()) {
            groups.push(g.as_raw());
        }
    }
    Ok(Some((user.name, groups)))
}

/// prctl(PR_GET_DUMPABLE): 0, 1 (SUID_DUMP_USER) or 2 (SUID_DUMP_ROOT).
/// By hand: nix's `get_dumpable` says only yes or no.
pub fn dumpable() -> Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_prctl, libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if r < 0 {
        return Err(os("prctl(PR_GET_DUMPABLE)"));
    }
    Ok(r as i32)
}

/// prctl(PR_SET_DUMPABLE): 0 or 1 (another value is EINVAL, as the
/// kernel says).
pub fn set_dumpable(value: i32) -> Result<()> {
    let on = match value {
        0 => false,
        1 => true,
        _ => return Err(crate::os_errno("prctl(PR_SET_DUMPABLE)", 0, libc::EINVAL)),
    };
    nix::sys::prctl::set_dumpable(on).op("prctl(PR_SET_DUMPABLE)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_database() {
        let (name, groups) = user_groups(0).unwrap().unwrap();
        assert_eq!(name, "root");
        assert_eq!(groups[0], 0);
        assert_eq!(user_groups(4_000_000_000).unwrap(), None);
    }
    use crate::clone::{fork_with_pid, Forked};

    /// Runs `f` in a forked child (credential changes stay there); its
    /// result is the child's exit code.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        match fork_with_pid(None).unwrap() {
            Forked::Child => crate::proc::exit_now(f()),
            Forked::Parent(pid) => match crate::proc::wait::wait_child_exit(pid).unwrap() {
                crate::proc::wait::ExitKind::Exited(c) => c,
                other => panic!("child: {other:?}"),
            },
        }
    }

    #[test]
    fn current_ids_are_the_processs() {
        let ids = FsIds::current().unwrap();
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let (uid, gid) = (uid.as_raw(), gid.as_raw());
        assert_eq!((ids.uid, ids.gid), (uid, gid));
        assert_eq!(fsuid(), uid);
        assert_eq!(geteuid(), uid);
    }

    #[test]
    fn switch_takes_the_users_rights_and_gives_them_back() {
        ckpt_testkit::require!(ckpt_testkit::require::root());
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
            if crate::fds::open(shadow, libc::O_RDONLY, 0).is_ok() {
                return 15;
            }
            if sw.leave().is_err() {
                return 16;
            }
            let n = groups(&mut buf);
            if (fsuid(), fsgid()) != (sw.back.uid, sw.back.gid) || buf[..n] != sw.back.groups[..] {
                return 17;
            }
            if Caps::current().ok() != Some(sw.own_caps()) {
                return 22;
            }
            match crate::fds::open(shadow, libc::O_RDONLY, 0) {
                Ok(_fd) => 0,
                Err(_) => 18, // the capabilities came back
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn switched_threads_have_no_capabilities() {
        ckpt_testkit::require!(ckpt_testkit::require::root());
        let sw = FsSwitch::new(FsIds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        })
        .unwrap();
        // This (root's) process, seen from the child: its root directory is
        // reachable through /proc with CAP_SYS_PTRACE (not a filesystem
        // capability), never by nobody.
        let path = std::ffi::CString::new(format!("/proc/{}/root/", std::process::id())).unwrap();
        let code = in_child(|| {
            let other_root = path.as_c_str();
            if eaccess(other_root, libc::X_OK).is_err() {
                return 30;
            }
            if sw.enter().is_err() {
                return 31;
            }
            match Caps::current() {
                Ok(c) if c.effective == 0 && c == sw.switched_caps() => {}
                _ => return 32,
            }
            match eaccess(other_root, libc::X_OK) {
                Err(e) if e.errno() == Some(libc::EACCES) => {}
                _ => return 33,
            }
            if sw.leave().is_err() || Caps::current().ok() != Some(sw.own_caps()) {
                return 34;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn capset_args_are_the_kernels_layout() {
        let c = Caps {
            effective: 0x1_0000_0002,
            permitted: 0x3_0000_0004,
            inheritable: 0x5_0000_0006,
        };
        let b = c.capset_args();
        let w = |i: usize| u32::from_ne_bytes(b[4 * i..][..4].try_into().unwrap());
        assert_eq!((w(0), w(1)), (CAP_V3, 0));
        assert_eq!((w(2), w(3), w(4)), (2, 4, 6));
        assert_eq!((w(5), w(6), w(7)), (1, 3, 5));
        // And capset reads them so: the calling thread's own, unchanged.
        let own = Caps::current().unwrap();
        let b = own.capset_args();
        // SAFETY: the header and data structs in `b`, laid out as above.
        let r = unsafe { libc::syscall(libc::SYS_capset, b.as_ptr(), b[8..].as_ptr()) };
        assert_eq!(r, 0);
        assert_eq!(Caps::current().unwrap(), own);
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
