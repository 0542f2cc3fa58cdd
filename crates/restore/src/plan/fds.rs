//! The fd table of the stub: which open file descriptions to create, how,
//! and at which numbers to place them. Pure: the stub child only runs the
//! resulting [`FdOp`]s (see `stub.rs`).

use ckpt_image::{Blob, FileKind, Image, OpenFile, PipeEnd, Process};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;

/// Flags that only matter when a file is created; dropped when reopening.
const CREATE_FLAGS: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;
/// `__O_TMPFILE` without O_DIRECTORY.
const O_TMPFILE_BIT: i32 = 0o20000000;
/// Status flags F_SETFL can change.
pub const SETFL_MASK: i32 =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

const F_SEAL_SEAL: u32 = 1;
const MFD_CLOEXEC: u32 = 1;
const MFD_ALLOW_SEALING: u32 = 2;

/// One step of the stub's fd setup. Slots are indices into a table of
/// temporary ("staging") fds; `Place` puts a slot's description at its
/// final number.
#[derive(Debug, Clone, PartialEq)]
pub enum FdOp {
    /// open(path, flags, mode) of a path of the image (with the saved
    /// user's fs ids where the restore takes them, see `stub.rs`).
    Open {
        slot: usize,
        path: CString,
        flags: i32,
        mode: u32,
    },
    /// A new description of the file open in `from` (open of /proc/self/fd/N).
    Reopen {
        slot: usize,
        from: usize,
        flags: i32,
    },
    /// The restorer's controlling terminal (open of /dev/tty): the
    /// restorer's own, not a path of the image.
    OpenTty {
        slot: usize,
        flags: i32,
    },
    /// A new description of the restorer's own fd `std` (0, 1 or 2), e.g. its terminal.
    ReopenStd {
        slot: usize,
        std: usize,
        flags: i32,
    },
    /// A new description of a live pipe (or FIFO) held by another process,
    /// opened through `path` (`/proc/HOLDER/fd/N`) without blocking: with
    /// O_NONBLOCK, and for a write end with no reader through a temporary
    /// O_RDWR open. The saved status flags are set afterwards (SetFl).
    OpenPipe {
        slot: usize,
        path: CString,
        flags: i32,
    },
    /// The restorer's own fd `std` itself (the same description, dup()ed).
    InheritStd {
        slot: usize,
        std: usize,
    },
    /// An unlinked file (O_TMPFILE in the first directory that allows it) with `contents`.
    TmpFile {
        slot: usize,
        dirs: Vec<CString>,
        mode: u32,
        contents: Vec<u8>,
    },
    /// A pipe with `data` buffered in it.
    Pipe {
        read: usize,
        write: usize,
        capacity: u32,
        data: Vec<u8>,
    },
    EventFd {
        slot: usize,
        count: u64,
        flags: i32,
    },
    TimerFd {
        slot: usize,
        clock: i32,
        flags: i32,
        value_ns: u64,
        interval_ns: u64,
        ticks: u64,
    },
    SignalFd {
        slot: usize,
        mask: u64,
        flags: i32,
    },
    Epoll {
        slot: usize,
    },
    /// An inotify instance (its watches are added by InotifyWatch).
    Inotify {
        slot: usize,
        flags: i32,
    },
    /// inotify_add_watch of a path of the image (with the saved user's
    /// rights); the kernel must give it watch descriptor `wd` again.
    InotifyWatch {
        slot: usize,
        path: CString,
        mask: u32,
        wd: i32,
    },
    /// A connected pair of unix sockets (socketpair(2)).
    SocketPair {
        a: usize,
        b: usize,
        sock_type: i32,
    },
    /// A unix socket, unconnected; bound to `name` (abstract, or a path
    /// of the image: then with the saved user's rights, after removing a
    /// stale socket file nobody listens on) and listening when `backlog` > 0.
    UnixSocket {
        slot: usize,
        sock_type: i32,
        name: Vec<u8>,
        /// `name` as a path (None: unbound or abstract).
        path: Option<CString>,
        backlog: u32,
    },
    /// A listening TCP socket bound to `addr`:`port` (see ckpt_sys::setup::tcp_listen).
    TcpListen {
        slot: usize,
        addr: Vec<u8>,
        port: u16,
        backlog: u32,
        flags: i32,
    },
    MemFd {
        slot: usize,
        name: CString,
        flags: u32,
        mode: u32,
        size: u64,
        contents: Vec<u8>,
        seals: u32,
    },
    /// write(2) `data` to the slot (refilling a FIFO).
    Write {
        slot: usize,
        data: Vec<u8>,
    },
    /// fcntl(F_SETFL).
    SetFl {
        slot: usize,
        flags: i32,
    },
    /// lseek(SEEK_SET).
    Seek {
        slot: usize,
        pos: u64,
    },
    /// dup3 the slot to its final number.
    Place {
        slot: usize,
        fd: i32,
        cloexec: bool,
    },
    /// EPOLL_CTL_ADD on final numbers (after every Place).
    EpollAdd {
        epfd: i32,
        fd: i32,
        events: u32,
        data: u64,
    },
}

/// A pipe or FIFO the planner wants a live holder of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeQuery<'a> {
    /// The pipe inode (`pipe:[INODE]`), or the FIFO node's inode.
    pub ino: u64,
    /// Empty for a pipe; the FIFO's path for a FIFO.
    pub fifo_path: &'a [u8],
}

/// A live process holding a pipe: `/proc/PID/fd/FD` opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeHolder {
    pub pid: i32,
    pub fd: i32,
}

/// Finds a live holder of each queried pipe (`None` where there is none).
/// The `i32`s are pids worth looking at first; the `u32` is the uid the
/// restored process opens files as (holders it could not open the pipe
/// of through /proc are skipped).
pub type FindPipes = fn(&[PipeQuery<'_>], &[i32], u32) -> Vec<Option<PipeHolder>>;

/// What the restorer has to offer the stub.
#[derive(Debug, Clone, Copy, Default)]
pub struct FdEnv {
    /// The restorer's fds 0, 1, 2 are open.
    pub std_open: [bool; 3],
    /// ... and are terminals.
    pub std_tty: [bool; 3],
    /// /dev/tty can be opened (there is a controlling terminal).
    pub dev_tty: bool,
    /// How to find live holders of pipes whose other end is outside the
    /// image (None: there are none).
    pub find_pipes: Option<FindPipes>,
}

impl FdEnv {
    /// The environment of the calling process.
    pub fn current() -> FdEnv {
        let mut e = FdEnv::default();
        for fd in 0..3 {
            e.std_open[fd] = std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok()
                || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok();
            e.std_tty[fd] = e.std_open[fd] && ckpt_sys::sys::isatty(fd as i32);
        }
        e.dev_tty = std::fs::OpenOptions::new()
            .read(true)
            .open("/dev/tty")
            .is_ok();
        e.find_pipes = Some(crate::live::find_pipe_holders);
        e
    }
}

/// The stub's fd setup.
#[derive(Debug, Default)]
pub struct FdPlan {
    pub ops: Vec<FdOp>,
    /// For each op, what it sets up (for error messages: "fd 3: /tmp/x").
    pub what: Vec<String>,
    /// Number of staging slots.
    pub slots: usize,
    /// Staging fds live at or above this number (above every target fd).
    pub stage: i32,
    /// Which of the restorer's fds 0..2 the ops use.
    pub needs_std: [bool; 3],
    /// Regular files, directories and devices the ops open by path: (what, path).
    pub opens: Vec<(String, Vec<u8>)>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Most bytes queued in one direction of a unix socket pair that a restore
/// puts back (what a dump saves at most).
const MAX_SOCKET_QUEUED: usize = 128 << 10;

/// A path as a C string (paths never hold NUL; refuse if one does).
fn cpath(p: &[u8]) -> Option<CString> {
    CString::new(p.to_vec()).ok()
}

/// The path of a file that was deleted, without the " (deleted)" suffix.
pub fn strip_deleted(p: &[u8]) -> &[u8] {
    p.strip_suffix(b" (deleted)").unwrap_or(p)
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

struct Builder {
    plan: FdPlan,
}

impl Builder {
    fn slot(&mut self) -> usize {
        self.plan.slots += 1;
        self.plan.slots - 1
    }
    fn op(&mut self, what: &str, op: FdOp) {
        self.plan.ops.push(op);
        self.plan.what.push(what.to_string());
    }
}

/// Plan the fd table of `proc`. `load` returns the contents of a blob
/// (deleted files, memfds); check() passes one that returns nothing.
pub fn plan_fds(
    image: &Image,
    proc: &Process,
    env: &FdEnv,
    load: &mut dyn FnMut(&Blob) -> Result<Vec<u8>, String>,
) -> FdPlan {
    let mut b = Builder {
        plan: FdPlan::default(),
    };
    let max_fd = proc.fds.iter().map(|f| f.fd).max().unwrap_or(-1);
    b.plan.stage = (max_fd + 1).max(3);

    // Group fds by open file description, in order of their first fd.
    let mut groups: Vec<(&OpenFile, Vec<&ckpt_image::Fd>)> = Vec::new();
    let mut by_id: HashMap<u32, usize> = HashMap::new();
    for fd in &proc.fds {
        match by_id.get(&fd.file) {
            Some(&g) => groups[g].1.push(fd),
            None => match image.file(fd.file) {
                Some(f) => {
                    by_id.insert(fd.file, groups.len());
                    groups.push((f, vec![fd]));
                }
                None => b.plan.errors.push(format!(
                    "fd {}: refers to open file {} which is not in the image",
                    fd.fd, fd.file
                )),
            },
        }
    }

    // Pipes: both ends of one pipe are made together.
    let mut pipes: BTreeMap<u64, [Vec<usize>; 2]> = BTreeMap::new();
    for (g, (f, _)) in groups.iter().enumerate() {
        if let FileKind::Pipe(p) = &f.kind {
            let e = pipes.entry(p.id).or_default();
            e[(p.end == PipeEnd::Write) as usize].push(g);
        }
    }
    let mut group_slot: Vec<Option<usize>> = vec![None; groups.len()];
    let mut inherited: Vec<bool> = vec![false; groups.len()];

    // Live holders of pipes whose other end is outside the image (found
    // in one pass over /proc), and of FIFOs whose saved data may still be
    // in the live pipe.
    let mut queries: Vec<PipeQuery> = Vec::new();
    for (id, ends) in &pipes {
        if ends[0].is_empty() || ends[1].is_empty() {
            queries.push(PipeQuery {
                ino: *id,
                fifo_path: &[],
            });
        }
    }
    for (f, _) in &groups {
        if let FileKind::Fifo(p) = &f.kind {
            if !p.data.is_empty() {
                let path: &[u8] = if p.fifo_path.is_empty() {
                    &f.path
                } else {
                    &p.fifo_path
                };
                queries.push(PipeQuery {
                    ino: p.id,
                    fifo_path: path,
                });
            }
        }
    }
    let mut live_pipes: HashMap<u64, PipeHolder> = HashMap::new();
    let mut live_fifos: HashMap<u64, PipeHolder> = HashMap::new();
    if let (Some(find), false) = (env.find_pipes, queries.is_empty()) {
        let hints = [proc.ppid];
        for (q, h) in queries.iter().zip(find(&queries, &hints, proc.creds.fsuid)) {
            if let Some(h) = h {
                if q.fifo_path.is_empty() {
                    live_pipes.insert(q.ino, h);
                } else {
                    live_fifos.insert(q.ino, h);
                }
            }
        }
    }
    let what_of = |g: usize| -> String {
        let (f, fds) = &groups[g];
        let path = lossy(&f.path);
        if path.is_empty() {
            format!("fd {}: {}", fds[0].fd, f.kind.name())
        } else {
            format!("fd {}: {}", fds[0].fd, path)
        }
    };

    for (id, ends) in &pipes {
        let data: Vec<u8> = ends
            .iter()
            .flatten()
            .filter_map(|&g| match &groups[g].0.kind {
                FileKind::Pipe(p) if !p.data.is_empty() => Some(p.data.clone()),
                _ => None,
            })
            .next()
            .unwrap_or_default();
        let capacity = ends
            .iter()
            .flatten()
            .filter_map(|&g| match &groups[g].0.kind {
                FileKind::Pipe(p) => Some(p.capacity),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let first = *ends.iter().flatten().next().expect("pipe group");
        let what = what_of(first);
        if capacity != 0 && data.len() > capacity as usize {
            b.plan.errors.push(format!(
                "{what}: {} bytes buffered in a pipe of capacity {capacity}",
                data.len()
            ));
        }
        let both = !ends[0].is_empty() && !ends[1].is_empty();
        if let (false, Some(h)) = (both, live_pipes.get(id)) {
            // The other end was outside the saved process and the pipe is
            // still alive: reconnect every end to it. Its buffered data is
            // still in it (or was read by the holder): not written again.
            let path = CString::new(format!("/proc/{}/fd/{}", h.pid, h.fd)).expect("no NUL");
            for &g in ends.iter().flatten() {
                let s = b.slot();
                b.op(
                    &format!(
                        "{} (reconnecting to the live pipe through {})",
                        what_of(g),
                        path.to_string_lossy()
                    ),
                    FdOp::OpenPipe {
                        slot: s,
                        path: path.clone(),
                        flags: (groups[g].0.flags as i32) & !(CREATE_FLAGS | libc::O_CLOEXEC),
                    },
                );
                group_slot[g] = Some(s);
            }
            continue;
        }
        if !both {
            // The other end was outside the saved process and no live
            // process holds the pipe any more.
            let g = first;
            let std = groups[g]
                .1
                .iter()
                .map(|f| f.fd)
                .filter(|&n| (0..3).contains(&n))
                .min();
            if let Some(k) = std {
                let k = k as usize;
                if !env.std_open[k] {
                    b.plan.errors.push(format!(
                        "{what}: a pipe to outside the image, to be inherited from the restorer's fd {k}, which is closed"
                    ));
                }
                if !data.is_empty() && ends[0].contains(&g) {
                    b.plan.warnings.push(format!(
                        "{what}: {} bytes buffered in the pipe are lost (its other end was outside the image; the restorer's fd {k} is used instead)",
                        data.len()
                    ));
                }
                b.plan.needs_std[k] = true;
                let s = b.slot();
                b.op(&what, FdOp::InheritStd { slot: s, std: k });
                group_slot[g] = Some(s);
                inherited[g] = true;
                continue;
            }
            b.plan.warnings.push(format!(
                "pipe {id} ({what}): its other end was outside the image and no live process holds the pipe; a new pipe is made whose other end is closed"
            ));
        }
        let (r, w) = (b.slot(), b.slot());
        b.op(
            &what,
            FdOp::Pipe {
                read: r,
                write: w,
                capacity,
                data,
            },
        );
        for (end, base) in [(0usize, r), (1usize, w)] {
            for (i, &g) in ends[end].iter().enumerate() {
                let s = if i == 0 {
                    base
                } else {
                    let s = b.slot();
                    b.op(
                        &what_of(g),
                        FdOp::Reopen {
                            slot: s,
                            from: base,
                            flags: (groups[g].0.flags as i32) & !(CREATE_FLAGS | libc::O_CLOEXEC),
                        },
                    );
                    s
                };
                group_slot[g] = Some(s);
            }
        }
    }

    // Unix sockets connected to each other (socketpair, or both ends of a
    // connection held in the image): one socketpair per pair; the bytes
    // queued for reading at one end are written into the other.
    let unix_groups: HashMap<u64, usize> = groups
        .iter()
        .enumerate()
        .filter_map(|(g, (f, _))| match &f.kind {
            FileKind::UnixSocket(u) => Some((u.inode, g)),
            _ => None,
        })
        .collect();
    let mut unix_refused: std::collections::HashSet<usize> = std::collections::HashSet::new();
    for (g, (f, _)) in groups.iter().enumerate() {
        let FileKind::UnixSocket(u) = &f.kind else {
            continue;
        };
        if group_slot[g].is_some() || unix_refused.contains(&g) || u.listening || u.peer_inode == 0
        {
            continue;
        }
        let Some(&pg) = unix_groups.get(&u.peer_inode) else {
            continue; // reported below
        };
        let FileKind::UnixSocket(pu) = &groups[pg].0.kind else {
            continue;
        };
        if pg == g || pu.peer_inode != u.inode || pu.sock_type != u.sock_type {
            continue; // reported below
        }
        // The queued bytes are written into the new pair before anything
        // reads it: more than a socket buffer holds would block the restore.
        if let Some(big) = [u, pu].iter().find(|s| s.queued.len() > MAX_SOCKET_QUEUED) {
            b.plan.errors.push(format!(
                "{}: {} bytes queued in a unix socket; at most {MAX_SOCKET_QUEUED} can be put back",
                what_of(if big.inode == u.inode { g } else { pg }),
                big.queued.len()
            ));
            unix_refused.insert(g);
            unix_refused.insert(pg);
            continue;
        }
        let (a, bslot) = (b.slot(), b.slot());
        b.op(
            &what_of(g),
            FdOp::SocketPair {
                a,
                b: bslot,
                sock_type: u.sock_type as i32,
            },
        );
        if !u.queued.is_empty() {
            b.op(
                &what_of(g),
                FdOp::Write {
                    slot: bslot,
                    data: u.queued.clone(),
                },
            );
        }
        if !pu.queued.is_empty() {
            b.op(
                &what_of(pg),
                FdOp::Write {
                    slot: a,
                    data: pu.queued.clone(),
                },
            );
        }
        group_slot[g] = Some(a);
        group_slot[pg] = Some(bslot);
    }

    let mut fifo_holders: HashMap<u64, usize> = HashMap::new();
    for (g, (f, fds)) in groups.iter().enumerate() {
        let what = what_of(g);
        let flags = (f.flags as i32) & !(CREATE_FLAGS | libc::O_CLOEXEC);
        let setfl = flags & SETFL_MASK;
        match &f.kind {
            FileKind::Pipe(_) => {
                // Done above; only the status flags remain.
                if let (Some(s), false) = (group_slot[g], inherited[g]) {
                    b.op(
                        &what,
                        FdOp::SetFl {
                            slot: s,
                            flags: setfl,
                        },
                    );
                }
                continue;
            }
            FileKind::Regular(rf) => {
                let path = if rf.file.path.is_empty() {
                    strip_deleted(&f.path).to_vec()
                } else {
                    strip_deleted(&rf.file.path).to_vec()
                };
                let s = b.slot();
                if rf.file.deleted || f.path.ends_with(b" (deleted)") {
                    if !rf.has_contents {
                        b.plan.errors.push(format!(
                            "{what}: the file was deleted and the image does not hold its contents"
                        ));
                        continue;
                    }
                    let contents = match load(&rf.contents) {
                        Ok(c) => c,
                        Err(e) => {
                            b.plan
                                .errors
                                .push(format!("{what}: reading its saved contents: {e}"));
                            continue;
                        }
                    };
                    let mut dirs = Vec::new();
                    if let Some(pos) = path.iter().rposition(|&c| c == b'/') {
                        let d = if pos == 0 {
                            b"/".to_vec()
                        } else {
                            path[..pos].to_vec()
                        };
                        if let Some(c) = cpath(&d) {
                            dirs.push(c);
                        }
                    }
                    dirs.push(CString::new("/tmp").expect("no NUL"));
                    let mode = if rf.file.mode & 0o7777 != 0 {
                        rf.file.mode & 0o7777
                    } else {
                        0o600
                    };
                    b.op(
                        &what,
                        FdOp::TmpFile {
                            slot: s,
                            dirs,
                            mode,
                            contents,
                        },
                    );
                    let acc = flags & libc::O_ACCMODE;
                    let s = if acc != libc::O_RDWR {
                        let s2 = b.slot();
                        b.op(
                            &what,
                            FdOp::Reopen {
                                slot: s2,
                                from: s,
                                flags: flags & !(O_TMPFILE_BIT | libc::O_DIRECTORY),
                            },
                        );
                        s2
                    } else {
                        b.op(
                            &what,
                            FdOp::SetFl {
                                slot: s,
                                flags: setfl,
                            },
                        );
                        s
                    };
                    if f.position != 0 {
                        b.op(
                            &what,
                            FdOp::Seek {
                                slot: s,
                                pos: f.position,
                            },
                        );
                    }
                    group_slot[g] = Some(s);
                } else {
                    let Some(cp) = cpath(&path) else {
                        b.plan.errors.push(format!("{what}: path holds a NUL byte"));
                        continue;
                    };
                    b.plan.opens.push((what.clone(), path.clone()));
                    b.op(
                        &what,
                        FdOp::Open {
                            slot: s,
                            path: cp,
                            flags,
                            mode: 0,
                        },
                    );
                    if f.position != 0 && flags & libc::O_PATH == 0 {
                        b.op(
                            &what,
                            FdOp::Seek {
                                slot: s,
                                pos: f.position,
                            },
                        );
                    }
                    group_slot[g] = Some(s);
                }
            }
            FileKind::Directory(fi) => {
                let path = if fi.path.is_empty() {
                    f.path.clone()
                } else {
                    fi.path.clone()
                };
                if fi.deleted {
                    b.plan
                        .errors
                        .push(format!("{what}: the directory was deleted"));
                    continue;
                }
                let Some(cp) = cpath(&path) else {
                    b.plan.errors.push(format!("{what}: path holds a NUL byte"));
                    continue;
                };
                let s = b.slot();
                b.plan.opens.push((what.clone(), path.clone()));
                b.op(
                    &what,
                    FdOp::Open {
                        slot: s,
                        path: cp,
                        flags: flags | libc::O_DIRECTORY,
                        mode: 0,
                    },
                );
                if f.position != 0 && flags & libc::O_PATH == 0 {
                    b.op(
                        &what,
                        FdOp::Seek {
                            slot: s,
                            pos: f.position,
                        },
                    );
                }
                group_slot[g] = Some(s);
            }
            FileKind::CharDevice(cd) => {
                let path = if cd.path.is_empty() {
                    f.path.clone()
                } else {
                    cd.path.clone()
                };
                let Some(cp) = cpath(&path) else {
                    b.plan.errors.push(format!("{what}: path holds a NUL byte"));
                    continue;
                };
                let s = b.slot();
                b.plan.opens.push((what.clone(), path.clone()));
                b.op(
                    &what,
                    FdOp::Open {
                        slot: s,
                        path: cp,
                        flags,
                        mode: 0,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::Fifo(p) => {
                let path = if p.fifo_path.is_empty() {
                    f.path.clone()
                } else {
                    p.fifo_path.clone()
                };
                let Some(cp) = cpath(&path) else {
                    b.plan.errors.push(format!("{what}: path holds a NUL byte"));
                    continue;
                };
                b.plan.opens.push((what.clone(), path.clone()));
                // A holder opened read-write keeps both ends alive, so that
                // opening either end does not block, and refills the data
                // unless a live process still holds the FIFO (then its pipe,
                // with the data, never went away).
                let holder = match fifo_holders.get(&p.id) {
                    Some(&h) => h,
                    None => {
                        let h = b.slot();
                        b.op(
                            &what,
                            FdOp::Open {
                                slot: h,
                                path: cp.clone(),
                                flags: libc::O_RDWR | libc::O_NONBLOCK,
                                mode: 0,
                            },
                        );
                        if !p.data.is_empty() && !live_fifos.contains_key(&p.id) {
                            b.op(
                                &what,
                                FdOp::Write {
                                    slot: h,
                                    data: p.data.clone(),
                                },
                            );
                        }
                        fifo_holders.insert(p.id, h);
                        h
                    }
                };
                let _ = holder;
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::Open {
                        slot: s,
                        path: cp,
                        flags: flags | libc::O_NONBLOCK,
                        mode: 0,
                    },
                );
                b.op(
                    &what,
                    FdOp::SetFl {
                        slot: s,
                        flags: setfl,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::Tty(_) => {
                let own = fds
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
                        b.plan.errors.push(format!(
                            "{what}: a terminal, but the restorer has none to attach it to (no tty on its fds 0-2, no /dev/tty)"
                        ));
                        continue;
                    }
                }
                group_slot[g] = Some(s);
            }
            FileKind::EventFd(e) => {
                let s = b.slot();
                let mut fl = flags & libc::O_NONBLOCK;
                if e.semaphore {
                    fl |= libc::EFD_SEMAPHORE;
                }
                b.op(
                    &what,
                    FdOp::EventFd {
                        slot: s,
                        count: e.count,
                        flags: fl,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::TimerFd(t) => {
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::TimerFd {
                        slot: s,
                        clock: t.clock,
                        flags: flags & libc::O_NONBLOCK,
                        value_ns: t.value_ns,
                        interval_ns: t.interval_ns,
                        ticks: t.ticks,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::SignalFd(sf) => {
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::SignalFd {
                        slot: s,
                        mask: sf.mask,
                        flags: flags & libc::O_NONBLOCK,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::Epoll(_) => {
                let s = b.slot();
                b.op(&what, FdOp::Epoll { slot: s });
                group_slot[g] = Some(s);
            }
            FileKind::MemFd(m) => {
                let contents = if m.contents.size > 0 {
                    match load(&m.contents) {
                        Ok(c) => c,
                        Err(e) => {
                            b.plan
                                .errors
                                .push(format!("{what}: reading its saved contents: {e}"));
                            continue;
                        }
                    }
                } else {
                    Vec::new()
                };
                let name = cpath(&m.name).unwrap_or_else(|| CString::new("ckpt").expect("no NUL"));
                let sealing = m.seals != F_SEAL_SEAL;
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::MemFd {
                        slot: s,
                        name,
                        flags: MFD_CLOEXEC | if sealing { MFD_ALLOW_SEALING } else { 0 },
                        mode: m.mode & 0o7777,
                        size: m.size,
                        contents,
                        seals: if sealing { m.seals } else { 0 },
                    },
                );
                let acc = flags & libc::O_ACCMODE;
                let s = if acc != libc::O_RDWR {
                    let s2 = b.slot();
                    b.op(
                        &what,
                        FdOp::Reopen {
                            slot: s2,
                            from: s,
                            flags,
                        },
                    );
                    s2
                } else {
                    b.op(
                        &what,
                        FdOp::SetFl {
                            slot: s,
                            flags: setfl,
                        },
                    );
                    s
                };
                if f.position != 0 {
                    b.op(
                        &what,
                        FdOp::Seek {
                            slot: s,
                            pos: f.position,
                        },
                    );
                }
                group_slot[g] = Some(s);
            }
            FileKind::InetSocket(n)
                if n.state == 10
                    && n.sock_type == libc::SOCK_STREAM as u32
                    && matches!(
                        (n.family as i32, n.local_addr.len()),
                        (libc::AF_INET, 4) | (libc::AF_INET6, 16)
                    ) =>
            {
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::TcpListen {
                        slot: s,
                        addr: n.local_addr.clone(),
                        port: n.local_port,
                        // Not known (0): the system's limit (listen()
                        // caps it at net.core.somaxconn).
                        backlog: if n.backlog == 0 {
                            i32::MAX as u32
                        } else {
                            n.backlog
                        },
                        flags: flags & libc::O_NONBLOCK,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::UnixSocket(u) => {
                if unix_refused.contains(&g) {
                    continue; // said above
                }
                if let Some(s) = group_slot[g] {
                    // One end of a pair made above.
                    b.op(
                        &what,
                        FdOp::SetFl {
                            slot: s,
                            flags: setfl,
                        },
                    );
                    continue;
                }
                let st = u.sock_type as i32;
                if !matches!(
                    st,
                    libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
                ) {
                    b.plan
                        .errors
                        .push(format!("{what}: unix socket of unknown type {st}"));
                    continue;
                }
                let abstract_name = u.local_path.first() == Some(&0);
                if u.listening && !abstract_name && cpath(&u.local_path).is_none() {
                    b.plan.errors.push(format!(
                        "{what}: a unix socket listening on a path with a NUL byte"
                    ));
                    continue;
                }
                if u.peer_inode != 0 {
                    b.plan.errors.push(format!(
                        "{what}: a unix socket connected to a socket outside the image (peer inode {}) cannot be restored",
                        u.peer_inode
                    ));
                    continue;
                }
                if !u.local_path.is_empty() && !u.listening {
                    b.plan.errors.push(format!(
                        "{what}: a unix socket bound to {} cannot be restored by this version",
                        String::from_utf8_lossy(&u.local_path)
                    ));
                    continue;
                }
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::UnixSocket {
                        slot: s,
                        sock_type: st,
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
                b.op(
                    &what,
                    FdOp::SetFl {
                        slot: s,
                        flags: setfl,
                    },
                );
                group_slot[g] = Some(s);
            }
            FileKind::Inotify(ino) => {
                let mut watches: Vec<_> = ino.watches.iter().collect();
                watches.sort_by_key(|w| w.wd);
                if let Some(w) = watches.iter().find(|w| w.path.is_empty()) {
                    b.plan.errors.push(format!(
                        "{what}: the path of inotify watch {} (inode {}) is not known",
                        w.wd, w.inode
                    ));
                    continue;
                }
                // Watch descriptors are handed out in increasing order from
                // 1; a gap (a watch removed) could not be made again.
                if let Some((i, w)) = watches
                    .iter()
                    .enumerate()
                    .find(|(i, w)| w.wd != *i as i32 + 1)
                {
                    b.plan.errors.push(format!(
                        "{what}: inotify watch descriptors must be 1, 2, 3...; watch {} is number {}",
                        w.wd,
                        i + 1
                    ));
                    continue;
                }
                let s = b.slot();
                b.op(
                    &what,
                    FdOp::Inotify {
                        slot: s,
                        flags: flags & libc::O_NONBLOCK,
                    },
                );
                let mut bad = false;
                for w in watches {
                    let Some(path) = cpath(&w.path) else {
                        bad = true;
                        break;
                    };
                    b.op(
                        &what,
                        FdOp::InotifyWatch {
                            slot: s,
                            path,
                            mask: w.mask,
                            wd: w.wd,
                        },
                    );
                }
                if bad {
                    b.plan
                        .errors
                        .push(format!("{what}: an inotify watch path holds a NUL byte"));
                    continue;
                }
                group_slot[g] = Some(s);
            }
            FileKind::InetSocket(_) | FileKind::Other(_) => {
                let detail = match &f.kind {
                    FileKind::Other(t) if !t.is_empty() => format!(" ({t})"),
                    _ => String::new(),
                };
                b.plan.errors.push(format!(
                    "{what}: {} files{detail} cannot be restored by this version",
                    f.kind.name()
                ));
            }
        }
    }

    // Place every fd at its number.
    let mut places: Vec<(i32, usize, bool, String)> = Vec::new();
    for (g, (_, fds)) in groups.iter().enumerate() {
        if let Some(s) = group_slot[g] {
            for fd in fds {
                places.push((fd.fd, s, fd.cloexec, what_of(g)));
            }
        }
    }
    places.sort_by_key(|p| p.0);
    for (fd, slot, cloexec, what) in places {
        b.op(&what, FdOp::Place { slot, fd, cloexec });
    }

    // Epoll registrations, by final fd numbers.
    for (g, (f, fds)) in groups.iter().enumerate() {
        if let FileKind::Epoll(ep) = &f.kind {
            for t in &ep.targets {
                let ok = proc.fds.iter().any(|x| x.fd == t.fd && x.file == t.file);
                if !ok {
                    b.plan.errors.push(format!(
                        "{}: watches fd {} (open file {}) which is not open at that number any more",
                        what_of(g),
                        t.fd,
                        t.file
                    ));
                    continue;
                }
                b.op(
                    &format!("{} (watching fd {})", what_of(g), t.fd),
                    FdOp::EpollAdd {
                        epfd: fds[0].fd,
                        fd: t.fd,
                        events: t.events,
                        data: t.data,
                    },
                );
            }
        }
    }
    b.plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::*;

    fn file(id: u32, flags: u32, kind: FileKind) -> OpenFile {
        OpenFile {
            id,
            flags,
            position: 0,
            path: b"/x".to_vec(),
            kind,
            owner: FileOwner::default(),
        }
    }
    fn fd(fd: i32, file: u32) -> Fd {
        Fd {
            fd,
            cloexec: false,
            file,
        }
    }
    fn pipe(id: u64, end: PipeEnd, data: &[u8]) -> FileKind {
        FileKind::Pipe(Pipe {
            id,
            end,
            data: data.to_vec(),
            capacity: 65536,
            fifo_path: vec![],
        })
    }
    fn none(_: &Blob) -> std::result::Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    #[test]
    fn shared_descriptions_are_created_once_and_placed_twice() {
        let mut img = Image::default();
        let mut f = file(
            1,
            libc::O_RDONLY as u32,
            FileKind::Regular(RegularFile::default()),
        );
        f.position = 16;
        img.files.push(f);
        let p = Process {
            fds: vec![
                fd(3, 1),
                Fd {
                    fd: 7,
                    cloexec: true,
                    file: 1,
                },
            ],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.stage, 8);
        assert_eq!(plan.slots, 1);
        assert!(matches!(
            &plan.ops[0],
            FdOp::Open {
                slot: 0,
                flags: 0,
                ..
            }
        ));
        assert_eq!(plan.ops[1], FdOp::Seek { slot: 0, pos: 16 });
        assert_eq!(
            plan.ops[2],
            FdOp::Place {
                slot: 0,
                fd: 3,
                cloexec: false
            }
        );
        assert_eq!(
            plan.ops[3],
            FdOp::Place {
                slot: 0,
                fd: 7,
                cloexec: true
            }
        );
        assert_eq!(plan.what[0], "fd 3: /x");
    }

    #[test]
    fn pipe_with_both_ends_is_one_pipe_with_its_data() {
        let mut img = Image::default();
        img.files.push(file(
            1,
            libc::O_RDONLY as u32 | libc::O_NONBLOCK as u32,
            pipe(9, PipeEnd::Read, b"hello"),
        ));
        img.files
            .push(file(2, libc::O_WRONLY as u32, pipe(9, PipeEnd::Write, b"")));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            plan.ops[0],
            FdOp::Pipe {
                read: 0,
                write: 1,
                capacity: 65536,
                data: b"hello".to_vec()
            }
        );
        assert!(plan.ops.contains(&FdOp::SetFl {
            slot: 0,
            flags: libc::O_NONBLOCK
        }));
        assert!(plan.ops.contains(&FdOp::Place {
            slot: 0,
            fd: 3,
            cloexec: false
        }));
        assert!(plan.ops.contains(&FdOp::Place {
            slot: 1,
            fd: 4,
            cloexec: false
        }));
    }

    #[test]
    fn external_pipe_on_stdout_is_inherited() {
        let mut img = Image::default();
        img.files
            .push(file(1, libc::O_WRONLY as u32, pipe(9, PipeEnd::Write, b"")));
        let p = Process {
            fds: vec![fd(1, 1), fd(2, 1)],
            ..Default::default()
        };
        let env = FdEnv {
            std_open: [true; 3],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.ops[0], FdOp::InheritStd { slot: 0, std: 1 });
        assert_eq!(plan.needs_std, [false, true, false]);
        // Not inherited when the restorer has no fd 1.
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert!(plan.errors[0].contains("fd 1"), "{:?}", plan.errors);
    }

    fn holder_of_9(q: &[PipeQuery<'_>], first: &[i32], _uid: u32) -> Vec<Option<PipeHolder>> {
        assert_eq!(first, &[77]);
        q.iter()
            .map(|q| (q.ino == 9).then_some(PipeHolder { pid: 42, fd: 5 }))
            .collect()
    }

    #[test]
    fn external_pipe_with_a_live_holder_is_reconnected_without_its_data() {
        let mut img = Image::default();
        // stdin: the read end, with data; stdout/stderr: one write end.
        img.files.push(file(
            1,
            libc::O_RDONLY as u32,
            pipe(9, PipeEnd::Read, b"queued"),
        ));
        img.files.push(file(
            2,
            (libc::O_WRONLY | libc::O_NONBLOCK) as u32,
            pipe(8, PipeEnd::Write, b""),
        ));
        let p = Process {
            ppid: 77,
            fds: vec![fd(0, 1), fd(1, 2), fd(2, 2)],
            ..Default::default()
        };
        let env = FdEnv {
            std_open: [true; 3],
            find_pipes: Some(holder_of_9),
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        // Pipe 9 is reconnected; pipe 8 (no holder) falls back to fd 1.
        assert_eq!(
            plan.ops[0],
            FdOp::InheritStd { slot: 0, std: 1 },
            "{:?}",
            plan.ops
        );
        assert_eq!(
            plan.ops[1],
            FdOp::OpenPipe {
                slot: 1,
                path: CString::new("/proc/42/fd/5").unwrap(),
                flags: libc::O_RDONLY
            }
        );
        assert!(plan.what[1].contains("reconnecting"), "{}", plan.what[1]);
        assert!(plan.ops.contains(&FdOp::SetFl { slot: 1, flags: 0 }));
        assert!(!plan
            .ops
            .iter()
            .any(|o| matches!(o, FdOp::Pipe { .. } | FdOp::Write { .. })));
        assert_eq!(plan.needs_std, [false, true, false]);
        assert_eq!(plan.warnings.len(), 0, "{:?}", plan.warnings);
        assert!(plan.ops.contains(&FdOp::Place {
            slot: 1,
            fd: 0,
            cloexec: false
        }));
    }

    #[test]
    fn fifo_data_is_refilled_only_without_a_live_holder() {
        let mut img = Image::default();
        let mut f = file(1, libc::O_RDONLY as u32, pipe(9, PipeEnd::Read, b"abc"));
        f.kind = match f.kind {
            FileKind::Pipe(mut p) => {
                p.fifo_path = b"/tmp/f".to_vec();
                FileKind::Fifo(p)
            }
            k => k,
        };
        img.files.push(f);
        let p = Process {
            ppid: 77,
            fds: vec![fd(3, 1)],
            ..Default::default()
        };
        let writes = |plan: &FdPlan| {
            plan.ops
                .iter()
                .filter(|o| matches!(o, FdOp::Write { .. }))
                .count()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(writes(&plan), 1, "{:?}", plan.ops);
        let env = FdEnv {
            find_pipes: Some(holder_of_9),
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &env, &mut none);
        assert_eq!(writes(&plan), 0, "{:?}", plan.ops);
    }

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

    #[test]
    fn deleted_file_needs_contents_and_sockets_are_refused() {
        let mut img = Image::default();
        let rf = RegularFile {
            file: FileIdentity {
                path: b"/d/f".to_vec(),
                deleted: true,
                ..Default::default()
            },
            ..Default::default()
        };
        img.files
            .push(file(1, libc::O_RDWR as u32, FileKind::Regular(rf.clone())));
        img.files.push(file(
            2,
            libc::O_RDWR as u32,
            // Connected to a socket outside the image.
            FileKind::UnixSocket(UnixSocket {
                sock_type: libc::SOCK_STREAM as u32,
                state: 1,
                inode: 100,
                peer_inode: 200,
                ..Default::default()
            }),
        ));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert_eq!(plan.errors.len(), 2, "{:?}", plan.errors);
        assert!(plan.errors[0].contains("deleted"));
        assert!(
            plan.errors[1]
                .starts_with("fd 4: /x: a unix socket connected to a socket outside the image"),
            "{}",
            plan.errors[1]
        );

        img.files[0].kind = FileKind::Regular(RegularFile {
            has_contents: true,
            ..rf
        });
        img.files[0].flags = libc::O_RDONLY as u32;
        img.files[0].position = 5;
        let p = Process {
            fds: vec![fd(3, 1)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut |_| Ok(b"abc".to_vec()));
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        match &plan.ops[0] {
            FdOp::TmpFile { dirs, contents, .. } => {
                assert_eq!(dirs[0].as_bytes(), b"/d");
                assert_eq!(contents, b"abc");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            plan.ops[1],
            FdOp::Reopen {
                slot: 1,
                from: 0,
                flags: 0
            }
        ));
        assert_eq!(plan.ops[2], FdOp::Seek { slot: 1, pos: 5 });
    }

    #[test]
    fn epoll_targets_are_added_after_placement() {
        let mut img = Image::default();
        img.files.push(file(
            1,
            0,
            FileKind::EventFd(EventFd {
                count: 7,
                semaphore: false,
            }),
        ));
        img.files.push(file(
            2,
            0,
            FileKind::Epoll(Epoll {
                targets: vec![EpollTarget {
                    fd: 3,
                    file: 1,
                    events: 1,
                    data: 0xe0,
                }],
            }),
        ));
        let p = Process {
            fds: vec![fd(3, 1), fd(4, 2)],
            ..Default::default()
        };
        let plan = plan_fds(&img, &p, &FdEnv::default(), &mut none);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            plan.ops.last().unwrap(),
            &FdOp::EpollAdd {
                epfd: 4,
                fd: 3,
                events: 1,
                data: 0xe0
            }
        );
    }
}
