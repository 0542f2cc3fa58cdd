//! O_PATH fds on what regular.rs does not take (regular files and
//! directories): symlinks (O_PATH|O_NOFOLLOW), FIFOs, sockets and device
//! nodes, deleted FIFOs and sockets included (a restore makes the node
//! again and unlinks it); a deleted symlink with its target (made again
//! the same way). A deleted device node is refused: its device number is
//! not kept.

use super::{identity, strip_deleted, unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, OPath};
use std::os::unix::fs::MetadataExt;

pub(super) fn matches(f: &RawFd) -> bool {
    f.info.flags & libc::O_PATH as u32 != 0
        && f.is_path()
        && !f.path_type().is_some_and(|t| t.is_file() || t.is_dir())
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else {
        return Err(unsupported(
            f.fd,
            format!("O_PATH fd of {}: cannot stat it", f.link_str()),
        ));
    };
    let (path, suffix) = strip_deleted(&f.link);
    let deleted = suffix || md.nlink() == 0;
    let symlink = md.file_type().is_symlink();
    // A deleted symlink is made again from its target.
    let target = if deleted && symlink {
        ckpt_sys::fs::symlink_target_of(cx.pid, f.fd).map_err(|e| {
            unsupported(
                f.fd,
                format!(
                    "O_PATH fd of the deleted symlink {}: reading its target: {e}",
                    String::from_utf8_lossy(path)
                ),
            )
        })?
    } else {
        Vec::new()
    };
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    if deleted && (ft.is_char_device() || ft.is_block_device()) {
        return Err(unsupported(
            f.fd,
            format!(
                "O_PATH fd of the deleted device node {}: its device number is not kept, it cannot be saved",
                String::from_utf8_lossy(path)
            ),
        ));
    }
    Ok(Some(FileKind::OPath(OPath {
        file: identity(path, md, deleted),
        symlink,
        target,
    })))
}
