//! Terminals: the restored process gets the restorer's terminal (one of its
//! fds 0-2 that is a terminal, reopened, else /dev/tty); the saved termios
//! is left alone.

use super::{Builder, FdOp};
use crate::stub::{proc_fd_path, Child};

/// A terminal: a new description of the restorer's own.
pub(super) fn plan(b: &mut Builder, g: usize) {
    let (what, flags) = (b.what(g), b.flags(g));
    let env = b.env;
    let own = b.groups[g]
        .fds
        .iter()
        .map(|f| f.fd)
        .filter(|&n| (0..3).contains(&n))
        .map(|n| n as usize);
    let pick = own
        .clone()
        .find(|&k| env.std_tty[k])
        .or_else(|| (0..3).find(|&k| env.std_tty[k]));
    let s = b.slot();
    match pick {
        Some(k) => {
            b.plan.needs_std[k] = true;
            b.op(
                &what,
                FdOp::ReopenStd {
                    slot: s,
                    std: k,
                    flags: flags | libc::O_NOCTTY,
                },
            );
        }
        None if env.dev_tty => {
            b.op(
                &what,
                FdOp::OpenTty {
                    slot: s,
                    flags: flags | libc::O_NOCTTY,
                },
            );
        }
        None => {
            b.error(format!(
                "{what}: a terminal, but the restorer has none to attach it to (no tty on its fds 0-2, no /dev/tty)"
            ));
            return;
        }
    }
    b.slot_of[g] = Some(s);
}

/// FdOp::OpenTty: the restorer's controlling terminal.
pub(super) fn open_tty(c: &mut Child<'_>, slot: usize, flags: i32) -> ckpt_sys::Result<()> {
    let fd = ckpt_sys::setup::open(c"/dev/tty", flags, 0)?;
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::ReopenStd: a new description of the restorer's fd `std`.
pub(super) fn reopen_std(
    c: &mut Child<'_>,
    slot: usize,
    std: usize,
    flags: i32,
) -> ckpt_sys::Result<()> {
    let mut buf = [0u8; 40];
    let p = proc_fd_path(c.std_fd(std), &mut buf);
    let fd = ckpt_sys::setup::open(p, flags, 0)?;
    c.new_fd(slot, fd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fd, file, none};
    use super::super::{plan_fds, FdEnv};
    use super::*;
    use ckpt_image::*;

    #[test]
    fn tty_needs_a_terminal() {
        let mut img = Image::default();
        img.files
            .push(file(1, libc::O_RDWR as u32, FileKind::Tty(Tty::default())));
        let p = Process {
            fds: vec![fd(0, 1)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 1);
        assert!(
            plan.errors[0].starts_with("fd 0: /x: a terminal"),
            "{}",
            plan.errors[0]
        );
        let env = FdEnv {
            std_open: [true; 3],
            std_tty: [false, false, true],
            dev_tty: true,
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert!(plan.errors.is_empty());
        assert!(matches!(plan.ops[0], FdOp::ReopenStd { std: 2, .. }));
    }
}
