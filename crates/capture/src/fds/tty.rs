//! Terminals (/dev/pts/N, /dev/ttyN, /dev/tty, /dev/console): settings,
//! window size and foreground process group (queried inside the process,
//! see remote.rs), and whether it is the controlling terminal.

use super::{Ctx, RawFd};
use crate::error::Result;
use crate::procfs::{major, minor};
use ckpt_image::{FileKind, Tty};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Unix98 pty slaves have majors 136-143.
const PTS_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;

/// Whether a character device number is a terminal we can save: a
/// virtual console or serial line (major 4), /dev/tty or /dev/console
/// (5:0, 5:1), a pty slave.
pub(super) fn is_tty_dev(rdev: u64) -> bool {
    let (ma, mi) = (major(rdev), minor(rdev));
    ma == 4 || (ma == 5 && (mi == 0 || mi == 1)) || PTS_MAJORS.contains(&ma)
}

pub(super) fn matches(f: &RawFd) -> bool {
    match &f.md {
        Some(md) if f.is_path() && md.file_type().is_char_device() => is_tty_dev(md.rdev()),
        _ => false,
    }
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else { return Ok(None) };
    let rdev = md.rdev();
    let (ma, mi) = (major(rdev), minor(rdev));
    let r = cx.remote.ttys.get(&f.fd).cloned().unwrap_or_default();
    let is_controller = (ma == 5 && mi == 0) || (cx.tty_nr != 0 && cx.tty_nr == rdev);
    Ok(Some(FileKind::Tty(Tty {
        index: if PTS_MAJORS.contains(&ma) {
            ((ma - 136) * 256 + mi) as i32
        } else {
            -1
        },
        is_controller,
        termios: r.termios,
        win_rows: r.rows,
        win_cols: r.cols,
        foreground_pgrp: if is_controller {
            cx.tpgid
        } else {
            r.pgrp.unwrap_or(0)
        },
        rdev,
        ..Default::default()
    })))
}
