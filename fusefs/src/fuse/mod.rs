//! The thin fuser adapter: translates FUSE requests into calls on the tree
//! model ([`crate::tree`]), the store ([`crate::store`]) and the ctl
//! commands; errors carry an errno. All files are opened with
//! FOPEN_DIRECT_IO, so the kernel neither caches nor clips reads to the
//! size it last saw: every read reaches the current image.

use crate::ctl::{self, ImageCmd, RootCmd};
use crate::ops::Ops;
use crate::store::{Failure, Loaded, Store};
use crate::tree::{perm, ImageState, ImgId, Kind, Node, ProcFile};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attributes and entries are not cached by the kernel: sizes change with
/// every edit and images come and go in the store.
const TTL: Duration = Duration::ZERO;

thread_local! {
    static MEM_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno(n: i32) -> Errno {
    Errno::from_i32(n)
}

#[derive(Default)]
struct Inodes {
    nodes: Vec<Node>,
    map: HashMap<Node, u64>,
}

/// Text written to an editable file, applied at flush/release.
struct EditBuf {
    data: Vec<u8>,
    /// Offset of the first write: later writes land relative to it, so
    /// both `>` (offset 0) and `>>` (offset = size) collect the same text.
    base: Option<u64>,
    dirty: bool,
}

struct Handle {
    node: Node,
    /// The file as it was at open (consistent reads of one version).
    snapshot: Option<Arc<Vec<u8>>>,
    edit: Option<EditBuf>,
    dir: Option<Vec<(u64, FileType, String)>>,
}

/// Settings of a mount the filesystem needs.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub read_only: bool,
    pub allow_other: bool,
    pub uid: u32,
    pub gid: u32,
}

/// The filesystem.
pub struct CkptFs {
    store: Arc<Store>,
    ops: Arc<Ops>,
    cfg: FsConfig,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    mounted: SystemTime,
}

fn to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

impl CkptFs {
    pub fn new(store: Arc<Store>, ops: Arc<Ops>, cfg: FsConfig) -> CkptFs {
        let fs = CkptFs {
            store,
            ops,
            cfg,
            inodes: Mutex::default(),
            handles: Mutex::default(),
            next_fh: AtomicU64::new(1),
            mounted: SystemTime::now(),
        };
        fs.ino(Node::Root);
        fs
    }

    fn ino(&self, node: Node) -> u64 {
        let mut t = lock(&self.inodes);
        if let Some(&i) = t.map.get(&node) {
            return i;
        }
        t.nodes.push(node);
        let i = t.nodes.len() as u64; // the root is 1
        t.map.insert(node, i);
        i
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        let t = lock(&self.inodes);
        t.nodes
            .get((ino.0 as usize).wrapping_sub(1))
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn root_ctl_text(&self) -> Vec<u8> {
        let last = self.store.root_status();
        let mut s = String::new();
        if !last.is_empty() {
            s.push_str(&last);
            s.push_str("\n\n");
        }
        s.push_str(ctl::ROOT_USAGE);
        s.into_bytes()
    }

    fn image_ctl_text(&self, id: ImgId) -> Vec<u8> {
        let last = self.store.status(id);
        let mut s = String::new();
        if !last.is_empty() {
            s.push_str(&last);
            s.push_str("\n\n");
        }
        s.push_str(ctl::IMAGE_USAGE);
        s.into_bytes()
    }

    /// The loaded image of a node below `/NAME/`, checking that the node exists.
    fn loaded(&self, node: Node) -> Result<Arc<Loaded>, Errno> {
        let id = node.image().ok_or(Errno::ENOENT)?;
        let l = self.store.load(id).ok_or(Errno::ENOENT)?;
        if !node.exists_in(&l.state()) {
            return Err(Errno::ENOENT);
        }
        Ok(l)
    }

    fn dir_attr(&self, ino: u64, perm: u16, uid: u32, gid: u32, mtime: SystemTime) -> FileAttr {
        self.make_attr(ino, FileType::Directory, 0, perm, uid, gid, mtime)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_attr(
        &self,
        ino: u64,
        kind: FileType,
        size: u64,
        perm: u16,
        uid: u32,
        gid: u32,
        mtime: SystemTime,
    ) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    fn attr(&self, node: Node) -> Result<FileAttr, Errno> {
        let ino = self.ino(node);
        let (uid, gid) = (self.cfg.uid, self.cfg.gid);
        match node {
            Node::Root => return Ok(self.dir_attr(ino, 0o755, uid, gid, self.mounted)),
            Node::RootCtl => {
                let size = self.root_ctl_text().len() as u64;
                return Ok(self.make_attr(
                    ino,
                    FileType::RegularFile,
                    size,
                    0o644,
                    uid,
                    gid,
                    self.mounted,
                ));
            }
            Node::Image(id) => {
                let (_, m) = self.store.stat(id).ok_or(Errno::ENOENT)?;
                use std::os::unix::fs::MetadataExt;
                let p = perm(Kind::Dir, false, m.mode());
                let mtime = to_time(m.mtime() * 1_000_000_000 + m.mtime_nsec());
                return Ok(self.dir_attr(ino, p, m.uid(), m.gid(), mtime));
            }
            _ => {}
        }
        let l = self.loaded(node)?;
        let kind = node.kind();
        let p = perm(kind, node.writable(), l.mode);
        let mtime = match l.image() {
            Some(img) => to_time(img.created_ns),
            None => to_time(l.mtime_ns),
        };
        let size = match (kind, node) {
            (Kind::Dir, _) => 0,
            (Kind::Symlink, Node::ProcFile(_, pid, ProcFile::Exe)) => {
                let p = l
                    .image()
                    .and_then(|i| i.process(pid))
                    .ok_or(Errno::ENOENT)?;
                crate::render::exe_target(p).len() as u64
            }
            (_, Node::ImageCtl(id)) => self.image_ctl_text(id).len() as u64,
            (_, n) if n.is_mem() => 0,
            (_, n) => self
                .store
                .content(n, &l)
                .map(|c| c.len() as u64)
                .unwrap_or(0),
        };
        let mut a = self.make_attr(ino, file_type(kind), size, p, l.uid, l.gid, mtime);
        if node.is_mem() {
            // Tools size their buffers by st_blksize: big reads are faster.
            a.blksize = 1 << 20;
        }
        Ok(a)
    }

    fn lookup_node(&self, parent: Node, name: &str) -> Result<Node, Errno> {
        match parent {
            Node::Root => {
                if name == "ctl" {
                    return Ok(Node::RootCtl);
                }
                self.store.file_of(name).ok_or(Errno::ENOENT)?;
                Ok(Node::Image(self.store.intern(name)))
            }
            n if n.kind() == Kind::Dir => {
                let l = self.loaded(n)?;
                n.lookup(name, &l.state()).ok_or(Errno::ENOENT)
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn list_dir(&self, node: Node) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let ino = self.ino(node);
        let mut out = vec![
            (ino, FileType::Directory, ".".to_string()),
            (
                self.ino(node.parent()),
                FileType::Directory,
                "..".to_string(),
            ),
        ];
        if node == Node::Root {
            out.push((self.ino(Node::RootCtl), FileType::RegularFile, "ctl".into()));
            for (name, id) in self.store.list() {
                out.push((self.ino(Node::Image(id)), FileType::Directory, name));
            }
            return Ok(out);
        }
        if node.kind() != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let l = self.loaded(node)?;
        let state: ImageState = l.state();
        for c in node.children(&state) {
            let name = c.name(|id| self.store.name(id));
            out.push((self.ino(c), file_type(c.kind()), name));
        }
        Ok(out)
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    /// Whether `uid` may run ctl commands that act with ckptfs's privileges.
    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.cfg.uid
    }

    fn run_root_ctl(&self, uid: u32, data: &[u8]) -> Result<(), Failure> {
        if !self.privileged(uid) {
            return Err(Failure::new(
                libc::EACCES,
                "only the owner of the mount may checkpoint",
            ));
        }
        let cmd = ctl::parse_root(data).map_err(|m| Failure::new(libc::EINVAL, m))?;
        match cmd {
            RootCmd::Checkpoint {
                pid,
                name,
                leave_running,
            } => {
                let name = match name {
                    Some(n) => {
                        if self.store.name_taken(&n) {
                            return Err(Failure::new(
                                libc::EEXIST,
                                format!("an image named {n} exists"),
                            ));
                        }
                        n
                    }
                    None => {
                        let secs = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        let base = ctl::default_name(pid, secs as i64);
                        let mut n = base.clone();
                        let mut k = 2;
                        while self.store.name_taken(&n) {
                            n = format!("{base}-{k}");
                            k += 1;
                        }
                        n
                    }
                };
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(Failure::new(
                        libc::ESRCH,
                        format!("checkpoint {pid}: no such process"),
                    ));
                }
                let path = self.store.new_image_path(&name);
                self.ops
                    .checkpoint(pid, &path, leave_running)
                    .map_err(|m| Failure::new(libc::EIO, format!("checkpoint {pid}: {m}")))?;
                self.store
                    .set_root_status(format!("ok checkpoint {name} pid={pid}"));
                Ok(())
            }
        }
    }

    fn run_image_ctl(&self, id: ImgId, uid: u32, data: &[u8]) -> Result<(), Failure> {
        let cmd = ctl::parse_image(data).map_err(|m| Failure::new(libc::EINVAL, m))?;
        match cmd {
            ImageCmd::Restore { new_pid } => {
                let l = self
                    .store
                    .load(id)
                    .ok_or_else(|| Failure::new(libc::ENOENT, "the image is gone"))?;
                let img = l.image().ok_or_else(|| {
                    Failure::new(
                        libc::EIO,
                        format!(
                            "cannot restore: {}",
                            l.reader.as_ref().err().cloned().unwrap_or_default()
                        ),
                    )
                })?;
                if !self.privileged(uid) && !runs_as(img, uid) {
                    return Err(Failure::new(
                        libc::EACCES,
                        format!("uid {uid} may only restore images of processes running as uid {uid} without capabilities"),
                    ));
                }
                let (pid, warnings) = self
                    .ops
                    .restore(id, &l.path, new_pid)
                    .map_err(|m| Failure::new(libc::EIO, format!("restore failed: {m}")))?;
                let mut s = format!("restored pid {pid}");
                for w in warnings {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                self.store.set_status(id, s);
                Ok(())
            }
        }
    }

    /// Apply the text collected by an edit handle.
    fn apply_edit(&self, node: Node, data: &[u8]) -> Result<(), Failure> {
        let id = node.image().expect("edit nodes belong to an image");
        let path = self.path_of(node);
        match self.store.edit(node, data) {
            Ok(Some((what, generation))) => {
                self.store.set_status(
                    id,
                    format!("ok edit {path}: {what} (generation {generation})"),
                );
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.store
                    .set_status(id, format!("error: edit of {path}: {}", e.msg));
                Err(e)
            }
        }
    }

    /// The path of a node relative to the image directory, for messages.
    fn path_of(&self, node: Node) -> String {
        let mut parts = Vec::new();
        let mut n = node;
        while !matches!(n, Node::Root | Node::Image(_)) {
            parts.push(n.name(|id| self.store.name(id)));
            n = n.parent();
        }
        parts.reverse();
        parts.join("/")
    }

    fn flush_handle(&self, fh: u64) -> Result<(), Failure> {
        let pending = {
            let mut hs = lock(&self.handles);
            let Some(h) = hs.get_mut(&fh) else {
                return Ok(());
            };
            let node = h.node;
            match h.edit.as_mut() {
                Some(e) if e.dirty => {
                    e.dirty = false;
                    e.base = None;
                    Some((node, std::mem::take(&mut e.data)))
                }
                _ => None,
            }
        };
        match pending {
            Some((node, data)) => self.apply_edit(node, &data),
            None => Ok(()),
        }
    }
}

/// Whether every process of the image runs as `uid` with no capabilities.
fn runs_as(img: &ckpt_image::Image, uid: u32) -> bool {
    img.processes.iter().all(|p| {
        let c = &p.creds;
        [c.ruid, c.euid, c.suid, c.fsuid].iter().all(|&u| u == uid)
            && c.cap_permitted == 0
            && c.cap_effective == 0
    })
}

impl Filesystem for CkptFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let r = self
            .node(parent)
            .and_then(|p| self.lookup_node(p, name))
            .and_then(|n| self.attr(n));
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| self.attr(n)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        if size.is_some() {
            if !node.writable() {
                return reply.error(Errno::EACCES);
            }
            if self.cfg.read_only {
                return reply.error(Errno::EROFS);
            }
            // Truncation (the shell's `>`): start the collected text over.
            if let Some(fh) = fh {
                if let Some(e) = lock(&self.handles)
                    .get_mut(&fh.0)
                    .and_then(|h| h.edit.as_mut())
                {
                    e.data.clear();
                    e.base = None;
                }
            }
        }
        match self.attr(node) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.node(ino).and_then(|n| match n {
            Node::ProcFile(_, pid, ProcFile::Exe) => {
                let l = self.loaded(n)?;
                let p = l
                    .image()
                    .and_then(|i| i.process(pid))
                    .ok_or(Errno::ENOENT)?;
                Ok(crate::render::exe_target(p))
            }
            _ => Err(Errno::EINVAL),
        });
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if node.kind() == Kind::Dir {
            return reply.error(Errno::EISDIR);
        }
        if write {
            if !node.writable() {
                return reply.error(Errno::EACCES);
            }
            if self.cfg.read_only {
                return reply.error(Errno::EROFS);
            }
            if node == Node::RootCtl && !self.privileged(req.uid()) {
                return reply.error(Errno::EACCES);
            }
        }
        let mut h = Handle {
            node,
            snapshot: None,
            edit: None,
            dir: None,
        };
        match node {
            Node::RootCtl => {}
            n => {
                let l = match self.loaded(n) {
                    Ok(l) => l,
                    Err(e) => return reply.error(e),
                };
                if !n.is_mem() && !matches!(n, Node::ImageCtl(_)) {
                    h.snapshot = self.store.content(n, &l);
                }
                if write && n.is_edit() && !n.is_mem() {
                    h.edit = Some(EditBuf {
                        data: Vec::new(),
                        base: None,
                        dirty: false,
                    });
                }
            }
        }
        let fh = self.new_handle(h);
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (node, snapshot) = match lock(&self.handles).get(&fh.0) {
            Some(h) => (h.node, h.snapshot.clone()),
            None => return reply.error(Errno::EBADF),
        };
        let slice = |b: &[u8]| -> Vec<u8> {
            let start = (offset.min(b.len() as u64)) as usize;
            let end = start.saturating_add(size as usize).min(b.len());
            b[start..end].to_vec()
        };
        match node {
            Node::RootCtl => reply.data(&slice(&self.root_ctl_text())),
            Node::ImageCtl(id) => reply.data(&slice(&self.image_ctl_text(id))),
            Node::ProcFile(id, pid, ProcFile::Mem) => {
                let Some(l) = self.store.load(id) else {
                    return reply.error(Errno::ENOENT);
                };
                MEM_BUF.with_borrow_mut(|buf| {
                    // Reused per thread: no allocation or zeroing per read.
                    if buf.len() < size as usize {
                        buf.resize(size as usize, 0);
                    }
                    let out = &mut buf[..size as usize];
                    match self.store.read_mem_into(&l, pid, offset, out) {
                        Ok(n) => {
                            if n == size as usize && size >= (128 << 10) {
                                // Streaming: decode the next reads' frames meanwhile.
                                let end = offset + n as u64;
                                self.store.prefetch(&l, pid, end, end + 2 * u64::from(size));
                            }
                            reply.data(&out[..n])
                        }
                        Err(e) => reply.error(errno(e.errno)),
                    }
                })
            }
            _ => match snapshot {
                Some(s) => {
                    let start = (offset.min(s.len() as u64)) as usize;
                    let end = start.saturating_add(size as usize).min(s.len());
                    reply.data(&s[start..end])
                }
                None => reply.error(Errno::EIO),
            },
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let node = match lock(&self.handles).get(&fh.0) {
            Some(h) => h.node,
            None => return reply.error(Errno::EBADF),
        };
        let n = data.len() as u32;
        match node {
            Node::RootCtl => match self.run_root_ctl(req.uid(), data) {
                Ok(()) => reply.written(n),
                Err(e) => {
                    self.store.set_root_status(format!("error: {}", e.msg));
                    reply.error(errno(e.errno))
                }
            },
            Node::ImageCtl(id) => match self.run_image_ctl(id, req.uid(), data) {
                Ok(()) => reply.written(n),
                Err(e) => {
                    self.store.set_status(id, format!("error: {}", e.msg));
                    reply.error(errno(e.errno))
                }
            },
            Node::ProcFile(id, pid, ProcFile::Mem) => {
                match self.store.write_mem(id, pid, offset, data) {
                    Ok((written, generation)) => {
                        self.store.set_status(
                        id,
                        format!("ok edit {pid}/mem: {written} bytes at {offset:#x} (generation {generation})"),
                    );
                        reply.written(written as u32)
                    }
                    Err(e) => {
                        self.store.set_status(
                            id,
                            format!("error: edit of {pid}/mem at {offset:#x}: {}", e.msg),
                        );
                        reply.error(errno(e.errno))
                    }
                }
            }
            _ => {
                let mut hs = lock(&self.handles);
                let Some(e) = hs.get_mut(&fh.0).and_then(|h| h.edit.as_mut()) else {
                    return reply.error(Errno::EBADF);
                };
                let base = *e.base.get_or_insert(offset);
                let pos = offset
                    .checked_sub(base)
                    .map(|p| p as usize)
                    .unwrap_or(e.data.len());
                if pos > (16 << 20) {
                    return reply.error(Errno::EFBIG);
                }
                let end = pos + data.len();
                if e.data.len() < end {
                    e.data.resize(end, 0);
                }
                e.data[pos..end].copy_from_slice(data);
                e.dirty = true;
                // Check the complete lines now, so that a bad edit fails the
                // write itself (shells ignore errors of close()).
                let complete = e
                    .data
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| e.data[..=i].to_vec());
                drop(hs);
                if let Some(text) = complete {
                    if let Err(f) = self.store.check_edit(node, &text) {
                        if let Some(e) = lock(&self.handles)
                            .get_mut(&fh.0)
                            .and_then(|h| h.edit.as_mut())
                        {
                            e.data.clear();
                            e.base = None;
                            e.dirty = false;
                        }
                        let id = node.image().expect("edit nodes belong to an image");
                        self.store.set_status(
                            id,
                            format!("error: edit of {}: {}", self.path_of(node), f.msg),
                        );
                        return reply.error(errno(f.errno));
                    }
                }
                reply.written(n)
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.flush_handle(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e.errno)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Errors here cannot reach close(); they are readable from ctl.
        let _ = self.flush_handle(fh.0);
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.flush_handle(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e.errno)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.node(ino).and_then(|n| Ok((n, self.list_dir(n)?)));
        match r {
            Ok((node, list)) => {
                let fh = self.new_handle(Handle {
                    node,
                    snapshot: None,
                    edit: None,
                    dir: Some(list),
                });
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let hs = lock(&self.handles);
        let Some(list) = hs.get(&fh.0).and_then(|h| h.dir.as_ref()) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            self.store.dir().as_os_str(),
        ))
        .unwrap_or_default();
        // SAFETY: an all-zero statvfs is valid; `c` is NUL-terminated and `s` a valid out-pointer.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
        if r != 0 {
            return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            255,
            s.f_frsize as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel (default_permissions).
        match self.node(ino).and_then(|n| self.attr(n)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
