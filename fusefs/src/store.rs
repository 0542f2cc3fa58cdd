//! The store directory: which images exist, loading them lazily (header and
//! metadata only, cached by the file's identity), rendering and caching
//! their files, reading memory, and crash-safe edits through
//! [`ImageEditor`]. No FUSE here: everything is testable on a plain
//! directory.

use crate::render;
use crate::tree::{ImageState, ImgId, Node, ProcFile};
use ckpt_image::{Error as ImgError, Image, ImageEditor, ImageReader, Vma, VmaBacking};
use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many loaded images (metadata + rendered files) are kept.
const LOADED_CACHE: usize = 64;

/// Identity of one version of an image file: changes with every commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileKey {
    pub fn of(m: &Metadata) -> FileKey {
        FileKey {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// An error with the errno to give the kernel and a reason for humans.
#[derive(Debug, Clone)]
pub struct Failure {
    pub errno: i32,
    pub msg: String,
}

impl Failure {
    pub fn new(errno: i32, msg: impl Into<String>) -> Failure {
        Failure { errno, msg: msg.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// The errno that best describes an image error.
pub fn errno_of(e: &ImgError) -> i32 {
    match e {
        ImgError::Unmapped { .. } | ImgError::NotSaved { .. } => libc::EIO,
        ImgError::NewerMinor { .. } => libc::EROFS,
        ImgError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        ImgError::InvalidArgument(_) => libc::EINVAL,
        ImgError::NoSuchProcess { .. } => libc::ENOENT,
        _ => libc::EIO,
    }
}

/// One loaded version of an image.
pub struct Loaded {
    pub key: FileKey,
    pub path: PathBuf,
    /// Mode, owner and mtime of the image file.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub reader: Result<ImageReader, String>,
    rendered: Mutex<HashMap<Node, Arc<Vec<u8>>>>,
}

impl Loaded {
    pub fn image(&self) -> Option<&Image> {
        self.reader.as_ref().ok().map(|r| r.image())
    }
    pub fn state(&self) -> ImageState<'_> {
        match self.image() {
            Some(i) => ImageState::Ok(i),
            None => ImageState::Broken,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Names {
    list: Vec<String>,
    map: HashMap<String, ImgId>,
}

type EditorSlot = Arc<Mutex<Option<(FileKey, ImageEditor)>>>;

/// The store.
pub struct Store {
    dir: PathBuf,
    names: Mutex<Names>,
    loaded: Mutex<HashMap<ImgId, (Arc<Loaded>, u64)>>,
    tick: std::sync::atomic::AtomicU64,
    editors: Mutex<HashMap<ImgId, EditorSlot>>,
    statuses: Mutex<HashMap<ImgId, String>>,
    root_status: Mutex<String>,
    /// Times an image was (re)loaded, for tests and `info`.
    pub loads: std::sync::atomic::AtomicU64,
}

/// Whether a directory entry of the store is a temp file of an image being
/// written (by `AtomicFile`: `NAME.ckpt.tmp.PID.N`).
fn is_temp(name: &str) -> bool {
    name.contains(".ckpt.tmp.")
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            names: Mutex::default(),
            loaded: Mutex::default(),
            tick: Default::default(),
            editors: Mutex::default(),
            statuses: Mutex::default(),
            root_status: Mutex::default(),
            loads: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of an image name (interned for the life of the store).
    pub fn intern(&self, name: &str) -> ImgId {
        let mut n = lock(&self.names);
        if let Some(&id) = n.map.get(name) {
            return id;
        }
        let id = ImgId(n.list.len() as u32);
        n.list.push(name.to_string());
        n.map.insert(name.to_string(), id);
        id
    }

    pub fn name(&self, id: ImgId) -> String {
        lock(&self.names).list.get(id.0 as usize).cloned().unwrap_or_default()
    }

    /// Path of the image file that shows as `/NAME/`, when it exists:
    /// `STORE/NAME.ckpt`, or a foreign file `STORE/NAME` (not hidden, not
    /// ending in `.ckpt`, no `NAME.ckpt` beside it).
    pub fn file_of(&self, name: &str) -> Option<(PathBuf, Metadata)> {
        if name.is_empty() || name == "ctl" || name.starts_with('.') || name.contains('/') || is_temp(name) {
            return None;
        }
        let p = self.dir.join(format!("{name}.ckpt"));
        if let Ok(m) = std::fs::metadata(&p) {
            return m.is_file().then_some((p, m));
        }
        if name.ends_with(".ckpt") {
            return None;
        }
        let p = self.dir.join(name);
        let m = std::fs::metadata(&p).ok()?;
        m.is_file().then_some((p, m))
    }

    /// The path an image of this name is created at by `checkpoint`.
    pub fn new_image_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ckpt"))
    }

    /// Whether `name` is taken by an image or another file of the store.
    pub fn name_taken(&self, name: &str) -> bool {
        self.dir.join(format!("{name}.ckpt")).symlink_metadata().is_ok() || self.file_of(name).is_some()
    }

    /// The images of the store, sorted by name: every regular, non-hidden
    /// file (`X.ckpt` shows as `X`, other files under their own name unless
    /// that name is taken by an `.ckpt`).
    pub fn list(&self) -> Vec<(String, ImgId)> {
        let mut names: BTreeMap<String, bool> = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let Ok(fname) = e.file_name().into_string() else { continue };
                if fname.starts_with('.') || is_temp(&fname) {
                    continue;
                }
                let is_file = match e.file_type() {
                    Ok(t) if t.is_file() => true,
                    Ok(t) if t.is_symlink() => std::fs::metadata(e.path()).map(|m| m.is_file()).unwrap_or(false),
                    _ => false,
                };
                if !is_file {
                    continue;
                }
                let (display, is_ckpt) = match fname.strip_suffix(".ckpt") {
                    Some(d) => (d.to_string(), true),
                    None => (fname.clone(), false),
                };
                if display.is_empty() || display == "ctl" || display.starts_with('.') {
                    continue;
                }
                let e = names.entry(display).or_insert(is_ckpt);
                *e |= is_ckpt;
            }
        }
        names.into_keys().map(|n| {
            let id = self.intern(&n);
            (n, id)
        }).collect()
    }

    /// Stat of the image file behind `id`.
    pub fn stat(&self, id: ImgId) -> Option<(PathBuf, Metadata)> {
        self.file_of(&self.name(id))
    }

    /// The current version of image `id`, loading it (header and metadata
    /// only) if the file changed since it was last loaded. `None` when the
    /// file is gone.
    pub fn load(&self, id: ImgId) -> Option<Arc<Loaded>> {
        let (path, meta) = self.stat(id)?;
        let key = FileKey::of(&meta);
        let tick = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut c = lock(&self.loaded);
            if let Some((l, t)) = c.get_mut(&id) {
                if l.key == key && l.path == path {
                    *t = tick;
                    return Some(l.clone());
                }
            }
        }
        self.loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reader = ImageReader::open(&path).map_err(|e| e.to_string());
        // The file may have changed while it was read: key it by what was
        // there before; a later stat that differs loads it again.
        let l = Arc::new(Loaded {
            key,
            path,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            reader,
            rendered: Mutex::default(),
        });
        let mut c = lock(&self.loaded);
        c.insert(id, (l.clone(), tick));
        if c.len() > LOADED_CACHE {
            if let Some(old) = c.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                c.remove(&old);
            }
        }
        Some(l)
    }

    /// The contents of a file node (not `mem`, not the ctl files), rendered
    /// once per version of the image.
    pub fn content(&self, node: Node, l: &Loaded) -> Option<Arc<Vec<u8>>> {
        if let Some(c) = lock(&l.rendered).get(&node) {
            return Some(c.clone());
        }
        let bytes = match (&l.reader, node) {
            (Err(e), Node::Info(id)) => format!(
                "{}: cannot read {}: {e}\n",
                self.name(id),
                l.path.display()
            )
            .into_bytes(),
            (Err(_), _) => return None,
            (Ok(r), Node::Info(_)) => ckpt_image::summary::render(r.image()).into_bytes(),
            (Ok(r), Node::Json(_)) => match ckpt_image::json::metadata_to_json(r.metadata_bytes()) {
                Ok(v) => {
                    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
                    s.push('\n');
                    s.into_bytes()
                }
                Err(e) => format!("{{\"error\": {}}}\n", serde_json::Value::String(e.to_string())).into_bytes(),
            },
            (Ok(r), n) => render::render(n, r.image())?,
        };
        let bytes = Arc::new(bytes);
        lock(&l.rendered).insert(node, bytes.clone());
        Some(bytes)
    }

    /// Last result shown by `/NAME/ctl`.
    pub fn status(&self, id: ImgId) -> String {
        lock(&self.statuses).get(&id).cloned().unwrap_or_default()
    }
    pub fn set_status(&self, id: ImgId, s: String) {
        lock(&self.statuses).insert(id, s);
    }
    pub fn add_status(&self, id: ImgId, s: &str) {
        let mut st = lock(&self.statuses);
        let e = st.entry(id).or_default();
        if !e.is_empty() && !e.ends_with('\n') {
            e.push('\n');
        }
        e.push_str(s);
    }
    /// Last result shown by `/ctl`.
    pub fn root_status(&self) -> String {
        lock(&self.root_status).clone()
    }
    pub fn set_root_status(&self, s: String) {
        *lock(&self.root_status) = s;
    }

    /// Read `len` bytes of saved memory of `pid` at `addr`. Reads stop at
    /// the first unmapped address (EIO if that is `addr` itself); pages of
    /// file mappings that were not saved come from the mapped file when it
    /// is unchanged. A read at offset 0 is end of file (address 0 is never
    /// mapped), so tools that copy the file from the start copy nothing.
    pub fn read_mem(&self, l: &Loaded, pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, Failure> {
        if addr == 0 {
            return Ok(Vec::new());
        }
        let r = l.reader.as_ref().map_err(|e| Failure::new(libc::EIO, e.clone()))?;
        let img = r.image();
        let p = img.process(pid).ok_or_else(|| Failure::new(libc::ENOENT, format!("no pid {pid}")))?;
        let ps = u64::from(img.host.page_size.max(1));
        let mut out = vec![0u8; len];
        let mut done = 0usize;
        while done < len {
            let cur = addr + done as u64;
            let Some(vma) = find_vma(&p.vmas, cur) else { break };
            let n = ((len - done) as u64).min(vma.end - cur) as usize;
            let buf = &mut out[done..done + n];
            let res = match r.read_memory(pid, cur, buf) {
                Err(ImgError::NotSaved { addr: a, .. }) if a >= cur => {
                    // [cur, a) is filled; go on page by page.
                    let mut pos = a;
                    let end = cur + n as u64;
                    let mut res = Ok(());
                    while pos < end {
                        let page_end = ((pos / ps + 1) * ps).min(end);
                        let s = &mut buf[(pos - cur) as usize..(page_end - cur) as usize];
                        match r.read_memory(pid, pos, s) {
                            Ok(()) => {}
                            Err(ImgError::NotSaved { .. }) => {
                                if let Err(e) = read_backing(vma, pos, s) {
                                    res = Err(Failure::new(
                                        libc::EIO,
                                        format!("pid {pid}: page at {pos:#x} was not saved and {e}"),
                                    ));
                                    break;
                                }
                            }
                            Err(e) => {
                                res = Err(Failure::new(errno_of(&e), e.to_string()));
                                break;
                            }
                        }
                        pos = page_end;
                    }
                    if res.is_err() {
                        // Keep what was read before the failing page.
                        let got = (pos - cur) as usize;
                        if done + got > 0 {
                            done += got;
                            break;
                        }
                    }
                    res
                }
                Err(e) => Err(Failure::new(errno_of(&e), e.to_string())),
                Ok(()) => Ok(()),
            };
            match res {
                Ok(()) => done += n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if done == 0 && len > 0 {
            return Err(Failure::new(libc::EIO, format!("pid {pid}: address {addr:#x} is not mapped")));
        }
        out.truncate(done);
        Ok(out)
    }

    fn editor_slot(&self, id: ImgId) -> EditorSlot {
        lock(&self.editors).entry(id).or_default().clone()
    }

    /// Run `f` on an editor of image `id` (reused while the file is
    /// unchanged) and commit when it returns `Ok(Some(_))`. Any error drops
    /// the editor so the next edit starts from the committed state.
    fn with_editor<T>(
        &self,
        id: ImgId,
        f: impl FnOnce(&mut ImageEditor) -> Result<Option<T>, Failure>,
    ) -> Result<Option<(T, u32)>, Failure> {
        let slot = self.editor_slot(id);
        let mut slot = lock(&slot);
        let (path, meta) = self
            .stat(id)
            .ok_or_else(|| Failure::new(libc::ENOENT, format!("image {} is gone", self.name(id))))?;
        let key = FileKey::of(&meta);
        let fresh = !matches!(&*slot, Some((k, _)) if *k == key);
        if fresh {
            *slot = None;
            let ed = ImageEditor::open(&path)
                .map_err(|e| Failure::new(errno_of(&e), format!("cannot edit {}: {e}", path.display())))?;
            *slot = Some((key, ed));
        }
        let (_, ed) = slot.as_mut().expect("editor just set");
        let out = match f(ed) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(None),
            Err(e) => {
                *slot = None;
                return Err(e);
            }
        };
        if let Err(e) = ed.commit() {
            *slot = None;
            return Err(Failure::new(errno_of(&e), format!("commit failed: {e}")));
        }
        let generation = ed.image().generation;
        match std::fs::metadata(&path) {
            Ok(m) => {
                if let Some((k, _)) = slot.as_mut() {
                    *k = FileKey::of(&m);
                }
            }
            Err(_) => *slot = None,
        }
        Ok(Some((out, generation)))
    }

    /// Apply a text edit to a file node of an image and commit it. Returns
    /// what changed and the new generation; `Ok(None)` when the text held
    /// no edit.
    pub fn edit(&self, node: Node, data: &[u8]) -> Result<Option<(String, u32)>, Failure> {
        let id = node.image().ok_or_else(|| Failure::new(libc::EINVAL, "not an image file"))?;
        self.with_editor(id, |ed| {
            crate::edit::apply(node, ed.image_mut(), data).map_err(|m| Failure::new(libc::EINVAL, m))
        })
    }

    /// Write saved memory of `pid` at `addr` and commit. Writes as much of
    /// `data` as lies in consecutive mapped memory; EIO when `addr` itself is
    /// not mapped or a partial page of an unsaved file mapping is touched.
    pub fn write_mem(&self, id: ImgId, pid: i32, addr: u64, data: &[u8]) -> Result<(usize, u32), Failure> {
        if data.is_empty() {
            return Ok((0, 0));
        }
        let r = self.with_editor(id, |ed| {
            let p = ed.image().process(pid).ok_or_else(|| Failure::new(libc::ENOENT, format!("no pid {pid}")))?;
            // The mapped prefix of [addr, addr+len).
            let mut cur = addr;
            let end = addr.saturating_add(data.len() as u64);
            while cur < end {
                match find_vma(&p.vmas, cur) {
                    Some(v) => cur = v.end.min(end),
                    None => break,
                }
            }
            let n = (cur - addr) as usize;
            if n == 0 {
                return Err(Failure::new(libc::EIO, format!("pid {pid}: address {addr:#x} is not mapped")));
            }
            ed.write_memory(pid, addr, &data[..n])
                .map_err(|e| Failure::new(errno_of(&e), format!("writing {n} bytes at {addr:#x}: {e}")))?;
            Ok(Some(n))
        })?;
        Ok(r.unwrap_or((0, 0)))
    }

    /// Forget cached state of an image (after an outside change).
    pub fn forget(&self, id: ImgId) {
        lock(&self.loaded).remove(&id);
    }
}

/// The VMA containing `addr` (VMAs sorted by start).
pub fn find_vma(vmas: &[Vma], addr: u64) -> Option<&Vma> {
    let i = vmas.partition_point(|v| v.start <= addr);
    let v = vmas.get(i.checked_sub(1)?)?;
    v.contains(addr).then_some(v)
}

/// Fill `buf` with the bytes at `addr` of a file mapping from the mapped
/// file, if it is still the file that was mapped (same device, inode, size
/// and modification time). Bytes past the end of the file read as zero.
fn read_backing(vma: &Vma, addr: u64, buf: &mut [u8]) -> Result<(), String> {
    let VmaBacking::File(fm) = &vma.backing else {
        return Err("it is not a file mapping".into());
    };
    let path = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&fm.file.path));
    let f = std::fs::File::open(path).map_err(|e| format!("the mapped file cannot be opened: {e}"))?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    let mtime_ns = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    if fm.file.deleted
        || m.ino() != fm.file.inode
        || m.dev() != fm.file.dev
        || m.size() != fm.file.size
        || (fm.file.mtime_ns != 0 && mtime_ns != i128::from(fm.file.mtime_ns))
    {
        return Err(format!("{} changed since the dump", path.display()));
    }
    let off = fm.offset + (addr - vma.start);
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Whether `node` is `mem`.
pub fn is_mem(node: Node) -> bool {
    matches!(node, Node::ProcFile(_, _, ProcFile::Mem))
}
