//! Character devices (/dev/null, /dev/urandom, ...), reopened by path.

use super::Builder;
use ckpt_image::CharDevice;

/// A character device: reopened by path.
pub(super) fn plan(b: &mut Builder, g: usize, cd: &CharDevice) {
    let (what, flags) = (b.what(g), b.flags(g));
    let path = if cd.path.is_empty() {
        b.groups[g].file.path.clone()
    } else {
        cd.path.clone()
    };
    if let Some(s) = b.open_path(&what, &path, flags) {
        b.slot_of[g] = Some(s);
    }
}
