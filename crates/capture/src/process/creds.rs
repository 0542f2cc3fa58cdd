//! Credentials: ids, groups, capabilities, no_new_privs and seccomp mode
//! from /proc/PID/status (securebits are asked of the process).

use crate::error::Result;
use crate::procfs::Status;
use ckpt_image::Credentials;

pub(crate) fn credentials(status: &Status) -> Result<Credentials> {
    let uid = status.ids("Uid")?;
    let gid = status.ids("Gid")?;
    Ok(Credentials {
        ruid: uid[0],
        euid: uid[1],
        suid: uid[2],
        fsuid: uid[3],
        rgid: gid[0],
        egid: gid[1],
        sgid: gid[2],
        fsgid: gid[3],
        groups: status.nums("Groups")?,
        cap_inheritable: status.radix("CapInh", 16)?,
        cap_permitted: status.radix("CapPrm", 16)?,
        cap_effective: status.radix("CapEff", 16)?,
        cap_bounding: status.radix("CapBnd", 16)?,
        cap_ambient: status.radix("CapAmb", 16)?,
        securebits: 0,
        no_new_privs: status.num::<u32>("NoNewPrivs")? != 0,
        seccomp_mode: status.num("Seccomp")?,
    })
}

/// The credentials of each thread but the leader where they differ from
/// the process's (`process`, the leader's): a thread that changed its ids
/// with a raw setresuid(2), which glibc would have applied to every thread.
/// `thread_status`: the /proc status of each thread but the leader.
pub(crate) fn thread_creds(
    process: &Credentials,
    thread_status: &std::collections::BTreeMap<ckpt_sys::Pid, Status>,
    threads: &mut [ckpt_image::Thread],
) -> Result<()> {
    for t in threads.iter_mut() {
        let Some(st) = thread_status.get(&t.tid) else {
            continue;
        };
        let mut c = credentials(st)?;
        // Asked of the process, not in status.
        c.securebits = process.securebits;
        if c != *process {
            tracing::debug!(tid = t.tid, "thread credentials differ from the process's");
            t.creds = Some(c);
        }
    }
    Ok(())
}
