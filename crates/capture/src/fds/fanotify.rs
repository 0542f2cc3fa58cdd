//! fanotify groups: their init flags and every mark (inode, mount or
//! filesystem; mask, ignored mask, mark flags), with the path of what is
//! marked (an inode's from its file handle, a mount's mount point, a
//! filesystem's mount point). Events queued and not yet read, and
//! permission events being answered, are not saved.

use super::inotify::{handle_path, mount_of};
use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use crate::procfs;
use ckpt_image::{Fanotify, FanotifyMark, FileKind};

const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_FILESYSTEM: u32 = 0x100;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:[fanotify]"
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let (n, l) = f
        .info
        .lines_with("fanotify flags:")
        .next()
        .ok_or_else(|| f.info.err(0, "no \"fanotify flags:\" line"))?;
    let init_flags = f.info.token(n, l, "flags", 16)? as u32;
    let event_flags = f.info.token(n, l, "event-flags", 16)? as u32;
    let mut marks = Vec::new();
    for (n, l) in f
        .info
        .lines_with("fanotify ")
        .filter(|(_, l)| !l.starts_with("fanotify flags:"))
    {
        let hex = |k: &str| f.info.token(n, l, k, 16);
        let mut m = FanotifyMark {
            flags: hex("mflags")? as u32,
            mask: hex("mask")?,
            ignored_mask: hex("ignored_mask")?,
            ..Default::default()
        };
        let path = if procfs::token_after(l, "ino").is_some() {
            let sdev = hex("sdev")?;
            m.dev = procfs::makedev(sdev >> 20, sdev & 0xfffff);
            m.inode = hex("ino")?;
            handle_path(m.dev, l)
        } else if procfs::token_after(l, "mnt_id").is_some() {
            m.mark_type = FAN_MARK_MOUNT;
            mount_point(cx.pid, hex("mnt_id")?)
        } else {
            let sdev = hex("sdev")?;
            m.mark_type = FAN_MARK_FILESYSTEM;
            m.dev = procfs::makedev(sdev >> 20, sdev & 0xfffff);
            mount_of(m.dev).map(String::into_bytes)
        };
        m.path = path.ok_or_else(|| {
            unsupported(
                f.fd,
                format!("fanotify mark \"{l}\": the marked object has no path this dump can find"),
            )
        })?;
        marks.push(m);
    }
    Ok(Some(FileKind::Fanotify(Fanotify {
        init_flags,
        event_flags,
        marks,
    })))
}

/// The mount point of mount `mnt_id` as process `pid` sees it.
fn mount_point(pid: i32, mnt_id: u64) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first()?.parse::<u64>().ok()? == mnt_id)
            .then(|| f.get(4).map(|m| m.replace("\\040", " ").into_bytes()))?
    })
}
