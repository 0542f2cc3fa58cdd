//! pidfds: the process (or, with PIDFD_THREAD, the thread) they refer to,
//! or that it has exited and been reaped.

use super::{Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, Pidfd};

/// PIDFD_THREAD, as it shows in the fdinfo flags.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[pidfd]" || f.link.starts_with(b"pidfd:")
}

pub(super) fn save(_cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let (n, v) = f.info.get("Pid")?;
    let pid: i32 = v
        .parse()
        .map_err(|_| f.info.err(n, format!("Pid: {v:?} is not a number")))?;
    // -1: the process has exited and been reaped (or the thread has
    // exited); its pid is not known any more.
    Ok(Some(FileKind::Pidfd(Pidfd {
        pid: pid.max(0),
        dead: pid <= 0,
        thread: f.info.flags & PIDFD_THREAD != 0,
    })))
}
