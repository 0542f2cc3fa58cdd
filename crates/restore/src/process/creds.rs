//! Credentials: the restorer's own (what check() compares the image's
//! with), each thread's uids, gids and groups set in the thread, and the
//! saved user's file access rights taken around opens of the image's
//! paths by the process being built.

use crate::check::Requester;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::Report;
use ckpt_image::{Credentials, Process};
use ckpt_sys::creds::{Caps, FsIds, FsSwitch};
use std::collections::BTreeSet;

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;

/// Credentials of the calling process, from /proc/self/status.
pub(crate) struct OwnCreds {
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    pub cap_prm: u64,
    /// The bounding set (CapBnd).
    pub cap_bounding: u64,
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
        cap_bounding: cap("CapBnd:"),
    }
}

impl OwnCreds {
    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }
}

/// The rule of spec/security.md §3: the restored process gets only the
/// credentials and rights its requester U (the owner of the image file,
/// or the user a restore is made for) could hold. For U other than root:
/// every uid is U, every gid and group one of U's (user database), no
/// capability; no mapping below vm.mmap_min_addr, no real-time priority
/// or negative nice beyond U's RLIMIT_RTPRIO/RLIMIT_NICE, no set-id
/// executable, no OOM score adjustment below the restorer's. Refusals name
/// the field.
pub(crate) fn check_requester(p: &Process, who: &Requester, own: &OwnCreds, r: &mut Report) {
    let u = match *who {
        Requester::Restorer | Requester::User(0) => return,
        Requester::Nobody { uid, mode } => {
            if own.uids[1] == 0 || own.has_cap(CAP_SETUID) || own.has_cap(CAP_SETGID) {
                r.errors.push(format!(
                    "the image file (owner uid {uid}, mode {:o}) is writable by group or others: whoever could write it could have made it ask for anything; a privileged restore refuses it (chmod go-w)",
                    mode & 0o7777
                ));
            }
            return;
        }
        Requester::User(u) => u,
    };
    let groups = match ckpt_sys::creds::user_groups(u) {
        Ok(Some((name, g))) => Ok((name, g)),
        Ok(None) => Err(format!("uid {u} has no entry in the user database")),
        Err(e) => Err(format!("looking uid {u} up in the user database: {e}")),
    };
    let mut bad = |what: String| {
        r.errors.push(format!(
            "{what}; the image is uid {u}'s: its process may hold only what uid {u} could"
        ))
    };
    let mut all = vec![("the process".to_string(), &p.creds)];
    for t in &p.threads {
        if let Some(c) = &t.creds {
            all.push((format!("thread {}", t.tid), c));
        }
    }
    for (who, c) in all {
        check_ids_of(&who, c, u, &groups, &mut bad);
    }
    super::thread::check_priorities(p, u, &mut bad);
    if p.oom_score_adj < super::rlimits::own_oom_score_adj() {
        bad(format!(
            "oom_score_adj {} is below the restorer's {}",
            p.oom_score_adj,
            super::rlimits::own_oom_score_adj()
        ));
    }
    let min = crate::check::mmap_min_addr();
    if let Some(v) = p.vmas.iter().find(|v| v.start < min) {
        bad(format!(
            "vma {:x}-{:x} is below vm.mmap_min_addr ({min:#x})",
            v.start, v.end
        ));
    }
    let exe = String::from_utf8_lossy(&p.exe.path).into_owned();
    let now = std::fs::metadata(&exe)
        .map(|m| std::os::unix::fs::MetadataExt::mode(&m))
        .unwrap_or(0);
    if !p.exe.path.is_empty() && (p.exe.mode | now) & 0o6000 != 0 {
        bad(format!(
            "the executable {exe} is set-user-ID or set-group-ID (mode {:o})",
            (p.exe.mode | now) & 0o7777
        ));
    }
}

/// The ids and capabilities of one set of credentials against uid `u`'s.
fn check_ids_of(
    who: &str,
    c: &Credentials,
    u: u32,
    groups: &std::result::Result<(String, Vec<u32>), String>,
    bad: &mut dyn FnMut(String),
) {
    for (name, id) in [
        ("uid", c.ruid),
        ("effective uid", c.euid),
        ("saved uid", c.suid),
        ("filesystem uid", c.fsuid),
    ] {
        if id != u {
            bad(format!("{who}: its {name} {id} is not uid {u}"));
        }
    }
    let gids = [
        ("gid", c.rgid),
        ("effective gid", c.egid),
        ("saved gid", c.sgid),
        ("filesystem gid", c.fsgid),
    ];
    let supplementary = c.groups.iter().map(|&g| ("supplementary group", g));
    for (name, id) in gids.into_iter().chain(supplementary) {
        match groups {
            Ok((_, g)) if g.contains(&id) => {}
            Ok((user, g)) => bad(format!(
                "{who}: its {name} {id} is not one of uid {u}'s ({user}: groups {g:?})"
            )),
            Err(e) => bad(format!("{who}: its {name} {id}: {e}")),
        }
    }
    let caps = c.cap_permitted | c.cap_effective | c.cap_inheritable | c.cap_ambient;
    if caps != 0 {
        bad(format!(
            "{who}: it has capabilities ({caps:#x}) and uid {u} has none"
        ));
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

/// Whether the saved capabilities (effective, permitted, inheritable,
/// bounding, ambient) differ from what a stub of this restorer has.
pub(crate) fn caps_differ(c: &Credentials, own: &OwnCreds) -> bool {
    let own_bounding = own.cap_bounding;
    c.cap_effective != own.cap_eff
        || c.cap_permitted != own.cap_prm
        || c.cap_inheritable != 0
        || c.cap_ambient != 0
        || (c.cap_bounding != 0 && c.cap_bounding & own_bounding != own_bounding)
}

/// The thread's ids and groups ([`set_thread_creds`]) and capabilities as
/// saved: the bounding set lowered first (PR_CAPBSET_DROP, which needs
/// CAP_SETPCAP), the permitted set kept across the uid change
/// (PR_SET_KEEPCAPS), then capset(2) of the saved sets and the ambient
/// ones raised. Never more than the restorer's own (check.rs refuses an
/// image that asks for more).
pub(crate) fn set_thread_identity(
    r: &mut Remote,
    c: &Credentials,
    (ids, own): (bool, &OwnCreds),
    scratch: u64,
) -> Result<()> {
    let own_bounding = own.cap_bounding;
    let prctl = |r: &mut Remote, what: &str, args: [u64; 2]| {
        r.call(what, libc::SYS_prctl, &[args[0], args[1], 0, 0, 0])
    };
    // Without CAP_SETPCAP (a restorer that is not root) the bounding set
    // stays the restorer's: never more than it holds itself.
    if c.cap_bounding != 0 && own.has_cap(CAP_SETPCAP) {
        for cap in 0..64u64 {
            if own_bounding & (1 << cap) != 0 && c.cap_bounding & (1 << cap) == 0 {
                prctl(
                    r,
                    &format!("prctl(PR_CAPBSET_DROP, {cap})"),
                    [libc::PR_CAPBSET_DROP as u64, cap],
                )?;
            }
        }
    }
    if ids {
        prctl(
            r,
            "prctl(PR_SET_KEEPCAPS, 1)",
            [libc::PR_SET_KEEPCAPS as u64, 1],
        )?;
        set_thread_creds(r, c, scratch)?;
        prctl(
            r,
            "prctl(PR_SET_KEEPCAPS, 0)",
            [libc::PR_SET_KEEPCAPS as u64, 0],
        )?;
    }
    let caps = Caps {
        effective: c.cap_effective,
        permitted: c.cap_permitted,
        inheritable: c.cap_inheritable,
    };
    set_caps(r, caps, scratch)?;
    for cap in (0..64u64).filter(|&k| c.cap_ambient & (1 << k) != 0) {
        r.call(
            &format!("prctl(PR_CAP_AMBIENT_RAISE, {cap})"),
            libc::SYS_prctl,
            &[
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_RAISE as u64,
                cap,
                0,
                0,
            ],
        )?;
    }
    Ok(())
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
            error: std::io::Error::from_raw_os_error(libc::EPERM),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Process {
        let mut p = Process::default();
        let c = &mut p.creds;
        (c.ruid, c.euid, c.suid, c.fsuid) = (65534, 65534, 65534, 65534);
        (c.rgid, c.egid, c.sgid, c.fsgid) = (65534, 65534, 65534, 65534);
        p.oom_score_adj = 1000;
        p
    }

    fn errors(p: &Process, who: Requester) -> Vec<String> {
        let own = OwnCreds {
            uids: [0; 4],
            gids: [0; 4],
            groups: vec![0],
            cap_eff: u64::MAX >> 23,
            cap_prm: u64::MAX >> 23,
            cap_bounding: u64::MAX >> 23,
        };
        let mut r = Report::default();
        check_requester(p, &who, &own, &mut r);
        r.errors
    }

    #[test]
    fn only_what_the_requester_could_hold() {
        let mut p = nobody();
        assert!(errors(&p, Requester::User(65534)).is_empty());
        p.creds.suid = 0;
        p.creds.groups = vec![65534, 0];
        p.creds.cap_inheritable = 1;
        let e = errors(&p, Requester::User(65534));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("the process: its saved uid 0 is not uid 65534;"),
            "{e:?}"
        );
        assert!(
            e[1].contains("supplementary group 0 is not one of uid 65534's"),
            "{e:?}"
        );
        assert!(e[2].contains("capabilities (0x1)"), "{e:?}");
        // Root, and the restorer's own image, may ask for it.
        assert!(errors(&p, Requester::User(0)).is_empty());
        assert!(errors(&p, Requester::Restorer).is_empty());
        // A user with no entry has no groups.
        let e = errors(&nobody(), Requester::User(4_000_000_000));
        assert!(
            e.iter()
                .any(|e| e.contains("has no entry in the user database")),
            "{e:?}"
        );
        assert!(!errors(
            &nobody(),
            Requester::Nobody {
                uid: 65534,
                mode: 0o666
            }
        )
        .is_empty());
    }
}
