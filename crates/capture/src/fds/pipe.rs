//! Pipes and FIFOs: which end, the capacity, and the bytes buffered (saved
//! once per pipe, on the first read end; a write end alone carries none).

use super::{fd_io, fd_sys, open_via_proc, strip_deleted, Ctx, RawFd};
use crate::error::{Error, Result};
use ckpt_image::{FileKind, Pipe, PipeEnd};
use ckpt_sys::fds::pipe;
use ckpt_sys::Pid;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"pipe:[") || f.path_type().is_some_and(|t| t.is_fifo())
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let end = if f.write_only() {
        PipeEnd::Write
    } else {
        PipeEnd::Read
    };
    let id = f.ino();
    let (data, capacity) = pipe_data(cx.pid, f.fd)?;
    let data = if end == PipeEnd::Read && cx.pipes_with_data.insert(id) {
        data
    } else {
        Vec::new()
    };
    let mut p = Pipe {
        id,
        end,
        data,
        capacity,
        fifo_path: Vec::new(),
        fifo: Default::default(),
        peer_closed: false,
    };
    if f.link.starts_with(b"pipe:[") {
        p.peer_closed = peer_closed(cx, f.fd, end);
        return Ok(Some(FileKind::Pipe(p)));
    }
    let (path, suffix) = strip_deleted(&f.link);
    p.fifo_path = path.to_vec();
    if let Some(md) = &f.md {
        use std::os::unix::fs::MetadataExt;
        p.fifo = super::identity(path, md, suffix || md.nlink() == 0);
    }
    Ok(Some(FileKind::Fifo(p)))
}

/// Whether no process held the other end of the pipe (the restore then
/// knows that a pipe it makes with that end closed is what was there). Seen
/// on the process's own description: one opened again through /proc would
/// count as a reader itself. Unknown (false) if that description cannot be
/// had.
fn peer_closed(cx: &mut Ctx<'_>, fd: i32, end: PipeEnd) -> bool {
    let closed = cx
        .dup_fd(fd)
        .and_then(|ours| pipe::peer_closed(ours, end == PipeEnd::Write));
    closed.unwrap_or_else(|e| {
        tracing::debug!(fd, "whether the pipe's other end is held: {e}");
        false
    })
}

/// Bytes buffered in a pipe, without consuming them (tee into a pipe of
/// ours), and its capacity.
fn pipe_data(pid: Pid, fd: i32) -> Result<(Vec<u8>, u32)> {
    let theirs =
        open_via_proc(pid, fd).map_err(fd_io(fd, "opening the pipe to read its buffer"))?;
    let cap = pipe::pipe_size(theirs.as_fd()).map_err(fd_sys(fd, "reading the pipe capacity"))?;
    let n =
        pipe::bytes_readable(theirs.as_fd()).map_err(fd_sys(fd, "reading the pipe fill level"))?;
    if n == 0 {
        return Ok((Vec::new(), cap));
    }
    let (our_r, our_w) =
        pipe::pipe2(libc::O_NONBLOCK | libc::O_CLOEXEC).map_err(fd_sys(fd, "making a pipe"))?;
    let our_cap = pipe::pipe_size(our_w.as_fd()).map_err(fd_sys(fd, "making a pipe"))?;
    if our_cap < cap {
        pipe::set_pipe_size(our_w.as_fd(), cap).map_err(fd_sys(fd, "growing a pipe"))?;
    }
    // tee never consumes, so one call must take everything (our pipe is as
    // big as theirs).
    let k = pipe::tee(theirs.as_fd(), our_w.as_fd(), n).map_err(fd_sys(fd, "tee from the pipe"))?;
    if k != n {
        return Err(Error::Fd {
            fd,
            what: format!("could copy only {k} of the {n} bytes buffered in the pipe"),
        });
    }
    drop(our_w);
    let mut data = Vec::with_capacity(n);
    File::from(our_r)
        .read_to_end(&mut data)
        .map_err(fd_io(fd, "reading the pipe copy"))?;
    Ok((data, cap))
}
