//! System V IPC objects the dumped processes use: shared memory segments
//! (with their contents), semaphore sets (with their values) and message
//! queues (with their messages), from the dumper's IPC namespace, which
//! must be the processes' own.
//!
//! Which objects "the processes use" in an IPC namespace they may share
//! with the rest of the machine (the kernel keeps no list of users):
//! - segments mapped by a process (their mappings name them), and
//!   segments a process created or last attached or detached (cpid,
//!   lpid of /proc/sysvipc/shm);
//! - semaphore sets where a process did the last operation on one of the
//!   semaphores (semctl GETPID);
//! - message queues a process last sent to or received from (lspid,
//!   lrpid of /proc/sysvipc/msg).
//!
//! Objects owned by the processes' users but never touched by them are
//! left alone: taking every object of a user (root!) would drag in
//! unrelated programs' state, and restoring it would overwrite theirs. An
//! object created and then only used by a process that has exited is
//! therefore not saved.
//!
//! Reading changes nothing of an object but the segment's last-attach
//! pid and time (segments are read through an attach of the dumper's
//! own) and nothing of a queue (messages are copied with MSG_COPY).

use crate::error::{Error, Result};
use crate::procfs::parse_err;
use crate::PageSink;
use ckpt_image::{IpcPerm, SysvMsg, SysvMsgQueue, SysvSem, SysvShm};
use ckpt_sys::ipc::{self, Kind, Perm};
use ckpt_sys::Pid;
use std::collections::BTreeSet;

/// What was saved.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    pub shm: Vec<SysvShm>,
    pub sem: Vec<SysvSem>,
    pub msg: Vec<SysvMsgQueue>,
}

fn perm(p: &Perm) -> IpcPerm {
    IpcPerm {
        key: p.key,
        id: p.id,
        mode: p.mode,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
    }
}

/// An object we may not read (another user's: not one the processes,
/// which run as us or we could not dump them, can use either), or removed
/// meanwhile: not saved.
fn unusable(e: &ckpt_sys::Error) -> bool {
    matches!(
        e.errno(),
        Some(libc::EACCES | libc::EPERM | libc::EINVAL | libc::EIDRM)
    )
}

fn sys_err(pid: Pid, what: String) -> impl FnOnce(ckpt_sys::Error) -> Error {
    move |source| Error::Sys { pid, what, source }
}

/// The objects `pids` use (see the module doc); `attached`: the ids of
/// the segments their mappings name. `pids[0]` names errors.
pub(crate) fn save(
    pids: &[Pid],
    attached: &BTreeSet<i32>,
    page: u64,
    sink: &mut dyn PageSink,
) -> Result<Saved> {
    let Some(&pid) = pids.first() else {
        return Ok(Saved::default());
    };
    let ours = Ours::new(pids);
    check_namespace(pid, !attached.is_empty())?;
    let mut out = Saved::default();
    for row in table(pid, Kind::Shm)? {
        let (id, cpid, lpid) = (row.get("shmid")?, row.get("cpid")?, row.get("lpid")?);
        let last = row.latest(&["atime", "dtime", "ctime"]);
        if attached.contains(&id) {
            out.shm.push(save_shm(pid, id, page, sink)?);
        } else if ours.named(cpid, last) || ours.named(lpid, last) {
            // A segment the processes made or last attached, not mapped
            // now: one we may not read is not one they (running as us, or
            // we could not dump them) can attach again either.
            match save_shm(pid, id, page, sink) {
                Err(Error::Sys { source, .. }) if unusable(&source) => {
                    tracing::debug!(id, "SysV segment not saved: {source}");
                }
                r => out.shm.push(r?),
            }
        }
    }
    for id in attached {
        if !out.shm.iter().any(|s| s.perm.id == *id) {
            return Err(Error::NotPermitted {
                pid,
                why: format!("maps SysV shared memory segment {id}, which /proc/sysvipc/shm does not list (another IPC namespace?)"),
            });
        }
    }
    for row in table(pid, Kind::Sem)? {
        let id = row.get("semid")?;
        let set = match ipc::sem_read(id) {
            Err(e) if unusable(&e) => continue,
            r => r.map_err(sys_err(pid, format!("reading SysV semaphore set {id}")))?,
        };
        let last = row.latest(&["otime", "ctime"]);
        if set.pids.iter().any(|&p| ours.named(p, last)) {
            out.sem.push(SysvSem {
                perm: perm(&set.perm),
                values: set.values,
            });
        }
    }
    for row in table(pid, Kind::Msg)? {
        let (id, lspid, lrpid) = (row.get("msqid")?, row.get("lspid")?, row.get("lrpid")?);
        let last = row.latest(&["stime", "rtime", "ctime"]);
        if !ours.named(lspid, last) && !ours.named(lrpid, last) {
            continue;
        }
        let q = match ipc::msg_read(id) {
            // As for segments: not one the processes can use again.
            Err(e) if unusable(&e) => {
                tracing::debug!(id, "SysV message queue not saved: {e}");
                continue;
            }
            r => r.map_err(sys_err(
                pid,
                format!("reading SysV message queue {id} (MSG_COPY)"),
            ))?,
        };
        out.msg.push(SysvMsgQueue {
            perm: perm(&q.perm),
            qbytes: q.qbytes,
            messages: q
                .messages
                .into_iter()
                .map(|(mtype, data)| SysvMsg { mtype, data })
                .collect(),
        });
    }
    tracing::debug!(
        shm = out.shm.len(),
        sem = out.sem.len(),
        msg = out.msg.len(),
        "SysV IPC objects"
    );
    Ok(out)
}

/// The dumped processes, as the pid columns of /proc/sysvipc name them.
struct Ours {
    /// Each pid with when it started (seconds since the epoch, if known).
    started: std::collections::HashMap<Pid, Option<u64>>,
}

impl Ours {
    fn new(pids: &[Pid]) -> Ours {
        Ours {
            started: pids
                .iter()
                .map(|&p| (p, ckpt_sys::proc::started_at(p)))
                .collect(),
        }
    }

    /// Whether `pid`, named by an object whose last event (creation,
    /// operation, change) was at `last`, is one of ours: not when our
    /// process with that pid started after that event, for then the pid
    /// was recycled and the object belongs to a process that has exited
    /// (postgres' segment outliving a killed postmaster, say).
    fn named(&self, pid: Pid, last: u64) -> bool {
        match self.started.get(&pid) {
            None => false,
            Some(Some(start)) => *start <= last.saturating_add(1),
            Some(None) => true,
        }
    }
}

/// The objects of /proc/sysvipc are those of the dumper's IPC namespace:
/// a process in another one can be dumped only if it maps no segment (its
/// semaphores and queues, if any, cannot be seen and are not saved).
fn check_namespace(pid: Pid, maps_segments: bool) -> Result<()> {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/ipc"));
    let ours = std::fs::read_link("/proc/self/ns/ipc");
    match (theirs, ours) {
        (Ok(t), Ok(o)) if t != o && maps_segments => Err(Error::NotPermitted {
            pid,
            why: format!(
                "maps SysV shared memory of another IPC namespace ({}), which cannot be saved",
                t.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// One segment, its contents read through an attach of ours: data ranges
/// only (SEEK_DATA on the segment's shmem file), holes as zeros.
fn save_shm(pid: Pid, id: i32, page: u64, sink: &mut dyn PageSink) -> Result<SysvShm> {
    let st = ipc::shm_stat(id).map_err(sys_err(
        pid,
        format!("reading SysV shared memory segment {id}"),
    ))?;
    let size = st.size;
    let mut data = vec![0u8; size as usize];
    if size > 0 {
        let at = ipc::ShmAttach::new(id, size, false).map_err(sys_err(
            pid,
            format!("attaching SysV shared memory segment {id} to read it"),
        ))?;
        let len = size.div_ceil(page) * page;
        let path = format!("/proc/self/map_files/{:x}-{:x}", at.addr(), at.addr() + len);
        let ranges = std::fs::File::open(&path)
            .ok()
            .and_then(|f| {
                use std::os::fd::AsRawFd;
                ipc::data_ranges(f.as_raw_fd(), size, page).ok()
            })
            .unwrap_or_else(|| vec![(0, size)]);
        for (a, b) in ranges {
            let b = b.min(size);
            at.read(a as usize, &mut data[a as usize..b as usize]);
        }
    }
    let contents = sink.add_blob(&data)?;
    Ok(SysvShm {
        perm: perm(&st.perm),
        size,
        contents,
        removed: st.perm.mode & ipc::SHM_DEST != 0,
    })
}

/// One row of a /proc/sysvipc table, by column name.
struct Row {
    pid: Pid,
    path: String,
    line: usize,
    cols: std::collections::HashMap<String, String>,
}

impl Row {
    fn get(&self, name: &str) -> Result<i32> {
        let v = self.cols.get(name).ok_or_else(|| {
            parse_err(self.pid, &self.path, self.line, format!("no {name} column"))
        })?;
        v.parse().map_err(|_| {
            parse_err(
                self.pid,
                &self.path,
                self.line,
                format!("{name}: {v:?} is not a number"),
            )
        })
    }
}

impl Row {
    /// The latest of the time columns `names` (seconds since the epoch);
    /// the far future when one is missing or not a number, which makes
    /// nothing look older than it is.
    fn latest(&self, names: &[&str]) -> u64 {
        names
            .iter()
            .map(|n| {
                self.cols
                    .get(*n)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(u64::MAX)
            })
            .max()
            .unwrap_or(u64::MAX)
    }
}

/// /proc/sysvipc/{shm,sem,msg}: the header names the columns.
fn table(pid: Pid, kind: Kind) -> Result<Vec<Row>> {
    let path = format!("/proc/sysvipc/{}", kind.name());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        // A kernel without SysV IPC: no objects.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                pid,
                what: format!("reading {path}"),
                source,
            })
        }
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        let vals: Vec<&str> = l.split_whitespace().collect();
        if vals.is_empty() {
            continue;
        }
        if vals.len() < header.len() {
            return Err(parse_err(
                pid,
                &path,
                i + 2,
                format!("{} columns, the header has {}", vals.len(), header.len()),
            ));
        }
        rows.push(Row {
            pid,
            path: path.clone(),
            line: i + 2,
            cols: header
                .iter()
                .zip(&vals)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
    }
    Ok(rows)
}
