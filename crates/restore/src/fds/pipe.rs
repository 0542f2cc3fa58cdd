//! Pipes and FIFOs: both ends of a pipe are made together with the bytes
//! buffered in it; an end whose other end was outside the image is
//! reconnected to the live pipe when some process still holds it (found in
//! /proc, see [`find_pipe_holders`]), else inherited from the restorer's fd
//! 0-2 or made with its other end closed; FIFOs are reopened by path.

use super::{Builder, FdOp};
use crate::stub::{proc_fd_path, Child};
use ckpt_image::{FileKind, Pipe, PipeEnd};
use ckpt_sys::fds::{self, pipe};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// A pipe or FIFO the planner wants a live holder of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeQuery<'a> {
    /// The pipe inode (`pipe:[INODE]`), or the FIFO node's inode.
    pub ino: u64,
    /// Empty for a pipe; the FIFO's path for a FIFO.
    pub fifo_path: &'a [u8],
}

/// A live process holding a pipe: `/proc/PID/fd/FD` opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeHolder {
    pub pid: i32,
    pub fd: i32,
}

/// Finds a live holder of each queried pipe (`None` where there is none).
/// The `i32`s are pids worth looking at first; the `u32` is the uid the
/// restored process opens files as (holders it could not open the pipe
/// of through /proc are skipped).
pub type FindPipes = fn(&[PipeQuery<'_>], &[i32], u32) -> Vec<Option<PipeHolder>>;

/// What planning the pipes leaves for the descriptions planned one by one.
pub(super) struct State {
    /// Live holders of FIFOs (whose saved data is then still in them).
    live_fifos: HashMap<u64, PipeHolder>,
    /// The read-write holder slot opened for each FIFO.
    fifo_holders: HashMap<u64, usize>,
    /// Groups that are the restorer's own fd (their flags are not ours to set).
    inherited: Vec<bool>,
}

/// The groups of each pipe, by pipe id: [read ends, write ends].
type Ends = BTreeMap<u64, [Vec<usize>; 2]>;

/// Make every pipe (both ends together), or reconnect or inherit ends
/// whose other end was outside the image.
pub(super) fn plan_pipes(b: &mut Builder) -> State {
    let mut pipes: Ends = BTreeMap::new();
    for (g, group) in b.groups.iter().enumerate() {
        if let FileKind::Pipe(p) = &group.file.kind {
            let e = pipes.entry(p.id).or_default();
            e[(p.end == PipeEnd::Write) as usize].push(g);
        }
    }
    let (live_pipes, live_fifos) = live_holders(b, &pipes);
    let mut st = State {
        live_fifos,
        fifo_holders: HashMap::new(),
        inherited: vec![false; b.groups.len()],
    };
    for (id, ends) in &pipes {
        plan_pipe(b, *id, ends, live_pipes.get(id), &mut st);
    }
    st
}

/// Live holders of pipes whose other end is outside the image (found in
/// one pass over /proc), and of FIFOs whose saved data may still be in
/// the live pipe.
fn live_holders(b: &Builder, pipes: &Ends) -> (HashMap<u64, PipeHolder>, HashMap<u64, PipeHolder>) {
    let mut queries: Vec<PipeQuery> = Vec::new();
    for (id, ends) in pipes {
        if ends[0].is_empty() || ends[1].is_empty() {
            queries.push(PipeQuery {
                ino: *id,
                fifo_path: &[],
            });
        }
    }
    for group in &b.groups {
        let f = group.file;
        if let FileKind::Fifo(p) = &f.kind {
            if !p.data.is_empty() {
                let path: &[u8] = if p.fifo_path.is_empty() {
                    &f.path
                } else {
                    &p.fifo_path
                };
                queries.push(PipeQuery {
                    ino: p.id,
                    fifo_path: path,
                });
            }
        }
    }
    let mut live_pipes = HashMap::new();
    let mut live_fifos = HashMap::new();
    if let (Some(find), false) = (b.env.find_pipes, queries.is_empty()) {
        let hints = [b.proc.ppid];
        for (q, h) in queries
            .iter()
            .zip(find(&queries, &hints, b.proc.creds.fsuid))
        {
            if let Some(h) = h {
                if q.fifo_path.is_empty() {
                    live_pipes.insert(q.ino, h);
                } else {
                    live_fifos.insert(q.ino, h);
                }
            }
        }
    }
    (live_pipes, live_fifos)
}

/// One pipe: its ends reconnected to the live pipe, or the restorer's fd
/// inherited, or a new pipe with its data.
fn plan_pipe(
    b: &mut Builder,
    id: u64,
    ends: &[Vec<usize>; 2],
    live: Option<&PipeHolder>,
    st: &mut State,
) {
    let data: Vec<u8> = ends
        .iter()
        .flatten()
        .filter_map(|&g| match &b.groups[g].file.kind {
            FileKind::Pipe(p) if !p.data.is_empty() => Some(p.data.clone()),
            _ => None,
        })
        .next()
        .unwrap_or_default();
    let capacity = ends
        .iter()
        .flatten()
        .filter_map(|&g| match &b.groups[g].file.kind {
            FileKind::Pipe(p) => Some(p.capacity),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let first = *ends.iter().flatten().next().expect("pipe group");
    let what = b.what(first);
    if let Err(e) = check_capacity(capacity, data.len()) {
        b.error(format!("{what}: {e}"));
    }
    let both = !ends[0].is_empty() && !ends[1].is_empty();
    if let (false, Some(h)) = (both, live) {
        reconnect(b, ends, h);
        return;
    }
    if !both {
        // The other end is not in the image. If no process held it at the
        // dump, the pipe made below, with that end closed, is what was
        // there (EOF for a reader, EPIPE for a writer).
        let closed_then = ends
            .iter()
            .flatten()
            .any(|&g| matches!(&b.groups[g].file.kind, FileKind::Pipe(p) if p.peer_closed));
        if !closed_then {
            // Held outside the saved processes, and by no live process now.
            if inherit(b, first, ends, &data, st) {
                return;
            }
            b.warning(format!(
                "pipe {id} ({what}): its other end was outside the image and no live process holds the pipe; a new pipe is made whose other end is closed"
            ));
        }
    }
    let (r, w) = (b.slot(), b.slot());
    b.op(
        &what,
        FdOp::Pipe {
            read: r,
            write: w,
            capacity,
            data,
        },
    );
    for (end, base) in [(0usize, r), (1usize, w)] {
        for (i, &g) in ends[end].iter().enumerate() {
            let s = if i == 0 {
                base
            } else {
                let s = b.slot();
                let flags = b.flags(g);
                b.op(
                    &b.what(g),
                    FdOp::Reopen {
                        slot: s,
                        from: base,
                        flags,
                    },
                );
                s
            };
            b.slot_of[g] = Some(s);
        }
    }
}

/// A new pipe's default capacity (16 pages).
const DEFAULT_CAPACITY: u64 = 16 * 4096;
const CAP_SYS_RESOURCE: u64 = 1 << 24;

/// Whether a pipe of `capacity` (0: the default) can be made here with
/// `queued` bytes in it: F_SETPIPE_SZ refuses more than 2^31, and more
/// than fs.pipe-max-size without CAP_SYS_RESOURCE; the data must fit in
/// the capacity the kernel gives (rounded up to a power of two pages).
fn check_capacity(capacity: u32, queued: usize) -> Result<(), String> {
    let page = 4096u64;
    let cap = u64::from(capacity);
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let privileged = crate::process::creds::own_creds().cap_eff & CAP_SYS_RESOURCE != 0;
    if cap > 1 << 31 {
        return Err(format!(
            "pipe capacity {cap} is more than the kernel allows (2 GiB)"
        ));
    }
    if cap > max && cap > DEFAULT_CAPACITY && !privileged {
        return Err(format!(
            "pipe capacity {cap} is above fs.pipe-max-size ({max}); setting it needs CAP_SYS_RESOURCE"
        ));
    }
    let effective = match cap {
        0 => DEFAULT_CAPACITY,
        c => c.max(page).next_power_of_two(),
    };
    if queued as u64 > effective {
        return Err(format!(
            "{queued} bytes buffered in a pipe that holds {effective} (capacity {cap})"
        ));
    }
    Ok(())
}

/// The other end was outside the saved process and the pipe is still
/// alive: reconnect every end to it. Its buffered data is still in it (or
/// was read by the holder): not written again.
fn reconnect(b: &mut Builder, ends: &[Vec<usize>; 2], h: &PipeHolder) {
    let path = CString::new(format!("/proc/{}/fd/{}", h.pid, h.fd)).expect("no NUL");
    for &g in ends.iter().flatten() {
        let s = b.slot();
        let flags = b.flags(g);
        b.op(
            &format!(
                "{} (reconnecting to the live pipe through {})",
                b.what(g),
                path.to_string_lossy()
            ),
            FdOp::OpenPipe {
                slot: s,
                path: path.clone(),
                flags,
            },
        );
        b.slot_of[g] = Some(s);
    }
}

/// An end to outside the image at fd 0, 1 or 2: the restorer's own fd of
/// that number is used instead. False when the end is at no such number.
fn inherit(b: &mut Builder, g: usize, ends: &[Vec<usize>; 2], data: &[u8], st: &mut State) -> bool {
    let what = b.what(g);
    let std = b.groups[g]
        .fds
        .iter()
        .map(|f| f.fd)
        .filter(|&n| (0..3).contains(&n))
        .min();
    let Some(k) = std else {
        return false;
    };
    let k = k as usize;
    if !b.env.std_open[k] {
        b.error(format!(
            "{what}: a pipe to outside the image, to be inherited from the restorer's fd {k}, which is closed"
        ));
    }
    if !data.is_empty() && ends[0].contains(&g) {
        b.warning(format!(
            "{what}: {} bytes buffered in the pipe are lost (its other end was outside the image; the restorer's fd {k} is used instead)",
            data.len()
        ));
    }
    b.plan.needs_std[k] = true;
    let s = b.slot();
    b.op(&what, FdOp::InheritStd { slot: s, std: k });
    b.slot_of[g] = Some(s);
    st.inherited[g] = true;
    true
}

/// A pipe end made by [`plan_pipes`]: only its status flags remain.
pub(super) fn plan_pipe_flags(b: &mut Builder, g: usize, st: &State) {
    if let (Some(s), false) = (b.slot_of[g], st.inherited[g]) {
        let (what, flags) = (b.what(g), b.flags(g));
        b.set_fl(&what, s, flags);
    }
}

/// A FIFO, reopened by path; a deleted one made again (see
/// [`plan_deleted_fifo`]).
pub(super) fn plan_fifo(b: &mut Builder, g: usize, p: &Pipe, st: &mut State) {
    let f = b.groups[g].file;
    let (what, flags) = (b.what(g), b.flags(g));
    let path = if p.fifo_path.is_empty() {
        f.path.clone()
    } else {
        p.fifo_path.clone()
    };
    if p.fifo.deleted || f.path.ends_with(b" (deleted)") {
        plan_deleted_fifo(b, g, p, super::strip_deleted(&path), st);
        return;
    }
    let Some(cp) = super::cpath(&path) else {
        b.error(format!("{what}: path holds a NUL byte"));
        return;
    };
    b.plan.opens.push((what.clone(), path.clone()));
    // A holder opened read-write keeps both ends alive, so that opening
    // either end does not block, and refills the data unless a live
    // process still holds the FIFO (then its pipe, with the data, never
    // went away).
    let live = st.live_fifos.contains_key(&p.id);
    let h = match st.fifo_holders.get(&p.id) {
        Some(&h) => h,
        None => {
            let h = b.slot();
            b.op(
                &what,
                FdOp::Open {
                    slot: h,
                    path: cp.clone(),
                    flags: libc::O_RDWR | libc::O_NONBLOCK,
                    mode: 0,
                },
            );
            if !live {
                // Made again by the kernel at the default size: given its own.
                fifo_capacity(b, &what, h, p);
            }
            st.fifo_holders.insert(p.id, h);
            h
        }
    };
    // The data came with one read end, not necessarily the first end.
    if !p.data.is_empty() && !live {
        fifo_refill(b, &what, h, p);
    }
    let s = b.slot();
    b.op(
        &what,
        FdOp::Open {
            slot: s,
            path: cp,
            flags: flags | libc::O_NONBLOCK,
            mode: 0,
        },
    );
    b.set_fl(&what, s, flags);
    b.slot_of[g] = Some(s);
}

/// The saved capacity of the FIFO `p` (its holder in slot `h`).
fn fifo_capacity(b: &mut Builder, what: &str, h: usize, p: &Pipe) {
    if p.capacity != 0 {
        b.op(
            what,
            FdOp::PipeSize {
                slot: h,
                capacity: p.capacity,
            },
        );
    }
}

/// The bytes buffered in the FIFO `p`, written into it through its holder
/// (slot `h`), checked against its capacity.
fn fifo_refill(b: &mut Builder, what: &str, h: usize, p: &Pipe) {
    if let Err(e) = check_capacity(p.capacity, p.data.len()) {
        b.error(format!("{what}: {e}"));
    }
    b.op(
        what,
        FdOp::Write {
            slot: h,
            data: p.data.clone(),
        },
    );
}

/// A FIFO whose node was unlinked: made again under a free name next to
/// where it was (with its owner, mode and times), opened read-write as
/// the holder (refilled with the saved data) and unlinked; each end is a
/// new description of it through /proc/self/fd.
fn plan_deleted_fifo(b: &mut Builder, g: usize, p: &Pipe, path: &[u8], st: &mut State) {
    let (what, flags) = (b.what(g), b.flags(g));
    let h = match st.fifo_holders.get(&p.id) {
        Some(&h) => h,
        None => {
            let h = b.slot();
            let mode = if p.fifo.mode & libc::S_IFMT == libc::S_IFIFO {
                p.fifo.mode
            } else {
                libc::S_IFIFO | 0o600
            };
            b.op(
                &what,
                FdOp::TmpNode {
                    slot: h,
                    paths: super::regular::temp_names(path, p.id),
                    mode,
                    flags: libc::O_RDWR | libc::O_NONBLOCK,
                    meta: super::regular::NodeMeta::of(&p.fifo),
                },
            );
            fifo_capacity(b, &what, h, p);
            st.fifo_holders.insert(p.id, h);
            h
        }
    };
    if !p.data.is_empty() {
        fifo_refill(b, &what, h, p);
    }
    let s = b.reopen(&what, h, flags | libc::O_NONBLOCK);
    b.set_fl(&what, s, flags);
    b.slot_of[g] = Some(s);
}

/// FdOp::Pipe: a pipe of the saved capacity with its data; `slots` are
/// the read and the write end's.
pub(super) fn make(
    c: &mut Child<'_>,
    slots: [usize; 2],
    capacity: u32,
    data: &[u8],
) -> ckpt_sys::Result<()> {
    // Non-blocking while it is filled: data that does not fit fails
    // (EAGAIN) instead of blocking the stub for good. The saved status
    // flags are set afterwards (SetFl).
    let (r, w) = pipe::pipe2(libc::O_NONBLOCK)?;
    c.new_fd(slots[0], r.into_raw_fd())?;
    let w = c.new_fd(slots[1], w.into_raw_fd())?;
    if capacity != 0 && pipe::pipe_size(w)? != capacity {
        pipe::set_pipe_size(w, capacity)?;
    }
    if !data.is_empty() {
        fds::write_fd(w, data)?;
    }
    // Both ends blocking again, as pipe(2) makes them.
    for fd in [c.slot(slots[0]), w] {
        let fl = ckpt_sys::fds::get_fl(fd)?;
        ckpt_sys::fds::set_fl(fd, fl & !libc::O_NONBLOCK)?;
    }
    Ok(())
}

/// FdOp::OpenPipe: a new description of a live pipe, without blocking.
pub(super) fn open_live(
    c: &mut Child<'_>,
    slot: usize,
    path: &CStr,
    flags: i32,
) -> ckpt_sys::Result<()> {
    let nb = flags | libc::O_NONBLOCK;
    let fd = c.as_saved(|_| match fds::open(path, nb, 0) {
        Ok(fd) => Ok(fd.into_raw_fd()),
        // A write end with no reader: be the reader meanwhile.
        Err(e) if e.errno() == Some(libc::ENXIO) => {
            let mut buf = [0u8; 40];
            let tmp = fds::open(path, libc::O_RDWR | libc::O_NONBLOCK, 0)?.into_raw_fd();
            let p = proc_fd_path(tmp, &mut buf);
            let r = fds::open(p, nb, 0).map(IntoRawFd::into_raw_fd);
            fds::close(tmp)?;
            r
        }
        Err(e) => Err(e),
    })?;
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::InheritStd: the restorer's own fd `std`.
pub(super) fn inherit_std(c: &mut Child<'_>, slot: usize, std: usize) {
    let fd = c.std_fd(std);
    c.set_slot(slot, fd);
}

/// `pipe:[INODE]` → INODE.
fn pipe_ino(link: &[u8]) -> Option<u64> {
    let s = link.strip_prefix(b"pipe:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Look through the fds of `pid` for the pipes still missing in `found`.
/// Returns true when everything is found.
fn scan_pid(pid: i32, wanted: &[PipeQuery<'_>], found: &mut [Option<PipeHolder>]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.as_os_str().as_bytes();
        let ino = pipe_ino(link);
        for (i, q) in wanted.iter().enumerate() {
            if found[i].is_some() {
                continue;
            }
            let hit = if q.fifo_path.is_empty() {
                ino == Some(q.ino)
            } else {
                link == q.fifo_path
                    && std::fs::metadata(e.path())
                        .map(|m| m.file_type().is_fifo() && m.ino() == q.ino)
                        .unwrap_or(false)
            };
            if hit {
                found[i] = Some(PipeHolder { pid, fd });
            }
        }
        if found.iter().all(Option::is_some) {
            return true;
        }
    }
    false
}

/// Whether a process running as `uid` could open the fds of `pid` through
/// /proc (roughly: it is `uid`'s own process), or the restorer opens them
/// for its own user.
fn reachable_as(pid: i32, uid: u32) -> bool {
    if uid == ckpt_sys::creds::geteuid() {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|v| {
            v.split_whitespace()
                .all(|x| x.parse::<u32>().ok() == Some(uid))
        })
}

/// A live holder of each queried pipe: the pids in `first` are looked at
/// first, then this process, then every other process in /proc; the search
/// stops when all are found. Opening `/proc/PID/fd/N` of the holder gives
/// a new open file description of the same pipe, which does not depend on
/// the holder staying alive (so this process counts as a holder too: a
/// library caller may hold the other end itself). When the restored
/// process runs as another `uid` than ours, only that user's processes
/// count: it could not have reached another user's pipe itself, and an
/// image must not connect it to one.
pub fn find_pipe_holders(
    wanted: &[PipeQuery<'_>],
    first: &[i32],
    uid: u32,
) -> Vec<Option<PipeHolder>> {
    let mut found = vec![None; wanted.len()];
    if wanted.is_empty() {
        return found;
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let me = std::process::id() as i32;
    for &pid in first.iter().chain(std::iter::once(&me)) {
        if pid > 0
            && seen.insert(pid)
            && reachable_as(pid, uid)
            && scan_pid(pid, wanted, &mut found)
        {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if seen.insert(pid) && reachable_as(pid, uid) && scan_pid(pid, wanted, &mut found) {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fd, file, none};
    use super::super::{plan_fds, FdEnv, FdPlan};
    use super::*;
    use ckpt_image::*;

    fn pipe(id: u64, end: PipeEnd, data: &[u8]) -> FileKind {
        FileKind::Pipe(Pipe {
            id,
            end,
            data: data.to_vec(),
            capacity: 65536,
            fifo_path: vec![],
            ..Default::default()
        })
    }

    #[test]
    fn pipe_with_both_ends_is_one_pipe_with_its_data() {
        let mut img = Image::default();
        img.files.push(file(
            1,
            libc::O_RDONLY as u32 | libc::O_NONBLOCK as u32,
            pipe(9, PipeEnd::Read, b"hello"),
        ));
        img.files
            .push(file(2, libc::O_WRONLY as u32, pipe(9, PipeEnd::Write, b"")));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            plan.ops[0],
            FdOp::Pipe {
                read: 0,
                write: 1,
                capacity: 65536,
                data: b"hello".to_vec()
            }
        );
        assert!(plan.ops.contains(&FdOp::SetFl {
            slot: 0,
            flags: libc::O_NONBLOCK
        }));
        assert!(plan.procs[0].places.contains(&super::super::Place {
            slot: 0,
            fd: 3,
            cloexec: false
        }));
        assert!(plan.procs[0].places.contains(&super::super::Place {
            slot: 1,
            fd: 4,
            cloexec: false
        }));
    }

    #[test]
    fn external_pipe_on_stdout_is_inherited() {
        let mut img = Image::default();
        img.files
            .push(file(1, libc::O_WRONLY as u32, pipe(9, PipeEnd::Write, b"")));
        let p = Process {
            fds: vec![fd(1, 1), fd(2, 1)],
            ..Default::default()
        };
        let env = FdEnv {
            std_open: [true; 3],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.ops[0], FdOp::InheritStd { slot: 0, std: 1 });
        assert_eq!(plan.needs_std, [false, true, false]);
        // Not inherited when the restorer has no fd 1.
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert!(plan.errors[0].contains("fd 1"), "{:?}", plan.errors);
    }

    fn holder_of_9(q: &[PipeQuery<'_>], first: &[i32], _uid: u32) -> Vec<Option<PipeHolder>> {
        assert_eq!(first, &[77]);
        q.iter()
            .map(|q| (q.ino == 9).then_some(PipeHolder { pid: 42, fd: 5 }))
            .collect()
    }

    #[test]
    fn external_pipe_with_a_live_holder_is_reconnected_without_its_data() {
        let mut img = Image::default();
        // stdin: the read end, with data; stdout/stderr: one write end.
        img.files.push(file(
            1,
            libc::O_RDONLY as u32,
            pipe(9, PipeEnd::Read, b"queued"),
        ));
        img.files.push(file(
            2,
            (libc::O_WRONLY | libc::O_NONBLOCK) as u32,
            pipe(8, PipeEnd::Write, b""),
        ));
        let p = Process {
            ppid: 77,
            fds: vec![fd(0, 1), fd(1, 2), fd(2, 2)],
            ..Default::default()
        };
        let env = FdEnv {
            std_open: [true; 3],
            find_pipes: Some(holder_of_9),
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        // Pipe 9 is reconnected; pipe 8 (no holder) falls back to fd 1.
        assert_eq!(
            plan.ops[0],
            FdOp::InheritStd { slot: 0, std: 1 },
            "{:?}",
            plan.ops
        );
        assert_eq!(
            plan.ops[1],
            FdOp::OpenPipe {
                slot: 1,
                path: CString::new("/proc/42/fd/5").unwrap(),
                flags: libc::O_RDONLY
            }
        );
        assert!(plan.what[1].contains("reconnecting"), "{}", plan.what[1]);
        assert!(plan.ops.contains(&FdOp::SetFl { slot: 1, flags: 0 }));
        assert!(!plan
            .ops
            .iter()
            .any(|o| matches!(o, FdOp::Pipe { .. } | FdOp::Write { .. })));
        assert_eq!(plan.needs_std, [false, true, false]);
        assert_eq!(plan.warnings.len(), 0, "{:?}", plan.warnings);
        assert!(plan.procs[0].places.contains(&super::super::Place {
            slot: 1,
            fd: 0,
            cloexec: false
        }));
    }

    #[test]
    fn fifo_data_is_refilled_only_without_a_live_holder() {
        let mut img = Image::default();
        let mut f = file(1, libc::O_RDONLY as u32, pipe(9, PipeEnd::Read, b"abc"));
        f.kind = match f.kind {
            FileKind::Pipe(mut p) => {
                p.fifo_path = b"/tmp/f".to_vec();
                FileKind::Fifo(p)
            }
            k => k,
        };
        img.files.push(f);
        let p = Process {
            ppid: 77,
            fds: vec![fd(3, 1)],
            ..Default::default()
        };
        let writes = |plan: &FdPlan| {
            plan.ops
                .iter()
                .filter(|o| matches!(o, FdOp::Write { .. }))
                .count()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(writes(&plan), 1, "{:?}", plan.ops);
        let env = FdEnv {
            find_pipes: Some(holder_of_9),
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert_eq!(writes(&plan), 0, "{:?}", plan.ops);
    }

    #[test]
    fn parses_pipe_links() {
        assert_eq!(pipe_ino(b"pipe:[1234]"), Some(1234));
        assert_eq!(pipe_ino(b"socket:[1234]"), None);
        assert_eq!(pipe_ino(b"pipe:[x]"), None);
    }

    #[test]
    fn finds_our_own_pipe_and_not_a_missing_one() {
        let (r, w) = pipe::pipe2(libc::O_CLOEXEC).unwrap();
        let (r, w) = (r.into_raw_fd(), w.into_raw_fd());
        let ino = std::fs::metadata(format!("/proc/self/fd/{r}"))
            .unwrap()
            .ino();
        let q = [
            PipeQuery {
                ino,
                fifo_path: &[],
            },
            PipeQuery {
                ino: u64::MAX,
                fifo_path: &[],
            },
        ];
        let me = ckpt_sys::creds::geteuid();
        let got = find_pipe_holders(&q, &[], me);
        let h = got[0].expect("our pipe is found");
        assert_eq!(h.pid, std::process::id() as i32);
        // Another test's fds may come and go; ours are r and w.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", h.fd)).unwrap();
        assert_eq!(link.to_string_lossy(), format!("pipe:[{ino}]"));
        assert_eq!(got[1], None);
        // Another user's process could not reach ours.
        if me == 0 {
            assert_eq!(find_pipe_holders(&q, &[], 65534)[0], None);
        }
        fds::close(r).unwrap();
        fds::close(w).unwrap();
    }
}
