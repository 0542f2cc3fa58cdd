//! Unix sockets: connected pairs held in the image are made again with
//! socketpair(2) and the bytes queued in each direction; unconnected
//! sockets, and sockets listening on an abstract name or a path (a stale
//! socket file is replaced), are made again. A socket connected to one
//! outside the image is refused.

use super::{cpath, Builder, FdOp};
use crate::stub::Child;
use crate::Report;
use ckpt_image::{FileKind, UnixSocket};
use ckpt_sys::setup;
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;

/// Most bytes queued in one direction of a unix socket pair that a restore
/// puts back (what a dump saves at most).
const MAX_SOCKET_QUEUED: usize = 128 << 10;

/// What planning the pairs leaves for the sockets planned one by one.
pub(super) struct State {
    /// Groups of pairs already refused (said once).
    refused: HashSet<usize>,
}

/// Unix sockets connected to each other (socketpair, or both ends of a
/// connection held in the image): one socketpair per pair; the bytes
/// queued for reading at one end are written into the other.
pub(super) fn plan_pairs(b: &mut Builder) -> State {
    let by_inode: HashMap<u64, usize> = b
        .groups
        .iter()
        .enumerate()
        .filter_map(|(g, group)| match &group.file.kind {
            FileKind::UnixSocket(u) => Some((u.inode, g)),
            _ => None,
        })
        .collect();
    let mut st = State {
        refused: HashSet::new(),
    };
    for g in 0..b.groups.len() {
        let file = b.groups[g].file;
        let FileKind::UnixSocket(u) = &file.kind else {
            continue;
        };
        if b.slot_of[g].is_some() || st.refused.contains(&g) || u.listening || u.peer_inode == 0 {
            continue;
        }
        let Some(&pg) = by_inode.get(&u.peer_inode) else {
            continue; // refused by plan()
        };
        let peer = b.groups[pg].file;
        let FileKind::UnixSocket(pu) = &peer.kind else {
            continue;
        };
        if pg == g || pu.peer_inode != u.inode || pu.sock_type != u.sock_type {
            continue; // refused by plan()
        }
        plan_pair(b, [g, pg], [u, pu], &mut st);
    }
    st
}

/// One connected pair: groups `g` and their sockets `u`.
fn plan_pair(b: &mut Builder, g: [usize; 2], u: [&UnixSocket; 2], st: &mut State) {
    // The queued bytes are written into the new pair before anything
    // reads it: more than a socket buffer holds would block the restore.
    if let Some(big) = u.iter().find(|s| s.queued.len() > MAX_SOCKET_QUEUED) {
        b.error(format!(
            "{}: {} bytes queued in a unix socket; at most {MAX_SOCKET_QUEUED} can be put back",
            b.what(if big.inode == u[0].inode { g[0] } else { g[1] }),
            big.queued.len()
        ));
        st.refused.insert(g[0]);
        st.refused.insert(g[1]);
        return;
    }
    let (a, bslot) = (b.slot(), b.slot());
    b.op(
        &b.what(g[0]),
        FdOp::SocketPair {
            a,
            b: bslot,
            sock_type: u[0].sock_type as i32,
        },
    );
    if !u[0].queued.is_empty() {
        b.op(
            &b.what(g[0]),
            FdOp::Write {
                slot: bslot,
                data: u[0].queued.clone(),
            },
        );
    }
    if !u[1].queued.is_empty() {
        b.op(
            &b.what(g[1]),
            FdOp::Write {
                slot: a,
                data: u[1].queued.clone(),
            },
        );
    }
    b.slot_of[g[0]] = Some(a);
    b.slot_of[g[1]] = Some(bslot);
}

/// A unix socket: one end of a pair made by [`plan_pairs`] (its status
/// flags remain), or an unconnected or listening socket.
pub(super) fn plan(b: &mut Builder, g: usize, u: &UnixSocket, st: &State) {
    if st.refused.contains(&g) {
        return; // said by plan_pairs
    }
    let (what, flags) = (b.what(g), b.flags(g));
    if let Some(s) = b.slot_of[g] {
        b.set_fl(&what, s, flags);
        return;
    }
    let ty = u.sock_type as i32;
    if !matches!(
        ty,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        b.error(format!("{what}: unix socket of unknown type {ty}"));
        return;
    }
    let abstract_name = u.local_path.first() == Some(&0);
    if u.listening && !abstract_name && cpath(&u.local_path).is_none() {
        b.error(format!(
            "{what}: a unix socket listening on a path with a NUL byte"
        ));
        return;
    }
    if u.peer_inode != 0 {
        b.error(format!(
            "{what}: a unix socket connected to a socket outside the image (peer inode {}) cannot be restored",
            u.peer_inode
        ));
        return;
    }
    if !u.local_path.is_empty() && !u.listening {
        b.error(format!(
            "{what}: a unix socket bound to {} cannot be restored by this version",
            String::from_utf8_lossy(&u.local_path)
        ));
        return;
    }
    let s = b.slot();
    b.op(
        &what,
        FdOp::UnixSocket {
            slot: s,
            sock_type: ty,
            name: if u.listening {
                u.local_path.clone()
            } else {
                Vec::new()
            },
            path: if u.listening && !abstract_name {
                cpath(&u.local_path)
            } else {
                None
            },
            backlog: if u.listening { u.backlog.max(1) } else { 0 },
        },
    );
    b.set_fl(&what, s, flags);
    b.slot_of[g] = Some(s);
}

/// FdOp::SocketPair: `slots` get the two ends.
pub(super) fn make_pair(
    c: &mut Child<'_>,
    slots: [usize; 2],
    sock_type: i32,
) -> ckpt_sys::Result<()> {
    let (x, y) = setup::socketpair(sock_type)?;
    c.new_fd(slots[0], x)?;
    c.new_fd(slots[1], y)?;
    Ok(())
}

/// FdOp::UnixSocket: a path is cleared and bound like an open of the
/// image's path (with the saved user's rights).
pub(super) fn make(
    c: &mut Child<'_>,
    slot: usize,
    sock_type: i32,
    name: &[u8],
    path: Option<&CStr>,
    backlog: u32,
) -> ckpt_sys::Result<()> {
    let fd = match path {
        None => setup::unix_socket(sock_type, name, backlog)?,
        Some(path) => c.as_saved(|_| {
            setup::clear_stale_socket(path)?;
            setup::unix_socket(sock_type, name, backlog)
        })?,
    };
    c.new_fd(slot, fd)?;
    Ok(())
}

/// A unix socket to be bound where a live one listens: the restore would
/// take its name away (whoever restores).
pub(super) fn check_path_free(what: &str, path: &CStr, r: &mut Report) {
    if unix_path_in_use(path.to_bytes()) {
        r.errors.push(format!(
            "{what}: {}: Address already in use (a process listens on this unix socket)",
            path.to_string_lossy()
        ));
    }
}

/// Why binding a unix socket at `path` would fail here, whoever binds:
/// a name longer than sun_path, no such directory, a file that is not a
/// socket in the way (only a stale socket is removed), a directory the
/// restorer cannot create in (a read-only filesystem). Whether the saved
/// user may write the directory is asked with the other accesses
/// ([`access_item`]).
pub(super) fn check_bindable(what: &str, path: &CStr, r: &mut Report) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    let bytes = path.to_bytes();
    let shown = path.to_string_lossy();
    if bytes.len() >= 108 {
        r.errors.push(format!(
            "{what}: {shown}: the name is longer than a unix socket address holds (107 bytes)"
        ));
        return;
    }
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes));
    let dir = p.parent().unwrap_or(std::path::Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            r.errors.push(format!(
                "{what}: {shown}: {} is not a directory",
                dir.display()
            ));
            return;
        }
        Err(e) => {
            r.errors.push(format!(
                "{what}: {shown}: its directory {}: {}",
                dir.display(),
                crate::error::os_msg(&e)
            ));
            return;
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if !m.file_type().is_socket() {
            r.errors.push(format!(
                "{what}: {shown}: a file that is not a socket is in the way"
            ));
        }
    }
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap_or_default();
    if let Err(e) = ckpt_sys::creds::access(&cdir, libc::W_OK | libc::X_OK) {
        if e.errno() == Some(libc::EROFS) {
            r.errors.push(format!(
                "{what}: {shown}: {} is on a read-only filesystem",
                dir.display()
            ));
        }
    }
}

/// The access binding at `path` needs: creating a file in its directory.
pub(super) fn access_item(what: &str, path: &CStr, items: &mut Vec<crate::check::AccessItem>) {
    let b = path.to_bytes();
    let dir = match b.iter().rposition(|&c| c == b'/') {
        Some(0) => b"/".to_vec(),
        Some(i) => b[..i].to_vec(),
        None => return,
    };
    if let Ok(d) = std::ffi::CString::new(dir) {
        items.push((
            format!("{what} (binding the socket {})", path.to_string_lossy()),
            d,
            libc::W_OK | libc::X_OK,
        ));
    }
}

/// Whether a listening unix socket of this network namespace is bound to
/// `path` (/proc/net/unix: flags 00010000 = listening; the path is the
/// last column).
fn unix_path_in_use(path: &[u8]) -> bool {
    let Ok(text) = std::fs::read("/proc/net/unix") else {
        return false;
    };
    text.split(|&c| c == b'\n').skip(1).any(|l| {
        let cols: Vec<&[u8]> = l
            .split(|&c| c == b' ')
            .filter(|c| !<[u8]>::is_empty(c))
            .collect();
        cols.len() >= 8 && cols[3] == b"00010000" && cols[7..].join(&b' ') == path
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fd, file, none};
    use super::super::{plan_fds, FdEnv};
    use super::*;
    use ckpt_image::*;

    #[test]
    fn socketpairs_and_their_queued_bytes() {
        let mut img = Image::default();
        let end = |inode, peer, queued: usize| {
            FileKind::UnixSocket(UnixSocket {
                sock_type: libc::SOCK_STREAM as u32,
                state: 1,
                inode,
                peer_inode: peer,
                queued: vec![7u8; queued],
                ..Default::default()
            })
        };
        img.files.push(file(1, libc::O_RDWR as u32, end(10, 11, 5)));
        img.files.push(file(2, libc::O_RDWR as u32, end(11, 10, 0)));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let pairs: Vec<_> = plan
            .ops
            .iter()
            .filter(|o| matches!(o, FdOp::SocketPair { .. }))
            .collect();
        assert_eq!(pairs.len(), 1, "{:?}", plan.ops);
        // Bytes queued at fd 3's end were written by the other end.
        let FdOp::SocketPair { b: other, .. } = pairs[0] else {
            unreachable!()
        };
        assert!(plan
            .ops
            .iter()
            .any(|o| matches!(o, FdOp::Write { slot, data } if slot == other && data.len() == 5)));

        // A hostile image: more queued than a socket holds is refused (the
        // write would block the restore).
        img.files[0].kind = end(10, 11, MAX_SOCKET_QUEUED + 1);
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert!(
            plan.errors[0].contains("bytes queued"),
            "{}",
            plan.errors[0]
        );
    }
}
