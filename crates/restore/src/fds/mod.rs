//! File descriptors: the stubs' fd tables, planned here (pure) as a list of
//! [`FdOp`]s that the root stub runs with plain system calls (`stub.rs`),
//! and for each process the numbers its descriptions go to.
//!
//! [`plan_tree`] groups the fds of every process of the image by open file
//! description and gives each description a staging slot (a temporary fd,
//! wherever the kernel puts it); the module of the description's kind
//! emits the ops that make it (the dispatch in `plan_group`). The root stub
//! makes every description once, then the tree is forked: each stub
//! inherits them all, so descriptions shared between processes (one
//! offset, pipes, socket pairs) come out shared. Each stub then puts its
//! own at their numbers ([`ProcFds::places`], done by `place.rs` without
//! needing room for a second copy of its table) and registers its epoll
//! targets on the final numbers ([`ProcFds::post`]). Each kind module
//! holds, for its kind, the planning, the refusals found while planning,
//! what `check()` looks at in its ops, and the stub-side execution of its
//! ops (called from [`exec`]: async-signal-safe, no allocation, every path
//! and buffer comes from the plan).
//!
//! A new kind: a module here (plan, exec, checks), an arm in `plan_group`,
//! and, if it needs system calls of its own, an [`FdOp`] variant with an
//! arm in [`exec`].

mod bpf;
mod chardev;
mod epoll;
mod eventfd;
mod fanotify;
mod inet;
mod inotify;
pub(crate) mod locks;
mod memfd;
mod netlink;
mod nsfs;
mod opath;
mod packet;
pub(crate) mod pidfd;
mod pipe;
pub(crate) mod place;
mod pty;
mod raw;
mod regular;
mod signalfd;
pub(crate) mod sockets;
mod timerfd;
mod tty;
mod udp;
mod unix;

pub use pidfd::{LateFd, LateOp};
pub use pipe::{FindPipes, PipeHolder, PipeQuery};
pub use pty::PtySetup;
pub(crate) use regular::temp_names;
pub use regular::NodeMeta;
pub use sockets::{NetGuard, NetPlan, Prebuilt};
pub(crate) use tty::{adjust_tree, hand_over};
pub use tty::{Handover, JobTerminal, TtyTarget};

use crate::check::{access_mode, AccessItem};
use crate::stub::{proc_fd_path, Child};
use crate::Report;
use ckpt_image::{Blob, Credentials, Fd, FileKind, Image, OpenFile, Process};
use ckpt_sys::{fds, mm};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::IntoRawFd;

/// Flags that only matter when a file is created; dropped when reopening.
const CREATE_FLAGS: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;
/// `__O_TMPFILE` without O_DIRECTORY.
pub(crate) const O_TMPFILE_BIT: i32 = 0o20000000;
/// Status flags F_SETFL can change.
pub const SETFL_MASK: i32 =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

/// One step of the stub's fd setup. Slots are indices into a table of
/// temporary ("staging") fds, put at their final numbers afterwards
/// (`ProcFds::places`). The generic steps (Open, Reopen, Write, SetFl,
/// Seek, SharedAnon) run here; the others in the module of their kind.
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
    /// restorer's own, not a path of the image. (tty.rs)
    OpenTty {
        slot: usize,
        flags: i32,
    },
    /// The terminal the restore was given by path, opened with the
    /// restorer's rights. (tty.rs)
    OpenTerminal {
        slot: usize,
        path: CString,
        flags: i32,
    },
    /// A pty master at its saved index, with its pair's settings and
    /// buffered bytes. (pty.rs)
    PtyMaster {
        slot: usize,
        setup: Box<PtySetup>,
    },
    /// A hung-up pty slave description: a slave of a new pair (access
    /// mode and O_NONBLOCK of `flags`) whose master is then closed. (pty.rs)
    PtyHungUp {
        slot: usize,
        flags: i32,
    },
    /// A slave description of the pair of master slot `master`. (pty.rs)
    PtySlave {
        slot: usize,
        master: usize,
        flags: i32,
    },
    /// Packet mode, the slave's exclusive flag and the lock of a pair,
    /// once its slaves are open. (pty.rs)
    PtyFinish {
        master: usize,
        packet: bool,
        locked: bool,
        exclusive: Option<usize>,
    },
    /// A new description of the restorer's own fd `std` (0, 1 or 2), e.g.
    /// its terminal. (tty.rs)
    ReopenStd {
        slot: usize,
        std: usize,
        flags: i32,
    },
    /// A new description of a live pipe (or FIFO) held by another process,
    /// opened through `path` (`/proc/HOLDER/fd/N`) without blocking: with
    /// O_NONBLOCK, and for a write end with no reader through a temporary
    /// O_RDWR open. The saved status flags are set afterwards (SetFl).
    /// (pipe.rs)
    OpenPipe {
        slot: usize,
        path: CString,
        flags: i32,
    },
    /// The restorer's own fd `std` itself (the same description, dup()ed).
    /// (pipe.rs)
    InheritStd {
        slot: usize,
        std: usize,
    },
    /// An unlinked file with `contents` (at the offsets of `extents`, when
    /// given: the rest are holes), `meta.size` bytes long, with the saved
    /// owner, mode and times: created at its old `name` and unlinked when
    /// that is free, else O_TMPFILE in the first directory that allows
    /// it. (regular.rs)
    TmpFile {
        slot: usize,
        name: Option<CString>,
        dirs: Vec<CString>,
        mode: u32,
        contents: Vec<u8>,
        extents: Vec<(u64, u64)>,
        meta: NodeMeta,
    },
    /// A node other than a regular file (directory, FIFO, socket file)
    /// made at the first free name of `paths`, given the saved owner, mode
    /// and times, opened with `flags`, then unlinked: an fd on a deleted
    /// node, as saved. (regular.rs)
    TmpNode {
        slot: usize,
        paths: Vec<CString>,
        /// S_IFMT bits and permission bits.
        mode: u32,
        flags: i32,
        meta: NodeMeta,
    },
    /// Open a file of the stub itself (`/proc/self/ns/net`), with the
    /// restorer's rights: not a path of the image. (nsfs.rs)
    OpenOwn {
        slot: usize,
        path: CString,
        flags: i32,
    },
    /// A pidfd of a process that has exited and been reaped (a child at
    /// `pid` when it is free, that exits at once). (pidfd.rs)
    DeadPidfd {
        slot: usize,
        pid: Option<i32>,
        nonblock: bool,
        /// Other descriptions of the same process (slot, nonblock).
        more: Vec<(usize, bool)>,
    },
    /// (fanotify.rs)
    Fanotify {
        slot: usize,
        flags: u32,
        event_flags: u32,
    },
    /// fanotify_mark(FAN_MARK_ADD | flags) of a path of the image (with
    /// the saved user's rights). (fanotify.rs)
    FanotifyMark {
        slot: usize,
        flags: u32,
        mask: u64,
        path: CString,
    },
    /// A pipe with `data` buffered in it. (pipe.rs)
    Pipe {
        read: usize,
        write: usize,
        capacity: u32,
        data: Vec<u8>,
    },
    /// (eventfd.rs)
    EventFd {
        slot: usize,
        count: u64,
        flags: i32,
    },
    /// A timerfd with its unread ticks, armed to expire at `expiry_ns` of
    /// its clock when `absolute` (the same boot, or a real-time clock),
    /// else `value_ns` from now; expirations missed meanwhile are added
    /// to the ticks. `settime` are the saved settime flags. (timerfd.rs)
    TimerFd {
        slot: usize,
        clock: i32,
        flags: i32,
        timer: timerfd::Arm,
    },
    /// (signalfd.rs)
    SignalFd {
        slot: usize,
        mask: u64,
        flags: i32,
    },
    /// (epoll.rs)
    Epoll {
        slot: usize,
    },
    /// An inotify instance (its watches are added by InotifyWatch). (inotify.rs)
    Inotify {
        slot: usize,
        flags: i32,
    },
    /// inotify_add_watch of a path of the image (with the saved user's
    /// rights), or of the file at slot `via` (a deleted file made again);
    /// the kernel must give it watch descriptor `wd` again. (inotify.rs)
    InotifyWatch {
        slot: usize,
        path: CString,
        via: Option<usize>,
        mask: u32,
        wd: i32,
    },
    /// A connected pair of unix sockets (socketpair(2)). (unix.rs)
    SocketPair {
        a: usize,
        b: usize,
        sock_type: i32,
    },
    /// A unix socket, unconnected; bound to `name` (abstract, or a path
    /// of the image: then with the saved user's rights, after removing a
    /// stale socket file nobody listens on) and listening when `backlog` > 0.
    /// (unix.rs)
    UnixSocket {
        slot: usize,
        sock_type: i32,
        name: Vec<u8>,
        /// `name` as a path (None: unbound or abstract).
        path: Option<CString>,
        backlog: u32,
    },
    /// A socket the restorer built (`FdPlan::net`), inherited by the stub:
    /// `FdPlan::prebuilt[index]`. (sockets.rs)
    Prebuilt {
        slot: usize,
        index: usize,
    },
    /// connect(2) a unix socket to a raw `sockaddr_un` (a path: with the
    /// saved user's rights). (unix.rs)
    UnixConnect {
        slot: usize,
        addr: Vec<u8>,
        path: bool,
    },
    /// accept(2) on the listener's slot into `slot`. (unix.rs)
    UnixAccept {
        listener: usize,
        slot: usize,
    },
    /// sendmsg(2) of one queued message from `slot`, with the files of
    /// `fds` (slots, SCM_RIGHTS) and credentials (pid, uid, gid:
    /// SCM_CREDENTIALS), to `to` (raw sockaddr; empty: the peer). (unix.rs)
    UnixSend {
        slot: usize,
        data: Vec<u8>,
        fds: Vec<usize>,
        creds: Option<(i32, u32, u32)>,
        to: Vec<u8>,
    },
    /// The mode and owner of a socket file (saved user's rights). (unix.rs)
    UnixFileMode {
        path: CString,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Remove a socket file that was deleted at the dump (saved user's
    /// rights). (unix.rs)
    UnixUnlink {
        path: CString,
    },
    /// What is at `path` now (if anything) renamed to `aside`, so that a
    /// socket deleted at the dump can be bound to its name again; put
    /// back by `UnixMoveBack` once that socket's file is unlinked. (unix.rs)
    UnixMoveAside {
        path: CString,
        aside: CString,
    },
    UnixMoveBack {
        path: CString,
        aside: CString,
    },
    /// A directory that a socket deleted at the dump is bound in, gone
    /// with it: made for the bind (saved user's rights), removed by
    /// `UnixRmdir` once the socket's file is unlinked again. (unix.rs)
    UnixMkdir {
        path: CString,
    },
    UnixRmdir {
        path: CString,
    },
    /// Socket options (level, name, value), each with the table of
    /// ckpt_sys::fds::sockopt. (unix.rs)
    SockOpts {
        slot: usize,
        opts: Vec<(i32, i32, Vec<u8>)>,
        phase: ckpt_sys::fds::sockopt::Phase,
    },
    /// shutdown(2); ENOTCONN is no error (the bits are set).
    Shutdown {
        slot: usize,
        how: i32,
    },
    /// F_SETOWN_EX and F_SETSIG; `pid` 0: the stub itself (the restored
    /// process).
    SetOwner {
        slot: usize,
        kind: i32,
        pid: i32,
        signal: i32,
    },
    /// (memfd.rs)
    MemFd {
        slot: usize,
        name: CString,
        flags: u32,
        mode: u32,
        size: u64,
        contents: Vec<u8>,
        seals: u32,
    },
    /// fcntl(F_SETPIPE_SZ) of the pipe behind the slot, where it differs
    /// (a FIFO opened by path: its saved capacity).
    PipeSize {
        slot: usize,
        capacity: u32,
    },
    /// write(2) `data` to the slot (refilling a FIFO, a socket's queue).
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
    /// A shared anonymous memory object of `size` bytes, mapped by several
    /// processes (see ckpt_sys::mm::shared_anon_fd); `huge`: hugetlb
    /// memory of pages of that size (0: ordinary).
    SharedAnon {
        slot: usize,
        size: u64,
        huge: u64,
    },
    /// EPOLL_CTL_ADD on final numbers (after the fds are placed). (epoll.rs)
    EpollAdd {
        epfd: i32,
        fd: i32,
        events: u32,
        data: u64,
    },
    /// EPOLL_CTL_ADD of the description in slot `file` under fd number
    /// `fd` (before any Place: the number is free then), which is closed
    /// again: a watch whose fd was closed or given to another file since.
    /// (epoll.rs)
    EpollAddVia {
        ep: usize,
        file: usize,
        fd: i32,
        events: u32,
        data: u64,
    },
}

/// What the restorer has to offer the stub.
#[derive(Debug, Clone, Default)]
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
    /// Restore live TCP connections closed (`--tcp-close`).
    pub tcp_close: bool,
    /// The terminal that terminals from outside the image are attached to.
    pub terminal: TtyTarget,
    /// The process is restored as a job of the restorer's: it leads its own
    /// process group.
    pub job: bool,
}

impl FdEnv {
    /// The environment of the calling process.
    pub fn current() -> FdEnv {
        let mut e = FdEnv::default();
        for fd in 0..3 {
            e.std_open[fd] = std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok()
                || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok();
            e.std_tty[fd] = e.std_open[fd] && fds::tty::isatty(fd as i32);
        }
        e.dev_tty = std::fs::OpenOptions::new()
            .read(true)
            .open("/dev/tty")
            .is_ok();
        e.find_pipes = Some(pipe::find_pipe_holders);
        e
    }

    /// The environment of the calling process, for a restore with `opts`.
    pub fn for_restore(opts: &crate::RestoreOptions) -> FdEnv {
        let mut e = FdEnv::current();
        match &opts.terminal {
            crate::Terminal::Caller => {}
            crate::Terminal::Job => e.job = true,
            crate::Terminal::Path(p) => {
                e.terminal = TtyTarget::Path(
                    CString::new(p.as_os_str().as_encoded_bytes().to_vec())
                        .unwrap_or_else(|_| c"/".to_owned()),
                );
            }
        }
        e
    }
}

/// The stubs' fd setup.
#[derive(Debug, Default)]
pub struct FdPlan {
    /// What the root stub makes, before it forks the other processes.
    pub ops: Vec<FdOp>,
    /// For each op, what it sets up (for error messages: "fd 3: /tmp/x").
    pub what: Vec<String>,
    /// Number of staging slots.
    pub slots: usize,
    /// One above every saved fd number of every process: the stubs' own
    /// fds (their pipes to the restorer, the kept slots) live from here.
    pub stage: i32,
    /// For each process of the image (in its order): its fds. Empty for a
    /// process that shares another's fd table (that one places them) and
    /// for zombies.
    pub procs: Vec<ProcFds>,
    /// Slots kept open in every stub at `stage + place::CTL_KEEP + i` until
    /// the mappings are made (memory objects several processes map):
    /// (slot, shared memory id).
    pub keep: Vec<(usize, u64)>,
    /// Which of the restorer's fds 0..2 the ops use.
    pub needs_std: [bool; 3],
    /// Regular files, directories and devices the ops open by path: (what, path).
    pub opens: Vec<(String, Vec<u8>)>,
    /// Regular files opened by path whose saved offset was inside the file
    /// at the dump (not O_APPEND): (what, path, its size then, the offset).
    /// The check warns when the file is shorter than the offset now.
    pub offsets: Vec<(String, Vec<u8>, u64, u64)>,
    /// Fds made once the process has its threads, by system calls
    /// injected into it (pidfds of its threads and of live processes).
    pub late: Vec<LateFd>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Sockets the restorer builds before the stub (sockets.rs).
    pub net: NetPlan,
    /// Their fd numbers, filled by `sockets::prebuild` (FdOp::Prebuilt).
    pub prebuilt: Vec<i32>,
    /// The same, sorted (the root stub keeps them open, closing the rest).
    pub prebuilt_sorted: Vec<i32>,
    /// The root is attached to the restorer's terminal (or the one
    /// given): what handing it over needs.
    pub job_terminal: Option<JobTerminal>,
}

/// One fd of a process at its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub slot: usize,
    pub fd: i32,
    pub cloexec: bool,
}

/// Where one process's descriptions go, and what is done on its final
/// numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcFds {
    pub pid: i32,
    /// Sorted by fd.
    pub places: Vec<Place>,
    /// Run once every fd is placed (epoll registrations), with what each
    /// sets up.
    pub post: Vec<FdOp>,
    pub post_what: Vec<String>,
    /// The slot whose terminal becomes its controlling terminal right
    /// after its setsid (tty.rs).
    pub ctty: Option<usize>,
    /// Foreground groups it gives its session's terminals once every
    /// process exists: (slot of the terminal, image index of the process
    /// that leads the group) (tty.rs).
    pub foreground: Vec<(usize, usize)>,
}

/// A memory object several processes map, which the stubs make or keep
/// for them (see [`FdPlan::keep`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReq {
    /// A description held by a process (a memfd): its slot is kept.
    File { file: u32, id: u64 },
    /// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS; `huge`: with
    /// MAP_HUGETLB, of pages of that size).
    SharedAnon { id: u64, size: u64, huge: u64 },
    /// A memfd no process holds an fd of any more.
    NewMemfd { id: u64, name: CString, size: u64 },
}

/// A path as a C string (paths never hold NUL; refuse if one does).
pub(crate) fn cpath(p: &[u8]) -> Option<CString> {
    CString::new(p.to_vec()).ok()
}

/// The path of a file that was deleted, without the " (deleted)" suffix.
pub fn strip_deleted(p: &[u8]) -> &[u8] {
    p.strip_suffix(b" (deleted)").unwrap_or(p)
}

/// One open file description of the image, and its fds.
pub(crate) struct Group<'a> {
    pub file: &'a OpenFile,
    /// The fds of its first holder (first fd first).
    pub fds: Vec<&'a Fd>,
    /// Every fd holding it: (index of the process in the plan's list, fd).
    pub holders: Vec<(usize, &'a Fd)>,
}

/// What the kinds plan with: the image's descriptions, the slot each one
/// ends in, and the plan being built.
pub(crate) struct Builder<'a> {
    pub image: &'a Image,
    /// The root process (the first of the list).
    pub proc: &'a Process,
    /// The processes whose fds are planned.
    pub procs: &'a [&'a Process],
    pub env: &'a FdEnv,
    pub groups: Vec<Group<'a>>,
    /// The staging slot each group is set up in (None: not set up).
    pub slot_of: Vec<Option<usize>>,
    /// Groups made once the process has its threads (see [`LateFd`]).
    pub late: Vec<bool>,
    pub plan: FdPlan,
    /// Deleted files made again, by saved (dev, inode): the slot of the
    /// first one (another open of the same file reopens it).
    pub remade: std::collections::HashMap<(u64, u64), usize>,
    /// memfds made again, by id: the slot of the first one.
    pub memfds: std::collections::HashMap<u64, usize>,
    /// Groups whose SIGIO owner was planned ([`Builder::set_owner`]).
    owners: std::collections::HashSet<usize>,
    load: &'a mut dyn FnMut(&Blob) -> Result<Vec<u8>, String>,
}

impl Builder<'_> {
    /// A new staging slot.
    pub fn slot(&mut self) -> usize {
        self.plan.slots += 1;
        self.plan.slots - 1
    }

    /// Append an op; `what` names it in error messages.
    pub fn op(&mut self, what: &str, op: FdOp) {
        self.plan.ops.push(op);
        self.plan.what.push(what.to_string());
    }

    pub fn error(&mut self, e: String) {
        self.plan.errors.push(e);
    }

    pub fn warning(&mut self, w: String) {
        self.plan.warnings.push(w);
    }

    /// "fd 3: /tmp/x" (or the kind, without a path) for group `g`; with
    /// the pid of its first holder ("pid 12 fd 3: /tmp/x") in a tree; a
    /// file in flight (passed in a queued message, at no fd) is "open file
    /// N".
    pub fn what(&self, g: usize) -> String {
        let Group {
            file: f,
            fds,
            holders,
        } = &self.groups[g];
        let path = String::from_utf8_lossy(&f.path);
        let who = match holders.first() {
            Some(h) if self.procs.len() > 1 => format!("pid {} ", self.procs[h.0].pid),
            _ => String::new(),
        };
        let at = match fds.first() {
            Some(fd) => format!("{who}fd {}", fd.fd),
            None => format!("open file {} (in flight)", f.id),
        };
        if path.is_empty() {
            format!("{at}: {}", f.kind.name())
        } else {
            format!("{at}: {path}")
        }
    }

    /// Group `g` is a socket the restorer builds (`p`): a slot that takes
    /// it, its status flags and owner.
    pub fn prebuilt(&mut self, g: usize, p: Prebuilt) {
        let (what, flags) = (self.what(g), self.flags(g));
        let index = self.plan.net.sockets.len();
        self.plan.net.sockets.push((what.clone(), p));
        let s = self.slot();
        self.op(&what, FdOp::Prebuilt { slot: s, index });
        self.set_fl(&what, s, flags);
        self.set_owner(g, s);
        self.slot_of[g] = Some(s);
    }

    /// The saved owner of group `g`'s SIGIO (F_SETOWN), when it is the
    /// process itself; another owner is said in a warning.
    pub fn set_owner(&mut self, g: usize, slot: usize) {
        let o = self.groups[g].file.owner;
        if o.pid == 0 || !self.owners.insert(g) {
            return;
        }
        let what = self.what(g);
        // The process that makes the description (the first holder).
        let holder = match self.groups[g].holders.first() {
            Some(h) => self.procs[h.0],
            None => self.proc,
        };
        // The root stub makes every description, before the other
        // processes exist: only the root's own can be set.
        let root = std::ptr::eq(holder, self.proc);
        if root
            && (o.pid == holder.pid
                || (o.kind == 0 && holder.threads.iter().any(|t| t.tid == o.pid)))
        {
            let pid = if o.pid == holder.pid { 0 } else { o.pid };
            self.op(
                &what,
                FdOp::SetOwner {
                    slot,
                    kind: o.kind,
                    pid,
                    signal: o.signal,
                },
            );
        } else {
            self.warning(format!(
                "{what}: its SIGIO owner (pid {}, kind {}) is not the root process; it is not set",
                o.pid, o.kind
            ));
        }
    }

    /// The saved status and access flags of group `g`, without the flags
    /// that create files and O_CLOEXEC (a property of each fd).
    pub fn flags(&self, g: usize) -> i32 {
        (self.groups[g].file.flags as i32) & !(CREATE_FLAGS | libc::O_CLOEXEC)
    }

    /// The saved contents of a blob (deleted files, memfds).
    pub fn load(&mut self, blob: &Blob) -> Result<Vec<u8>, String> {
        (self.load)(blob)
    }

    /// Seek the slot to the saved file position, if any.
    pub fn seek(&mut self, what: &str, slot: usize, pos: u64) {
        if pos != 0 {
            self.op(what, FdOp::Seek { slot, pos });
        }
    }

    /// The status flags of the slot, as saved.
    pub fn set_fl(&mut self, what: &str, slot: usize, flags: i32) {
        self.op(
            what,
            FdOp::SetFl {
                slot,
                flags: flags & SETFL_MASK,
            },
        );
    }

    /// A new description of the file at slot `from` (opened again through
    /// /proc, with `flags`), in a new slot.
    pub fn reopen(&mut self, what: &str, from: usize, flags: i32) -> usize {
        let s = self.slot();
        self.op(
            what,
            FdOp::Reopen {
                slot: s,
                from,
                flags,
            },
        );
        s
    }

    /// A new description of `from` with the access mode of `flags` when it
    /// is not read-write, else `from` itself with the status flags: the
    /// slot to place. (Unlinked files and memfds are made read-write.)
    pub fn reopen_unless_rdwr(&mut self, what: &str, from: usize, flags: i32) -> usize {
        if flags & libc::O_ACCMODE != libc::O_RDWR {
            self.reopen(what, from, flags)
        } else {
            self.set_fl(what, from, flags);
            from
        }
    }

    /// Open a path of the image (checked by check(): it exists, and the
    /// saved user may open it) into a new slot.
    pub fn open_path(&mut self, what: &str, path: &[u8], flags: i32) -> Option<usize> {
        let Some(cp) = cpath(path) else {
            self.error(format!("{what}: path holds a NUL byte"));
            return None;
        };
        let s = self.slot();
        self.plan.opens.push((what.to_string(), path.to_vec()));
        self.op(
            what,
            FdOp::Open {
                slot: s,
                path: cp,
                flags,
                mode: 0,
            },
        );
        Some(s)
    }

    /// A kind this version cannot restore.
    pub fn refuse(&mut self, g: usize) {
        let what = self.what(g);
        let f = self.groups[g].file;
        let detail = match &f.kind {
            FileKind::Other(t) if !t.is_empty() => format!(" ({t})"),
            _ => String::new(),
        };
        self.error(format!(
            "{what}: {} files{detail} cannot be restored by this version",
            f.kind.name()
        ));
    }
}

/// Plan the fd table of `proc` alone. `load` returns the contents of a
/// blob (deleted files, memfds); check() passes one that returns nothing.
pub fn plan_fds(
    image: &Image,
    proc: &Process,
    env: &FdEnv,
    load: &mut dyn FnMut(&Blob) -> Result<Vec<u8>, String>,
) -> FdPlan {
    plan_tree(image, &[proc], &[0], &[], env, load)
}

/// Plan the fd tables of `procs` (the image's processes, the root first):
/// every description once, and where each process's go. `owners[i]` is the
/// index of the process whose fd table process `i` uses (itself, or the
/// one it shares it with: then it has no places of its own); `keep`: the
/// memory objects to keep for the mappings (see [`FdPlan::keep`]).
pub fn plan_tree(
    image: &Image,
    procs: &[&Process],
    owners: &[usize],
    keep: &[KeepReq],
    env: &FdEnv,
    load: &mut dyn FnMut(&Blob) -> Result<Vec<u8>, String>,
) -> FdPlan {
    let mut plan = FdPlan::default();
    let max_fd = procs
        .iter()
        .flat_map(|p| p.fds.iter().map(|f| f.fd))
        .max()
        .unwrap_or(-1);
    // (Epoll watches of closed fds are added at their numbers too.)
    let max_fd = procs
        .iter()
        .map(|p| epoll::max_target_fd(image, p))
        .fold(max_fd, i32::max);
    plan.stage = (max_fd + 1).max(3);
    plan.procs = procs
        .iter()
        .map(|p| ProcFds {
            pid: p.pid,
            ..Default::default()
        })
        .collect();

    // Group fds by open file description, in order of their first fd.
    let mut groups: Vec<Group> = Vec::new();
    let mut by_id: HashMap<u32, usize> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        if owners.get(i).copied().unwrap_or(i) != i {
            continue; // its table is another's
        }
        for fd in &p.fds {
            match by_id.get(&fd.file) {
                Some(&g) => {
                    let gr = &mut groups[g];
                    if gr.holders[0].0 == i {
                        gr.fds.push(fd);
                    }
                    gr.holders.push((i, fd));
                }
                None => match image.file(fd.file) {
                    Some(file) => {
                        by_id.insert(fd.file, groups.len());
                        groups.push(Group {
                            file,
                            fds: vec![fd],
                            holders: vec![(i, fd)],
                        });
                    }
                    None => plan.errors.push(format!(
                        "{}fd {}: refers to open file {} which is not in the image",
                        if procs.len() > 1 {
                            format!("pid {} ", p.pid)
                        } else {
                            String::new()
                        },
                        fd.fd,
                        fd.file
                    )),
                },
            }
        }
    }
    inflight_groups(image, &mut groups, &mut by_id);
    plan.net.tcp_close = env.tcp_close;
    let mut b = Builder {
        image,
        proc: procs[0],
        procs,
        env,
        slot_of: vec![None; groups.len()],
        late: vec![false; groups.len()],
        groups,
        plan,
        remade: std::collections::HashMap::new(),
        memfds: std::collections::HashMap::new(),
        owners: std::collections::HashSet::new(),
        load,
    };

    // Kinds whose descriptions are made together: both ends of a pipe;
    // unix sockets (pairs, listeners and their clients, queued messages
    // with the files in flight they carry) after every other kind.
    let mut pipes = pipe::plan_pipes(&mut b);
    // Pty pairs, then the session (which may take one as its terminal),
    // before descriptions that may open /dev/tty.
    let ptys = pty::plan_pairs(&mut b);
    tty::plan_sessions(&mut b, &ptys);
    plan_groups(&mut b, &mut pipes);
    // Epoll watches of fd numbers that hold another file now.
    epoll::plan_detached(&mut b);
    pty::finish(&mut b, ptys);
    plan_keep(&mut b, keep, &by_id);
    place(&mut b);
    // Epoll registrations, by final fd numbers.
    epoll::plan_targets(&mut b);
    b.plan
}

/// Every group, by its kind; inotify instances last (a watch of a deleted
/// file is added through the file made again for an fd), unix sockets
/// after all (unix.rs); then the SIGIO owners of the kinds that did not
/// set theirs (pipes, files, ttys...).
fn plan_groups(b: &mut Builder, pipes: &mut pipe::State) {
    let is_inotify = |b: &Builder, g: usize| matches!(b.groups[g].file.kind, FileKind::Inotify(_));
    for g in 0..b.groups.len() {
        if !is_inotify(b, g) {
            plan_group(b, g, pipes);
        }
    }
    for g in 0..b.groups.len() {
        if is_inotify(b, g) {
            plan_group(b, g, pipes);
        }
    }
    unix::plan_all(b);
    for g in 0..b.groups.len() {
        if let Some(s) = b.slot_of[g] {
            b.set_owner(g, s);
        }
    }
}

/// Files passed in queued unix messages that no fd of the process holds
/// (in flight): groups of their own, placed at no number.
fn inflight_groups<'a>(
    image: &'a Image,
    groups: &mut Vec<Group<'a>>,
    by_id: &mut HashMap<u32, usize>,
) {
    let mut i = 0;
    while i < groups.len() {
        if let FileKind::UnixSocket(u) = &groups[i].file.kind {
            for id in u.messages.iter().flat_map(|m| m.files.iter()) {
                if by_id.contains_key(id) {
                    continue;
                }
                if let Some(file) = image.file(*id) {
                    by_id.insert(*id, groups.len());
                    groups.push(Group {
                        file,
                        fds: Vec::new(),
                        holders: Vec::new(),
                    });
                }
            }
        }
        i += 1;
    }
}

/// The memory objects kept for the mappings: a description's slot, or a
/// new object made for them.
fn plan_keep(b: &mut Builder, keep: &[KeepReq], by_id: &HashMap<u32, usize>) {
    for k in keep {
        match k {
            KeepReq::File { file, id } => match by_id.get(file).and_then(|&g| b.slot_of[g]) {
                Some(s) => b.plan.keep.push((s, *id)),
                None => b.error(format!(
                    "shared memory {id}: the open file {file} that holds it is not restored"
                )),
            },
            KeepReq::SharedAnon { id, size, huge } => {
                let s = b.slot();
                b.op(
                    &format!("shared memory {id} ({size} bytes)"),
                    FdOp::SharedAnon {
                        slot: s,
                        size: *size,
                        huge: *huge,
                    },
                );
                b.plan.keep.push((s, *id));
            }
            KeepReq::NewMemfd { id, name, size } => {
                let s = b.slot();
                b.op(
                    &format!("memfd {} (shared memory {id})", name.to_string_lossy()),
                    FdOp::MemFd {
                        slot: s,
                        name: name.clone(),
                        flags: libc::MFD_CLOEXEC,
                        mode: 0,
                        size: *size,
                        contents: Vec::new(),
                        seals: 0,
                    },
                );
                b.plan.keep.push((s, *id));
            }
        }
    }
}

/// The ops that set up description `g`, by its kind.
fn plan_group(b: &mut Builder, g: usize, pipes: &mut pipe::State) {
    let f = b.groups[g].file;
    match &f.kind {
        FileKind::Pipe(_) => pipe::plan_pipe_flags(b, g, pipes),
        FileKind::Fifo(p) => pipe::plan_fifo(b, g, p, pipes),
        FileKind::Regular(rf) => regular::plan_file(b, g, rf),
        FileKind::Directory(fi) => regular::plan_directory(b, g, fi),
        FileKind::CharDevice(cd) => chardev::plan(b, g, cd),
        FileKind::Tty(t) => tty::plan(b, g, t),
        FileKind::EventFd(e) => eventfd::plan(b, g, e),
        FileKind::TimerFd(t) => timerfd::plan(b, g, t),
        FileKind::SignalFd(s) => signalfd::plan(b, g, s),
        FileKind::Epoll(_) => epoll::plan(b, g),
        FileKind::MemFd(m) => memfd::plan(b, g, m),
        FileKind::InetSocket(n) => inet::plan(b, g, n),
        FileKind::NetlinkSocket(n) => netlink::plan(b, g, n),
        FileKind::PacketSocket(p) => packet::plan(b, g, p),
        FileKind::BpfMap(m) => bpf::plan(b, g, m),
        // Planned together after the other kinds (unix.rs).
        FileKind::UnixSocket(_) => {}
        FileKind::Inotify(i) => inotify::plan(b, g, i),
        FileKind::OPath(o) => opath::plan(b, g, o),
        FileKind::Nsfs(n) => nsfs::plan(b, g, n),
        FileKind::Pidfd(p) => pidfd::plan(b, g, p),
        FileKind::Fanotify(f) => fanotify::plan(b, g, f),
        _ => b.refuse(g),
    }
}

/// Where every fd of every process goes, in the order of the numbers.
fn place(b: &mut Builder) {
    for (g, group) in b.groups.iter().enumerate() {
        if let Some(slot) = b.slot_of[g] {
            for &(i, fd) in &group.holders {
                b.plan.procs[i].places.push(Place {
                    slot,
                    fd: fd.fd,
                    cloexec: fd.cloexec,
                });
            }
        }
    }
    for p in &mut b.plan.procs {
        p.places.sort_by_key(|p| p.fd);
    }
}

/// Run one op in the stub child (async-signal-safe: no allocation).
pub(crate) fn exec(c: &mut Child<'_>, op: &FdOp) -> ckpt_sys::Result<()> {
    match op {
        FdOp::Open {
            slot,
            path,
            flags,
            mode,
        } => {
            let fd = c.as_saved(|_| fds::open(path, *flags, *mode).map(IntoRawFd::into_raw_fd))?;
            c.new_fd(*slot, fd)?;
        }
        FdOp::Reopen { slot, from, flags } => reopen(c, *slot, *from, *flags)?,
        FdOp::OpenTty { .. }
        | FdOp::OpenTerminal { .. }
        | FdOp::PtyMaster { .. }
        | FdOp::PtySlave { .. }
        | FdOp::PtyHungUp { .. }
        | FdOp::PtyFinish { .. }
        | FdOp::ReopenStd { .. } => exec_terminals(c, op)?,
        FdOp::OpenPipe { slot, path, flags } => pipe::open_live(c, *slot, path, *flags)?,
        FdOp::InheritStd { slot, std } => pipe::inherit_std(c, *slot, *std),
        FdOp::TmpFile { .. }
        | FdOp::TmpNode { .. }
        | FdOp::OpenOwn { .. }
        | FdOp::DeadPidfd { .. }
        | FdOp::Fanotify { .. }
        | FdOp::FanotifyMark { .. }
        | FdOp::EpollAddVia { .. } => exec_nodes_and_handles(c, op)?,
        FdOp::Pipe {
            read,
            write,
            capacity,
            data,
        } => pipe::make(c, [*read, *write], *capacity, data)?,
        FdOp::EventFd { slot, count, flags } => eventfd::make(c, *slot, *count, *flags)?,
        FdOp::TimerFd {
            slot,
            clock,
            flags,
            timer,
        } => timerfd::make(c, *slot, *clock, *flags, timer)?,
        FdOp::SignalFd { slot, mask, flags } => signalfd::make(c, *slot, *mask, *flags)?,
        FdOp::Epoll { slot } => epoll::make(c, *slot)?,
        FdOp::EpollAdd {
            epfd,
            fd,
            events,
            data,
        } => fds::epoll::epoll_add(*epfd, *fd, *events, *data)?,
        FdOp::Inotify { slot, flags } => inotify::make(c, *slot, *flags)?,
        FdOp::InotifyWatch {
            slot,
            path,
            via,
            mask,
            wd,
        } => inotify::add_watch(c, *slot, (path, *via), *mask, *wd)?,
        FdOp::Prebuilt { slot, index } => c.set_slot(*slot, c.prebuilt(*index)),
        FdOp::SocketPair { .. }
        | FdOp::UnixSocket { .. }
        | FdOp::UnixConnect { .. }
        | FdOp::UnixAccept { .. }
        | FdOp::UnixSend { .. }
        | FdOp::UnixFileMode { .. }
        | FdOp::UnixUnlink { .. }
        | FdOp::UnixMoveAside { .. }
        | FdOp::UnixMoveBack { .. }
        | FdOp::UnixMkdir { .. }
        | FdOp::UnixRmdir { .. }
        | FdOp::SockOpts { .. }
        | FdOp::Shutdown { .. } => exec_sockets(c, op)?,
        FdOp::SetOwner {
            slot,
            kind,
            pid,
            signal,
        } => {
            let pid = if *pid == 0 {
                ckpt_sys::proc::getpid()
            } else {
                *pid
            };
            ckpt_sys::fs::set_owner(c.slot(*slot), *kind, pid, *signal)?
        }
        FdOp::MemFd {
            slot,
            name,
            flags,
            mode,
            size,
            contents,
            seals,
        } => memfd::make(c, *slot, name, [*flags, *mode, *seals], *size, contents)?,
        FdOp::PipeSize { slot, capacity } => {
            let fd = c.slot(*slot);
            if ckpt_sys::fds::pipe::pipe_size(fd)? != *capacity {
                ckpt_sys::fds::pipe::set_pipe_size(fd, *capacity)?;
            }
        }
        FdOp::Write { slot, data } => fds::write_fd(c.slot(*slot), data)?,
        FdOp::SetFl { slot, flags } => set_fl_op(c, *slot, *flags)?,
        FdOp::Seek { slot, pos } => fds::seek(c.slot(*slot), *pos)?,
        FdOp::SharedAnon { slot, size, huge } => {
            let fd = mm::shared_anon_fd(*size, *huge)?;
            c.new_fd(*slot, fd.into_raw_fd())?;
        }
    }
    Ok(())
}

/// The ops of [`exec`] that make terminals: /dev/tty, terminals by path,
/// pty pairs, the inherited standard terminal.
fn exec_terminals(c: &mut Child<'_>, op: &FdOp) -> ckpt_sys::Result<()> {
    match op {
        FdOp::OpenTty { slot, flags } => tty::open_tty(c, *slot, *flags),
        FdOp::OpenTerminal { slot, path, flags } => tty::open_terminal(c, *slot, path, *flags),
        FdOp::PtyMaster { slot, setup } => pty::make_master(c, *slot, setup),
        FdOp::PtyHungUp { slot, flags } => pty::make_hung_up(c, *slot, *flags),
        FdOp::PtySlave {
            slot,
            master,
            flags,
        } => pty::make_slave(c, *slot, *master, *flags),
        FdOp::PtyFinish {
            master,
            packet,
            locked,
            exclusive,
        } => pty::finish_pair(c, *master, *packet, *locked, *exclusive),
        FdOp::ReopenStd { slot, std, flags } => tty::reopen_std(c, *slot, *std, *flags),
        // exec() gives this function no other op.
        _ => Err(ckpt_sys::Error::Os {
            op: "fd op",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        }),
    }
}

/// FdOp::Reopen: through the /proc magic link, which O_NOFOLLOW would not
/// pass; O_ASYNC by fcntl (open() records it but arms no SIGIO).
fn reopen(c: &mut Child<'_>, slot: usize, from: usize, flags: i32) -> ckpt_sys::Result<()> {
    let mut buf = [0u8; 40];
    let flags = flags & !libc::O_NOFOLLOW;
    let path = proc_fd_path(c.slot(from), &mut buf);
    let fd = fds::open(path, flags & !libc::O_ASYNC, 0)?.into_raw_fd();
    if flags & libc::O_ASYNC != 0 {
        fds::set_fl(fd, fds::get_fl(fd)? | libc::O_ASYNC)?;
    }
    c.new_fd(slot, fd)?;
    Ok(())
}

/// FdOp::SetFl.
fn set_fl_op(c: &mut Child<'_>, slot: usize, flags: i32) -> ckpt_sys::Result<()> {
    let fd = c.slot(slot);
    let mut cur = fds::get_fl(fd)?;
    if flags & libc::O_ASYNC != 0 && cur & libc::O_ASYNC != 0 {
        // Set at an open() (which arms no SIGIO): off, then on.
        cur &= !libc::O_ASYNC;
        fds::set_fl(fd, cur)?;
    }
    if cur & SETFL_MASK != flags & SETFL_MASK {
        fds::set_fl(fd, (cur & !SETFL_MASK) | (flags & SETFL_MASK))?;
    }
    Ok(())
}

/// The ops of [`exec`] that make unix sockets, connect them, queue their
/// messages and set socket options.
fn exec_sockets(c: &mut Child<'_>, op: &FdOp) -> ckpt_sys::Result<()> {
    match op {
        FdOp::SocketPair { a, b, sock_type } => unix::make_pair(c, [*a, *b], *sock_type),
        FdOp::UnixSocket {
            slot,
            sock_type,
            name,
            path,
            backlog,
        } => unix::make(c, *slot, *sock_type, name, path.as_deref(), *backlog),
        FdOp::UnixConnect { slot, addr, path } => unix::connect(c, *slot, addr, *path),
        FdOp::UnixAccept { listener, slot } => unix::accept(c, *listener, *slot),
        FdOp::UnixSend {
            slot,
            data,
            fds,
            creds,
            to,
        } => unix::send(c, *slot, data, fds, *creds, to),
        FdOp::UnixFileMode {
            path,
            mode,
            uid,
            gid,
        } => unix::file_mode(c, path, *mode, *uid, *gid),
        FdOp::UnixUnlink { path } => unix::unlink(c, path),
        FdOp::UnixMoveAside { path, aside } => unix::rename(c, path, aside),
        FdOp::UnixMoveBack { path, aside } => unix::rename(c, aside, path),
        FdOp::UnixMkdir { path } => unix::mkdir(c, path),
        FdOp::UnixRmdir { path } => unix::rmdir(c, path),
        FdOp::SockOpts { slot, opts, phase } => unix::set_opts(c, *slot, opts, *phase),
        FdOp::Shutdown { slot, how } => {
            match ckpt_sys::fds::socket::shutdown(c.slot(*slot), *how) {
                Err(e) if e.errno() != Some(libc::ENOTCONN) => Err(e),
                _ => Ok(()),
            }
        }
        // exec() gives this function no other op.
        _ => Err(ckpt_sys::Error::Os {
            op: "fd op",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        }),
    }
}

/// The ops of [`exec`] that make deleted files and nodes again, and
/// handles onto the kernel's objects (namespaces, dead processes,
/// fanotify groups, epoll watches of other fd numbers).
fn exec_nodes_and_handles(c: &mut Child<'_>, op: &FdOp) -> ckpt_sys::Result<()> {
    match op {
        FdOp::TmpFile {
            slot,
            name,
            dirs,
            mode,
            contents,
            extents,
            meta,
        } => regular::tmpfile(
            c,
            *slot,
            (name.as_deref(), dirs),
            *mode,
            (contents, extents),
            meta,
        ),
        FdOp::TmpNode {
            slot,
            paths,
            mode,
            flags,
            meta,
        } => regular::tmpnode(c, *slot, paths, *mode, *flags, meta),
        FdOp::OpenOwn { slot, path, flags } => nsfs::open_own(c, *slot, path, *flags),
        FdOp::DeadPidfd {
            slot,
            pid,
            nonblock,
            more,
        } => pidfd::dead(c, *slot, *pid, *nonblock, more),
        FdOp::Fanotify {
            slot,
            flags,
            event_flags,
        } => fanotify::make(c, *slot, *flags, *event_flags),
        FdOp::FanotifyMark {
            slot,
            flags,
            mask,
            path,
        } => fanotify::mark(c, *slot, *flags, *mask, path),
        FdOp::EpollAddVia {
            ep,
            file,
            fd,
            events,
            data,
        } => epoll::add_via(c, [*ep, *file], *fd, *events, *data),
        // exec() gives this function no other op.
        _ => Err(ckpt_sys::Error::Os {
            op: "fd op",
            tid: 0,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        }),
    }
}

/// The fd ops that check() refuses whoever restores: opens with flags that
/// create or truncate (the planner never asks for them: defense in depth
/// against saved flags such as O_CREAT|O_TRUNC).
pub(crate) fn check_creating(plan: &FdPlan, r: &mut Report) {
    const CREATING: i32 = libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | O_TMPFILE_BIT;
    for (op, what) in plan.ops.iter().zip(&plan.what) {
        if let FdOp::Open { flags, .. } = op {
            if flags & CREATING != 0 {
                r.errors.push(format!(
                    "{what}: would be opened with creating flags {flags:#o}"
                ));
            }
        }
    }
}

/// What check() says about the process's terminals: devices reopened by
/// path are the same.
pub(crate) fn check_terminals(image: &Image, p: &Process, r: &mut Report) {
    tty::check(image, p, r);
}

/// What check() says about the image's terminals, once for the tree: the
/// terminal given by path is free, the pty pairs' indexes are free and
/// their bytes can be put back.
pub(crate) fn check_image_terminals(image: &Image, opts: &crate::RestoreOptions, r: &mut Report) {
    const CAP_SYS_ADMIN: u32 = 21;
    tty::check_target(&opts.terminal, r);
    let admin = crate::process::creds::own_creds().has_cap(CAP_SYS_ADMIN);
    pty::check(image, admin, r);
}

/// Names the ops would take from live processes (a unix socket path where
/// one listens).
pub(crate) fn check_names(plan: &FdPlan, r: &mut Report) {
    let aside: Vec<&CString> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            FdOp::UnixMoveAside { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    let made = unix::made_dirs(&plan.ops);
    for (op, what) in plan.ops.iter().zip(&plan.what) {
        if let FdOp::UnixSocket { path: Some(p), .. } = op {
            if unix::in_made_dir(p, &made) {
                // Its directory is made for it: only its length matters.
                unix::check_length(what, p, r);
                continue;
            }
            unix::check_path_free(what, p, r);
            unix::check_bindable(what, p, aside.contains(&p), r);
        }
    }
}

/// The paths the ops open (with the access each needs), for check() to ask
/// whether the saved user may; and what only a process of its own may
/// ask of the restorer (`other_user`: the process is another user's, its
/// ids are `creds`).
pub(crate) fn access_items(
    plan: &FdPlan,
    creds: &Credentials,
    other_user: bool,
    items: &mut Vec<AccessItem>,
    r: &mut Report,
) {
    let made = unix::made_dirs(&plan.ops);
    for (op, what) in plan.ops.iter().zip(&plan.what) {
        match op {
            FdOp::Open { path, flags, .. } | FdOp::OpenPipe { path, flags, .. } => {
                items.push((what.clone(), path.clone(), access_mode(*flags)));
            }
            FdOp::InotifyWatch {
                path, via: None, ..
            } => inotify::access(what, path, items),
            FdOp::UnixSocket { path: Some(p), .. } if !unix::in_made_dir(p, &made) => {
                unix::access_item(what, p, items)
            }
            // (The first one made is in a directory that is there.)
            FdOp::UnixMkdir { path } if !unix::in_made_dir(path, &made) => {
                unix::access_item(what, path, items)
            }
            FdOp::FanotifyMark { path, .. } => items.push((what.clone(), path.clone(), libc::R_OK)),
            FdOp::TmpFile { mode, .. } | FdOp::TmpNode { mode, .. } if other_user => {
                regular::check_tmpfile(what, *mode & 0o7777, r)
            }
            _ => {}
        }
    }
    for (what, p) in &plan.net.sockets {
        inet::check(what, p, creds, other_user, r);
    }
}

/// What the sockets of the plan need here: the connection locks of the
/// image (a warning when one is gone), 4-tuples and ports free.
pub(crate) fn check_net(plan: &FdPlan, r: &mut Report) {
    inet::check_locks(&plan.net.lock_tags, r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::*;

    pub(super) fn file(id: u32, flags: u32, kind: FileKind) -> OpenFile {
        OpenFile {
            id,
            flags,
            position: 0,
            path: b"/x".to_vec(),
            kind,
            owner: FileOwner::default(),
        }
    }
    pub(super) fn fd(fd: i32, file: u32) -> Fd {
        Fd {
            fd,
            cloexec: false,
            file,
        }
    }
    pub(super) fn none(_: &Blob) -> std::result::Result<Vec<u8>, String> {
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
        assert_eq!(plan.ops.len(), 2);
        assert_eq!(
            plan.procs[0].places,
            [
                Place {
                    slot: 0,
                    fd: 3,
                    cloexec: false
                },
                Place {
                    slot: 0,
                    fd: 7,
                    cloexec: true
                }
            ]
        );
        assert_eq!(plan.what[0], "fd 3: /x");
    }
}
