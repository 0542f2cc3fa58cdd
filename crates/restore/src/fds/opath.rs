//! O_PATH fds on symlinks, FIFOs, sockets and device nodes (regular files
//! and directories opened O_PATH are regular.rs's): reopened by path with
//! O_PATH (and O_NOFOLLOW for a symlink); a deleted FIFO or socket file is
//! made again under a free name, opened O_PATH and unlinked.

use super::regular::{temp_names, NodeMeta};
use super::{strip_deleted, Builder, FdOp};
use ckpt_image::OPath;

pub(super) fn plan(b: &mut Builder, g: usize, o: &OPath) {
    let what = b.what(g);
    let mut flags = b.flags(g) | libc::O_PATH;
    if o.symlink {
        flags |= libc::O_NOFOLLOW;
    }
    let path = if o.file.path.is_empty() {
        strip_deleted(&b.groups[g].file.path).to_vec()
    } else {
        strip_deleted(&o.file.path).to_vec()
    };
    if !o.file.deleted {
        if let Some(s) = b.open_path(&what, &path, flags) {
            b.slot_of[g] = Some(s);
        }
        return;
    }
    let kind = o.file.mode & libc::S_IFMT;
    let mut meta = NodeMeta::of(&o.file);
    if o.symlink && kind == libc::S_IFLNK {
        let Ok(target) = std::ffi::CString::new(o.target.clone()) else {
            b.error(format!(
                "{what}: the deleted symlink's target holds a NUL byte"
            ));
            return;
        };
        if o.target.is_empty() {
            b.error(format!(
                "{what}: an O_PATH fd of a deleted symlink whose target the image does not hold"
            ));
            return;
        }
        meta.target = Some(target);
    } else if !matches!(kind, libc::S_IFIFO | libc::S_IFSOCK) {
        b.error(format!(
            "{what}: an O_PATH fd of a deleted file of type {kind:#o} cannot be restored"
        ));
        return;
    }
    let s = b.slot();
    b.op(
        &what,
        FdOp::TmpNode {
            slot: s,
            paths: temp_names(&path, o.file.inode),
            mode: o.file.mode,
            flags,
            meta,
        },
    );
    b.slot_of[g] = Some(s);
}
