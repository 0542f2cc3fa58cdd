//! eventfds: the counter and the semaphore flag (fdinfo).

use super::{Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{EventFd, FileKind};

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[eventfd]"
}

pub(super) fn save(_cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let count = f.info.num("eventfd-count", 16)?;
    let (n, v) = f.info.get("eventfd-semaphore")?;
    let semaphore = match v {
        "0" => false,
        "1" => true,
        _ => {
            return Err(f
                .info
                .err(n, format!("eventfd-semaphore: {v:?} is not 0 or 1")))
        }
    };
    Ok(Some(FileKind::EventFd(EventFd { count, semaphore })))
}
