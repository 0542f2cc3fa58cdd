//! epoll instances: every watch with its events and data, and the open
//! file description it watches. A watch is keyed by (file, fd number): the
//! fd may since have been closed or given to another file while the file
//! stays open at another fd (dup, fork). kcmp(KCMP_EPOLL_TFD) finds which
//! of the process's fds holds the watched description; a watch whose file
//! the process holds at no fd is refused. An instance in flight (passed in
//! a queued message) watches fds of the process whose queue holds it.

use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use crate::procfs::token_after;
use ckpt_image::{Epoll, EpollTarget, FileKind};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[eventpoll]"
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let mut targets = Vec::new();
    // Watches with the same fd number, in fdinfo's order (kcmp's toff).
    let mut seen: HashMap<i32, u32> = HashMap::new();
    for (n, l) in f.info.lines_with("tfd:") {
        let tfd = f.info.token(n, l, "tfd", 10)?;
        let tfd =
            i32::try_from(tfd).map_err(|_| f.info.err(n, format!("tfd {tfd} is not an fd")))?;
        let events = f.info.token(n, l, "events", 16)?;
        let events =
            u32::try_from(events).map_err(|_| f.info.err(n, format!("events {events:#x}")))?;
        let data = f.info.token(n, l, "data", 16)?;
        let tino = match token_after(l, "ino") {
            Some(_) => Some(f.info.token(n, l, "ino", 16)?),
            None => None,
        };
        let toff = seen.entry(tfd).or_default();
        let off = *toff;
        *toff += 1;
        // An epoll in flight (our copy): the watched fds are those of the
        // process whose queue holds it.
        let (pid, fds, ids) = cx.owner.unwrap_or((cx.pid, cx.fds, cx.file_ids));
        let watch = Watch {
            epfd: (cx.pid, f.fd),
            tfd,
            toff: off,
            tino,
        };
        let Some((at, file)) = watched_file(pid, fds, ids, &watch) else {
            return Err(unsupported(
                f.fd,
                format!("epoll watches fd {tfd}, whose file the process no longer holds at any fd (closed, or held only elsewhere); not supported"),
            ));
        };
        if at != tfd && super::pidfd::matches(&fds[at_index(fds, at)]) {
            return Err(unsupported(
                f.fd,
                format!("epoll watches a pidfd under fd {tfd}, which the process now holds at fd {at}; not supported"),
            ));
        }
        targets.push(EpollTarget {
            fd: tfd,
            file,
            events,
            data,
        });
    }
    Ok(Some(FileKind::Epoll(Epoll { targets })))
}

/// The index in `fds` of fd `fd`.
fn at_index(fds: &[RawFd], fd: i32) -> usize {
    fds.iter().position(|x| x.fd == fd).unwrap_or(0)
}

/// One watch of an epoll instance: the instance (process, fd), the fd
/// number it watches (the `toff`th watch of that number) and the inode
/// fdinfo names.
struct Watch {
    epfd: (ckpt_sys::Pid, i32),
    tfd: i32,
    toff: u32,
    tino: Option<u64>,
}

/// The fd and the id of the description the watch `w` is of, among the
/// fds `fds` of process `pid` (ids `ids`): the one at the watched number
/// first, then any other fd of the same inode.
fn watched_file(
    pid: ckpt_sys::Pid,
    fds: &[RawFd],
    ids: &BTreeMap<i32, u32>,
    w: &Watch,
) -> Option<(i32, u32)> {
    let ino = |x: &RawFd| x.md.as_ref().map(|m| m.ino()).unwrap_or(x.info.ino);
    let mut candidates: Vec<&RawFd> = fds
        .iter()
        .filter(|x| w.tino.is_none_or(|t| ino(x) == t))
        .collect();
    candidates.sort_by_key(|x| x.fd != w.tfd);
    let (epid, epfd) = w.epfd;
    for x in candidates {
        match ckpt_sys::kcmp::kcmp_epoll_target(pid, x.fd, epid, epfd, w.tfd, w.toff) {
            Ok(Ordering::Equal) => return Some((x.fd, ids[&x.fd])),
            Ok(_) => continue,
            Err(e) if e.errno() == Some(libc::ENOSYS) => {
                // No kcmp: the fd at that number, if it is the same inode.
                return (x.fd == w.tfd).then(|| (x.fd, ids[&x.fd]));
            }
            Err(e) => {
                tracing::debug!(epfd, tfd = w.tfd, error = %e, "kcmp(KCMP_EPOLL_TFD)");
                return None;
            }
        }
    }
    None
}
