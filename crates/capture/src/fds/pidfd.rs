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

/// statfs f_type of pidfs.
const PID_FS_MAGIC: i64 = 0x5049_4446;

/// The pidfd's own inode on pidfs (6.9 on); 0 before, where every pidfd
/// had the one anon inode.
fn pidfs_inode(cx: &Ctx<'_>, f: &RawFd) -> u64 {
    let path = format!("/proc/{}/fd/{}", cx.pid, f.fd);
    match ckpt_sys::fs::fs_magic(std::path::Path::new(&path)) {
        Ok(PID_FS_MAGIC) => f.ino(),
        _ => 0,
    }
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
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
        inode: pidfs_inode(cx, f),
    })))
}
