//! The pure tree model of ckptfs: which nodes exist, their names, kinds,
//! children and permissions. No FUSE and no I/O here; contents are rendered
//! by [`crate::render`] and edits parsed by [`crate::edit`].
//!
//! A node is a small `Copy` value naming a place in the tree; images are
//! referred to by an [`ImgId`] that the store interns for each image name.

use ckpt_image::{FileKind, Image, Registers, SpecialMapping, Vma, VmaBacking};

/// An interned image name (index into the store's name table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImgId(pub u32);

/// Files of `/NAME/PID/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcFile {
    Cmdline,
    Comm,
    Environ,
    Exe,
    Cwd,
    Limits,
    Status,
    Maps,
    Mem,
    Regs,
    Xstate,
    Signals,
}

impl ProcFile {
    pub const ALL: [ProcFile; 12] = [
        ProcFile::Cmdline,
        ProcFile::Comm,
        ProcFile::Cwd,
        ProcFile::Environ,
        ProcFile::Exe,
        ProcFile::Limits,
        ProcFile::Maps,
        ProcFile::Mem,
        ProcFile::Regs,
        ProcFile::Signals,
        ProcFile::Status,
        ProcFile::Xstate,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ProcFile::Cmdline => "cmdline",
            ProcFile::Comm => "comm",
            ProcFile::Environ => "environ",
            ProcFile::Exe => "exe",
            ProcFile::Cwd => "cwd",
            ProcFile::Limits => "limits",
            ProcFile::Status => "status",
            ProcFile::Maps => "maps",
            ProcFile::Mem => "mem",
            ProcFile::Regs => "regs",
            ProcFile::Xstate => "xstate",
            ProcFile::Signals => "signals",
        }
    }
    fn from_name(s: &str) -> Option<Self> {
        ProcFile::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Files of `/NAME/PID/task/TID/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskFile {
    Comm,
    Regs,
    Status,
    Xstate,
}

impl TaskFile {
    pub const ALL: [TaskFile; 4] = [
        TaskFile::Comm,
        TaskFile::Regs,
        TaskFile::Status,
        TaskFile::Xstate,
    ];
    pub fn name(self) -> &'static str {
        match self {
            TaskFile::Comm => "comm",
            TaskFile::Regs => "regs",
            TaskFile::Status => "status",
            TaskFile::Xstate => "xstate",
        }
    }
    fn from_name(s: &str) -> Option<Self> {
        TaskFile::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// A place in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// `/`
    Root,
    /// `/ctl`
    RootCtl,
    /// `/NAME/`
    Image(ImgId),
    /// `/NAME/info`
    Info(ImgId),
    /// `/NAME/image.json`
    Json(ImgId),
    /// `/NAME/ctl`
    ImageCtl(ImgId),
    /// `/NAME/PID/`
    Proc(ImgId, i32),
    /// `/NAME/PID/<file>`
    ProcFile(ImgId, i32, ProcFile),
    /// `/NAME/PID/task/`
    Tasks(ImgId, i32),
    /// `/NAME/PID/task/TID/`
    Task(ImgId, i32, i32),
    /// `/NAME/PID/task/TID/<file>`
    TaskFile(ImgId, i32, i32, TaskFile),
    /// `/NAME/PID/fds/`
    Fds(ImgId, i32),
    /// `/NAME/PID/fds/N`
    Fd(ImgId, i32, i32),
    /// `/NAME/PID/fds/N.data`: the saved contents behind fd N (a deleted
    /// file's or a memfd's contents, bytes queued in a pipe or socket).
    FdData(ImgId, i32, i32),
    /// `/NAME/errors`: the refused reads and writes of the image, with why.
    Errors(ImgId),
    /// `/NAME/PID/map_files/`
    MapDir(ImgId, i32),
    /// `/NAME/PID/map_files/START-END`: the bytes of the mapping [START, END).
    MapFile(ImgId, i32, u64, u64),
    /// A scratch file made in a directory of the image (an editor's temp
    /// file); the fs layer knows its name and parent.
    Scratch(ImgId, u32),
}

/// What kind of inode a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What the tree knows about an image when listing it.
pub enum ImageState<'a> {
    /// The image could be read.
    Ok(&'a Image),
    /// It could not: only `info` (explaining why) exists.
    Broken,
}

impl Node {
    /// The image this node belongs to.
    pub fn image(self) -> Option<ImgId> {
        match self {
            Node::Root | Node::RootCtl => None,
            Node::Image(i)
            | Node::Info(i)
            | Node::Json(i)
            | Node::ImageCtl(i)
            | Node::Proc(i, _)
            | Node::ProcFile(i, _, _)
            | Node::Tasks(i, _)
            | Node::Task(i, _, _)
            | Node::TaskFile(i, _, _, _)
            | Node::Fds(i, _)
            | Node::Fd(i, _, _)
            | Node::FdData(i, _, _)
            | Node::Errors(i)
            | Node::MapDir(i, _)
            | Node::MapFile(i, _, _, _)
            | Node::Scratch(i, _) => Some(i),
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Node::Root
            | Node::Image(_)
            | Node::Proc(..)
            | Node::Tasks(..)
            | Node::Task(..)
            | Node::Fds(..)
            | Node::MapDir(..) => Kind::Dir,
            Node::ProcFile(_, _, ProcFile::Exe) => Kind::Symlink,
            _ => Kind::File,
        }
    }

    /// Whether writing to the node means something (an edit or a command).
    pub fn writable(self) -> bool {
        matches!(
            self,
            Node::RootCtl
                | Node::ImageCtl(_)
                | Node::ProcFile(
                    _,
                    _,
                    ProcFile::Mem | ProcFile::Regs | ProcFile::Signals | ProcFile::Cwd
                )
                | Node::TaskFile(_, _, _, TaskFile::Regs)
                | Node::Fd(..)
                | Node::MapFile(..)
                | Node::Scratch(..)
        )
    }

    /// Whether a write edits the image (as opposed to a ctl command or a
    /// scratch file).
    pub fn is_edit(self) -> bool {
        self.writable() && !matches!(self, Node::RootCtl | Node::ImageCtl(_) | Node::Scratch(..))
    }

    /// Whether the node shows saved memory (`mem`, `map_files/*`): read and
    /// written by address, not rendered from the metadata.
    pub fn is_mem(self) -> bool {
        matches!(
            self,
            Node::ProcFile(_, _, ProcFile::Mem) | Node::MapFile(..)
        )
    }

    /// Whether the node is a text file whose whole contents are an edit
    /// (written back whole, or replaced by a rename onto it).
    pub fn is_text_edit(self) -> bool {
        self.is_edit() && !self.is_mem()
    }

    /// Whether scratch files (an editor's temp files) may be made in this
    /// directory: the ones that hold text files that can be edited.
    pub fn allows_scratch(self) -> bool {
        matches!(self, Node::Proc(..) | Node::Fds(..) | Node::Task(..))
    }

    /// The node's name in its parent directory ("" for the root). `image_name`
    /// gives the name of an image.
    pub fn name(self, image_name: impl Fn(ImgId) -> String) -> String {
        match self {
            Node::Root => String::new(),
            Node::RootCtl | Node::ImageCtl(_) => "ctl".into(),
            Node::Image(i) => image_name(i),
            Node::Info(_) => "info".into(),
            Node::Json(_) => "image.json".into(),
            Node::Proc(_, pid) => pid.to_string(),
            Node::ProcFile(_, _, f) => f.name().into(),
            Node::Tasks(..) => "task".into(),
            Node::Task(_, _, tid) => tid.to_string(),
            Node::TaskFile(_, _, _, f) => f.name().into(),
            Node::Fds(..) => "fds".into(),
            Node::Fd(_, _, fd) => fd.to_string(),
            Node::FdData(_, _, fd) => format!("{fd}.data"),
            Node::Errors(_) => "errors".into(),
            Node::MapDir(..) => "map_files".into(),
            Node::MapFile(_, _, start, end) => format!("{start:x}-{end:x}"),
            Node::Scratch(_, n) => format!("scratch-{n}"),
        }
    }

    /// The parent directory (the root is its own parent).
    pub fn parent(self) -> Node {
        match self {
            Node::Root | Node::RootCtl | Node::Image(_) => Node::Root,
            Node::Info(i)
            | Node::Json(i)
            | Node::ImageCtl(i)
            | Node::Errors(i)
            | Node::Proc(i, _)
            | Node::Scratch(i, _) => Node::Image(i),
            Node::ProcFile(i, p, _) | Node::Tasks(i, p) | Node::Fds(i, p) | Node::MapDir(i, p) => {
                Node::Proc(i, p)
            }
            Node::Task(i, p, _) => Node::Tasks(i, p),
            Node::TaskFile(i, p, t, _) => Node::Task(i, p, t),
            Node::Fd(i, p, _) | Node::FdData(i, p, _) => Node::Fds(i, p),
            Node::MapFile(i, p, _, _) => Node::MapDir(i, p),
        }
    }

    /// Whether the node exists in this image (for nodes below `/NAME/`).
    pub fn exists_in(self, state: &ImageState) -> bool {
        let img = match state {
            ImageState::Broken => return matches!(self, Node::Image(_) | Node::Info(_)),
            ImageState::Ok(img) => *img,
        };
        match self {
            Node::Root
            | Node::RootCtl
            | Node::Image(_)
            | Node::Info(_)
            | Node::Json(_)
            | Node::ImageCtl(_)
            | Node::Errors(_) => true,
            // Scratch files are the fs layer's to know.
            Node::Scratch(..) => true,
            Node::Proc(_, pid) | Node::Tasks(_, pid) | Node::Fds(_, pid) | Node::MapDir(_, pid) => {
                img.process(pid).is_some()
            }
            Node::MapFile(_, pid, start, end) => img.process(pid).is_some_and(|p| {
                find_vma(&p.vmas, start)
                    .is_some_and(|v| v.start == start && v.end == end && has_map_file(v))
            }),
            Node::FdData(_, pid, fd) => img
                .process(pid)
                .and_then(|p| p.fds.iter().find(|f| f.fd == fd))
                .and_then(|f| img.file(f.file))
                .is_some_and(|f| fd_data(img, &f.kind).is_some()),
            Node::ProcFile(_, pid, f) => match img.process(pid) {
                None => false,
                Some(p) => match f {
                    ProcFile::Regs | ProcFile::Xstate => p
                        .threads
                        .first()
                        .is_some_and(|t| matches!(t.regs, Registers::X8664(_))),
                    _ => true,
                },
            },
            Node::Task(_, pid, tid) => thread(img, pid, tid).is_some(),
            Node::TaskFile(_, pid, tid, f) => match thread(img, pid, tid) {
                None => false,
                Some(t) => match f {
                    TaskFile::Regs | TaskFile::Xstate => matches!(t.regs, Registers::X8664(_)),
                    _ => true,
                },
            },
            Node::Fd(_, pid, fd) => img
                .process(pid)
                .is_some_and(|p| p.fds.iter().any(|f| f.fd == fd)),
        }
    }

    /// Children of a directory node below `/NAME/` (the root is listed by
    /// the store). Not sorted beyond the natural order of the image.
    pub fn children(self, state: &ImageState) -> Vec<Node> {
        let img = match state {
            ImageState::Broken => {
                return match self {
                    Node::Image(i) => vec![Node::Info(i)],
                    _ => Vec::new(),
                }
            }
            ImageState::Ok(img) => *img,
        };
        if !self.exists_in(state) {
            return Vec::new();
        }
        match self {
            Node::Image(i) => {
                let mut v = vec![
                    Node::ImageCtl(i),
                    Node::Errors(i),
                    Node::Info(i),
                    Node::Json(i),
                ];
                v.extend(img.processes.iter().map(|p| Node::Proc(i, p.pid)));
                v
            }
            Node::Proc(i, pid) => {
                let mut v: Vec<Node> = ProcFile::ALL
                    .into_iter()
                    .map(|f| Node::ProcFile(i, pid, f))
                    .filter(|n| n.exists_in(state))
                    .collect();
                v.push(Node::Fds(i, pid));
                v.push(Node::MapDir(i, pid));
                v.push(Node::Tasks(i, pid));
                v
            }
            Node::MapDir(i, pid) => img
                .process(pid)
                .map(|p| {
                    p.vmas
                        .iter()
                        .filter(|v| has_map_file(v))
                        .map(|v| Node::MapFile(i, pid, v.start, v.end))
                        .collect()
                })
                .unwrap_or_default(),
            Node::Tasks(i, pid) => img
                .process(pid)
                .map(|p| {
                    p.threads
                        .iter()
                        .map(|t| Node::Task(i, pid, t.tid))
                        .collect()
                })
                .unwrap_or_default(),
            Node::Task(i, pid, tid) => TaskFile::ALL
                .into_iter()
                .map(|f| Node::TaskFile(i, pid, tid, f))
                .filter(|n| n.exists_in(state))
                .collect(),
            Node::Fds(i, pid) => img
                .process(pid)
                .map(|p| {
                    let mut v = Vec::with_capacity(p.fds.len() * 2);
                    for f in &p.fds {
                        v.push(Node::Fd(i, pid, f.fd));
                        let data = Node::FdData(i, pid, f.fd);
                        if data.exists_in(state) {
                            v.push(data);
                        }
                    }
                    v
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The child of a directory node below `/NAME/` called `name`.
    pub fn lookup(self, name: &str, state: &ImageState) -> Option<Node> {
        let n = match self {
            Node::Image(i) => match name {
                "info" => Node::Info(i),
                "image.json" => Node::Json(i),
                "ctl" => Node::ImageCtl(i),
                "errors" => Node::Errors(i),
                _ => Node::Proc(i, parse_id(name)?),
            },
            Node::Proc(i, pid) => match name {
                "task" => Node::Tasks(i, pid),
                "fds" => Node::Fds(i, pid),
                "map_files" => Node::MapDir(i, pid),
                _ => Node::ProcFile(i, pid, ProcFile::from_name(name)?),
            },
            Node::Tasks(i, pid) => Node::Task(i, pid, parse_id(name)?),
            Node::Task(i, pid, tid) => Node::TaskFile(i, pid, tid, TaskFile::from_name(name)?),
            Node::Fds(i, pid) => match name.strip_suffix(".data") {
                Some(n) => Node::FdData(i, pid, parse_id(n)?),
                None => Node::Fd(i, pid, parse_id(name)?),
            },
            Node::MapDir(i, pid) => {
                let (a, b) = name.split_once('-')?;
                let (start, end) = (parse_hex(a)?, parse_hex(b)?);
                Node::MapFile(i, pid, start, end)
            }
            _ => return None,
        };
        n.exists_in(state).then_some(n)
    }
}

/// A pid, tid or fd number written the canonical way (no sign, no leading zeros).
fn parse_id(s: &str) -> Option<i32> {
    let v: i32 = s.parse().ok()?;
    (v >= 0 && v.to_string() == s).then_some(v)
}

/// An address written the way /proc's map_files names write it: lowercase
/// hex without `0x` or leading zeros.
fn parse_hex(s: &str) -> Option<u64> {
    let v = u64::from_str_radix(s, 16).ok()?;
    (format!("{v:x}") == s).then_some(v)
}

/// The VMA containing `addr` (VMAs sorted by start).
pub fn find_vma(vmas: &[Vma], addr: u64) -> Option<&Vma> {
    let i = vmas.partition_point(|v| v.start <= addr);
    let v = vmas.get(i.checked_sub(1)?)?;
    v.contains(addr).then_some(v)
}

/// Whether a mapping's contents can be in an image at all: not the ones
/// the kernel provides at restore (`[vdso]`, `[vvar]`, `[vsyscall]`, ...).
pub fn kernel_provided(v: &Vma) -> bool {
    matches!(
        v.backing,
        VmaBacking::Special(
            SpecialMapping::Vdso
                | SpecialMapping::Vvar
                | SpecialMapping::VvarVclock
                | SpecialMapping::Vsyscall
                | SpecialMapping::Uprobes
                | SpecialMapping::Other
        )
    )
}

/// Whether a mapping gets a file in `map_files/`: every one whose bytes
/// an image can hold.
pub fn has_map_file(v: &Vma) -> bool {
    !kernel_provided(v)
}

/// What `fds/N.data` shows for an open file of this kind: the saved
/// contents of a deleted (or unreachable) regular file or of a memfd
/// (a blob), the bytes buffered in a pipe (kept on its read end's open
/// file), the bytes queued on a unix socket. None: the kind has none.
pub fn fd_data<'a>(img: &'a Image, kind: &'a FileKind) -> Option<FdData<'a>> {
    match kind {
        FileKind::Regular(r) if r.has_contents && !r.extents.is_empty() => Some(FdData::Sparse {
            blob: &r.contents,
            extents: &r.extents,
            size: r.file.size,
        }),
        FileKind::Regular(r) if r.has_contents => Some(FdData::Blob(&r.contents)),
        FileKind::MemFd(m) => Some(FdData::Blob(&m.contents)),
        FileKind::Pipe(p) | FileKind::Fifo(p) => {
            let buffered = img.files.iter().find_map(|f| match &f.kind {
                FileKind::Pipe(q) | FileKind::Fifo(q) if q.id == p.id && !q.data.is_empty() => {
                    Some(&q.data[..])
                }
                _ => None,
            });
            Some(FdData::Bytes(buffered.unwrap_or(&p.data)))
        }
        FileKind::UnixSocket(u) => Some(FdData::Bytes(&u.queued)),
        _ => None,
    }
}

/// The saved contents behind an fd.
pub enum FdData<'a> {
    /// Stored in frames.
    Blob(&'a ckpt_image::Blob),
    /// A sparse file of `size` bytes: the blob holds the `extents` one
    /// after the other; the rest is holes (zeros).
    Sparse {
        blob: &'a ckpt_image::Blob,
        extents: &'a [ckpt_image::FileExtent],
        size: u64,
    },
    /// Kept in the metadata.
    Bytes(&'a [u8]),
}

impl FdData<'_> {
    pub fn len(&self) -> u64 {
        match self {
            FdData::Blob(b) => b.size,
            FdData::Sparse { size, .. } => *size,
            FdData::Bytes(b) => b.len() as u64,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Thread `tid` of process `pid`.
pub fn thread(img: &Image, pid: i32, tid: i32) -> Option<&ckpt_image::Thread> {
    img.process(pid)?.threads.iter().find(|t| t.tid == tid)
}

/// Permission bits of a node of an image whose file has mode `image_mode`:
/// for each of user/group/other that may read the image, directories get
/// r-x, files r--, and writable files rw- when that class may also write it.
pub fn perm(kind: Kind, writable: bool, image_mode: u32) -> u16 {
    let mut out = 0u16;
    for shift in [6u32, 3, 0] {
        let class = (image_mode >> shift) & 7;
        if class & 4 == 0 {
            continue;
        }
        let bits = match kind {
            // Directories with editable files take an editor's temp files.
            Kind::Dir if writable && class & 2 != 0 => 7,
            Kind::Dir => 5,
            Kind::Symlink => 7,
            Kind::File => {
                if writable && class & 2 != 0 {
                    6
                } else {
                    4
                }
            }
        };
        out |= (bits << shift) as u16;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::{Fd, Process, Thread, X8664Regs};

    fn img() -> Image {
        Image {
            processes: vec![Process {
                pid: 100,
                threads: vec![
                    Thread {
                        tid: 100,
                        regs: Registers::X8664(X8664Regs::default()),
                        ..Default::default()
                    },
                    Thread {
                        tid: 101,
                        regs: Registers::X8664(X8664Regs::default()),
                        ..Default::default()
                    },
                ],
                fds: vec![
                    Fd {
                        fd: 0,
                        cloexec: false,
                        file: 1,
                    },
                    Fd {
                        fd: 3,
                        cloexec: true,
                        file: 2,
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn listing_and_lookup() {
        let image = img();
        let st = ImageState::Ok(&image);
        let i = ImgId(0);
        let top = Node::Image(i).children(&st);
        assert!(top.contains(&Node::Proc(i, 100)));
        assert!(top.contains(&Node::Info(i)));
        let p = Node::Proc(i, 100).children(&st);
        assert!(p.contains(&Node::ProcFile(i, 100, ProcFile::Mem)));
        assert!(p.contains(&Node::Fds(i, 100)));
        assert_eq!(Node::Tasks(i, 100).children(&st).len(), 2);
        assert_eq!(
            Node::Fds(i, 100).children(&st),
            vec![Node::Fd(i, 100, 0), Node::Fd(i, 100, 3)]
        );
        assert_eq!(
            Node::Fds(i, 100).lookup("3", &st),
            Some(Node::Fd(i, 100, 3))
        );
        assert_eq!(Node::Fds(i, 100).lookup("03", &st), None);
        assert_eq!(Node::Fds(i, 100).lookup("4", &st), None);
        assert_eq!(Node::Image(i).lookup("101", &st), None);
        assert_eq!(
            Node::Tasks(i, 100)
                .lookup("101", &st)
                .and_then(|t| t.lookup("regs", &st)),
            Some(Node::TaskFile(i, 100, 101, TaskFile::Regs))
        );
        for n in top {
            assert_eq!(Node::Image(i).lookup(&n.name(|_| "x".into()), &st), Some(n));
            assert_eq!(n.parent(), Node::Image(i));
        }
    }

    #[test]
    fn broken_image_has_only_info() {
        let i = ImgId(3);
        assert_eq!(
            Node::Image(i).children(&ImageState::Broken),
            vec![Node::Info(i)]
        );
        assert_eq!(Node::Image(i).lookup("ctl", &ImageState::Broken), None);
        assert_eq!(
            Node::Image(i).lookup("info", &ImageState::Broken),
            Some(Node::Info(i))
        );
    }

    #[test]
    fn no_regs_without_registers() {
        let mut image = img();
        image.processes[0].threads[0].regs = Registers::None;
        let st = ImageState::Ok(&image);
        let i = ImgId(0);
        assert_eq!(Node::Proc(i, 100).lookup("regs", &st), None);
        assert!(Node::Proc(i, 100).lookup("maps", &st).is_some());
    }

    #[test]
    fn permissions_follow_the_image_mode() {
        assert_eq!(perm(Kind::Dir, false, 0o600), 0o500);
        assert_eq!(perm(Kind::File, false, 0o600), 0o400);
        assert_eq!(perm(Kind::File, true, 0o600), 0o600);
        assert_eq!(perm(Kind::File, true, 0o644), 0o644);
        assert_eq!(perm(Kind::Dir, false, 0o644), 0o555);
        assert_eq!(perm(Kind::File, true, 0o400), 0o400);
        assert_eq!(perm(Kind::File, true, 0o200), 0);
    }
}
