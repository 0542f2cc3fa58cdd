//! Unix sockets, made by the stub (their peer credentials and bound paths
//! are the restored process's), in phases over every unix socket of the
//! image, so that a pair whose ends are held by different processes is
//! made once (both ends are descriptions of the image's table):
//!
//! 1. listeners: bound (a path: the stale socket file removed first, with
//!    the saved user's rights, then the file's mode and owner set) and
//!    listening;
//! 2. connected pairs: an accepted connection of a listener of the image
//!    by connect() + accept() through it (both ends keep their names),
//!    other pairs by socketpair(); sockets connected to a datagram
//!    receiver, clients waiting in an accept queue, sockets bound without
//!    listening, and unconnected ones by socket() (+ bind);
//! 3. connections: datagram sockets to their receiver, waiting clients to
//!    their listener in the saved order (they wait in its accept queue
//!    again), sockets whose peer was outside the image to the peer's name
//!    (`--unix-external=reconnect`);
//! 4. queued messages, each sent again by the peer (or, for a datagram
//!    receiver, by the saved sender when it is in the image, else by an
//!    unnamed socket) with its fds (SCM_RIGHTS: the files in flight are
//!    descriptions of the image too, made in phase 2 like the others and
//!    placed nowhere) and its credentials (SCM_CREDENTIALS); then socket
//!    files that were deleted are removed again;
//! 5. shutdown bits, then the options (SO_PEEK_OFF, SO_PASSCRED, ...).
//!
//! A socket whose peer has gone (`--unix-external=close`, or one whose
//! peer had closed at the dump) is one end of a socketpair whose other end
//! writes the queued messages and is then closed.

use super::{cpath, Builder, FdOp};
use crate::stub::Child;
use crate::Report;
use ckpt_image::{FileKind, UnixExternal, UnixMessage, UnixSocket};
use ckpt_sys::fds::socket;
use ckpt_sys::fds::sockopt::{self, Phase};
use ckpt_sys::fds::unix::sockaddr_un;
use std::collections::HashMap;
use std::ffi::{CStr, CString};

/// Most fds one queued message may carry back (SCM_RIGHTS).
pub(crate) const MAX_MSG_FDS: usize = 16;

/// The unix sockets of the image and where each ends up.
struct Ctx<'a> {
    /// Group of each unix socket, by inode.
    by_inode: HashMap<u64, usize>,
    /// Listener groups by bound name.
    listeners: HashMap<Vec<u8>, usize>,
    /// Bound sockets (any) by name.
    named: HashMap<Vec<u8>, usize>,
    /// Group -> its socket.
    sock: HashMap<usize, &'a UnixSocket>,
    /// Group -> the slot of its peer's end that sends its queued messages.
    writer: HashMap<usize, usize>,
    /// Groups planned (or refused).
    done: Vec<bool>,
}

/// Plan every unix socket of the image (see the module doc).
pub(super) fn plan_all(b: &mut Builder) {
    let mut cx = Ctx {
        by_inode: HashMap::new(),
        listeners: HashMap::new(),
        named: HashMap::new(),
        sock: HashMap::new(),
        writer: HashMap::new(),
        done: vec![false; b.groups.len()],
    };
    for (g, group) in b.groups.iter().enumerate() {
        if let FileKind::UnixSocket(u) = &group.file.kind {
            cx.by_inode.insert(u.inode, g);
            cx.sock.insert(g, u);
            if !u.local_path.is_empty() {
                cx.named.insert(u.local_path.clone(), g);
                if u.listening {
                    cx.listeners.insert(u.local_path.clone(), g);
                }
            }
        }
    }
    let mut groups: Vec<usize> = cx.sock.keys().copied().collect();
    groups.sort_unstable();
    for &g in &groups {
        // (Checked once: each refusal is said once.)
        if !valid(b, g, cx.sock[&g]) {
            cx.done[g] = true;
        } else if cx.sock[&g].listening {
            make_socket(b, &mut cx, g);
        }
    }
    for &g in &groups {
        if !cx.done[g] {
            plan_one(b, &mut cx, g);
        }
    }
    connect_phase(b, &cx, &groups);
    for &g in &groups {
        messages(b, &cx, g);
    }
    unlink_deleted(b, &cx, &groups);
    for &g in &groups {
        finish(b, &cx, g);
    }
}

/// The checks every socket must pass first.
fn valid(b: &mut Builder, g: usize, u: &UnixSocket) -> bool {
    let what = b.what(g);
    let ty = u.sock_type as i32;
    if !matches!(
        ty,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        b.error(format!("{what}: unix socket of unknown type {ty}"));
        return false;
    }
    let abstract_name = u.local_path.first() == Some(&0);
    if !u.local_path.is_empty() && !abstract_name && cpath(&u.local_path).is_none() {
        b.error(format!(
            "{what}: a unix socket bound to a path with a NUL byte"
        ));
        return false;
    }
    if sockaddr_un(&u.local_path).is_none() || sockaddr_un(&u.peer_path).is_none() {
        b.error(format!("{what}: a unix socket name longer than 108 bytes"));
        return false;
    }
    if u.messages.iter().any(|m| m.files.len() > MAX_MSG_FDS) {
        b.error(format!(
            "{what}: a queued message carries more than {MAX_MSG_FDS} fds"
        ));
        return false;
    }
    true
}

/// A socket of its own (socket + bind [+ listen]) into a new slot.
fn make_socket(b: &mut Builder, cx: &mut Ctx, g: usize) -> usize {
    let u = cx.sock[&g];
    let what = b.what(g);
    let abstract_name = u.local_path.first() == Some(&0);
    move_aside(b, &what, u);
    let s = b.slot();
    b.op(
        &what,
        FdOp::UnixSocket {
            slot: s,
            sock_type: u.sock_type as i32,
            name: u.local_path.clone(),
            path: if abstract_name || u.local_path.is_empty() {
                None
            } else {
                cpath(&u.local_path)
            },
            backlog: if u.listening { u.backlog.max(1) } else { 0 },
        },
    );
    if !u.local_path.is_empty() && !abstract_name && u.file_mode != 0 && !u.deleted {
        if let Some(path) = cpath(&u.local_path) {
            b.op(
                &what,
                FdOp::UnixFileMode {
                    path,
                    mode: u.file_mode & 0o7777,
                    uid: u.file_uid,
                    gid: u.file_gid,
                },
            );
        }
    }
    b.slot_of[g] = Some(s);
    cx.done[g] = true;
    s
}

/// The name in the directory of `u`'s path that what is there now is
/// moved to while a socket deleted at the dump is bound to that path
/// again: ".ck" and the inode in hex, short, since sockets are connected
/// to it by name in phase 3 (a unix socket address holds 107 bytes).
fn aside_name(u: &UnixSocket) -> Option<(CString, CString)> {
    if !u.deleted || u.local_path.first().is_none_or(|&c| c == 0) {
        return None;
    }
    let dir_len = u
        .local_path
        .iter()
        .rposition(|&c| c == b'/')
        .map_or(0, |i| i + 1);
    let mut a = u.local_path[..dir_len].to_vec();
    a.extend_from_slice(format!(".ck{:x}", u.inode).as_bytes());
    Some((cpath(&u.local_path)?, cpath(&a)?))
}

/// FdOp::UnixMoveAside before a deleted socket is bound (see
/// [`aside_name`]); [`unlink_deleted`] moves it back. The directories of
/// its name that are gone (deleted with it) are made for the bind
/// (FdOp::UnixMkdir, each once, outermost first).
fn move_aside(b: &mut Builder, what: &str, u: &UnixSocket) {
    if let Some((path, aside)) = aside_name(u) {
        for dir in missing_dirs(&u.local_path) {
            let made = b
                .plan
                .ops
                .iter()
                .any(|op| matches!(op, FdOp::UnixMkdir { path } if *path == dir));
            if !made {
                b.op(what, FdOp::UnixMkdir { path: dir });
            }
        }
        b.op(what, FdOp::UnixMoveAside { path, aside });
    }
}

/// The directories above `path` that do not exist, outermost first.
fn missing_dirs(path: &[u8]) -> Vec<CString> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut dir = std::path::Path::new(std::ffi::OsStr::from_bytes(path)).parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        out.extend(CString::new(d.as_os_str().as_bytes()).ok());
        dir = d.parent();
    }
    out.reverse();
    out
}

/// The directories the ops make for deleted sockets.
pub(super) fn made_dirs(ops: &[FdOp]) -> Vec<&CStr> {
    ops.iter()
        .filter_map(|op| match op {
            FdOp::UnixMkdir { path } => Some(path.as_c_str()),
            _ => None,
        })
        .collect()
}

/// Whether `path`'s directory is one of `made`.
pub(super) fn in_made_dir(path: &CStr, made: &[&CStr]) -> bool {
    let b = path.to_bytes();
    b.iter()
        .rposition(|&c| c == b'/')
        .is_some_and(|i| made.iter().any(|d| d.to_bytes() == &b[..i]))
}

/// The peer group of `u` when both ends are in the image and point at
/// each other.
fn mutual(cx: &Ctx, g: usize) -> Option<usize> {
    let u = cx.sock[&g];
    let &pg = cx.by_inode.get(&u.peer_inode)?;
    let p = cx.sock[&pg];
    (pg != g && p.peer_inode == u.inode && p.sock_type == u.sock_type).then_some(pg)
}

fn plan_one(b: &mut Builder, cx: &mut Ctx, g: usize) {
    let u = cx.sock[&g];
    let what = b.what(g);
    if let Some(pg) = mutual(cx, g) {
        if cx.done[pg] {
            return;
        }
        plan_pair(b, cx, [g, pg]);
        return;
    }
    match u.external {
        UnixExternal::Close => {
            let (a, other) = (b.slot(), b.slot());
            b.op(
                &what,
                FdOp::SocketPair {
                    a,
                    b: other,
                    sock_type: u.sock_type as i32,
                },
            );
            b.slot_of[g] = Some(a);
            cx.writer.insert(g, other);
            cx.done[g] = true;
            return;
        }
        UnixExternal::Reconnect | UnixExternal::None => {}
        other => {
            b.error(format!(
                "{what}: an outside peer to treat as {other:?}, which this restore does not know"
            ));
            cx.done[g] = true;
            return;
        }
    }
    if u.peer_inode != 0
        && u.external == UnixExternal::None
        && !cx.by_inode.contains_key(&u.peer_inode)
    {
        b.error(format!(
            "{what}: a unix socket connected to a socket outside the image (peer inode {}) cannot be restored (dump it with --unix-external)",
            u.peer_inode
        ));
        cx.done[g] = true;
        return;
    }
    if u.sock_type == libc::SOCK_DGRAM as u32
        && u.local_path.is_empty()
        && !queued(u).is_empty()
        && !cx.by_inode.contains_key(&u.peer_inode)
    {
        // An unnamed datagram socket with datagrams queued (its peer
        // closed since): nothing could address it, so it is made as one
        // end of a pair whose other end sends them and is then closed.
        let (a, other) = (b.slot(), b.slot());
        b.op(
            &what,
            FdOp::SocketPair {
                a,
                b: other,
                sock_type: libc::SOCK_DGRAM,
            },
        );
        b.slot_of[g] = Some(a);
        cx.writer.insert(g, other);
        cx.done[g] = true;
        return;
    }
    make_socket(b, cx, g);
}

/// A connected pair: through its listener when one end is a connection
/// accepted from a listener of the image, else socketpair().
fn plan_pair(b: &mut Builder, cx: &mut Ctx, g: [usize; 2]) {
    let u = [cx.sock[&g[0]], cx.sock[&g[1]]];
    // One end accepted from a listener of the image: the server end is
    // named as the listener, the client's peer is that name.
    let via = (0..2).find_map(|i| {
        let (server, client) = (u[i], u[1 - i]);
        let &l = cx.listeners.get(&server.local_path)?;
        (client.peer_path == server.local_path).then_some((i, l))
    });
    // Or accepted from a listener closed since (its file maybe deleted):
    // a listener of that name made for the accept, closed with the rest.
    let gone = || {
        (0..2).find(|&i| {
            let (server, client) = (u[i], u[1 - i]);
            server.sock_type != libc::SOCK_DGRAM as u32
                && !server.local_path.is_empty()
                && client.peer_path == server.local_path
                && !cx
                    .named
                    .iter()
                    .any(|(n, &o)| *n == server.local_path && o != g[i])
        })
    };
    let via = via
        .map(|(i, l)| (i, Some(l)))
        .or_else(|| gone().map(|i| (i, None)));
    let slots = match via {
        Some((i, l)) => {
            let (server, client) = (g[i], g[1 - i]);
            let name = l.map_or(&u[i].local_path, |l| &cx.sock[&l].local_path);
            let Some(addr) = sockaddr_un(name) else {
                return;
            };
            let listener = match l {
                Some(l) => b.slot_of[l].unwrap_or(0),
                None => temporary_listener(b, server, u[i]),
            };
            let c = make_socket(b, cx, client);
            let what = b.what(client);
            b.op(
                &what,
                FdOp::UnixConnect {
                    slot: c,
                    addr,
                    path: name.first() != Some(&0),
                },
            );
            let s = b.slot();
            b.op(&b.what(server), FdOp::UnixAccept { listener, slot: s });
            b.slot_of[server] = Some(s);
            if i == 0 {
                [s, c]
            } else {
                [c, s]
            }
        }
        None => {
            let (a, o) = (b.slot(), b.slot());
            b.op(
                &b.what(g[0]),
                FdOp::SocketPair {
                    a,
                    b: o,
                    sock_type: u[0].sock_type as i32,
                },
            );
            b.slot_of[g[0]] = Some(a);
            b.slot_of[g[1]] = Some(o);
            [a, o]
        }
    };
    cx.writer.insert(g[0], slots[1]);
    cx.writer.insert(g[1], slots[0]);
    cx.done[g[0]] = true;
    cx.done[g[1]] = true;
}

/// A listener bound to `u`'s name (a connection accepted from a listener
/// the process closed since) in a slot of its own, for `u`'s accept. The
/// file it makes goes again with the other deleted ones, or stays (as the
/// closed listener's did) when it was there at the dump.
fn temporary_listener(b: &mut Builder, server: usize, u: &UnixSocket) -> usize {
    let abstract_name = u.local_path.first() == Some(&0);
    move_aside(b, &b.what(server), u);
    let s = b.slot();
    b.op(
        &format!("{} (the listener it was accepted from)", b.what(server)),
        FdOp::UnixSocket {
            slot: s,
            sock_type: u.sock_type as i32,
            name: u.local_path.clone(),
            path: if abstract_name {
                None
            } else {
                cpath(&u.local_path)
            },
            backlog: 1,
        },
    );
    if !abstract_name && u.file_mode != 0 && !u.deleted {
        if let Some(path) = cpath(&u.local_path) {
            b.op(
                &b.what(server),
                FdOp::UnixFileMode {
                    path,
                    mode: u.file_mode & 0o7777,
                    uid: u.file_uid,
                    gid: u.file_gid,
                },
            );
        }
    }
    s
}

/// Phase 3: connections to receivers, listeners and outside names; then
/// deleted socket files removed again.
fn connect_phase(b: &mut Builder, cx: &Ctx, groups: &[usize]) {
    // Waiting clients, in each listener's saved order.
    let mut pending_of: HashMap<u64, usize> = HashMap::new();
    for &g in groups {
        let u = cx.sock[&g];
        if u.listening {
            for c in &u.pending {
                pending_of.insert(*c, g);
            }
        }
    }
    for &l in groups {
        let lu = cx.sock[&l];
        if !lu.listening {
            continue;
        }
        for c in &lu.pending {
            let Some(&cg) = cx.by_inode.get(c) else {
                continue;
            };
            connect_to(b, cg, &current_name(b, cx, l));
        }
    }
    for &g in groups {
        let u = cx.sock[&g];
        if u.listening || mutual(cx, g).is_some() || pending_of.contains_key(&u.inode) {
            continue;
        }
        if let Some(&pg) = cx.by_inode.get(&u.peer_inode) {
            // A datagram socket connected to a receiver of the image.
            let name = &current_name(b, cx, pg);
            if name.is_empty() {
                b.error(format!(
                    "{}: connected to an unnamed socket that is not its peer",
                    b.what(g)
                ));
                continue;
            }
            connect_to(b, g, name);
        } else if u.external == UnixExternal::Reconnect {
            connect_to(b, g, &u.peer_path);
        }
    }
}

/// Socket files deleted at the dump go again (once nothing needs their
/// name any more).
/// Several bound to one name were bound in turn, each moving the one
/// before aside: they go in the reverse order, each putting back the one
/// before. Only the sockets bound here have a file to remove.
fn unlink_deleted(b: &mut Builder, cx: &Ctx, groups: &[usize]) {
    // (position of its move aside, group) of each, the last bound first.
    let mut order: Vec<(usize, usize)> = Vec::new();
    for &g in groups {
        let u = cx.sock[&g];
        if u.deleted && b.slot_of[g].is_some() && u.local_path.first().is_some_and(|&c| c != 0) {
            let at = aside_name(u).and_then(|(_, aside)| {
                b.plan.ops.iter().position(
                    |op| matches!(op, FdOp::UnixMoveAside { aside: a, .. } if *a == aside),
                )
            });
            // (None: it was not bound here: a connection accepted, an end
            // of a pair: its name's file is its listener's.)
            if let Some(at) = at {
                order.push((at, g));
            }
        }
    }
    order.sort_unstable_by(|a, b| b.cmp(a));
    for (_, g) in order {
        let u = cx.sock[&g];
        if let Some(path) = cpath(&u.local_path) {
            b.op(&b.what(g), FdOp::UnixUnlink { path });
        }
        if let Some((path, aside)) = aside_name(u) {
            b.op(&b.what(g), FdOp::UnixMoveBack { path, aside });
        }
    }
    // The directories made for them go again, innermost first.
    let made: Vec<CString> = made_dirs(&b.plan.ops)
        .into_iter()
        .rev()
        .map(CStr::to_owned)
        .collect();
    for path in made {
        let what = format!(
            "the directory {} of deleted sockets",
            path.to_string_lossy()
        );
        b.op(&what, FdOp::UnixRmdir { path });
    }
}

/// Where the file of socket `g` is in phases 3 and 4 (connecting by name
/// finds a socket by its file): at its name, or, for a socket deleted at
/// the dump that another one bound to that name after it (moving its file
/// aside), at that aside name.
fn current_name(b: &Builder, cx: &Ctx, g: usize) -> Vec<u8> {
    let u = cx.sock[&g];
    let Some((path, mine)) = aside_name(u) else {
        return u.local_path.clone();
    };
    let ops = &b.plan.ops;
    let Some(at) = ops
        .iter()
        .position(|op| matches!(op, FdOp::UnixMoveAside { aside, .. } if *aside == mine))
    else {
        return u.local_path.clone();
    };
    ops[at + 1..]
        .iter()
        .find_map(|op| match op {
            FdOp::UnixMoveAside { path: p, aside } if *p == path => Some(aside.as_bytes().to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| u.local_path.clone())
}

fn connect_to(b: &mut Builder, g: usize, name: &[u8]) {
    let what = b.what(g);
    let Some(slot) = b.slot_of[g] else {
        return;
    };
    let Some(addr) = sockaddr_un(name) else {
        // Never the socket now bound at the saved name instead: an error.
        b.error(format!(
            "{what}: its peer can only be reached at {}, longer than a unix socket address holds (107 bytes)",
            String::from_utf8_lossy(name)
        ));
        return;
    };
    b.op(
        &what,
        FdOp::UnixConnect {
            slot,
            addr,
            path: name.first() != Some(&0),
        },
    );
}

/// The messages queued on `u`, to be written again.
fn queued(u: &UnixSocket) -> Vec<UnixMessage> {
    if !u.messages.is_empty() {
        return u.messages.clone();
    }
    if u.queued.is_empty() {
        return Vec::new();
    }
    // A format 1.1 image: the bytes of a stream socket.
    vec![UnixMessage {
        data: u.queued.clone(),
        ..Default::default()
    }]
}

/// Phase 4: the messages queued on socket `g`.
fn messages(b: &mut Builder, cx: &Ctx, g: usize) {
    let u = cx.sock[&g];
    let msgs = queued(u);
    if msgs.is_empty() || b.slot_of[g].is_none() {
        return;
    }
    let what = b.what(g);
    let dgram = u.sock_type == libc::SOCK_DGRAM as u32;
    let writer = cx.writer.get(&g).copied();
    if writer.is_none() && !dgram {
        b.warning(format!(
            "{what}: {} queued message(s) from a peer outside the image are lost",
            msgs.len()
        ));
        return;
    }
    let to = if writer.is_none() {
        match sockaddr_un(&current_name(b, cx, g)).filter(|_| !u.local_path.is_empty()) {
            Some(a) => a,
            None => {
                b.warning(format!(
                    "{what}: datagrams queued on an unnamed socket are lost"
                ));
                return;
            }
        }
    } else {
        Vec::new()
    };
    let total: usize = msgs.iter().map(|m| m.data.len()).sum();
    let mut anon = None;
    for m in &msgs {
        let mut fds = Vec::with_capacity(m.files.len());
        for id in &m.files {
            match b
                .groups
                .iter()
                .position(|gr| gr.file.id == *id)
                .and_then(|fg| b.slot_of[fg])
            {
                Some(s) => fds.push(s),
                None => {
                    b.error(format!(
                        "{what}: a queued message passes open file {id}, which is not restored"
                    ));
                    return;
                }
            }
        }
        let from = match writer {
            Some(w) => w,
            None => match cx
                .named
                .get(&m.sender)
                .filter(|_| !m.sender.is_empty())
                .and_then(|&sg| b.slot_of[sg])
            {
                Some(s) => s,
                None => {
                    if !m.sender.is_empty() {
                        b.warning(format!(
                            "{what}: a datagram queued from {} is sent again by an unnamed socket",
                            String::from_utf8_lossy(&m.sender)
                        ));
                    }
                    *anon.get_or_insert_with(|| {
                        let s = b.slot();
                        b.op(
                            &what,
                            FdOp::UnixSocket {
                                slot: s,
                                sock_type: libc::SOCK_DGRAM,
                                name: Vec::new(),
                                path: None,
                                backlog: 0,
                            },
                        );
                        s
                    })
                }
            },
        };
        if total > 64 << 10 {
            // Room for the whole queue in the writer's buffer.
            let room = ((2 * total + (64 << 10)).min(i32::MAX as usize) as i32).to_ne_bytes();
            b.op(
                &what,
                FdOp::SockOpts {
                    slot: from,
                    opts: vec![(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room.to_vec())],
                    phase: Phase::Post,
                },
            );
        }
        b.op(
            &what,
            FdOp::UnixSend {
                slot: from,
                data: m.data.clone(),
                fds,
                creds: m.has_creds.then_some((m.pid, m.uid, m.gid)),
                to: to.clone(),
            },
        );
    }
}

/// Phase 5: shutdown bits, options, status flags and owner of socket `g`.
fn finish(b: &mut Builder, cx: &Ctx, g: usize) {
    let u = cx.sock[&g];
    let Some(s) = b.slot_of[g] else { return };
    let (what, flags) = (b.what(g), b.flags(g));
    let how = match u.shutdown & 3 {
        0 => None,
        1 => Some(libc::SHUT_RD),
        2 => Some(libc::SHUT_WR),
        _ => Some(libc::SHUT_RDWR),
    };
    if let (Some(how), false) = (how, u.external == UnixExternal::Close) {
        b.op(&what, FdOp::Shutdown { slot: s, how });
    }
    let opts: Vec<(i32, i32, Vec<u8>)> = u
        .options
        .iter()
        .map(|o| (o.level, o.name, o.value.clone()))
        .collect();
    if !opts.is_empty() {
        b.op(
            &what,
            FdOp::SockOpts {
                slot: s,
                opts,
                phase: Phase::Post,
            },
        );
    }
    b.set_fl(&what, s, flags);
    b.set_owner(g, s);
}

/// FdOp::SocketPair: `slots` get the two ends.
pub(super) fn make_pair(
    c: &mut Child<'_>,
    slots: [usize; 2],
    sock_type: i32,
) -> ckpt_sys::Result<()> {
    use std::os::fd::IntoRawFd;
    let (x, y) = ckpt_sys::fds::unix::socketpair(sock_type)?;
    c.new_fd(slots[0], x.into_raw_fd())?;
    c.new_fd(slots[1], y.into_raw_fd())?;
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
    use std::os::fd::IntoRawFd;
    let fd = match path {
        None => ckpt_sys::fds::unix::unix_socket(sock_type, name, backlog)?,
        Some(path) => c.as_saved(|_| {
            ckpt_sys::fds::unix::clear_stale_socket(path)?;
            ckpt_sys::fds::unix::unix_socket(sock_type, name, backlog)
        })?,
    };
    c.new_fd(slot, fd.into_raw_fd())?;
    Ok(())
}

/// FdOp::UnixConnect: to a path with the saved user's rights.
pub(super) fn connect(
    c: &mut Child<'_>,
    slot: usize,
    addr: &[u8],
    path: bool,
) -> ckpt_sys::Result<()> {
    let fd = c.slot(slot);
    if path {
        c.as_saved(|_| socket::connect_raw(fd, addr).map(drop))
    } else {
        socket::connect_raw(fd, addr).map(drop)
    }
}

/// FdOp::UnixAccept.
pub(super) fn accept(c: &mut Child<'_>, listener: usize, slot: usize) -> ckpt_sys::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = c.slot(listener);
    match socket::accept(fd)? {
        Some(s) => {
            // accept() made it non-blocking: the saved flags are set later.
            let n = c.new_fd(slot, s.into_raw_fd())?;
            let fl = ckpt_sys::fds::get_fl(n)?;
            ckpt_sys::fds::set_fl(n, fl & !libc::O_NONBLOCK)
        }
        None => Err(ckpt_sys::Error::Os {
            op: "accept4",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::EAGAIN),
        }),
    }
}

/// FdOp::UnixSend: credentials of a process gone since are replaced by the
/// stub's own pid.
pub(super) fn send(
    c: &mut Child<'_>,
    slot: usize,
    data: &[u8],
    fds: &[usize],
    creds: Option<(i32, u32, u32)>,
    to: &[u8],
) -> ckpt_sys::Result<()> {
    let mut nums = [0i32; MAX_MSG_FDS];
    let n = fds.len().min(MAX_MSG_FDS);
    for (d, s) in nums.iter_mut().zip(fds) {
        *d = c.slot(*s);
    }
    let fd = c.slot(slot);
    let r = socket::send_msg(fd, data, &nums[..n], creds, to);
    let r = match (r, creds) {
        (Err(e), Some((_, uid, gid))) if e.errno() == Some(libc::ESRCH) => socket::send_msg(
            fd,
            data,
            &nums[..n],
            Some((ckpt_sys::proc::getpid(), uid, gid)),
            to,
        ),
        (r, _) => r,
    };
    let sent = r?;
    if sent != data.len() {
        return Err(ckpt_sys::Error::Os {
            op: "sendmsg",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::EMSGSIZE),
        });
    }
    Ok(())
}

/// FdOp::SockOpts: each option of the table at its moment (`Post` also
/// sets the ones meant for before bind: the socket is made by then).
pub(super) fn set_opts(
    c: &mut Child<'_>,
    slot: usize,
    opts: &[(i32, i32, Vec<u8>)],
    phase: Phase,
) -> ckpt_sys::Result<()> {
    let fd = c.slot(slot);
    // One at a time: no allocation in the stub.
    for (level, name, v) in opts {
        let one = [(*level, *name, &v[..])];
        if phase == Phase::Post {
            sockopt::apply(fd, &one, Phase::PreBind, true).map_err(|(_, e)| e)?;
        }
        sockopt::apply(fd, &one, phase, true).map_err(|(_, e)| e)?;
    }
    Ok(())
}

/// FdOp::UnixFileMode: the socket file's mode and owner, with the saved
/// user's rights.
pub(super) fn file_mode(
    c: &mut Child<'_>,
    path: &CStr,
    mode: u32,
    uid: u32,
    gid: u32,
) -> ckpt_sys::Result<()> {
    c.as_saved(|_| {
        ckpt_sys::fs::lchown(path, uid, gid)?;
        ckpt_sys::fs::chmod(path, mode)
    })
}

/// FdOp::UnixMoveAside / UnixMoveBack: nothing at `from` is no error.
pub(super) fn rename(c: &mut Child<'_>, from: &CStr, to: &CStr) -> ckpt_sys::Result<()> {
    c.as_saved(|_| ckpt_sys::fs::rename_noreplace(from, to).map(drop))
}

/// FdOp::UnixMkdir: a directory of deleted sockets, gone at the dump
/// (mode 0755 while it lives: removed again by FdOp::UnixRmdir).
pub(super) fn mkdir(c: &mut Child<'_>, path: &CStr) -> ckpt_sys::Result<()> {
    c.as_saved(|_| ckpt_sys::fs::mknod(path, libc::S_IFDIR | 0o755, 0))
}

/// FdOp::UnixRmdir: a directory FdOp::UnixMkdir made. One that is not
/// empty (something else was put in it meanwhile) stays.
pub(super) fn rmdir(c: &mut Child<'_>, path: &CStr) -> ckpt_sys::Result<()> {
    c.as_saved(|_| match ckpt_sys::fs::remove_entry(path, true) {
        Err(e) if e.errno() == Some(libc::ENOTEMPTY) => Ok(()),
        r => r,
    })
}

/// FdOp::UnixUnlink: a socket file that was deleted at the dump.
pub(super) fn unlink(c: &mut Child<'_>, path: &CStr) -> ckpt_sys::Result<()> {
    c.as_saved(|_| ckpt_sys::fs::unlink(path))
}

/// Whether `path` fits in a unix socket address; else an error in `r`.
pub(super) fn check_length(what: &str, path: &CStr, r: &mut Report) -> bool {
    if path.to_bytes().len() >= 108 {
        r.errors.push(format!(
            "{what}: {}: the name is longer than a unix socket address holds (107 bytes)",
            path.to_string_lossy()
        ));
        return false;
    }
    true
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
/// `moved`: what is at the path is moved aside for the bind (a socket
/// deleted at the dump), not in the way.
pub(super) fn check_bindable(what: &str, path: &CStr, moved: bool, r: &mut Report) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    let bytes = path.to_bytes();
    let shown = path.to_string_lossy();
    if !check_length(what, path, r) {
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
        if !m.file_type().is_socket() && !moved {
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

    fn end(inode: u64, peer: u64, queued: usize) -> FileKind {
        FileKind::UnixSocket(UnixSocket {
            sock_type: libc::SOCK_STREAM as u32,
            state: 1,
            inode,
            peer_inode: peer,
            messages: if queued > 0 {
                vec![UnixMessage {
                    data: vec![7u8; queued],
                    ..Default::default()
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
    }

    #[test]
    fn socketpairs_and_their_queued_messages() {
        let mut img = Image::default();
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
        // Bytes queued at fd 3's end are sent by the other end.
        let FdOp::SocketPair { b: other, .. } = pairs[0] else {
            unreachable!()
        };
        assert!(plan.ops.iter().any(
            |o| matches!(o, FdOp::UnixSend { slot, data, .. } if slot == other && data.len() == 5)
        ));
    }

    #[test]
    fn a_file_in_flight_is_made_and_passed() {
        let mut img = Image::default();
        let mut a = end(10, 11, 0);
        if let FileKind::UnixSocket(u) = &mut a {
            u.sock_type = libc::SOCK_SEQPACKET as u32;
            u.messages = vec![UnixMessage {
                data: b"x".to_vec(),
                files: vec![3],
                ..Default::default()
            }];
        }
        let mut b = end(11, 10, 0);
        if let FileKind::UnixSocket(u) = &mut b {
            u.sock_type = libc::SOCK_SEQPACKET as u32;
        }
        img.files.push(file(1, libc::O_RDWR as u32, a));
        img.files.push(file(2, libc::O_RDWR as u32, b));
        img.files.push(file(
            3,
            libc::O_RDWR as u32,
            FileKind::EventFd(EventFd {
                count: 1,
                semaphore: false,
            }),
        ));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let ev = plan.ops.iter().find_map(|o| match o {
            FdOp::EventFd { slot, .. } => Some(*slot),
            _ => None,
        });
        assert!(
            plan.ops
                .iter()
                .any(|o| matches!(o, FdOp::UnixSend { fds, .. } if fds == &vec![ev.unwrap()])),
            "{:?}",
            plan.ops
        );
        // The eventfd is placed at no fd number.
        assert!(!plan.procs[0].places.iter().any(|p| Some(p.slot) == ev));
    }
}
