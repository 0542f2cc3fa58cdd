//! Rendering file contents from the image model (pure: no I/O).
//!
//! Formats follow `/proc/PID/...` where a /proc file exists (cmdline,
//! environ, comm, limits, status, maps); the others are `key value` text
//! that the parsers of [`crate::edit`] read back.

use crate::tree::{thread, Node, ProcFile, TaskFile};
use ckpt_image::*;
use std::fmt::Write as _;

/// Contents of a file node that only depends on the metadata model. `None`
/// for nodes that are not such files (directories, mem, ctl, info,
/// image.json) or that do not exist in `img`.
pub fn render(node: Node, img: &Image) -> Option<Vec<u8>> {
    Some(match node {
        Node::ProcFile(_, pid, f) => {
            let p = img.process(pid)?;
            match f {
                ProcFile::Cmdline => nul_list(&p.cmdline),
                ProcFile::Environ => nul_list(&p.environ),
                ProcFile::Comm => line(&p.comm),
                ProcFile::Cwd => line(&p.cwd),
                ProcFile::Exe => exe_target(p),
                ProcFile::Limits => limits(p).into_bytes(),
                ProcFile::Status => status(img, p, p.threads.first()).into_bytes(),
                ProcFile::Maps => maps(p).into_bytes(),
                ProcFile::Regs => regs(&p.threads.first()?.regs)?.into_bytes(),
                ProcFile::Xstate => xstate(&p.threads.first()?.regs)?,
                ProcFile::Signals => signals(p).into_bytes(),
                ProcFile::Mem => return None,
            }
        }
        Node::TaskFile(_, pid, tid, f) => {
            let p = img.process(pid)?;
            let t = thread(img, pid, tid)?;
            match f {
                TaskFile::Comm => line(&t.comm),
                TaskFile::Regs => regs(&t.regs)?.into_bytes(),
                TaskFile::Xstate => xstate(&t.regs)?,
                TaskFile::Status => status(img, p, Some(t)).into_bytes(),
            }
        }
        Node::Fd(_, pid, fd) => {
            let p = img.process(pid)?;
            let f = p.fds.iter().find(|f| f.fd == fd)?;
            fd_text(img, f).into_bytes()
        }
        _ => return None,
    })
}

/// `a\0b\0` like /proc/PID/cmdline.
fn nul_list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(i);
        out.push(0);
    }
    out
}

fn line(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.push(b'\n');
    v
}

/// Target of the `exe` symlink: the saved path, with " (deleted)" when the
/// file was deleted (as the kernel prints it).
pub fn exe_target(p: &Process) -> Vec<u8> {
    let mut v = p.exe.path.clone();
    if p.exe.deleted && !v.ends_with(b" (deleted)") {
        v.extend_from_slice(b" (deleted)");
    }
    v
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const RLIMIT_NAMES: [(&str, &str); 16] = [
    ("Max cpu time", "seconds"),
    ("Max file size", "bytes"),
    ("Max data size", "bytes"),
    ("Max stack size", "bytes"),
    ("Max core file size", "bytes"),
    ("Max resident set", "bytes"),
    ("Max processes", "processes"),
    ("Max open files", "files"),
    ("Max locked memory", "bytes"),
    ("Max address space", "bytes"),
    ("Max file locks", "locks"),
    ("Max pending signals", "signals"),
    ("Max msgqueue size", "bytes"),
    ("Max nice priority", ""),
    ("Max realtime priority", ""),
    ("Max realtime timeout", "us"),
];

/// Like /proc/PID/limits (same columns as the kernel's format).
pub fn limits(p: &Process) -> String {
    let mut s = format!(
        "{:<25} {:<20} {:<20} {:<10}\n",
        "Limit", "Soft Limit", "Hard Limit", "Units"
    );
    let mut rl: Vec<&Rlimit> = p.rlimits.iter().collect();
    rl.sort_by_key(|r| r.resource);
    let val = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    for r in rl {
        let (name, unit) = match RLIMIT_NAMES.get(r.resource as usize) {
            Some(&(n, u)) => (n.to_string(), u),
            None => (format!("Max {} ({})", r.name, r.resource), ""),
        };
        let _ = write!(s, "{:<25} {:<20} {:<20} ", name, val(r.soft), val(r.hard));
        if !unit.is_empty() {
            let _ = write!(s, "{unit:<10}");
        }
        s.push('\n');
    }
    s
}

fn state_name(state: &str) -> String {
    let desc = match state {
        "R" => "running",
        "S" => "sleeping",
        "D" => "disk sleep",
        "T" => "stopped",
        "t" => "tracing stop",
        "X" => "dead",
        "Z" => "zombie",
        "P" => "parked",
        "I" => "idle",
        _ => return state.to_string(),
    };
    format!("{state} ({desc})")
}

fn pending_mask(q: &[SigInfo]) -> u64 {
    q.iter()
        .filter(|s| (1..=64).contains(&s.signo))
        .fold(0, |m, s| m | 1u64 << (s.signo - 1))
}

/// Like /proc/PID/status (and /proc/PID/task/TID/status for `t`).
pub fn status(img: &Image, p: &Process, t: Option<&Thread>) -> String {
    let mut s = String::new();
    let c = &p.creds;
    let comm = t.map(|t| &t.comm).unwrap_or(&p.comm);
    let state = t.map(|t| t.state.as_str()).unwrap_or(p.state.as_str());
    let _ = writeln!(s, "Name:\t{}", lossy(comm));
    let _ = writeln!(s, "Umask:\t{:04o}", p.umask);
    let _ = writeln!(s, "State:\t{}", state_name(state));
    let _ = writeln!(s, "Tgid:\t{}", p.pid);
    let _ = writeln!(s, "Pid:\t{}", t.map(|t| t.tid).unwrap_or(p.pid));
    let _ = writeln!(s, "PPid:\t{}", p.ppid);
    let _ = writeln!(s, "Pgid:\t{}", p.pgid);
    let _ = writeln!(s, "Sid:\t{}", p.sid);
    let _ = writeln!(s, "Uid:\t{}\t{}\t{}\t{}", c.ruid, c.euid, c.suid, c.fsuid);
    let _ = writeln!(s, "Gid:\t{}\t{}\t{}\t{}", c.rgid, c.egid, c.sgid, c.fsgid);
    let _ = writeln!(s, "FDs:\t{}", p.fds.len());
    let groups: Vec<String> = c.groups.iter().map(|g| g.to_string()).collect();
    let _ = writeln!(s, "Groups:\t{} ", groups.join(" "));
    let kb = |b: u64| format!("{:>8} kB", b / 1024);
    let vm_size: u64 = p.vmas.iter().map(|v| v.len()).sum();
    let stack: u64 = p
        .vmas
        .iter()
        .filter(|v| v.grows_down || matches!(v.backing, VmaBacking::Special(SpecialMapping::Stack)))
        .map(|v| v.len())
        .sum();
    let ps = u64::from(img.host.page_size);
    let saved: u64 = p
        .memory
        .iter()
        .filter(|r| r.kind == RunKind::Data)
        .map(|r| u64::from(r.pages) * ps)
        .sum();
    let _ = writeln!(s, "VmSize:\t{}", kb(vm_size));
    let _ = writeln!(s, "VmSaved:\t{}", kb(saved));
    let _ = writeln!(
        s,
        "VmExe:\t{}",
        kb(p.mm.end_code.saturating_sub(p.mm.start_code))
    );
    let _ = writeln!(s, "VmStk:\t{}", kb(stack));
    let _ = writeln!(s, "Threads:\t{}", p.threads.len());
    let private = t
        .or(p.threads.first())
        .map(|t| pending_mask(&t.pending))
        .unwrap_or(0);
    let blocked = t.or(p.threads.first()).map(|t| t.blocked).unwrap_or(0);
    let (mut ign, mut cgt) = (0u64, 0u64);
    for (i, a) in p.sigactions.iter().enumerate().take(64) {
        match a.handler {
            0 => {}
            1 => ign |= 1 << i,
            _ => cgt |= 1 << i,
        }
    }
    let _ = writeln!(s, "SigPnd:\t{private:016x}");
    let _ = writeln!(s, "ShdPnd:\t{:016x}", pending_mask(&p.shared_pending));
    let _ = writeln!(s, "SigBlk:\t{blocked:016x}");
    let _ = writeln!(s, "SigIgn:\t{ign:016x}");
    let _ = writeln!(s, "SigCgt:\t{cgt:016x}");
    let _ = writeln!(s, "CapInh:\t{:016x}", c.cap_inheritable);
    let _ = writeln!(s, "CapPrm:\t{:016x}", c.cap_permitted);
    let _ = writeln!(s, "CapEff:\t{:016x}", c.cap_effective);
    let _ = writeln!(s, "CapBnd:\t{:016x}", c.cap_bounding);
    let _ = writeln!(s, "CapAmb:\t{:016x}", c.cap_ambient);
    let _ = writeln!(s, "NoNewPrivs:\t{}", u8::from(c.no_new_privs));
    let _ = writeln!(s, "Seccomp:\t{}", c.seccomp_mode);
    s
}

/// Major and minor of a Linux `dev_t`.
pub fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// Like /proc/PID/maps.
pub fn maps(p: &Process) -> String {
    let mut s = String::with_capacity(p.vmas.len() * 100);
    for v in &p.vmas {
        let (offset, dev, inode) = match &v.backing {
            VmaBacking::File(f) => (f.offset, f.file.dev, f.file.inode),
            VmaBacking::SharedMemory(m) => (m.offset, 0, m.id),
            _ => (0, 0, 0),
        };
        let (maj, min) = dev_major_minor(dev);
        let start = s.len();
        let _ = write!(
            s,
            "{:08x}-{:08x} {}{}{}{} {:08x} {:02x}:{:02x} {} ",
            v.start,
            v.end,
            if v.prot & PROT_READ != 0 { 'r' } else { '-' },
            if v.prot & PROT_WRITE != 0 { 'w' } else { '-' },
            if v.prot & PROT_EXEC != 0 { 'x' } else { '-' },
            if v.shared { 's' } else { 'p' },
            offset,
            maj,
            min,
            inode
        );
        if !v.name.is_empty() {
            // The kernel pads the name to column 73.
            while s.len() - start < 73 {
                s.push(' ');
            }
            s.push_str(&String::from_utf8_lossy(&v.name));
        } else {
            s.pop();
        }
        s.push('\n');
    }
    s
}

/// `name 0xVALUE` per general register, in `X8664_GPR_NAMES` order.
pub fn regs(r: &Registers) -> Option<String> {
    let Registers::X8664(x) = r else { return None };
    let mut s = String::new();
    for (name, v) in X8664_GPR_NAMES.iter().zip(x.gprs()) {
        let _ = writeln!(s, "{name} {v:#018x}");
    }
    Some(s)
}

fn xstate(r: &Registers) -> Option<Vec<u8>> {
    let Registers::X8664(x) = r else { return None };
    Some(x.xsave.clone())
}

/// The `signals` file: one line per signal with its action, then the
/// blocked masks, then the pending queues (see spec/fusefs.md).
pub fn signals(p: &Process) -> String {
    let mut s = String::new();
    for (i, a) in p.sigactions.iter().enumerate().take(64) {
        let _ = writeln!(
            s,
            "{:<12} handler {:#x} flags {:#x} mask {:#x} restorer {:#x}",
            signal::name(i as i32 + 1),
            a.handler,
            a.flags,
            a.mask,
            a.restorer
        );
    }
    for (i, t) in p.threads.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(s, "blocked {:#x}", t.blocked);
        } else {
            let _ = writeln!(s, "blocked {} {:#x}", t.tid, t.blocked);
        }
    }
    for q in &p.shared_pending {
        let _ = writeln!(
            s,
            "pending shared {} code {}",
            signal::name(q.signo),
            q.code
        );
    }
    for t in &p.threads {
        for q in &t.pending {
            let _ = writeln!(
                s,
                "pending {} {} code {}",
                t.tid,
                signal::name(q.signo),
                q.code
            );
        }
    }
    s
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn ident(s: &mut String, f: &FileIdentity) {
    let (maj, min) = dev_major_minor(f.dev);
    let _ = writeln!(s, "dev: {maj:02x}:{min:02x}");
    let _ = writeln!(s, "inode: {}", f.inode);
    let _ = writeln!(s, "mode: {:#o}", f.mode);
    let _ = writeln!(s, "size: {}", f.size);
    let _ = writeln!(s, "deleted: {}", yes(f.deleted));
}

fn addr(b: &[u8], port: u16) -> String {
    match b.len() {
        4 => format!("{}:{port}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(a))
        }
        _ => format!("?:{port}"),
    }
}

/// The `fds/N` file: `key: value` lines; `kind`, `path`, `flags`,
/// `offset`, `cloexec` first, then fields of the kind.
pub fn fd_text(img: &Image, fd: &Fd) -> String {
    let mut s = String::new();
    let Some(f) = img.file(fd.file) else {
        let _ = writeln!(s, "kind: missing");
        let _ = writeln!(s, "file: {}", fd.file);
        let _ = writeln!(s, "cloexec: {}", yes(fd.cloexec));
        return s;
    };
    let _ = writeln!(s, "kind: {}", f.kind.name());
    let _ = writeln!(s, "path: {}", lossy(&f.path));
    let _ = writeln!(s, "flags: {:#o}", f.flags);
    let _ = writeln!(s, "offset: {}", f.position);
    let _ = writeln!(s, "cloexec: {}", yes(fd.cloexec));
    let _ = writeln!(s, "file: {}", f.id);
    kind_fields(&mut s, &f.kind);
    if f.owner != FileOwner::default() {
        let _ = writeln!(
            s,
            "owner: pid {} kind {} signal {}",
            f.owner.pid, f.owner.kind, f.owner.signal
        );
    }
    s
}

/// The lines of the fields of each kind of open file.
fn kind_fields(s: &mut String, kind: &FileKind) {
    match kind {
        FileKind::Regular(r) => {
            ident(s, &r.file);
            if r.has_contents {
                let _ = writeln!(s, "contents: saved, {} bytes", r.contents.size);
            }
        }
        FileKind::Directory(d) => ident(s, d),
        FileKind::Pipe(p) | FileKind::Fifo(p) => pipe_fields(s, p),
        FileKind::UnixSocket(u) => unix_fields(s, u),
        FileKind::InetSocket(n) => inet_fields(s, n),
        FileKind::Tty(t) => tty_fields(s, t),
        FileKind::EventFd(e) => {
            let _ = writeln!(s, "count: {}", e.count);
            let _ = writeln!(s, "semaphore: {}", yes(e.semaphore));
        }
        FileKind::Epoll(e) => {
            for t in &e.targets {
                let _ = writeln!(
                    s,
                    "target: fd {} file {} events {:#x} data {:#x}",
                    t.fd, t.file, t.events, t.data
                );
            }
        }
        FileKind::TimerFd(t) => {
            let _ = writeln!(s, "clock: {}", t.clock);
            let _ = writeln!(s, "interval_ns: {}", t.interval_ns);
            let _ = writeln!(s, "value_ns: {}", t.value_ns);
            let _ = writeln!(s, "ticks: {}", t.ticks);
            let _ = writeln!(s, "settime_flags: {:#x}", t.settime_flags);
        }
        FileKind::SignalFd(sf) => {
            let _ = writeln!(s, "sigmask: {:#x}", sf.mask);
        }
        FileKind::Inotify(i) => {
            for w in &i.watches {
                let _ = writeln!(
                    s,
                    "watch: wd {} mask {:#x} inode {} path {}",
                    w.wd,
                    w.mask,
                    w.inode,
                    lossy(&w.path)
                );
            }
        }
        FileKind::MemFd(m) => {
            let _ = writeln!(s, "name: {}", lossy(&m.name));
            let _ = writeln!(s, "id: {}", m.id);
            let _ = writeln!(s, "size: {}", m.size);
            let _ = writeln!(s, "seals: {:#x}", m.seals);
            let _ = writeln!(s, "mode: {:#o}", m.mode);
        }
        FileKind::CharDevice(c) => {
            let (maj, min) = dev_major_minor(c.rdev);
            let _ = writeln!(s, "rdev: {maj}:{min}");
        }
        FileKind::Other(what) => {
            let _ = writeln!(s, "description: {what}");
        }
        FileKind::Pidfd(p) => {
            let _ = writeln!(s, "pid: {}", p.pid);
            let _ = writeln!(s, "dead: {}", yes(p.dead));
            let _ = writeln!(s, "thread: {}", yes(p.thread));
        }
        FileKind::Fanotify(fa) => {
            let _ = writeln!(s, "init_flags: {:#x}", fa.init_flags);
            for m in &fa.marks {
                let _ = writeln!(
                    s,
                    "mark: type {:#x} mask {:#x} ignored {:#x} path {}",
                    m.mark_type,
                    m.mask,
                    m.ignored_mask,
                    lossy(&m.path)
                );
            }
        }
        FileKind::OPath(o) => {
            ident(s, &o.file);
            let _ = writeln!(s, "symlink: {}", yes(o.symlink));
        }
        FileKind::Nsfs(n) => {
            let _ = writeln!(s, "namespace: {} {}", n.kind, n.inode);
        }
        FileKind::NetlinkSocket(n) => {
            let _ = writeln!(s, "protocol: {}", n.protocol);
        }
        FileKind::PacketSocket(p) => {
            let _ = writeln!(s, "type: {}", p.sock_type);
            let _ = writeln!(s, "protocol: {:#06x}", u16::from_be(p.protocol));
        }
        FileKind::BpfMap(m) => {
            let _ = writeln!(s, "map type: {}", m.map_type);
            let _ = writeln!(s, "map name: {}", String::from_utf8_lossy(&m.name));
            let _ = writeln!(s, "key size: {}", m.key_size);
            let _ = writeln!(s, "value size: {}", m.value_size);
            let _ = writeln!(s, "max entries: {}", m.max_entries);
            let _ = writeln!(s, "map flags: {:#x}", m.map_flags);
            let _ = writeln!(s, "frozen: {}", yes(m.frozen));
            let n = m.keys.len().checked_div(m.key_size as usize).unwrap_or(0);
            let _ = writeln!(s, "entries: {n}");
        }
        other => {
            let _ = writeln!(
                s,
                "fields: not shown (kind {}, which this ckptfs does not know)",
                other.name()
            );
        }
    }
}

/// The fields of a pipe or FIFO end.
fn pipe_fields(s: &mut String, p: &Pipe) {
    let _ = writeln!(s, "pipe: {}", p.id);
    let _ = writeln!(
        s,
        "end: {}",
        if p.end == PipeEnd::Read {
            "read"
        } else {
            "write"
        }
    );
    let _ = writeln!(s, "buffered: {} bytes", p.data.len());
    let _ = writeln!(s, "capacity: {}", p.capacity);
    if p.peer_closed {
        let _ = writeln!(s, "other_end: closed");
    }
    if !p.fifo_path.is_empty() {
        let _ = writeln!(s, "fifo_path: {}", lossy(&p.fifo_path));
    }
}

/// The fields of a unix socket.
fn unix_fields(s: &mut String, u: &UnixSocket) {
    let ty = match u.sock_type {
        1 => "stream".to_string(),
        2 => "dgram".to_string(),
        5 => "seqpacket".to_string(),
        n => n.to_string(),
    };
    let _ = writeln!(s, "type: {ty}");
    let _ = writeln!(s, "state: {}", u.state);
    let _ = writeln!(s, "inode: {}", u.inode);
    let _ = writeln!(s, "local: {}", lossy(&u.local_path).replace('\0', "@"));
    let _ = writeln!(s, "peer: {}", lossy(&u.peer_path).replace('\0', "@"));
    let _ = writeln!(s, "peer_inode: {}", u.peer_inode);
    let _ = writeln!(s, "listening: {}", yes(u.listening));
    let _ = writeln!(s, "backlog: {}", u.backlog);
    let _ = writeln!(s, "queued: {} bytes", u.queued.len());
    let _ = writeln!(s, "shutdown: {}", u.shutdown);
}

/// The fields of an inet socket.
fn inet_fields(s: &mut String, n: &InetSocket) {
    let fam = match n.family {
        2 => "inet".to_string(),
        10 => "inet6".to_string(),
        x => x.to_string(),
    };
    let _ = writeln!(s, "family: {fam}");
    let _ = writeln!(s, "type: {}", n.sock_type);
    let _ = writeln!(s, "protocol: {}", n.protocol);
    let _ = writeln!(s, "state: {}", n.state);
    let _ = writeln!(s, "local: {}", addr(&n.local_addr, n.local_port));
    let _ = writeln!(s, "remote: {}", addr(&n.remote_addr, n.remote_port));
    let _ = writeln!(s, "backlog: {}", n.backlog);
}

/// The fields of a terminal.
fn tty_fields(s: &mut String, t: &Tty) {
    let _ = writeln!(s, "index: {}", t.index);
    let _ = writeln!(s, "controlling: {}", yes(t.is_controller));
    let _ = writeln!(s, "size: {}x{}", t.win_cols, t.win_rows);
    let _ = writeln!(s, "foreground_pgrp: {}", t.foreground_pgrp);
    let (maj, min) = dev_major_minor(t.rdev);
    let _ = writeln!(s, "rdev: {maj}:{min}");
    let _ = writeln!(s, "role: {:?}", t.role);
    if t.pair != 0 {
        let _ = writeln!(s, "pty pair: {}", t.pair);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tree::ImgId;

    pub fn sample() -> Image {
        let mut x = X8664Regs {
            rax: 0x1c,
            rip: 0x401000,
            rsp: 0x7ffc0000,
            orig_rax: u64::MAX,
            ..Default::default()
        };
        x.xsave = vec![7u8; 576];
        let mut sigactions = vec![SigAction::default(); 64];
        sigactions[9] = SigAction {
            handler: 0x401234,
            flags: 0x4000000,
            restorer: 0x401300,
            mask: 0,
        };
        sigactions[12] = SigAction {
            handler: 1,
            ..Default::default()
        };
        Image {
            host: HostInfo {
                page_size: 4096,
                arch: Arch::X8664,
                ..Default::default()
            },
            files: vec![OpenFile {
                id: 1,
                flags: 0o100002,
                position: 42,
                path: b"/tmp/out.txt".to_vec(),
                kind: FileKind::Regular(RegularFile::default()),
                owner: FileOwner::default(),
            }],
            processes: vec![Process {
                pid: 100,
                ppid: 1,
                state: "S".into(),
                comm: b"counter".to_vec(),
                cmdline: vec![b"./counter".to_vec(), b"0".to_vec()],
                environ: vec![b"A=1".to_vec()],
                cwd: b"/tmp".to_vec(),
                exe: FileIdentity {
                    path: b"/usr/bin/counter".to_vec(),
                    ..Default::default()
                },
                rlimits: vec![
                    Rlimit {
                        resource: 7,
                        name: "NOFILE".into(),
                        soft: 1024,
                        hard: 4096,
                    },
                    Rlimit {
                        resource: 0,
                        name: "CPU".into(),
                        soft: u64::MAX,
                        hard: u64::MAX,
                    },
                ],
                vmas: vec![
                    Vma {
                        start: 0x400000,
                        end: 0x401000,
                        prot: PROT_READ | PROT_EXEC,
                        backing: VmaBacking::File(FileMapping {
                            file: FileIdentity {
                                dev: 0x801,
                                inode: 1234,
                                ..Default::default()
                            },
                            offset: 0,
                            ..Default::default()
                        }),
                        name: b"/usr/bin/counter".to_vec(),
                        ..Default::default()
                    },
                    Vma {
                        start: 0x600000,
                        end: 0x602000,
                        prot: PROT_READ | PROT_WRITE,
                        ..Default::default()
                    },
                ],
                sigactions,
                fds: vec![Fd {
                    fd: 1,
                    cloexec: false,
                    file: 1,
                }],
                threads: vec![Thread {
                    tid: 100,
                    comm: b"counter".to_vec(),
                    state: "S".into(),
                    regs: Registers::X8664(x),
                    blocked: 1 << 9,
                    pending: vec![SigInfo {
                        signo: 12,
                        code: -6,
                        raw: vec![0; 128],
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn text(n: Node, img: &Image) -> String {
        String::from_utf8(render(n, img).unwrap()).unwrap()
    }

    #[test]
    fn proc_like_files() {
        let img = sample();
        let i = ImgId(0);
        assert_eq!(
            render(Node::ProcFile(i, 100, ProcFile::Cmdline), &img).unwrap(),
            b"./counter\x000\x00"
        );
        assert_eq!(
            text(Node::ProcFile(i, 100, ProcFile::Comm), &img),
            "counter\n"
        );
        let maps = text(Node::ProcFile(i, 100, ProcFile::Maps), &img);
        let first = maps.lines().next().unwrap();
        assert!(
            first.starts_with("00400000-00401000 r-xp 00000000 08:01 1234 "),
            "{first}"
        );
        assert_eq!(first.find("/usr/bin/counter"), Some(73), "{first:?}");
        assert_eq!(
            maps.lines().nth(1).unwrap(),
            "00600000-00602000 rw-p 00000000 00:00 0"
        );
        let limits = text(Node::ProcFile(i, 100, ProcFile::Limits), &img);
        assert!(limits.starts_with(
            "Limit                     Soft Limit           Hard Limit           Units"
        ));
        assert!(
            limits.contains(
                "Max open files            1024                 4096                 files"
            ),
            "{limits}"
        );
        assert!(limits.contains(
            "Max cpu time              unlimited            unlimited            seconds"
        ));
        let st = text(Node::ProcFile(i, 100, ProcFile::Status), &img);
        assert!(st.contains("Name:\tcounter\n"), "{st}");
        assert!(st.contains("State:\tS (sleeping)\n"));
        assert!(st.contains("SigBlk:\t0000000000000200\n"));
        assert!(st.contains("SigIgn:\t0000000000001000\n"));
        assert!(st.contains("SigCgt:\t0000000000000200\n"));
        assert!(st.contains("SigPnd:\t0000000000000800\n"));
        assert!(st.contains("VmSize:\t      12 kB\n"), "{st}");
        assert_eq!(
            render(Node::ProcFile(i, 100, ProcFile::Exe), &img).unwrap(),
            b"/usr/bin/counter"
        );
        assert_eq!(
            render(Node::ProcFile(i, 100, ProcFile::Xstate), &img)
                .unwrap()
                .len(),
            576
        );
        assert!(render(Node::ProcFile(i, 100, ProcFile::Mem), &img).is_none());
    }

    #[test]
    fn regs_and_signals() {
        let img = sample();
        let i = ImgId(0);
        let r = text(Node::ProcFile(i, 100, ProcFile::Regs), &img);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 27);
        assert_eq!(lines[0], "r15 0x0000000000000000");
        assert_eq!(lines[10], "rax 0x000000000000001c");
        assert_eq!(lines[15], "orig_rax 0xffffffffffffffff");
        assert_eq!(text(Node::TaskFile(i, 100, 100, TaskFile::Regs), &img), r);
        let s = text(Node::ProcFile(i, 100, ProcFile::Signals), &img);
        assert!(
            s.contains(
                "SIGUSR1      handler 0x401234 flags 0x4000000 mask 0x0 restorer 0x401300\n"
            ),
            "{s}"
        );
        assert!(s.contains("SIGRTMIN+1   handler 0x0"), "{s}");
        assert!(s.contains("blocked 0x200\n"));
        assert!(s.contains("pending 100 SIGUSR2 code -6\n"));
        assert_eq!(s.lines().count(), 64 + 1 + 1);
    }

    #[test]
    fn fd_file() {
        let img = sample();
        let t = text(Node::Fd(ImgId(0), 100, 1), &img);
        assert!(
            t.starts_with(
                "kind: regular\npath: /tmp/out.txt\nflags: 0o100002\noffset: 42\ncloexec: no\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(dev_major_minor(0x801), (8, 1));
        assert_eq!(dev_major_minor((259u64 << 8) | 3), (259, 3));
    }
}
