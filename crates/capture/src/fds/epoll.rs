//! epoll instances: every watched fd with its events and data. A watch
//! whose fd was closed or replaced cannot be restored and is refused.

use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use crate::procfs::token_after;
use ckpt_image::{Epoll, EpollTarget, FileKind};
use std::os::unix::fs::MetadataExt;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[eventpoll]"
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let mut targets = Vec::new();
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
        // The fd must still be open and be the same file.
        let file = cx
            .fds
            .iter()
            .find(|x| x.fd == tfd && (tino.is_none() || x.md.as_ref().map(|m| m.ino()) == tino))
            .map(|x| cx.file_ids[&x.fd]);
        let Some(file) = file else {
            return Err(unsupported(
                f.fd,
                format!("epoll watches fd {tfd}, which is closed or replaced; not supported"),
            ));
        };
        targets.push(EpollTarget {
            fd: tfd,
            file,
            events,
            data,
        });
    }
    Ok(Some(FileKind::Epoll(Epoll { targets })))
}
