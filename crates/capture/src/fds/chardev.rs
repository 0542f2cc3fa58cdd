//! Character devices that are the same on every machine (/dev/null, zero,
//! full, random, urandom); others are refused by name.

use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use crate::procfs::{major, minor};
use ckpt_image::{CharDevice, FileKind};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

pub(super) fn matches(f: &RawFd) -> bool {
    f.path_type().is_some_and(|t| t.is_char_device())
}

pub(super) fn save(_cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else { return Ok(None) };
    let rdev = md.rdev();
    let (ma, mi) = (major(rdev), minor(rdev));
    if CharDevice::is_memory_device(rdev) {
        let (path, deleted) = super::strip_deleted(&f.link);
        let deleted = deleted || md.nlink() == 0;
        return Ok(Some(FileKind::CharDevice(CharDevice {
            rdev,
            path: path.to_vec(),
            file: super::regular::identity(path, md, deleted),
        })));
    }
    Err(unsupported(
        f.fd,
        format!(
            "character device {} ({ma}:{mi}) is not supported",
            f.link_str()
        ),
    ))
}
