//! Unix sockets (stream, datagram, seqpacket), from sock_diag: type,
//! state, name (a path or an abstract name), the socket file's mode and
//! owner or that it was deleted, peer, shutdown bits, options, the
//! clients waiting in a listener's accept queue, and every message queued
//! for reading, peeked (not taken) with the fds it carries (SCM_RIGHTS:
//! saved as open files of the image, see `Ctx::inflight`) and its
//! sender's credentials.
//!
//! After every fd is saved, [`check_peers`] finds sockets whose peer is not
//! in the image: refused, unless `--unix-external` says what a restore
//! does with them (connect again to the peer's name, or a socket whose
//! peer has gone). A socket whose peer already closed is saved as such.

use super::net::{dup, options, sys_fd};
use super::{unsupported, Ctx, RawFd};
use crate::error::{Error, Result};
use ckpt_image::{FileKind, OpenFile, UnixExternal, UnixMessage, UnixSocket};
use ckpt_sys::fds::sockopt::SockKind;
use ckpt_sys::fds::unix::{name_of_sockaddr, peek_messages};
use ckpt_sys::Pid;
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Most bytes also kept in `queued` for readers of format 1.1.
const MAX_COMPAT_QUEUE: usize = 128 << 10;
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;

pub(super) fn matches(f: &RawFd) -> bool {
    f.link.starts_with(b"socket:[")
}

pub(super) fn save(cx: &mut Ctx<'_>, f: &RawFd) -> Result<Option<FileKind>> {
    let Ok(d) = ckpt_sys::sock_diag::unix_diag(f.ino()) else {
        return Ok(None);
    };
    let ty = i32::from(d.sock_type);
    let stream = ty == libc::SOCK_STREAM || ty == libc::SOCK_SEQPACKET;
    let listening = d.state == TCP_LISTEN;
    let sock = dup(cx, f.fd)?;
    let fd = sock.as_raw_fd();
    // A path name comes with its terminating NUL (the kernel keeps the
    // address length given to bind); an abstract one starts with NUL and
    // is taken whole.
    let mut name = d.name.clone();
    if name.first().is_some_and(|&c| c != 0) {
        if let Some(end) = name.iter().position(|&c| c == 0) {
            name.truncate(end);
        }
    }
    let mut u = UnixSocket {
        inode: f.ino(),
        sock_type: u32::from(d.sock_type),
        state: u32::from(d.state),
        local_path: name,
        peer_inode: d.peer,
        listening,
        backlog: if listening { d.wqueue } else { 0 },
        shutdown: u32::from(d.shutdown),
        pending: if listening {
            d.icons.clone()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    socket_file(cx.pid, f.fd, &d, &mut u)?;
    // The peer's name: a listener's for a connection, the receiver's for a
    // connected datagram socket.
    if let Ok(Some(p)) = ckpt_sys::fds::socket::peer_name(fd) {
        u.peer_path = name_of_sockaddr(&p);
    }
    let kind = SockKind {
        family: libc::AF_UNIX,
        ty,
        protocol: 0,
    };
    u.options = options(fd, &kind, f.fd)?;
    if listening {
        if let Some(i) = d.icons.iter().position(|&c| c == 0) {
            return Err(unsupported(
                f.fd,
                format!(
                    "unix socket listening on {}: connection {} of its accept queue was closed by its client; what it sent cannot be read",
                    show(&u.local_path),
                    i + 1
                ),
            ));
        }
        return Ok(Some(FileKind::UnixSocket(u)));
    }
    if stream && d.state == TCP_ESTABLISHED && d.peer == 0 && d.wqueue > 0 && d.shutdown != 3 {
        // Connected to a socket still waiting in a listener's accept queue:
        // what it sent is in that socket, which has no fd to read it by.
        return Err(unsupported(
            f.fd,
            format!(
                "unix socket connected to {} but not accepted yet, with {} bytes sent to it: they wait in the listener's unaccepted socket, which cannot be read",
                show(&u.peer_path),
                d.wqueue
            ),
        ));
    }
    u.messages = queued_messages(cx, f, fd, &d, stream)?;
    let total: usize = u.messages.iter().map(|m| m.data.len()).sum();
    if ty == libc::SOCK_STREAM
        && total <= MAX_COMPAT_QUEUE
        && u.messages.iter().all(|m| m.files.is_empty())
    {
        u.queued = u
            .messages
            .iter()
            .flat_map(|m| m.data.iter().copied())
            .collect();
    }
    tracing::debug!(
        fd = f.fd,
        ty,
        messages = u.messages.len(),
        bytes = total,
        "unix socket saved"
    );
    Ok(Some(FileKind::UnixSocket(u)))
}

/// Everything queued for reading on `fd` (our duplicate of `f`), peeked,
/// with the files the messages carry saved as open files of the image.
fn queued_messages(
    cx: &mut Ctx<'_>,
    f: &RawFd,
    fd: i32,
    d: &ckpt_sys::sock_diag::UnixDiag,
    stream: bool,
) -> Result<Vec<UnixMessage>> {
    let mut out = Vec::new();
    let shut_rd = d.shutdown & 1 != 0;
    let peeked = peek_messages(fd, stream.then_some(d.rqueue as usize), shut_rd)
        .map_err(|e| sys_fd(f.fd, "reading its queued messages", e))?;
    for p in peeked {
        let mut files = Vec::with_capacity(p.fds.len());
        for passed in p.fds {
            files.push(cx.inflight(passed)?);
        }
        // Pid 0: the kernel recorded no credentials (no SO_PASSCRED at
        // either end when it was sent).
        let (has_creds, (pid, uid, gid)) = match p.creds {
            Some(c) if c.0 != 0 => (true, c),
            _ => (false, (0, 0, 0)),
        };
        out.push(UnixMessage {
            data: p.data,
            files,
            has_creds,
            pid,
            uid,
            gid,
            sender: p.sender,
        });
    }
    Ok(out)
}

/// The socket file of a path name: its mode and owner, or that it is gone
/// (deleted, or another file at that path now). A relative name is made
/// absolute from the process's working directory when the file found
/// there is the socket's.
fn socket_file(
    pid: Pid,
    fd: i32,
    d: &ckpt_sys::sock_diag::UnixDiag,
    u: &mut UnixSocket,
) -> Result<()> {
    if u.local_path.is_empty() || u.local_path[0] == 0 {
        return Ok(());
    }
    let Some((ino, _dev)) = d.vfs else {
        u.deleted = true;
        return Ok(());
    };
    let mut path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&u.local_path));
    if path.is_relative() {
        // Relative to the working directory at bind time: taken as the
        // present one (where the file is, unless it was deleted).
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).map_err(|e| {
            unsupported(
                fd,
                format!(
                    "unix socket bound to the relative path {}: reading the working directory: {e}",
                    show(&u.local_path)
                ),
            )
        })?;
        path = cwd.join(&path);
        u.local_path = path.as_os_str().as_bytes().to_vec();
    }
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.ino() == u64::from(ino) && m.file_type().is_socket() => {
            u.file_mode = m.mode();
            u.file_uid = m.uid();
            u.file_gid = m.gid();
        }
        _ => {
            // Bound again at restore (in its directory, made again if it
            // is gone too), then unlinked.
            u.deleted = true;
        }
    }
    Ok(())
}

/// A name for messages: a path, or "@name" for an abstract one.
fn show(name: &[u8]) -> String {
    match name.first() {
        None => "an unnamed socket".into(),
        Some(0) => format!("@{}", String::from_utf8_lossy(&name[1..])),
        Some(_) => String::from_utf8_lossy(name).into_owned(),
    }
}

/// Peers outside the image: refused by name unless `--unix-external` says
/// what to do; a socket whose peer closed is marked so.
pub(super) fn check_peers(files: &mut [OpenFile], opts: &super::net::SocketOptions) -> Result<()> {
    let mut inodes = HashSet::new();
    let mut pending: HashMap<u64, u64> = HashMap::new();
    for f in files.iter() {
        if let FileKind::UnixSocket(u) = &f.kind {
            inodes.insert(u.inode);
            for c in &u.pending {
                pending.insert(*c, u.inode);
            }
        }
    }
    for f in files.iter_mut() {
        let FileKind::UnixSocket(u) = &mut f.kind else {
            continue;
        };
        if u.listening {
            if let Some(c) = u.pending.iter().find(|c| !inodes.contains(c)) {
                match opts.unix_external {
                    UnixExternal::None => {
                        return Err(external(f.id, u, format!("a client (socket inode {c}) outside the dump waits in its accept queue")))
                    }
                    _ => {
                        tracing::warn!(listener = %show(&u.local_path), "clients outside the dump waiting in the accept queue are dropped");
                        u.pending.retain(|c| inodes.contains(c));
                    }
                }
            }
            continue;
        }
        let stream = u.sock_type != libc::SOCK_DGRAM as u32;
        let outside = if u.peer_inode != 0 {
            !inodes.contains(&u.peer_inode)
        } else if stream && u.state == u32::from(TCP_ESTABLISHED) && !pending.contains_key(&u.inode)
        {
            if u.shutdown == 3 {
                // Its peer closed: nothing outside to decide about.
                u.external = UnixExternal::Close;
                continue;
            }
            true
        } else {
            false
        };
        if !outside {
            continue;
        }
        match opts.unix_external {
            UnixExternal::None => {
                let who = if u.peer_inode != 0 {
                    format!(
                        "its peer (socket inode {}{}) is outside the dump",
                        u.peer_inode,
                        holder(u.peer_inode)
                    )
                } else {
                    format!(
                        "it waits to be accepted by {}, outside the dump",
                        show(&u.peer_path)
                    )
                };
                return Err(external(f.id, u, who));
            }
            UnixExternal::Reconnect if u.peer_path.is_empty() => {
                return Err(external(
                    f.id,
                    u,
                    format!("its peer (socket inode {}) is outside the dump and has no name to connect to again", u.peer_inode),
                ));
            }
            mode => u.external = mode,
        }
    }
    Ok(())
}

fn external(id: u32, u: &UnixSocket, why: String) -> Error {
    Error::Fd {
        fd: -1,
        what: format!(
            "unix socket {} (open file {id}, inode {}): {why}; pass --unix-external=reconnect (connect again to {} at restore) or --unix-external=close (restore it as a socket whose peer has gone)",
            if u.local_path.is_empty() { "unnamed".to_string() } else { show(&u.local_path) },
            u.inode,
            show(&u.peer_path)
        ),
    }
}

/// ", held by pid N (comm)" for the process holding socket inode `ino`.
fn holder(ino: u64) -> String {
    let want = format!("socket:[{ino}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return String::new();
    };
    for p in procs.flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for f in fds.flatten() {
            if std::fs::read_link(f.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                return format!(
                    ", held by pid {} \"{}\"",
                    p.file_name().to_string_lossy(),
                    comm.trim()
                );
            }
        }
    }
    String::new()
}
