//! File descriptors: /proc/PID/fd + fdinfo into the model's Fd and OpenFile
//! tables, with the state of each kind of open file.

use crate::error::{Error, Result};
use crate::procfs::{self, major, minor, parse_timespec_pair, token_after, FdInfo, Stat};
use crate::remote::RemoteInfo;
use crate::vmas::{identity, strip_deleted};
use crate::PageSink;
use ckpt_image::{
    CharDevice, Epoll, EpollTarget, EventFd, Fd, FileKind, InetSocket, Inotify, InotifyWatch,
    MemFd, OpenFile, Pipe, PipeEnd, RegularFile, SignalFd, TimerFd, Tty, UnixSocket,
};
use ckpt_sys::{query, Pid};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

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

    fn is_tty(&self) -> bool {
        match &self.md {
            Some(md) if md.file_type().is_char_device() => is_tty_dev(md.rdev()),
            _ => false,
        }
    }
}

fn is_tty_dev(rdev: u64) -> bool {
    let (ma, mi) = (major(rdev), minor(rdev));
    ma == 4 || (ma == 5 && (mi == 0 || mi == 1)) || (136..=143).contains(&ma)
}

fn fd_path(pid: Pid, fd: i32) -> String {
    format!("/proc/{pid}/fd/{fd}")
}

/// Every fd of the process, sorted by number.
pub(crate) fn list(pid: Pid) -> Result<Vec<RawFd>> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|e| procfs::io_err(pid, &dir, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut out = Vec::with_capacity(fds.len());
    for fd in fds {
        let link = procfs::readlink(pid, &fd_path(pid, fd))?;
        let info_path = format!("/proc/{pid}/fdinfo/{fd}");
        let info = FdInfo::parse(procfs::read_string(pid, &info_path)?);
        let md = std::fs::metadata(fd_path(pid, fd)).ok();
        out.push(RawFd { fd, link, info, md });
    }
    Ok(out)
}

/// Fds that need injected queries: terminals, and fds with an owner (O_ASYNC).
pub(crate) fn remote_needs(fds: &[RawFd]) -> (Vec<i32>, Vec<i32>) {
    let ttys = fds.iter().filter(|f| f.is_tty()).map(|f| f.fd).collect();
    let owners = fds
        .iter()
        .filter(|f| f.info.flags & O_ASYNC != 0)
        .map(|f| f.fd)
        .collect();
    (ttys, owners)
}

/// Whether two fds of the process are one open file description.
fn same_description(pid: Pid, a: &RawFd, b: &RawFd, kcmp_ok: &mut bool) -> bool {
    if *kcmp_ok {
        match query::kcmp_same_file(pid, pid, a.fd, b.fd) {
            Ok(same) => return same,
            Err(_) => *kcmp_ok = false,
        }
    }
    a.info.mnt_id == b.info.mnt_id
        && a.info.ino == b.info.ino
        && a.info.pos == b.info.pos
        && (a.info.flags & !O_CLOEXEC) == (b.info.flags & !O_CLOEXEC)
        && a.link == b.link
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

fn read_all(pid: Pid, fd: i32) -> Result<Vec<u8>> {
    let mut f = open_via_proc(pid, fd).map_err(fd_io(fd, "opening it to save its contents"))?;
    // Clear O_NONBLOCK's effect: regular/shmem files never block anyway.
    let mut v = Vec::new();
    f.read_to_end(&mut v)
        .map_err(fd_io(fd, "reading its contents"))?;
    Ok(v)
}

/// Bytes buffered in a pipe, without consuming them (tee into a pipe of ours).
fn pipe_data(pid: Pid, fd: i32) -> Result<(Vec<u8>, u32)> {
    let theirs =
        open_via_proc(pid, fd).map_err(fd_io(fd, "opening the pipe to read its buffer"))?;
    let sys = |what: &'static str| {
        move |source| Error::FdSys {
            fd,
            what: what.to_string(),
            source,
        }
    };
    let cap = query::pipe_capacity(theirs.as_fd()).map_err(sys("reading the pipe capacity"))?;
    let n = query::bytes_readable(theirs.as_fd()).map_err(sys("reading the pipe fill level"))?;
    if n == 0 {
        return Ok((Vec::new(), cap as u32));
    }
    let (our_r, our_w) = query::pipe_nonblock().map_err(sys("making a pipe"))?;
    let our_cap = query::pipe_capacity(our_w.as_fd()).map_err(sys("making a pipe"))?;
    if our_cap < cap {
        query::set_pipe_capacity(our_w.as_fd(), cap).map_err(sys("growing a pipe"))?;
    }
    // tee never consumes, so one call must take everything (our pipe is as
    // big as theirs).
    let k = query::tee(theirs.as_fd(), our_w.as_fd(), n).map_err(sys("tee from the pipe"))?;
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
    Ok((data, cap as u32))
}

fn unsupported(fd: i32, what: impl Into<String>) -> Error {
    Error::Fd {
        fd,
        what: what.into(),
    }
}

/// TCP state number of a listening socket (as in /proc/net/tcp).
const TCP_LISTEN: u32 = 10;

fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "established",
        2 => "SYN sent",
        3 => "SYN received",
        4 => "FIN wait 1",
        5 => "FIN wait 2",
        6 => "TIME wait",
        7 => "closed",
        8 => "close wait",
        9 => "last ACK",
        10 => "listening",
        11 => "closing",
        _ => "unknown state",
    }
}

/// An address of /proc/net/tcp{,6}: groups of 8 hex digits, each the
/// native-endian u32 of 4 bytes of the address in network order.
fn proc_net_addr(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 8 && hex.len() != 32 {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(8) {
        let w = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        out.extend_from_slice(&w.to_ne_bytes());
    }
    Some(out)
}

/// One line of /proc/net/tcp{,6} parsed for the socket of inode `ino`.
fn parse_tcp_line(line: &str, ino: u64, family: u32) -> Option<InetSocket> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 10 || t[9].parse::<u64>().ok()? != ino {
        return None;
    }
    let (la, lp) = t[1].split_once(':')?;
    let (ra, rp) = t[2].split_once(':')?;
    let state = u32::from_str_radix(t[3], 16).ok()?;
    Some(InetSocket {
        family,
        sock_type: libc::SOCK_STREAM as u32,
        protocol: libc::IPPROTO_TCP as u32,
        state,
        local_addr: proc_net_addr(la)?,
        local_port: u16::from_str_radix(lp, 16).ok()?,
        remote_addr: proc_net_addr(ra)?,
        remote_port: u16::from_str_radix(rp, 16).ok()?,
        // Not in /proc/net/tcp (its rx_queue of a listening socket is the
        // current accept queue, not the limit): 0, "not known".
        backlog: 0,
        options: Vec::new(),
    })
}

/// The TCP socket of inode `ino`: a listening one from sock_diag (cheap),
/// else from the target's network namespace (/proc/PID/net/tcp and tcp6,
/// which walk every connection of the system). None when it is not a TCP
/// socket.
fn tcp_socket(pid: Pid, ino: u64) -> Option<InetSocket> {
    for family in [libc::AF_INET, libc::AF_INET6] {
        if let Ok(ls) = query::tcp_listeners(family) {
            if let Some(l) = ls.into_iter().find(|l| l.inode == ino) {
                return Some(InetSocket {
                    family: family as u32,
                    sock_type: libc::SOCK_STREAM as u32,
                    protocol: libc::IPPROTO_TCP as u32,
                    state: TCP_LISTEN,
                    local_addr: l.addr,
                    local_port: l.port,
                    remote_addr: vec![0; if family == libc::AF_INET { 4 } else { 16 }],
                    remote_port: 0,
                    backlog: l.backlog,
                    options: Vec::new(),
                });
            }
        }
    }
    for (file, family) in [("tcp", libc::AF_INET), ("tcp6", libc::AF_INET6)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        if let Some(s) = text
            .lines()
            .skip(1)
            .find_map(|l| parse_tcp_line(l, ino, family as u32))
        {
            return Some(s);
        }
    }
    None
}

/// Most bytes saved from a unix stream socket's receive queue.
const MAX_UNIX_QUEUE: u32 = 128 << 10;

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

/// What kind of socket an fd is (for the error message): the socket's
/// "system.sockprotoname" attribute, else a look-up in /proc/PID/net.
fn socket_kind(pid: Pid, fd: i32, ino: u64) -> String {
    if let Ok(name) = query::getxattr(
        std::path::Path::new(&fd_path(pid, fd)),
        "system.sockprotoname",
    ) {
        let name = String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string();
        let kind = match name.as_str() {
            "UNIX" | "UNIX-STREAM" | "UNIX-DGRAM" => "unix".to_string(),
            "TCP" | "TCPv6" | "UDP" | "UDPv6" | "UDPLITE" | "UDPLITEv6" | "RAW" | "RAWv6"
            | "PING" | "PINGv6" | "MPTCP" | "SCTP" | "SCTPv6" => {
                name.trim_end_matches("v6").to_string()
            }
            "NETLINK" => "netlink".to_string(),
            "PACKET" => "packet".to_string(),
            _ => name,
        };
        if !kind.is_empty() {
            return format!("{kind} socket");
        }
    }
    let ino = ino.to_string();
    for (file, kind) in [
        ("unix", "unix socket"),
        ("tcp", "TCP socket"),
        ("tcp6", "TCP socket"),
        ("udp", "UDP socket"),
        ("udp6", "UDP socket"),
        ("raw", "raw socket"),
        ("raw6", "raw socket"),
        ("netlink", "netlink socket"),
        ("packet", "packet socket"),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            if text
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().any(|t| t == ino))
            {
                return kind.to_string();
            }
        }
    }
    "socket".to_string()
}

/// Best effort: the path of an inotify watch, from the file handle in its
/// fdinfo line, opened on a mount of the same filesystem (ours).
fn inotify_path(dev: u64, line: &str) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let ty = i32::from_str_radix(token_after(line, "fhandle-type")?, 16).ok()?;
    let hexs = token_after(line, "f_handle")?;
    let handle: Vec<u8> = (0..hexs.len() / 2)
        .map(|i| u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    // A mount of that filesystem, preferring one of its root.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(bool, String)> = None;
    for l in mountinfo.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some((ma, mi)) = f.get(2).and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        if procfs::makedev(ma, mi) != dev {
            continue;
        }
        let whole = f.get(3) == Some(&"/");
        if best.as_ref().is_none_or(|(w, _)| whole && !w) {
            best = Some((whole, f.get(4)?.replace("\\040", " ")));
        }
    }
    let (_, mnt) = best?;
    let m = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&mnt)
        .ok()?;
    let fd = query::open_by_handle(m.as_fd(), ty, &handle).ok()?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
}

/// The tables: fds sorted by number, open files sorted by id.
pub(crate) fn build(
    pid: Pid,
    fds: &[RawFd],
    remote: &RemoteInfo,
    stat: &Stat,
    sink: &mut dyn PageSink,
) -> Result<(Vec<Fd>, Vec<OpenFile>)> {
    // Group fds into open file descriptions.
    let mut kcmp_ok = true;
    let mut reps: Vec<usize> = Vec::new(); // index into fds of each description's first fd
    let mut by_key: HashMap<(u64, u64, Vec<u8>), Vec<usize>> = HashMap::new(); // -> indices into reps
    let mut fd_desc: Vec<usize> = Vec::with_capacity(fds.len()); // fd index -> description index
    for (i, f) in fds.iter().enumerate() {
        let key = match &f.md {
            Some(md) => (md.dev(), md.ino(), Vec::new()),
            None => (0, f.info.ino, f.link.clone()),
        };
        let cands = by_key.entry(key).or_default();
        let found = cands
            .iter()
            .copied()
            .find(|&d| same_description(pid, &fds[reps[d]], f, &mut kcmp_ok));
        let d = match found {
            Some(d) => d,
            None => {
                reps.push(i);
                cands.push(reps.len() - 1);
                reps.len() - 1
            }
        };
        fd_desc.push(d);
    }
    let id_of = |d: usize| d as u32 + 1;
    let fd_id: BTreeMap<i32, u32> = fds
        .iter()
        .zip(&fd_desc)
        .map(|(f, &d)| (f.fd, id_of(d)))
        .collect();
    // Pipes whose buffered data was already saved (on a read end).
    let mut pipes_with_data: HashSet<u64> = HashSet::new();
    let tty_nr: u64 = stat.num(7);
    let tpgid: i32 = stat.num(8);

    let mut files = Vec::with_capacity(reps.len());
    for (d, &ri) in reps.iter().enumerate() {
        let f = &fds[ri];
        let fd = f.fd;
        let flags = f.info.flags & !O_CLOEXEC;
        let link = f.link.as_slice();
        let acc = flags & O_ACCMODE;
        let kind = if link.starts_with(b"/") {
            let (path, deleted_suffix) = strip_deleted(link);
            let Some(md) = &f.md else {
                return Err(unsupported(fd, format!("cannot stat {}", f.link_str())));
            };
            let ft = md.file_type();
            if path.starts_with(b"/memfd:") && deleted_suffix {
                let contents = read_all(pid, fd)?;
                let seals = open_via_proc(pid, fd)
                    .ok()
                    .and_then(|file| query::get_seals(file.as_fd()).ok())
                    .unwrap_or(0);
                let blob = sink.add_blob(&contents)?;
                FileKind::MemFd(MemFd {
                    name: path[b"/memfd:".len()..].to_vec(),
                    id: md.ino(),
                    size: md.size(),
                    seals,
                    contents: blob,
                    mode: md.mode(),
                })
            } else if ft.is_file() {
                let deleted = deleted_suffix || md.nlink() == 0;
                let mut r = RegularFile {
                    file: identity(path, md, deleted),
                    ..Default::default()
                };
                if deleted {
                    let contents = read_all(pid, fd)?;
                    r.contents = sink.add_blob(&contents)?;
                    r.has_contents = true;
                }
                FileKind::Regular(r)
            } else if ft.is_dir() {
                FileKind::Directory(identity(path, md, deleted_suffix))
            } else if ft.is_fifo() {
                let mut p = Pipe {
                    id: md.ino(),
                    end: if acc == libc::O_WRONLY as u32 {
                        PipeEnd::Write
                    } else {
                        PipeEnd::Read
                    },
                    fifo_path: path.to_vec(),
                    ..Default::default()
                };
                let (data, cap) = pipe_data(pid, fd)?;
                p.capacity = cap;
                if p.end == PipeEnd::Read && pipes_with_data.insert(p.id) {
                    p.data = data;
                }
                FileKind::Fifo(p)
            } else if ft.is_char_device() {
                let rdev = md.rdev();
                let (ma, mi) = (major(rdev), minor(rdev));
                if ma == 5 && mi == 2 {
                    return Err(unsupported(
                        fd,
                        "pseudo-terminal master (/dev/ptmx) is not supported",
                    ));
                }
                if is_tty_dev(rdev) {
                    let r = remote.ttys.get(&fd).cloned().unwrap_or_default();
                    let is_controller = (ma == 5 && mi == 0) || (tty_nr != 0 && tty_nr == rdev);
                    FileKind::Tty(Tty {
                        index: if (136..=143).contains(&ma) {
                            ((ma - 136) * 256 + mi) as i32
                        } else {
                            -1
                        },
                        is_controller,
                        termios: r.termios,
                        win_rows: r.rows,
                        win_cols: r.cols,
                        foreground_pgrp: if is_controller {
                            tpgid
                        } else {
                            r.pgrp.unwrap_or(0)
                        },
                        rdev,
                    })
                } else if ma == 1 && matches!(mi, 3 | 5 | 7 | 8 | 9) {
                    FileKind::CharDevice(CharDevice {
                        rdev,
                        path: path.to_vec(),
                    })
                } else {
                    return Err(unsupported(
                        fd,
                        format!(
                            "character device {} ({ma}:{mi}) is not supported",
                            f.link_str()
                        ),
                    ));
                }
            } else if ft.is_socket() {
                return Err(unsupported(fd, "socket is not supported yet"));
            } else {
                return Err(unsupported(
                    fd,
                    format!(
                        "{} (block device or unknown type) is not supported",
                        f.link_str()
                    ),
                ));
            }
        } else if link.starts_with(b"pipe:[") {
            let id = f.md.as_ref().map(|m| m.ino()).unwrap_or(f.info.ino);
            let end = if acc == libc::O_WRONLY as u32 {
                PipeEnd::Write
            } else {
                PipeEnd::Read
            };
            let (data, capacity) = pipe_data(pid, fd)?;
            let data = if end == PipeEnd::Read && pipes_with_data.insert(id) {
                data
            } else {
                Vec::new()
            };
            FileKind::Pipe(Pipe {
                id,
                end,
                data,
                capacity,
                fifo_path: Vec::new(),
            })
        } else if link.starts_with(b"socket:[") {
            let ino = f.md.as_ref().map(|m| m.ino()).unwrap_or(f.info.ino);
            match tcp_socket(pid, ino) {
                Some(s) if s.state == TCP_LISTEN => FileKind::InetSocket(s),
                Some(s) => {
                    return Err(unsupported(
                        fd,
                        format!(
                        "TCP socket {} ({}) is not supported yet: only listening TCP sockets are",
                        s.describe(),
                        tcp_state_name(s.state)
                    ),
                    ))
                }
                None => match unix_socket(pid, fd, ino)? {
                    Some(u) => FileKind::UnixSocket(u),
                    None => {
                        return Err(unsupported(
                            fd,
                            format!("{} is not supported yet", socket_kind(pid, fd, ino)),
                        ))
                    }
                },
            }
        } else if link == b"anon_inode:[eventfd]" {
            let count = f
                .info
                .get("eventfd-count")
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            let semaphore = f
                .info
                .get("eventfd-semaphore")
                .map(|v| v != "0")
                .unwrap_or(false);
            FileKind::EventFd(EventFd { count, semaphore })
        } else if link == b"anon_inode:[eventpoll]" {
            let mut targets = Vec::new();
            for l in f.info.text.lines().filter(|l| l.starts_with("tfd:")) {
                let tfd: i32 = token_after(l, "tfd")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                let events = token_after(l, "events")
                    .and_then(|v| u32::from_str_radix(v, 16).ok())
                    .unwrap_or(0);
                let data = token_after(l, "data")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0);
                let tino = token_after(l, "ino").and_then(|v| u64::from_str_radix(v, 16).ok());
                // The fd must still be open and be the same file.
                let file = fds
                    .iter()
                    .find(|x| {
                        x.fd == tfd && (tino.is_none() || x.md.as_ref().map(|m| m.ino()) == tino)
                    })
                    .map(|x| fd_id[&x.fd]);
                let Some(file) = file else {
                    return Err(unsupported(
                        fd,
                        format!(
                            "epoll watches fd {tfd}, which is closed or replaced; not supported"
                        ),
                    ));
                };
                targets.push(EpollTarget {
                    fd: tfd,
                    file,
                    events,
                    data,
                });
            }
            FileKind::Epoll(Epoll { targets })
        } else if link == b"anon_inode:[timerfd]" {
            let g = |k: &str| f.info.get(k).unwrap_or("");
            FileKind::TimerFd(TimerFd {
                clock: g("clockid").parse().unwrap_or(0),
                ticks: g("ticks").parse().unwrap_or(0),
                settime_flags: u32::from_str_radix(g("settime flags"), 8).unwrap_or(0),
                value_ns: parse_timespec_pair(g("it_value")).unwrap_or(0),
                interval_ns: parse_timespec_pair(g("it_interval")).unwrap_or(0),
            })
        } else if link == b"anon_inode:[signalfd]" {
            let mask = f
                .info
                .get("sigmask")
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            FileKind::SignalFd(SignalFd { mask })
        } else if link == b"anon_inode:inotify" {
            let mut watches = Vec::new();
            for l in f.info.text.lines().filter(|l| l.starts_with("inotify ")) {
                let hex = |k: &str| {
                    token_after(l, k)
                        .and_then(|v| u64::from_str_radix(v, 16).ok())
                        .unwrap_or(0)
                };
                let sdev = hex("sdev");
                // The kernel prints its internal dev_t (major << 20 | minor).
                let dev = procfs::makedev(sdev >> 20, sdev & 0xfffff);
                watches.push(InotifyWatch {
                    wd: hex("wd") as i32,
                    mask: hex("mask") as u32,
                    path: inotify_path(dev, l).unwrap_or_default(),
                    inode: hex("ino"),
                    dev,
                });
            }
            FileKind::Inotify(Inotify { watches })
        } else {
            return Err(unsupported(
                fd,
                format!("{} is not supported", f.link_str()),
            ));
        };
        files.push(OpenFile {
            id: id_of(d),
            flags,
            position: f.info.pos,
            path: f.link.clone(),
            kind,
            owner: remote.owners.get(&fd).copied().unwrap_or_default(),
        });
    }
    let out_fds = fds
        .iter()
        .map(|f| Fd {
            fd: f.fd,
            cloexec: f.info.flags & O_CLOEXEC != 0,
            file: fd_id[&f.fd],
        })
        .collect();
    Ok((out_fds, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0";
        let s = parse_tcp_line(v4, 31337, libc::AF_INET as u32).unwrap();
        assert_eq!(s.local_addr, vec![127, 0, 0, 1]);
        assert_eq!(s.local_port, 8080);
        assert_eq!(s.state, TCP_LISTEN);
        assert_eq!(s.describe(), "127.0.0.1:8080");
        assert!(parse_tcp_line(v4, 31338, libc::AF_INET as u32).is_none());
        let v4b = "   1: 0100007F:1F90 0200000A:15B3 01 00000000:00000000 00:00000000 00000000     0        0 4242 1";
        let s = parse_tcp_line(v4b, 4242, libc::AF_INET as u32).unwrap();
        assert_eq!(s.describe(), "127.0.0.1:8080 -> 10.0.0.2:5555");
        assert_eq!(s.backlog, 0);
        let v6 = "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000080 00:00000000 00000000     0        0 777 1";
        let s = parse_tcp_line(v6, 777, libc::AF_INET6 as u32).unwrap();
        assert_eq!(s.local_addr, vec![0u8; 16]);
        assert_eq!(s.describe(), "[::]:80");
        let lo6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000080 00:00000000 00000000     0        0 778 1";
        let s = parse_tcp_line(lo6, 778, libc::AF_INET6 as u32).unwrap();
        assert_eq!(s.describe(), "[::1]:80");
        assert!(parse_tcp_line("garbage", 1, 2).is_none());
        assert!(parse_tcp_line("0: zz:zz zz:zz 0A 0:0 0 0 0 0 1", 1, 2).is_none());
    }
}
