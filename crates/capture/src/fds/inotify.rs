//! inotify instances: every watch (descriptor, mask, inode, device) and,
//! best effort, its path, from the file handle the kernel shows.

use super::{Ctx, RawFd};
use crate::error::Result;
use crate::procfs::{self, token_after};
use ckpt_image::{FileKind, Inotify, InotifyWatch};
use ckpt_sys::fds::inotify::open_by_handle;
use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link == b"anon_inode:inotify"
}

pub(super) fn save(_cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let mut watches = Vec::new();
    for (n, l) in f.info.lines_with("inotify ") {
        let hex = |k: &str| f.info.token(n, l, k, 16);
        let sdev = hex("sdev")?;
        // The kernel prints its internal dev_t (major << 20 | minor).
        let dev = procfs::makedev(sdev >> 20, sdev & 0xfffff);
        let wd = hex("wd")?;
        let mask = hex("mask")?;
        watches.push(InotifyWatch {
            wd: i32::try_from(wd).map_err(|_| f.info.err(n, format!("wd {wd:#x}")))?,
            mask: u32::try_from(mask).map_err(|_| f.info.err(n, format!("mask {mask:#x}")))?,
            path: handle_path(dev, l).unwrap_or_default(),
            inode: hex("ino")?,
            dev,
        });
    }
    Ok(Some(FileKind::Inotify(Inotify { watches })))
}

/// Best effort: the path of an inotify watch (or fanotify mark), from the file handle in its
/// fdinfo line, opened on a mount of the same filesystem (ours).
pub(super) fn handle_path(dev: u64, line: &str) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let ty = i32::from_str_radix(token_after(line, "fhandle-type")?, 16).ok()?;
    let hexs = token_after(line, "f_handle")?;
    let handle: Vec<u8> = (0..hexs.len() / 2)
        .map(|i| u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    let mnt = mount_of(dev)?;
    let m = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&mnt)
        .ok()?;
    let fd = open_by_handle(m.as_fd(), ty, &handle).ok()?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
}

/// A mount point (of ours) of the filesystem `dev`, preferring one of its root.
pub(super) fn mount_of(dev: u64) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(bool, String)> = None;
    for l in mountinfo.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some((ma, mi)) = f.get(2).and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        if procfs::makedev(ma, mi) != dev {
            continue;
        }
        let whole = f.get(3) == Some(&"/");
        if best.as_ref().is_none_or(|(w, _)| whole && !w) {
            best = Some((whole, f.get(4)?.replace("\\040", " ")));
        }
    }
    best.map(|(_, m)| m)
}
