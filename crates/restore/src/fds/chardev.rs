//! Character devices (/dev/null, /dev/urandom, ...), reopened by path.

use super::regular::{temp_names, NodeMeta};
use super::{strip_deleted, Builder, FdOp};
use ckpt_image::CharDevice;

/// A character device: reopened by path; a device node that was unlinked
/// is made again (mknod, with its mode, owner and times), opened and
/// unlinked.
pub(super) fn plan(b: &mut Builder, g: usize, cd: &CharDevice) {
    let (what, flags) = (b.what(g), b.flags(g));
    if cd.file.deleted {
        // Only the devices a dump saves: an image must not get any other
        // node made.
        if !CharDevice::is_memory_device(cd.rdev) {
            let (major, minor) = (libc::major(cd.rdev), libc::minor(cd.rdev));
            b.error(format!(
                "{what}: a deleted device node {major}:{minor} is not one that can be made again"
            ));
            return;
        }
        let path = strip_deleted(&cd.path).to_vec();
        let s = b.slot();
        b.op(
            &what,
            FdOp::TmpNode {
                slot: s,
                paths: temp_names(&path, cd.file.inode),
                mode: libc::S_IFCHR | (cd.file.mode & 0o7777),
                flags,
                meta: NodeMeta {
                    rdev: cd.rdev,
                    ..NodeMeta::of(&cd.file)
                },
            },
        );
        b.slot_of[g] = Some(s);
        return;
    }
    let path = if cd.path.is_empty() {
        b.groups[g].file.path.clone()
    } else {
        cd.path.clone()
    };
    if let Some(s) = b.open_path(&what, &path, flags) {
        b.slot_of[g] = Some(s);
    }
}
