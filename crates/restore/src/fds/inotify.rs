//! inotify instances: watches are added again by path (with the saved
//! user's rights) and must get their saved watch numbers; unread events
//! are not saved.

use super::{cpath, Builder, FdOp};
use crate::check::AccessItem;
use crate::stub::Child;
use ckpt_image::Inotify;
use ckpt_sys::fds::inotify;
use std::ffi::CStr;
use std::os::fd::IntoRawFd;

pub(super) fn plan(b: &mut Builder, g: usize, ino: &Inotify) {
    let (what, flags) = (b.what(g), b.flags(g));
    let mut watches: Vec<_> = ino.watches.iter().collect();
    watches.sort_by_key(|w| w.wd);
    if let Some(w) = watches.iter().find(|w| w.path.is_empty()) {
        b.error(format!(
            "{what}: the path of inotify watch {} (inode {}) is not known",
            w.wd, w.inode
        ));
        return;
    }
    // Watch descriptors are handed out in increasing order from 1; a gap
    // (a watch removed) could not be made again.
    if let Some((i, w)) = watches
        .iter()
        .enumerate()
        .find(|(i, w)| w.wd != *i as i32 + 1)
    {
        b.error(format!(
            "{what}: inotify watch descriptors must be 1, 2, 3...; watch {} is number {}",
            w.wd,
            i + 1
        ));
        return;
    }
    let s = b.slot();
    b.op(
        &what,
        FdOp::Inotify {
            slot: s,
            flags: flags & libc::O_NONBLOCK,
        },
    );
    for w in watches {
        let Some(path) = cpath(&w.path) else {
            b.error(format!("{what}: an inotify watch path holds a NUL byte"));
            return;
        };
        // A deleted file: watched through the one made again for an fd.
        let via = if w.path.ends_with(b" (deleted)") {
            match b.remade.get(&(w.dev, w.inode)) {
                Some(&v) => Some(v),
                None => {
                    b.error(format!(
                        "{what}: inotify watch {} is on a deleted file ({}) that no fd of the image holds",
                        w.wd,
                        String::from_utf8_lossy(&w.path)
                    ));
                    return;
                }
            }
        } else {
            None
        };
        b.op(
            &what,
            FdOp::InotifyWatch {
                slot: s,
                path,
                via,
                mask: w.mask,
                wd: w.wd,
            },
        );
    }
    b.slot_of[g] = Some(s);
}

/// FdOp::Inotify.
pub(super) fn make(c: &mut Child<'_>, slot: usize, flags: i32) -> ckpt_sys::Result<()> {
    c.new_fd(slot, inotify::inotify_init1(flags)?.into_raw_fd())?;
    Ok(())
}

/// FdOp::InotifyWatch: added with the saved user's rights; another watch
/// number than the saved one fails.
pub(super) fn add_watch(
    c: &mut Child<'_>,
    slot: usize,
    (path, via): (&CStr, Option<usize>),
    mask: u32,
    wd: i32,
) -> ckpt_sys::Result<()> {
    let fd = c.slot(slot);
    let mut buf = [0u8; 40];
    let path = match via {
        Some(v) => crate::stub::proc_fd_path(c.slot(v), &mut buf),
        None => path,
    };
    let got = c.as_saved(|_| inotify::inotify_add_watch(fd, path, mask))?;
    if got != wd {
        return Err(ckpt_sys::Error::Os {
            op: "inotify_add_watch (another watch number)",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::EEXIST),
        });
    }
    Ok(())
}

/// inotify_add_watch needs read permission on the path.
pub(super) fn access(what: &str, path: &CStr, items: &mut Vec<AccessItem>) {
    items.push((what.to_string(), path.to_owned(), libc::R_OK));
}
