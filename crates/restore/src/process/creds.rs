//! Credentials: the restorer's own (what check() compares the image's
//! with), each thread's uids, gids and groups set in the thread, and the
//! saved user's file access rights taken around opens of the image's
//! paths by the process being built.

use crate::error::{Error, Result};
use crate::remote::Remote;
use ckpt_image::{Credentials, Process};
use ckpt_sys::creds::{Caps, FsIds, FsSwitch};
use std::collections::BTreeSet;

/// Credentials of the calling process, from /proc/self/status.
pub(crate) struct OwnCreds {
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    pub cap_prm: u64,
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
    let cap = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let cap_eff = cap("CapEff:");
    let cap_prm = cap("CapPrm:");
    OwnCreds {
        uids: four(nums("Uid:")),
        gids: four(nums("Gid:")),
        groups: nums("Groups:").into_iter().map(|g| g as u32).collect(),
        cap_eff,
        cap_prm,
    }
}

impl OwnCreds {
    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }
    /// The bounding set (CapBnd), read when needed.
    pub fn cap_bounding(&self) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX)
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

/// setfsuid/setfsgid in the thread, checked: they return the previous id
/// whether they worked or not, so a second call with an invalid id (which
/// changes nothing and returns the current one) tells.
fn set_fs_id(r: &mut Remote, name: &str, nr: i64, id: u32) -> Result<()> {
    r.raw(name, nr, &[id.into()])?;
    let now = r.raw(name, nr, &[u32::MAX.into()])? as u32;
    if now != id {
        return Err(Error::Io {
            context: format!("thread {}: {name}({id}) left it at {now}", r.tid),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        });
    }
    Ok(())
}

/// Give the thread `ids` as its groups, fs gid and fs uid (each checked).
fn set_fs_ids(r: &mut Remote, ids: &FsIds, scratch: u64) -> Result<()> {
    let groups: Vec<u8> = ids.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    r.write(scratch, &groups)?;
    r.call(
        "setgroups",
        libc::SYS_setgroups,
        &[ids.groups.len() as u64, scratch],
    )?;
    set_fs_id(r, "setfsgid", libc::SYS_setfsgid, ids.gid)?;
    set_fs_id(r, "setfsuid", libc::SYS_setfsuid, ids.uid)
}

/// capset(2) of the thread.
fn set_caps(r: &mut Remote, caps: Caps, scratch: u64) -> Result<()> {
    r.write(scratch, &caps.capset_args())?;
    r.call("capset", libc::SYS_capset, &[scratch, scratch + 8])?;
    Ok(())
}

/// Run `f` (opens of paths of the image by the thread) with the saved
/// user's rights, the way the stub opens its files ([`FsSwitch`]): that
/// user's groups, fs gid and fs uid and no effective capabilities; then
/// the restorer's back, and the dumpable flag the kernel reset meanwhile.
/// Without `switch`, just `f`.
pub(crate) fn with_rights<T>(
    r: &mut Remote,
    switch: Option<&FsSwitch>,
    scratch: u64,
    f: impl FnOnce(&mut Remote) -> Result<T>,
) -> Result<T> {
    let Some(sw) = switch else {
        return f(r);
    };
    let dumpable = r.call(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0],
    )?;
    set_fs_ids(r, sw.ids(), scratch)?;
    set_caps(r, sw.switched_caps(), scratch)?;
    let t = f(r)?;
    set_caps(r, sw.own_caps(), scratch)?;
    set_fs_ids(r, sw.own_ids(), scratch)?;
    set_caps(r, sw.own_caps(), scratch)?;
    if dumpable <= 1 {
        r.call(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, dumpable, 0, 0, 0],
        )?;
    }
    Ok(t)
}

/// uids, gids and groups of one thread (credentials are per thread in the
/// kernel): its own saved ones, or its process's.
pub(crate) fn set_thread_creds(r: &mut Remote, c: &Credentials, scratch: u64) -> Result<()> {
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    r.write(scratch, &groups)?;
    r.call(
        "setgroups",
        libc::SYS_setgroups,
        &[c.groups.len() as u64, scratch],
    )?;
    r.call(
        "setresgid",
        libc::SYS_setresgid,
        &[c.rgid.into(), c.egid.into(), c.sgid.into()],
    )?;
    set_fs_id(r, "setfsgid", libc::SYS_setfsgid, c.fsgid)?;
    r.call(
        "setresuid",
        libc::SYS_setresuid,
        &[c.ruid.into(), c.euid.into(), c.suid.into()],
    )?;
    set_fs_id(r, "setfsuid", libc::SYS_setfsuid, c.fsuid)?;
    Ok(())
}
