//! fanotify groups: made with their init flags by the stub, each mark
//! added again on its path (with the saved user's rights). Events that
//! were queued and not read are lost.

use super::{cpath, Builder, FdOp};
use crate::stub::Child;
use ckpt_image::Fanotify;
use ckpt_sys::fds::fanotify;
use std::ffi::CStr;

const FAN_NONBLOCK: u32 = 0x2;
const FAN_MARK_ADD: u32 = 0x1;
const FAN_MARK_IGNORED_MASK: u32 = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;
const FAN_MARK_EVICTABLE: u32 = 0x200;
const FAN_MARK_IGNORE: u32 = 0x400;
/// The mark types (inode: 0).
const TYPES: u32 = 0x10 | 0x100;

pub(super) fn plan(b: &mut Builder, g: usize, f: &Fanotify) {
    let what = b.what(g);
    let s = b.slot();
    b.op(
        &what,
        FdOp::Fanotify {
            slot: s,
            flags: f.init_flags
                | if b.flags(g) & libc::O_NONBLOCK != 0 {
                    FAN_NONBLOCK
                } else {
                    0
                },
            event_flags: f.event_flags,
        },
    );
    for m in &f.marks {
        let Some(path) = cpath(&m.path) else {
            b.error(format!("{what}: a fanotify mark on a path with a NUL byte"));
            return;
        };
        let mark_what = format!("{what} (mark on {})", String::from_utf8_lossy(&m.path));
        b.plan.opens.push((mark_what.clone(), m.path.clone()));
        let base = FAN_MARK_ADD | (m.mark_type & TYPES) | (m.flags & FAN_MARK_EVICTABLE);
        if m.mask != 0 {
            b.op(
                &mark_what,
                FdOp::FanotifyMark {
                    slot: s,
                    flags: base,
                    mask: m.mask,
                    path: path.clone(),
                },
            );
        }
        if m.ignored_mask != 0 {
            let how = if m.flags & FAN_MARK_IGNORE != 0 {
                FAN_MARK_IGNORE
            } else {
                FAN_MARK_IGNORED_MASK
            };
            b.op(
                &mark_what,
                FdOp::FanotifyMark {
                    slot: s,
                    flags: base | how | (m.flags & FAN_MARK_IGNORED_SURV_MODIFY),
                    mask: m.ignored_mask,
                    path,
                },
            );
        }
    }
    b.slot_of[g] = Some(s);
}

/// FdOp::Fanotify.
pub(super) fn make(
    c: &mut Child<'_>,
    slot: usize,
    flags: u32,
    event_flags: u32,
) -> ckpt_sys::Result<()> {
    use std::os::fd::IntoRawFd;
    c.new_fd(
        slot,
        fanotify::fanotify_init(flags, event_flags)?.into_raw_fd(),
    )?;
    Ok(())
}

/// FdOp::FanotifyMark: the path is looked up with the saved user's rights.
pub(super) fn mark(
    c: &mut Child<'_>,
    slot: usize,
    flags: u32,
    mask: u64,
    path: &CStr,
) -> ckpt_sys::Result<()> {
    let fd = c.slot(slot);
    c.as_saved(|_| fanotify::fanotify_mark(fd, flags, mask, path))
}
