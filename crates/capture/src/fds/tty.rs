//! Terminals: pty slaves (/dev/pts/N), pty masters (/dev/ptmx, whose pair
//! is saved by `pty.rs`), /dev/tty, /dev/console, virtual consoles and
//! serial lines.
//!
//! Each is read through the process's own open file description
//! (pidfd_getfd): reopening /proc/PID/fd/N would open /dev/tty as the
//! *dumper's* terminal, and /dev/ptmx as a new pair. No system call is
//! injected for them.
//!
//! A slave whose master is in the image is one end of a `PtyPair` (its
//! settings and data are the pair's); any other terminal is saved with its
//! settings and window size, to be attached again (a shell job's terminal)
//! or reopened by path (/dev/console, /dev/ttyN, serial lines).

use super::pty::{is_master_dev, slave_index, PTS_MAJORS};
use super::{fd_sys, Ctx, RawFd};
use crate::error::Result;
use crate::procfs::{major, minor};
use ckpt_image::{FileKind, Tty, TtyRole};
use ckpt_sys::fds::tty;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Serial-line majors other than 4: ttyUSB (188), ttyACM (166), ttyAMA
/// (204), hvc (229).
const SERIAL_MAJORS: [u64; 4] = [166, 188, 204, 229];

/// The kind of terminal of a character device number, if it is one.
pub(super) fn role_of(rdev: u64) -> Option<TtyRole> {
    let (ma, mi) = (major(rdev), minor(rdev));
    Some(match (ma, mi) {
        (5, 0) => TtyRole::DevTty,
        (5, 1) => TtyRole::Console,
        (5, 2) => TtyRole::Master,
        (4, 0..=63) => TtyRole::Vt,
        (4, _) => TtyRole::Serial,
        _ if PTS_MAJORS.contains(&ma) => TtyRole::Slave,
        _ if SERIAL_MAJORS.contains(&ma) => TtyRole::Serial,
        _ => return None,
    })
}

pub(super) fn matches(f: &RawFd) -> bool {
    match &f.md {
        Some(md) if f.is_path() && md.file_type().is_char_device() => role_of(md.rdev()).is_some(),
        _ => false,
    }
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Some(md) = &f.md else { return Ok(None) };
    let rdev = md.rdev();
    let Some(role) = role_of(rdev) else {
        return Ok(None);
    };
    if is_master_dev(rdev) {
        let (pair, index, devpts) = cx.ptys.master_of(cx.pid, f)?;
        return Ok(Some(FileKind::Tty(Tty {
            index: index as i32,
            rdev,
            role,
            pair,
            devpts,
            ..Default::default()
        })));
    }
    let is_controller = role == TtyRole::DevTty || (cx.tty_nr != 0 && cx.tty_nr == rdev);
    let index = slave_index(rdev);
    let devpts = if index.is_some() { md.dev() } else { 0 };
    let mut t = Tty {
        index: index.map_or(-1, |i| i as i32),
        is_controller,
        foreground_pgrp: if is_controller { cx.tpgid } else { 0 },
        rdev,
        role,
        devpts,
        sid: if is_controller { cx.sid } else { 0 },
        ..Default::default()
    };
    if let Some(pair) = index.and_then(|i| cx.ptys.pair_of(devpts, i)) {
        // One end of a pair of the image: the pair has the rest.
        t.pair = pair;
        return Ok(Some(FileKind::Tty(t)));
    }
    let d = ckpt_sys::proc::pidfd::fd_of(cx.pid, f.fd)
        .map_err(fd_sys(f.fd, "taking the terminal (pidfd_getfd)"))?;
    let termios = match tty::tcgets2(d.as_raw_fd()) {
        Err(e) if e.errno() == Some(libc::EIO) && index.is_some() => {
            // Hung up (its master closed): nothing to read, nothing to
            // control any more.
            t.hung_up = true;
            t.is_controller = false;
            t.foreground_pgrp = 0;
            t.sid = 0;
            return Ok(Some(FileKind::Tty(t)));
        }
        r => r.map_err(fd_sys(f.fd, "reading the terminal settings"))?,
    };
    t.termios = termios.to_bytes().to_vec();
    if let Ok(w) = tty::winsize(d.as_raw_fd()) {
        (t.win_rows, t.win_cols, t.win_xpixel, t.win_ypixel) = (w.rows, w.cols, w.xpixel, w.ypixel);
    }
    t.real_rdev = tty::real_device(d.as_raw_fd()).unwrap_or(rdev);
    if role == TtyRole::DevTty {
        // /dev/tty: the terminal behind it is the one to know.
        if let Some(i) = slave_index(t.real_rdev) {
            t.index = i as i32;
        }
    }
    Ok(Some(FileKind::Tty(t)))
}
