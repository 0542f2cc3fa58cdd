//! The store directory: which images exist, loading them lazily (header and
//! metadata only, cached by the file's identity), rendering and caching
//! their files, reading memory, and crash-safe edits through
//! [`ImageEditor`]. No FUSE here: everything is testable on a plain
//! directory.

use crate::memio::{FrameCache, Prefetch};
use crate::render;
use crate::tree::{ImageState, ImgId, Node, ProcFile};
use ckpt_image::{Error as ImgError, Image, ImageEditor, ImageReader, Vma};
use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many loaded images (metadata + rendered files) are kept.
const LOADED_CACHE: usize = 64;

/// Identity of one version of an image file: changes with every commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
        Failure {
            errno,
            msg: msg.into(),
        }
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
    pub id: ImgId,
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
    prefetch: Mutex<Option<std::sync::mpsc::SyncSender<Prefetch>>>,
    frames: Arc<FrameCache>,
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
            prefetch: Mutex::default(),
            frames: Arc::default(),
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
        lock(&self.names)
            .list
            .get(id.0 as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// Path of the image file that shows as `/NAME/`, when it exists:
    /// `STORE/NAME.ckpt`, or a foreign file `STORE/NAME` (not hidden, not
    /// ending in `.ckpt`, no `NAME.ckpt` beside it).
    pub fn file_of(&self, name: &str) -> Option<(PathBuf, Metadata)> {
        if name.is_empty()
            || name == "ctl"
            || name.starts_with('.')
            || name.contains('/')
            || is_temp(name)
        {
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
        self.dir
            .join(format!("{name}.ckpt"))
            .symlink_metadata()
            .is_ok()
            || self.file_of(name).is_some()
    }

    /// The images of the store, sorted by name: every regular, non-hidden
    /// file (`X.ckpt` shows as `X`, other files under their own name unless
    /// that name is taken by an `.ckpt`).
    pub fn list(&self) -> Vec<(String, ImgId)> {
        let mut names: BTreeMap<String, bool> = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let Ok(fname) = e.file_name().into_string() else {
                    continue;
                };
                if fname.starts_with('.') || is_temp(&fname) {
                    continue;
                }
                let is_file = match e.file_type() {
                    Ok(t) if t.is_file() => true,
                    Ok(t) if t.is_symlink() => std::fs::metadata(e.path())
                        .map(|m| m.is_file())
                        .unwrap_or(false),
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
        names
            .into_keys()
            .map(|n| {
                let id = self.intern(&n);
                (n, id)
            })
            .collect()
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
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reader = ImageReader::open(&path).map_err(|e| e.to_string());
        // The file may have changed while it was read: key it by what was
        // there before; a later stat that differs loads it again.
        let l = Arc::new(Loaded {
            id,
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
            (Err(e), Node::Info(id)) => {
                format!("{}: cannot read {}: {e}\n", self.name(id), l.path.display()).into_bytes()
            }
            (Err(_), _) => return None,
            (Ok(r), Node::Info(_)) => ckpt_image::summary::render(r.image()).into_bytes(),
            (Ok(r), Node::Json(_)) => {
                match ckpt_image::json::metadata_to_json(r.metadata_bytes()) {
                    Ok(v) => {
                        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
                        s.push('\n');
                        s.into_bytes()
                    }
                    Err(e) => format!(
                        "{{\"error\": {}}}\n",
                        serde_json::Value::String(e.to_string())
                    )
                    .into_bytes(),
                }
            }
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
    pub fn read_mem(
        &self,
        l: &Loaded,
        pid: i32,
        addr: u64,
        len: usize,
    ) -> Result<Vec<u8>, Failure> {
        let mut out = vec![0u8; len];
        let n = self.read_mem_into(l, pid, addr, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// [`Store::read_mem`] into `out` (its whole length is asked for);
    /// returns how many bytes were read.
    pub fn read_mem_into(
        &self,
        l: &Loaded,
        pid: i32,
        addr: u64,
        out: &mut [u8],
    ) -> Result<usize, Failure> {
        crate::memio::read(&self.frames, l, pid, addr, out)
    }

    /// Decode the frames of `[from, to)` of `pid` in the background, so a
    /// sequential reader finds them decoded.
    pub fn prefetch(&self, l: &Arc<Loaded>, pid: i32, from: u64, to: u64) {
        let mut tx = lock(&self.prefetch);
        if tx.is_none() {
            let (s, r) = std::sync::mpsc::sync_channel::<Prefetch>(1);
            let cache = self.frames.clone();
            let spawned = std::thread::Builder::new()
                .name("ckptfs-prefetch".into())
                .spawn(move || crate::memio::prefetcher(cache, r));
            if spawned.is_err() {
                return;
            }
            *tx = Some(s);
        }
        if let Some(tx) = tx.as_ref() {
            let _ = tx.try_send(Prefetch {
                loaded: l.clone(),
                pid,
                from,
                to,
            });
        }
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
        let (path, meta) = self.stat(id).ok_or_else(|| {
            Failure::new(libc::ENOENT, format!("image {} is gone", self.name(id)))
        })?;
        let key = FileKey::of(&meta);
        let fresh = !matches!(&*slot, Some((k, _)) if *k == key);
        if fresh {
            *slot = None;
            let ed = ImageEditor::open(&path).map_err(|e| {
                Failure::new(errno_of(&e), format!("cannot edit {}: {e}", path.display()))
            })?;
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
        let id = node
            .image()
            .ok_or_else(|| Failure::new(libc::EINVAL, "not an image file"))?;
        self.with_editor(id, |ed| {
            crate::edit::apply(node, ed.image_mut(), data)
                .map_err(|m| Failure::new(libc::EINVAL, m))
        })
    }

    /// Whether `data` would be accepted as an edit of `node` (parsed
    /// against a copy of the current image; nothing is written).
    pub fn check_edit(&self, node: Node, data: &[u8]) -> Result<(), Failure> {
        let id = node
            .image()
            .ok_or_else(|| Failure::new(libc::EINVAL, "not an image file"))?;
        let l = self
            .load(id)
            .ok_or_else(|| Failure::new(libc::ENOENT, "the image is gone"))?;
        let mut img = l
            .image()
            .ok_or_else(|| Failure::new(libc::EIO, "the image cannot be read"))?
            .clone();
        crate::edit::apply(node, &mut img, data)
            .map(drop)
            .map_err(|m| Failure::new(libc::EINVAL, m))
    }

    /// Write saved memory of `pid` at `addr` and commit. Writes as much of
    /// `data` as lies in consecutive mapped memory; EIO when `addr` itself is
    /// not mapped or a partial page of an unsaved file mapping is touched.
    pub fn write_mem(
        &self,
        id: ImgId,
        pid: i32,
        addr: u64,
        data: &[u8],
    ) -> Result<(usize, u32), Failure> {
        if data.is_empty() {
            return Ok((0, 0));
        }
        let r = self.with_editor(id, |ed| {
            let p = ed
                .image()
                .process(pid)
                .ok_or_else(|| Failure::new(libc::ENOENT, format!("no pid {pid}")))?;
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
                return Err(Failure::new(
                    libc::EIO,
                    format!("pid {pid}: address {addr:#x} is not mapped"),
                ));
            }
            ed.write_memory(pid, addr, &data[..n]).map_err(|e| {
                Failure::new(errno_of(&e), format!("writing {n} bytes at {addr:#x}: {e}"))
            })?;
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

/// Whether `node` is `mem`.
pub fn is_mem(node: Node) -> bool {
    matches!(node, Node::ProcFile(_, _, ProcFile::Mem))
}
