//! File descriptors: /proc/PID/fd + fdinfo into the model's Fd and OpenFile
//! tables.
//!
//! [`list`] reads every fd; [`descriptions`] groups them into open file
//! descriptions; [`build`] saves each description once, through the
//! module of its kind chosen by the [`KINDS`] table.
//!
//! Adding a kind: read its part of the schema (`FileKind`), write
//! `fds/<kind>.rs` with a `matches` (cheap, from the /proc link and stat)
//! and a `save`, and add one line to [`KINDS`].

mod bpf;
mod chardev;
mod descriptions;
mod epoll;
mod eventfd;
mod fanotify;
mod fdinfo;
mod inet;
mod inotify;
mod locks;
mod memfd;
pub(crate) mod net;
mod netlink;
mod nsfs;
mod opath;
mod packet;
mod pidfd;
mod pipe;
mod pty;
mod raw;
pub(crate) mod regular;
mod signalfd;
mod timerfd;
mod tty;
mod udp;
mod unix;

pub(crate) use descriptions::classes;
pub(crate) use fdinfo::FdInfo;
pub(crate) use pty::Ptys;
pub(crate) use regular::{add_generation, identity, relinked, strip_deleted};

use crate::error::{Error, Result};
use crate::procfs;
use crate::remote::RemoteInfo;
use crate::PageSink;
use ckpt_image::{Fd, FileKind, OpenFile};
use ckpt_sys::Pid;
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::time::Instant;

pub(crate) const O_CLOEXEC: u32 = 0o2000000;
const O_ACCMODE: u32 = 0o3;
const O_ASYNC: u32 = 0o20000;

/// One fd as /proc shows it.
#[derive(Debug)]
pub(crate) struct RawFd {
    pub fd: i32,
    pub link: Vec<u8>,
    pub info: FdInfo,
    /// stat of /proc/PID/fd/N (follows to the open file).
    pub md: Option<Metadata>,
}

impl RawFd {
    fn link_str(&self) -> String {
        String::from_utf8_lossy(&self.link).into_owned()
    }

    /// The inode: of the open file when it can be stat'ed, else fdinfo's.
    fn ino(&self) -> u64 {
        self.md.as_ref().map(|m| m.ino()).unwrap_or(self.info.ino)
    }

    /// A path name (not "pipe:[...]", "anon_inode:...").
    fn is_path(&self) -> bool {
        self.link.starts_with(b"/")
    }

    /// The file type when it is a path that could be stat'ed.
    fn path_type(&self) -> Option<std::fs::FileType> {
        self.md
            .as_ref()
            .filter(|_| self.is_path())
            .map(|m| m.file_type())
    }

    fn write_only(&self) -> bool {
        self.info.flags & O_ACCMODE == libc::O_WRONLY as u32
    }
}

/// One kind of open file: which fds it takes and how to save one.
struct Kind {
    /// For logs.
    name: &'static str,
    /// Cheap test from the /proc link and stat.
    matches: fn(&RawFd) -> bool,
    /// The kind's state; `None`: not of this kind after all (a socket of
    /// another family), the next matching kind is asked.
    save: fn(&mut Ctx<'_>, &RawFd) -> Result<Option<FileKind>>,
}

/// Every kind of open file, first match wins (memfd before regular, tty
/// before chardev, inet before unix, O_PATH fds before the kinds that
/// would open them).
#[rustfmt::skip]
const KINDS: &[Kind] = &[
    Kind { name: "memfd", matches: memfd::matches, save: memfd::save },
    Kind { name: "regular", matches: regular::matches, save: regular::save },
    Kind { name: "o_path", matches: opath::matches, save: opath::save },
    Kind { name: "nsfs", matches: nsfs::matches, save: nsfs::save },
    Kind { name: "pidfd", matches: pidfd::matches, save: pidfd::save },
    Kind { name: "fanotify", matches: fanotify::matches, save: fanotify::save },
    Kind { name: "pipe", matches: pipe::matches, save: pipe::save },
    Kind { name: "tty", matches: tty::matches, save: tty::save },
    Kind { name: "chardev", matches: chardev::matches, save: chardev::save },
    Kind { name: "inet", matches: inet::matches, save: inet::save },
    Kind { name: "udp", matches: udp::matches, save: udp::save },
    Kind { name: "raw", matches: raw::matches, save: raw::save },
    Kind { name: "netlink", matches: netlink::matches, save: netlink::save },
    Kind { name: "bpf-map", matches: bpf::matches, save: bpf::save },
    Kind { name: "packet", matches: packet::matches, save: packet::save },
    Kind { name: "unix", matches: unix::matches, save: unix::save },
    Kind { name: "eventfd", matches: eventfd::matches, save: eventfd::save },
    Kind { name: "epoll", matches: epoll::matches, save: epoll::save },
    Kind { name: "timerfd", matches: timerfd::matches, save: timerfd::save },
    Kind { name: "signalfd", matches: signalfd::matches, save: signalfd::save },
    Kind { name: "inotify", matches: inotify::matches, save: inotify::save },
];

/// What the kind modules may use besides the fd itself.
pub(crate) struct Ctx<'a> {
    pid: Pid,
    /// Every fd of the process.
    fds: &'a [RawFd],
    /// fd number -> id of its open file description.
    file_ids: &'a BTreeMap<i32, u32>,
    /// The process's controlling terminal (stat field 7, dev_t), its
    /// foreground process group (field 8) and the session (field 6).
    tty_nr: u64,
    tpgid: i32,
    sid: i32,
    /// The pty pairs whose master is in the image.
    ptys: &'a mut Ptys,
    /// Pipes whose buffered data was already saved (on a read end), in any
    /// process of the tree.
    pipes_with_data: &'a mut HashSet<u64>,
    sink: &'a mut dyn PageSink,
    /// What the socket kinds share (options, the connection lock).
    net: &'a mut net::Sockets,
    /// Files passed in queued unix messages and open nowhere else in the
    /// process: saved from our copies, with ids after the process's own.
    inflight: &'a mut Inflight,
    /// Saving a file in flight (our copy): the process whose queue holds
    /// it, with its fds and their ids (an epoll's watches are its fds).
    owner: Option<(Pid, &'a [RawFd], &'a BTreeMap<i32, u32>)>,
    /// The pidfd of the process whose fds were duplicated last (the fds
    /// come process by process: one is opened per process, and only one
    /// is held at a time).
    pidfd: &'a mut Option<(Pid, std::os::fd::OwnedFd)>,
}

/// Files in flight (in queued SCM_RIGHTS messages): our copies and the
/// open files saved from them.
#[derive(Default)]
pub(crate) struct Inflight {
    /// The next free OpenFile id.
    next_id: u32,
    /// Our copies (kept open: later ones are compared with them) and ids.
    held: Vec<(std::os::fd::OwnedFd, u32)>,
    files: Vec<OpenFile>,
    /// Saving an in-flight file (one in flight inside it is refused).
    nested: bool,
}

fn fd_path(pid: Pid, fd: i32) -> String {
    format!("/proc/{pid}/fd/{fd}")
}

/// Every fd of the process, sorted by number.
pub(crate) fn list(pid: Pid) -> Result<Vec<RawFd>> {
    let t = Instant::now();
    let fds = procfs::list_numbered(pid, &format!("/proc/{pid}/fd"))?;
    let mut out = Vec::with_capacity(fds.len());
    for fd in fds {
        let path = fd_path(pid, fd);
        let link = procfs::readlink(pid, &path)?;
        let info_path = format!("/proc/{pid}/fdinfo/{fd}");
        let info = FdInfo::parse(pid, &info_path, procfs::read_string(pid, &info_path)?)?;
        let md = std::fs::metadata(&path).ok();
        out.push(RawFd { fd, link, info, md });
    }
    tracing::debug!(fds = out.len(), elapsed = ?t.elapsed(), "fds listed");
    Ok(out)
}

/// The file locks and leases the process holds (`fds`: its saved fd table).
pub(crate) fn locks(pid: Pid, raw: &[RawFd], fds: &[Fd]) -> Result<Vec<ckpt_image::FileLock>> {
    locks::save(pid, raw, fds)
}

/// (dev, inode) of the deleted regular files the fds hold (saved with
/// their contents by the fds step).
pub(crate) fn deleted_files(fds: &[RawFd]) -> HashSet<(u64, u64)> {
    fds.iter()
        .filter(|f| regular::matches(f) && !memfd::matches(f))
        .filter_map(|f| {
            let md = f.md.as_ref()?;
            let deleted = strip_deleted(&f.link).1 || md.nlink() == 0;
            (md.is_file() && deleted).then(|| (md.dev(), md.ino()))
        })
        .collect()
}

/// Fds that need injected queries: fds with an owner (O_ASYNC).
pub(crate) fn remote_needs(fds: &[RawFd]) -> Vec<i32> {
    fds.iter()
        .filter(|f| f.info.flags & O_ASYNC != 0)
        .map(|f| f.fd)
        .collect()
}

/// /proc/PID/stat's tty_nr (the kernel's new_encode_dev) as a dev_t.
pub(crate) fn tty_dev(tty_nr: i32) -> u64 {
    let nr = tty_nr as u32 as u64;
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    procfs::makedev(major, minor)
}

/// The fds of one process of the tree, as listed, with what it told.
#[derive(Clone, Copy)]
pub(crate) struct ProcFds<'a> {
    pub pid: Pid,
    pub fds: &'a [RawFd],
    pub remote: &'a RemoteInfo,
    pub stat: &'a procfs::Stat,
}

/// The tables of the tree: each process's fds sorted by number, and the
/// open files sorted by id. Descriptions shared by fds of one process or
/// of several (dup, fork, SCM_RIGHTS) are saved once, through their first
/// fd in the order of `procs`; ids number them in that order, from 1. And
/// the pty pairs whose master a process holds, with their buffered bytes
/// taken (put back when the result is dropped, see [`Ptys`]).
pub(crate) fn build(
    procs: &[ProcFds<'_>],
    sink: &mut dyn PageSink,
    sockets: &mut net::Sockets,
) -> Result<(Vec<Vec<Fd>>, Vec<OpenFile>, Ptys)> {
    let t = Instant::now();
    let all: Vec<(Pid, &[RawFd])> = procs.iter().map(|p| (p.pid, p.fds)).collect();
    let mut ptys = Ptys::scan(&all)?;
    let items: Vec<(Pid, &RawFd)> = procs
        .iter()
        .flat_map(|p| p.fds.iter().map(move |f| (p.pid, f)))
        .collect();
    // Which process each item belongs to.
    let owner: Vec<usize> = procs
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(i, p.fds.len()))
        .collect();
    // Live connections are found, refused or locked before anything is saved.
    sockets.dumping(procs.iter().map(|p| p.pid));
    for p in procs {
        sockets.prepare(p.pid, p.fds)?;
    }
    let desc = descriptions::group_all(&items)?;
    tracing::debug!(
        fds = items.len(),
        descriptions = desc.count,
        elapsed = ?t.elapsed(),
        "fds grouped into open file descriptions"
    );
    let id_of = |d: usize| d as u32 + 1;
    let mut file_ids: Vec<BTreeMap<i32, u32>> = vec![BTreeMap::new(); procs.len()];
    for (i, &d) in desc.of_fd.iter().enumerate() {
        file_ids[owner[i]].insert(items[i].1.fd, id_of(d));
    }
    let mut pipes_with_data = HashSet::new();
    let mut pidfd = None;
    let mut inflight = Inflight {
        next_id: id_of(desc.count),
        ..Default::default()
    };
    let mut files = Vec::with_capacity(desc.count);
    for (d, &first) in desc.first_fd.iter().enumerate() {
        let (pid, f) = items[first];
        let p = &procs[owner[first]];
        let mut cx = Ctx {
            pid,
            fds: p.fds,
            file_ids: &file_ids[owner[first]],
            tty_nr: tty_dev(p.stat.stat.tty_nr),
            tpgid: p.stat.stat.tpgid,
            sid: p.stat.stat.session,
            ptys: &mut ptys,
            pipes_with_data: &mut pipes_with_data,
            sink: &mut *sink,
            net: &mut *sockets,
            inflight: &mut inflight,
            owner: None,
            pidfd: &mut pidfd,
        };
        let in_process = |e: Error| {
            if owner[first] == 0 {
                e
            } else {
                e.of_process(pid)
            }
        };
        files.push(OpenFile {
            id: id_of(d),
            flags: f.info.flags & !O_CLOEXEC,
            position: f.info.pos,
            path: f.link.clone(),
            kind: save_kind(&mut cx, f).map_err(in_process)?,
            owner: p.remote.owners.get(&f.fd).copied().unwrap_or_default(),
        });
    }
    files.append(&mut inflight.files);
    unix::check_peers(&mut files, &sockets.opts)?;
    let out_fds = procs
        .iter()
        .zip(&file_ids)
        .map(|(p, ids)| {
            p.fds
                .iter()
                .map(|f| Fd {
                    fd: f.fd,
                    cloexec: f.info.flags & O_CLOEXEC != 0,
                    file: ids[&f.fd],
                })
                .collect()
        })
        .collect();
    Ok((out_fds, files, ptys))
}

/// The state of one open file description, by the first kind that takes it.
fn save_kind(cx: &mut Ctx<'_>, f: &RawFd) -> Result<FileKind> {
    for k in KINDS.iter().filter(|k| (k.matches)(f)) {
        if let Some(kind) = (k.save)(cx, f)? {
            tracing::debug!(fd = f.fd, kind = k.name, "saved");
            return Ok(kind);
        }
    }
    Err(unsupported(f.fd, not_supported(cx.pid, f)))
}

impl Ctx<'_> {
    /// Our duplicate of the process's fd `fd` (pidfd_getfd), through its
    /// pidfd, opened once for its fds.
    fn dup_fd(&mut self, fd: i32) -> ckpt_sys::Result<std::os::fd::OwnedFd> {
        use ckpt_sys::proc::pidfd;
        if self.pidfd.as_ref().is_none_or(|(p, _)| *p != self.pid) {
            *self.pidfd = Some((self.pid, pidfd::pidfd_open(self.pid)?));
        }
        let (_, pfd) = self.pidfd.as_ref().expect("just set");
        pidfd::pidfd_getfd(pfd, self.pid, fd)
    }

    /// The OpenFile id of a file passed in a queued message, which we hold
    /// as `fd`: the process's own description of it when it has one
    /// (kcmp), one saved before, or a new OpenFile saved from our copy.
    pub(crate) fn inflight(&mut self, fd: std::os::fd::OwnedFd) -> Result<u32> {
        use std::os::fd::AsRawFd;
        let me = std::process::id() as Pid;
        let raw = fd.as_raw_fd();
        let md = std::fs::metadata(format!("/proc/self/fd/{raw}")).ok();
        let same_inode = |m: &Option<Metadata>| match (m, &md) {
            (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        let same = |pid: Pid, other: i32| {
            ckpt_sys::kcmp::kcmp_file_order(pid, me, other, raw).ok()
                == Some(std::cmp::Ordering::Equal)
        };
        for f in self.fds.iter().filter(|f| same_inode(&f.md)) {
            if same(self.pid, f.fd) {
                return Ok(self.file_ids[&f.fd]);
            }
        }
        for (held, id) in &self.inflight.held {
            if same(me, held.as_raw_fd()) {
                return Ok(*id);
            }
        }
        if self.inflight.nested {
            return Err(unsupported(
                -1,
                "a file in flight in a unix socket that is itself in flight (passed in a message)",
            ));
        }
        let path = format!("/proc/self/fd/{raw}");
        let rf = RawFd {
            fd: raw,
            link: procfs::readlink(me, &path)?,
            info: FdInfo::parse(
                me,
                &format!("/proc/self/fdinfo/{raw}"),
                procfs::read_string(me, &format!("/proc/self/fdinfo/{raw}"))?,
            )?,
            md,
        };
        let id = self.inflight.next_id;
        self.inflight.next_id += 1;
        let ids: BTreeMap<i32, u32> = [(raw, id)].into_iter().collect();
        self.inflight.nested = true;
        let kind = {
            let mut sub = Ctx {
                pid: me,
                fds: std::slice::from_ref(&rf),
                file_ids: &ids,
                tty_nr: 0,
                tpgid: 0,
                sid: 0,
                ptys: &mut *self.ptys,
                pipes_with_data: &mut *self.pipes_with_data,
                sink: &mut *self.sink,
                net: &mut *self.net,
                inflight: &mut *self.inflight,
                owner: Some((self.pid, self.fds, self.file_ids)),
                pidfd: &mut *self.pidfd,
            };
            save_kind(&mut sub, &rf)
        };
        self.inflight.nested = false;
        let kind = kind?;
        tracing::debug!(id, link = %rf.link_str(), "saved a file in flight");
        self.inflight.files.push(OpenFile {
            id,
            flags: rf.info.flags & !O_CLOEXEC,
            position: rf.info.pos,
            path: rf.link.clone(),
            kind,
            owner: Default::default(),
        });
        self.inflight.held.push((fd, id));
        Ok(id)
    }
}

/// Why no kind took `f`.
fn not_supported(pid: Pid, f: &RawFd) -> String {
    if f.is_path() {
        match &f.md {
            None => format!("cannot stat {}", f.link_str()),
            Some(md) if md.file_type().is_socket() => "socket is not supported yet".into(),
            Some(_) => format!(
                "{} (block device or unknown type) is not supported",
                f.link_str()
            ),
        }
    } else if f.link.starts_with(b"socket:[") {
        format!(
            "{} is not supported yet",
            inet::socket_kind(pid, f.fd, f.ino())
        )
    } else {
        format!("{} is not supported", f.link_str())
    }
}

fn unsupported(fd: i32, what: impl Into<String>) -> Error {
    Error::Fd {
        fd,
        what: what.into(),
    }
}

fn open_via_proc(pid: Pid, fd: i32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(fd_path(pid, fd))
}

fn fd_io(fd: i32, what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::FdIo {
        fd,
        what: what.to_string(),
        source,
    }
}

fn fd_sys(fd: i32, what: &str) -> impl FnOnce(ckpt_sys::Error) -> Error + '_ {
    move |source| Error::FdSys {
        fd,
        what: what.to_string(),
        source,
    }
}

/// The whole contents of a file the process has open (a deleted file, a memfd).
fn read_all(pid: Pid, fd: i32) -> Result<Vec<u8>> {
    let mut f = open_via_proc(pid, fd).map_err(fd_io(fd, "opening it to save its contents"))?;
    // Clear O_NONBLOCK's effect: regular/shmem files never block anyway.
    let mut v = Vec::new();
    f.read_to_end(&mut v)
        .map_err(fd_io(fd, "reading its contents"))?;
    Ok(v)
}
