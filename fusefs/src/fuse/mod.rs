//! The fuser adapter: translates FUSE requests into calls on the tree
//! model ([`crate::tree`]), the store ([`crate::store`]), the scratch files
//! ([`crate::scratch`]) and the ctl commands; errors carry an errno, and
//! every refused read or write is noted with its reason in the image's
//! `errors` file and the log.
//!
//! Caching: attributes and entries are kept by the kernel for [`TTL`]
//! (edits made through ckptfs invalidate what they change at once, see
//! `inval.rs`). Text files, `mem` and files being written use
//! FOPEN_DIRECT_IO; `map_files/*` and `fds/N.data` opened read-only go
//! through the page cache, kept from one open to the next while the image
//! is unchanged (FOPEN_KEEP_CACHE).

mod ctlcmd;
mod inval;
mod io;
mod names;

use crate::ops::Ops;
use crate::pages::PendingPages;
use crate::store::{Failure, FileKey, Loaded, Store};
use crate::tree::{perm, ImageState, ImgId, Kind, Node, ProcFile};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use inval::NotifierSlot;

/// How long the kernel may keep attributes and entries. Edits through
/// ckptfs invalidate what they change; a change from outside (an image
/// added, removed or rewritten in the store) shows within this time.
pub const TTL: Duration = Duration::from_secs(1);

/// The ctl and errors files change without an edit, scratch files with
/// every write: their attributes are not cached.
fn ttl_of(node: Node) -> Duration {
    match node {
        Node::RootCtl | Node::ImageCtl(_) | Node::Errors(_) | Node::Scratch(..) => Duration::ZERO,
        _ => TTL,
    }
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

/// A directory entry of an open directory.
#[derive(Clone)]
struct Entry {
    ino: u64,
    node: Node,
    kind: FileType,
    name: String,
}

struct Handle {
    node: Node,
    /// The file as it was at open (consistent reads of one version).
    snapshot: Option<Arc<Vec<u8>>>,
    /// The image version a read-only map file or fd data file was opened on.
    loaded: Option<Arc<Loaded>>,
    edit: Option<EditBuf>,
    pages: Option<Arc<Mutex<PendingPages>>>,
    dir: Option<Vec<Entry>>,
    /// A ctl file: the answer to the last command written through this
    /// open file, so that the one who asked reads its own answer whatever
    /// others do meanwhile. Read sequentially from where the write ended,
    /// or from offset 0 (either starts it over).
    answer: Option<Answer>,
}

/// The answer a ctl handle reads (see [`Handle::answer`]).
#[derive(Debug, Clone)]
struct Answer {
    /// The offset just past the write that asked.
    base: u64,
    text: Vec<u8>,
    /// How much of `text` this handle has read.
    read: usize,
}

impl Answer {
    /// The next `size` bytes for a read at `offset`.
    fn next(&mut self, offset: u64, size: u32) -> Vec<u8> {
        if offset == 0 || offset == self.base {
            self.read = 0;
        }
        let start = self.read.min(self.text.len());
        let end = start.saturating_add(size as usize).min(self.text.len());
        self.read = end;
        self.text[start..end].to_vec()
    }
}

impl Handle {
    fn new(node: Node) -> Handle {
        Handle {
            node,
            snapshot: None,
            loaded: None,
            edit: None,
            pages: None,
            dir: None,
            answer: None,
        }
    }
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
    scratch: Mutex<crate::scratch::Scratch>,
    /// The image version each cached file's page cache holds.
    cache_keys: Mutex<HashMap<u64, FileKey>>,
    inval: inval::Invalidator,
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

fn attr_of(
    ino: u64,
    kind: FileType,
    size: u64,
    perm: u16,
    owner: (u32, u32),
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
        uid: owner.0,
        gid: owner.1,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl CkptFs {
    /// The filesystem; `notifier` is filled in once the session runs (it
    /// lets edits drop what the kernel cached of the files they change).
    pub fn new(store: Arc<Store>, ops: Arc<Ops>, cfg: FsConfig, notifier: NotifierSlot) -> CkptFs {
        let fs = CkptFs {
            store,
            ops,
            cfg,
            inodes: Mutex::default(),
            handles: Mutex::default(),
            next_fh: AtomicU64::new(1),
            mounted: SystemTime::now(),
            scratch: Mutex::default(),
            cache_keys: Mutex::default(),
            inval: inval::Invalidator::start(notifier),
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

    /// The loaded image of a node below `/NAME/`, checking that the node exists.
    fn loaded(&self, node: Node) -> Result<Arc<Loaded>, Errno> {
        let id = node.image().ok_or(Errno::ENOENT)?;
        let l = self.store.load(id).ok_or(Errno::ENOENT)?;
        if let Node::Scratch(_, n) = node {
            lock(&self.scratch).get(n).ok_or(Errno::ENOENT)?;
            return Ok(l);
        }
        if !node.exists_in(&l.state()) {
            return Err(Errno::ENOENT);
        }
        Ok(l)
    }

    fn attr(&self, node: Node) -> Result<FileAttr, Errno> {
        let ino = self.ino(node);
        let me = (self.cfg.uid, self.cfg.gid);
        match node {
            Node::Root => {
                return Ok(attr_of(
                    ino,
                    FileType::Directory,
                    0,
                    0o755,
                    me,
                    self.mounted,
                ))
            }
            Node::RootCtl => {
                let size = ctlcmd::root_text(&self.store).len() as u64;
                return Ok(attr_of(
                    ino,
                    FileType::RegularFile,
                    size,
                    0o644,
                    me,
                    self.mounted,
                ));
            }
            Node::Image(id) => {
                let (_, m) = self.store.stat(id).ok_or(Errno::ENOENT)?;
                use std::os::unix::fs::MetadataExt;
                let p = perm(Kind::Dir, false, m.mode());
                let mtime = to_time(m.mtime() * 1_000_000_000 + m.mtime_nsec());
                return Ok(attr_of(
                    ino,
                    FileType::Directory,
                    0,
                    p,
                    (m.uid(), m.gid()),
                    mtime,
                ));
            }
            Node::Scratch(_, n) => {
                let s = lock(&self.scratch);
                let f = s.get(n).ok_or(Errno::ENOENT)?;
                let size = f.data.len() as u64;
                return Ok(attr_of(
                    ino,
                    FileType::RegularFile,
                    size,
                    f.mode,
                    (f.uid, f.gid),
                    f.mtime,
                ));
            }
            _ => {}
        }
        let l = self.loaded(node)?;
        let kind = node.kind();
        let writable = if kind == Kind::Dir {
            node.allows_scratch()
        } else {
            node.writable()
        };
        let p = perm(kind, writable, l.mode);
        let mtime = match l.image() {
            Some(img) => to_time(img.created_ns),
            None => to_time(l.mtime_ns),
        };
        let (size, stored) = self.size_of(node, &l)?;
        let mut a = attr_of(ino, file_type(kind), size, p, (l.uid, l.gid), mtime);
        if let Some(s) = stored {
            a.blocks = s.div_ceil(512);
        }
        if node.is_mem() {
            // Tools size their buffers by st_blksize: big reads are faster.
            a.blksize = 1 << 20;
        }
        Ok(a)
    }

    /// The size of a node of a loaded image, and the bytes it has stored
    /// when that differs (st_blocks of map files: their saved pages).
    fn size_of(&self, node: Node, l: &Loaded) -> Result<(u64, Option<u64>), Errno> {
        Ok(match node {
            n if n.kind() == Kind::Dir => (0, None),
            Node::ProcFile(_, pid, ProcFile::Exe) => {
                let p = l
                    .image()
                    .and_then(|i| i.process(pid))
                    .ok_or(Errno::ENOENT)?;
                (crate::render::exe_target(p).len() as u64, None)
            }
            Node::ImageCtl(id) => (ctlcmd::image_text(&self.store, id).len() as u64, None),
            Node::Errors(id) => (self.store.errors_text(id).len() as u64, None),
            Node::ProcFile(_, _, ProcFile::Mem) => (0, None),
            Node::MapFile(_, pid, start, end) => {
                let stored = l.index(pid).and_then(|ix| ix.stored.get(&start).copied());
                (end - start, Some(stored.unwrap_or(0)))
            }
            Node::FdData(_, pid, fd) => {
                let img = l.image().ok_or(Errno::ENOENT)?;
                let len = img
                    .process(pid)
                    .and_then(|p| p.fds.iter().find(|f| f.fd == fd))
                    .and_then(|f| img.file(f.file))
                    .and_then(|f| crate::tree::fd_data(img, &f.kind))
                    .map(|d| d.len())
                    .ok_or(Errno::ENOENT)?;
                (len, None)
            }
            n => (
                self.store
                    .content(n, l)
                    .map(|c| c.len() as u64)
                    .unwrap_or(0),
                None,
            ),
        })
    }

    /// The real (not scratch) child `name` of `parent`.
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

    /// The child `name` of `parent`: a real node, else a scratch file.
    fn child(&self, parent: Node, name: &str) -> Result<Node, Errno> {
        match self.lookup_node(parent, name) {
            Err(Errno::ENOENT) if parent.allows_scratch() => {
                let n = lock(&self.scratch)
                    .lookup(parent, name)
                    .ok_or(Errno::ENOENT)?;
                let id = parent.image().ok_or(Errno::ENOENT)?;
                Ok(Node::Scratch(id, n))
            }
            r => r,
        }
    }

    fn list_dir(&self, node: Node) -> Result<Vec<Entry>, Errno> {
        let entry = |node: Node, kind: FileType, name: String| Entry {
            ino: self.ino(node),
            node,
            kind,
            name,
        };
        let mut out = vec![
            entry(node, FileType::Directory, ".".into()),
            entry(node.parent(), FileType::Directory, "..".into()),
        ];
        if node == Node::Root {
            out.push(entry(Node::RootCtl, FileType::RegularFile, "ctl".into()));
            for (name, id) in self.store.list() {
                out.push(entry(Node::Image(id), FileType::Directory, name));
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
            out.push(entry(c, file_type(c.kind()), name));
        }
        if node.allows_scratch() {
            let id = node.image().ok_or(Errno::ENOENT)?;
            for (n, name) in lock(&self.scratch).list(node) {
                out.push(entry(Node::Scratch(id, n), FileType::RegularFile, name));
            }
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

    /// The path of a node relative to the image directory, for messages.
    fn path_of(&self, node: Node) -> String {
        let mut parts = Vec::new();
        let mut n = node;
        if let Node::Scratch(_, s) = node {
            match lock(&self.scratch).get(s) {
                Some(f) => {
                    parts.push(f.name.clone());
                    n = f.parent;
                }
                None => return format!("scratch file {s}"),
            }
        }
        while !matches!(n, Node::Root | Node::Image(_)) {
            parts.push(n.name(|id| self.store.name(id)));
            n = n.parent();
        }
        parts.reverse();
        parts.join("/")
    }

    /// Note why an operation on `node` was refused (the image's `errors`
    /// file and the log) and give its errno.
    fn refuse(&self, node: Node, what: &str, f: &Failure) -> Errno {
        match node.image() {
            Some(id) => self.store.record_error(id, what, &f.msg),
            None => tracing::warn!("{what}: {}", f.msg),
        }
        errno(f.errno)
    }

    /// After a commit to image `id`: drop what the kernel cached of it.
    fn changed(&self, id: ImgId) {
        let t = lock(&self.inodes);
        let list: Vec<(u64, Node)> = t
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.image() == Some(id))
            .map(|(i, n)| (i as u64 + 1, *n))
            .collect();
        drop(t);
        let mut keys = lock(&self.cache_keys);
        let mut inval = Vec::with_capacity(list.len());
        for (ino, n) in list {
            match n {
                Node::MapFile(..) | Node::FdData(..) => {
                    keys.remove(&ino);
                    inval.push(inval::Inval::Inode(ino, 0));
                }
                n if n.kind() == Kind::Dir => {}
                _ => inval.push(inval::Inval::Inode(ino, -1)),
            }
        }
        drop(keys);
        self.inval.send(inval);
    }
}

impl Filesystem for CkptFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        use fuser::InitFlags as F;
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        for f in [
            F::FUSE_DO_READDIRPLUS,
            F::FUSE_READDIRPLUS_AUTO,
            F::FUSE_PARALLEL_DIROPS,
            F::FUSE_CACHE_SYMLINKS,
        ] {
            if config.add_capabilities(f).is_err() {
                tracing::debug!("the kernel does not offer {f:?}");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let r = self
            .node(parent)
            .and_then(|p| self.child(p, name))
            .and_then(|n| Ok((n, self.attr(n)?)));
        match r {
            Ok((n, a)) => reply.entry(&ttl_of(n), &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| Ok((n, self.attr(n)?))) {
            Ok((n, a)) => reply.attr(&ttl_of(n), &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ch = names::AttrChange {
            mode,
            uid,
            gid,
            size,
            mtime,
        };
        let r = self.node(ino).and_then(|n| {
            self.do_setattr(req, n, fh.map(|f| f.0), &ch)
                .map(|a| (n, a))
        });
        match r {
            Ok((n, a)) => reply.attr(&ttl_of(n), &a),
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

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        match self.make_scratch(req, parent, name, mode & !umask) {
            Ok((n, a)) => reply.entry(&ttl_of(n), &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.not_here(parent, name, "make a directory"));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_unlink(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.not_here(parent, name, "remove a directory"));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.not_here(parent, link_name, "make a symlink"));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(req, (parent, name), (newparent, newname), flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.not_here(newparent, newname, "make a hard link"));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .node(ino)
            .and_then(|n| self.do_open(req, ino.0, n, flags))
        {
            Ok((fh, f)) => reply.opened(FileHandle(fh), f),
            Err(e) => reply.error(e),
        }
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
        self.do_read(fh.0, offset, size, reply)
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
        match self.do_write(req, fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
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
            Err(e) => reply.error(e),
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
        // Errors here cannot reach close(); they are in ctl and errors.
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
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.node(ino).and_then(|n| Ok((n, self.list_dir(n)?)));
        match r {
            Ok((node, list)) => {
                let mut h = Handle::new(node);
                h.dir = Some(list);
                let fh = self.new_handle(h);
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
        for (i, e) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match lock(&self.handles).get(&fh.0).and_then(|h| h.dir.clone()) {
            Some(l) => l,
            None => return reply.error(Errno::EBADF),
        };
        for (i, e) in list.iter().enumerate().skip(offset as usize) {
            // An entry gone meanwhile is left out.
            let Ok(a) = self.attr(e.node) else { continue };
            if reply.add(
                INodeNo(e.ino),
                (i + 1) as u64,
                &e.name,
                &ttl_of(e.node),
                &a,
                Generation(0),
            ) {
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
        match nix::sys::statvfs::statvfs(self.store.dir()) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
        }
    }

    /// Extended attributes are not supported: ENOSYS makes the kernel
    /// stop asking (it answers every later call itself), so `ls -l`'s
    /// ACL and security-label probes cost no round trip.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel (default_permissions).
        match self.node(ino).and_then(|n| self.attr(n)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .make_scratch(req, parent, name, mode & !umask)
            .map(|(n, a)| (n, a, self.new_handle(Handle::new(n))));
        match r {
            Ok((n, a, fh)) => reply.created(
                &ttl_of(n),
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.do_lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }
}
