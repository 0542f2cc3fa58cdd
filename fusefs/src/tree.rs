//! The pure tree model of ckptfs: which nodes exist, their names, kinds,
//! children and permissions. No FUSE and no I/O here; contents are rendered
//! by [`crate::render`] and edits parsed by [`crate::edit`].
//!
//! A node is a small `Copy` value naming a place in the tree; images are
//! referred to by an [`ImgId`] that the store interns for each image name.

use ckpt_image::{Image, Registers};

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
            | Node::Fd(i, _, _) => Some(i),
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Node::Root
            | Node::Image(_)
            | Node::Proc(..)
            | Node::Tasks(..)
            | Node::Task(..)
            | Node::Fds(..) => Kind::Dir,
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
        )
    }

    /// Whether a write edits the image (as opposed to a ctl command).
    pub fn is_edit(self) -> bool {
        self.writable() && !matches!(self, Node::RootCtl | Node::ImageCtl(_))
    }

    /// Whether the node's contents depend on more than the metadata model
    /// (so [`crate::render::render`] does not produce them).
    pub fn is_mem(self) -> bool {
        matches!(self, Node::ProcFile(_, _, ProcFile::Mem))
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
        }
    }

    /// The parent directory (the root is its own parent).
    pub fn parent(self) -> Node {
        match self {
            Node::Root | Node::RootCtl | Node::Image(_) => Node::Root,
            Node::Info(i) | Node::Json(i) | Node::ImageCtl(i) | Node::Proc(i, _) => Node::Image(i),
            Node::ProcFile(i, p, _) | Node::Tasks(i, p) | Node::Fds(i, p) => Node::Proc(i, p),
            Node::Task(i, p, _) => Node::Tasks(i, p),
            Node::TaskFile(i, p, t, _) => Node::Task(i, p, t),
            Node::Fd(i, p, _) => Node::Fds(i, p),
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
            | Node::ImageCtl(_) => true,
            Node::Proc(_, pid) | Node::Tasks(_, pid) | Node::Fds(_, pid) => {
                img.process(pid).is_some()
            }
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
                let mut v = vec![Node::ImageCtl(i), Node::Info(i), Node::Json(i)];
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
                v.push(Node::Tasks(i, pid));
                v
            }
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
                .map(|p| p.fds.iter().map(|f| Node::Fd(i, pid, f.fd)).collect())
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
                _ => Node::Proc(i, parse_id(name)?),
            },
            Node::Proc(i, pid) => match name {
                "task" => Node::Tasks(i, pid),
                "fds" => Node::Fds(i, pid),
                _ => Node::ProcFile(i, pid, ProcFile::from_name(name)?),
            },
            Node::Tasks(i, pid) => Node::Task(i, pid, parse_id(name)?),
            Node::Task(i, pid, tid) => Node::TaskFile(i, pid, tid, TaskFile::from_name(name)?),
            Node::Fds(i, pid) => Node::Fd(i, pid, parse_id(name)?),
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
