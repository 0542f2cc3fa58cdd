//! signalfds: the signal mask.

use super::{Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, SignalFd};

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[signalfd]"
}

pub(super) fn save(_cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let mask = f.info.num("sigmask", 16)?;
    Ok(Some(FileKind::SignalFd(SignalFd { mask })))
}
