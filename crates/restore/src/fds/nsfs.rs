//! Namespace files of the process's own namespaces: /proc/self/ns/KIND
//! opened by the stub, which is in the namespaces the restored process
//! runs in (the restore makes no namespaces: those may differ from the
//! saved ones; the fd then names the new ones, as the process's own).

use super::{Builder, FdOp};
use crate::stub::Child;
use ckpt_image::NsFile;
use ckpt_sys::fds;
use std::ffi::{CStr, CString};
use std::os::fd::IntoRawFd;

const KINDS: [&str; 10] = [
    "net",
    "mnt",
    "pid",
    "uts",
    "ipc",
    "user",
    "cgroup",
    "time",
    "pid_for_children",
    "time_for_children",
];

pub(super) fn plan(b: &mut Builder, g: usize, n: &NsFile) {
    let (what, flags) = (b.what(g), b.flags(g));
    if !KINDS.contains(&n.kind.as_str()) {
        b.error(format!("{what}: unknown namespace kind {:?}", n.kind));
        return;
    }
    if n.pid != 0 && n.pid != b.proc.pid {
        b.error(format!(
            "{what}: a namespace file of process {}'s namespaces cannot be restored by this version",
            n.pid
        ));
        return;
    }
    let s = b.slot();
    b.op(
        &what,
        FdOp::OpenOwn {
            slot: s,
            path: CString::new(format!("/proc/self/ns/{}", n.kind)).expect("no NUL"),
            flags: flags & !libc::O_ACCMODE,
        },
    );
    b.slot_of[g] = Some(s);
}

/// FdOp::OpenOwn: with the restorer's ids (a file of the stub's own).
pub(super) fn open_own(
    c: &mut Child<'_>,
    slot: usize,
    path: &CStr,
    flags: i32,
) -> ckpt_sys::Result<()> {
    let fd = fds::open(path, flags, 0)?.into_raw_fd();
    c.new_fd(slot, fd)?;
    Ok(())
}
