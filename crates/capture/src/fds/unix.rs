//! Unix sockets (from sock_diag): type, state, addresses, peer, and the
//! bytes queued on a stream socket (peeked, not taken).

use super::{unsupported, Ctx, RawFd};
use crate::error::Result;
use ckpt_image::{FileKind, UnixSocket};
use ckpt_sys::{query, Pid};
use std::os::fd::AsFd;

/// Most bytes saved from a unix stream socket's receive queue.
const MAX_UNIX_QUEUE: u32 = 128 << 10;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    Ok(unix_socket(cx.pid, f.fd, f.ino())?.map(FileKind::UnixSocket))
}

/// The unix socket of inode `ino` (fd `fd` of `pid`), from sock_diag; its
/// queued bytes (stream sockets) are peeked, not taken. None when the
/// inode is not a unix socket of our network namespace.
fn unix_socket(pid: Pid, fd: i32, ino: u64) -> Result<Option<UnixSocket>> {
    let Ok(d) = query::unix_diag(ino) else {
        return Ok(None);
    };
    let stream = i32::from(d.sock_type) == libc::SOCK_STREAM;
    let listening = d.state == 10;
    let mut queued = Vec::new();
    if !listening && d.rqueue > 0 {
        if !stream {
            return Err(unsupported(
                fd,
                format!(
                    "unix {} socket with {} datagram(s) queued is not supported yet",
                    if i32::from(d.sock_type) == libc::SOCK_DGRAM {
                        "datagram"
                    } else {
                        "seqpacket"
                    },
                    d.rqueue
                ),
            ));
        }
        if d.rqueue > MAX_UNIX_QUEUE {
            return Err(unsupported(
                fd,
                format!(
                    "unix socket with {} bytes queued (over {MAX_UNIX_QUEUE})",
                    d.rqueue
                ),
            ));
        }
        let dup = ckpt_sys::setup::fd_of(pid, fd)
            .map_err(|e| unsupported(fd, format!("unix socket: reading its queued bytes: {e}")))?;
        queued = query::peek_stream(dup.as_fd(), d.rqueue as usize + 1)
            .map_err(|e| unsupported(fd, format!("unix socket: reading its queued bytes: {e}")))?;
    }
    // A path name comes with its terminating NUL (the kernel keeps the
    // address length given to bind); an abstract one starts with NUL and
    // is taken whole.
    let mut name = d.name;
    if name.first().is_some_and(|&c| c != 0) {
        if let Some(end) = name.iter().position(|&c| c == 0) {
            name.truncate(end);
        }
    }
    Ok(Some(UnixSocket {
        inode: ino,
        sock_type: u32::from(d.sock_type),
        state: u32::from(d.state),
        local_path: name,
        peer_path: Vec::new(),
        peer_inode: d.peer,
        listening,
        backlog: if listening { d.wqueue } else { 0 },
        queued,
        shutdown: u32::from(d.shutdown),
    }))
}
