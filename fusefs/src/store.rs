//! The store directory: which images exist, loading them lazily (header and
//! metadata only, cached by the file's identity), rendering and caching
//! their files, reading memory and saved contents, crash-safe edits
//! through [`ImageEditor`] and compaction, and the `errors` log of each
//! image. No FUSE here: everything is testable on a plain directory.

use crate::imagefile::{ImageFile, Reader};
use crate::memio::{self, Backing, Decoded, FrameCache, Prefetcher, ProcIndex};
use crate::render;
use crate::tree::{fd_data, FdData, ImageState, ImgId, Node};
use ckpt_image::{Error as ImgError, Image, ImageEditor};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many loaded images (metadata + rendered files) are kept.
const LOADED_CACHE: usize = 64;
/// How many lines `/NAME/errors` keeps.
const ERRORS_KEPT: usize = 200;

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

fn img_failure(e: &ImgError, what: impl std::fmt::Display) -> Failure {
    Failure::new(
        errno_of(e),
        format!("{what}: {}", ckpt_image::error_chain(e)),
    )
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
    pub reader: Result<Reader, String>,
    rendered: Mutex<HashMap<Node, Arc<Vec<u8>>>>,
    indexes: Mutex<HashMap<i32, Arc<ProcIndex>>>,
    backings: Mutex<HashMap<(i32, u64), Backing>>,
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

    /// Where the data of `pid` is and how much is stored (built once).
    pub fn index(&self, pid: i32) -> Option<Arc<ProcIndex>> {
        let img = self.image()?;
        let p = img.process(pid)?;
        let mut m = lock(&self.indexes);
        Some(
            m.entry(pid)
                .or_insert_with(|| Arc::new(ProcIndex::build(img, p)))
                .clone(),
        )
    }

    /// The mapped file of the file mapping of `pid` at `start` (opened and
    /// checked once per loaded version).
    pub fn backing(&self, pid: i32, start: u64, open: impl FnOnce() -> Backing) -> Backing {
        lock(&self.backings)
            .entry((pid, start))
            .or_insert_with(open)
            .clone()
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
    /// The result of the last edit of each image (shown after the ctl
    /// answer, never in its place).
    edit_statuses: Mutex<HashMap<ImgId, String>>,
    errors: Mutex<HashMap<ImgId, VecDeque<String>>>,
    root_status: Mutex<String>,
    ahead: Arc<Prefetcher>,
    frames: Arc<FrameCache>,
    /// Times an image was (re)loaded, for tests and `info`.
    pub loads: std::sync::atomic::AtomicU64,
}

/// Whether a directory entry of the store is a temp file of an image being
/// written (by `AtomicFile`: `NAME.ckpt.tmp.PID.N`).
fn is_temp(name: &str) -> bool {
    name.contains(".ckpt.tmp.")
}

/// A lock on an image file that keeps `ckpt compact` (and other ckptfs
/// mounts) out while an edit or a compaction runs.
struct FileLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Take the exclusive lock of the image file at `path`, making sure the
/// lock is on the file that is at `path` once it is held (a compaction
/// replaces the file). Returns its stat.
fn lock_file(path: &Path) -> Result<(FileLock, Metadata), Failure> {
    loop {
        let f = std::fs::File::open(path).map_err(|e| {
            Failure::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("opening {}: {e}", path.display()),
            )
        })?;
        let l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Failure::new(e as i32, format!("locking {}: {e}", path.display())))?;
        let held = l
            .metadata()
            .map_err(|e| Failure::new(libc::EIO, format!("stat of {}: {e}", path.display())))?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => return Ok((FileLock(l), m)),
            Ok(_) => continue, // replaced meanwhile: lock the new one
            Err(e) => {
                return Err(Failure::new(
                    libc::ENOENT,
                    format!("{} is gone: {e}", path.display()),
                ))
            }
        }
    }
}

/// One line of an `errors` file: UTC time, then what.
fn stamped(what: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    // "2026-12-06T23:11:42Z" -> "2026-12-06T23:11:42.973Z"
    let secs = ckpt_image::summary::iso8601_utc(ns - ns % 1_000_000_000);
    let ms = ns % 1_000_000_000 / 1_000_000;
    format!("{}.{ms:03}Z {what}", secs.trim_end_matches('Z'))
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        let frames = Arc::new(FrameCache::default());
        Store {
            dir: dir.to_path_buf(),
            names: Mutex::default(),
            loaded: Mutex::default(),
            tick: Default::default(),
            editors: Mutex::default(),
            statuses: Mutex::default(),
            edit_statuses: Mutex::default(),
            errors: Mutex::default(),
            root_status: Mutex::default(),
            ahead: Prefetcher::new(frames.clone()),
            frames,
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
        let t = std::time::Instant::now();
        let reader =
            Reader::open_as(&path, ImageFile::new).map_err(|e| ckpt_image::error_chain(&e));
        match &reader {
            Ok(r) => tracing::debug!(
                image = %self.name(id),
                generation = r.image().generation,
                ms = crate::ops::ms(t),
                "loaded"
            ),
            Err(e) => tracing::warn!(image = %self.name(id), "cannot be read: {e}"),
        }
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
            indexes: Mutex::default(),
            backings: Mutex::default(),
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

    /// The contents of a file node (not `mem`, not the map files, not the
    /// ctl and errors files), rendered once per version of the image.
    pub fn content(&self, node: Node, l: &Loaded) -> Option<Arc<Vec<u8>>> {
        if let Some(c) = lock(&l.rendered).get(&node) {
            return Some(c.clone());
        }
        let bytes = match (&l.reader, node) {
            (Err(e), Node::Info(id)) => {
                format!("{}: cannot read {}: {e}\n", self.name(id), l.path.display()).into_bytes()
            }
            (Err(_), _) => return None,
            (Ok(r), Node::Info(_)) => {
                let mut s = match ckpt_image::summary::file_facts(r) {
                    Ok(f) => ckpt_image::summary::render_file(r.image(), &f),
                    Err(_) => ckpt_image::summary::render(r.image()),
                };
                s.push_str(&ckpt_image::summary::chain_lines(r));
                s.into_bytes()
            }
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
    /// Result of the last edit, shown by `/NAME/ctl` after the last command's.
    pub fn edit_status(&self, id: ImgId) -> String {
        lock(&self.edit_statuses)
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }
    pub fn set_edit_status(&self, id: ImgId, s: String) {
        lock(&self.edit_statuses).insert(id, s);
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

    /// Note a refused read or write of image `id` in its `errors` file and
    /// in the log. `what` says what was tried on which file (`read 42/mem
    /// at 0x1000 (4096 bytes)`), `why` why it failed.
    pub fn record_error(&self, id: ImgId, what: &str, why: &str) {
        let image = self.name(id);
        tracing::warn!(image = %image, "{what}: {why}");
        let mut e = lock(&self.errors);
        let q = e.entry(id).or_default();
        if q.len() >= ERRORS_KEPT {
            q.pop_front();
        }
        q.push_back(stamped(&format!("{what}: {why}")));
    }

    /// The text of `/NAME/errors`.
    pub fn errors_text(&self, id: ImgId) -> Vec<u8> {
        let e = lock(&self.errors);
        let mut s = String::new();
        for l in e.get(&id).into_iter().flatten() {
            s.push_str(l);
            s.push('\n');
        }
        s.into_bytes()
    }

    /// Read `out.len()` bytes of saved memory of `pid` at `addr` (see
    /// [`memio::read`]).
    pub fn read_mem_into(
        &self,
        l: &Loaded,
        pid: i32,
        addr: u64,
        out: &mut [u8],
        short_ok: bool,
    ) -> Result<usize, Failure> {
        memio::read(&self.frames, l, pid, addr, out, short_ok)
    }

    /// See [`memio::in_one_frame`].
    pub fn in_one_frame(
        &self,
        l: &Loaded,
        pid: i32,
        addr: u64,
        len: u64,
    ) -> Option<(Arc<Decoded>, usize)> {
        memio::in_one_frame(&self.frames, l, pid, addr, len)
    }

    /// The saved contents behind fd `fd` of `pid` (`fds/N.data`): how many
    /// bytes, and a read at `off` into `out` when `out` is given.
    pub fn read_fd_data(
        &self,
        l: &Loaded,
        pid: i32,
        fd: i32,
        off: u64,
        out: &mut [u8],
    ) -> Result<usize, Failure> {
        let r = l
            .reader
            .as_ref()
            .map_err(|e| Failure::new(libc::EIO, e.clone()))?;
        let img = r.image();
        let data = img
            .process(pid)
            .and_then(|p| p.fds.iter().find(|f| f.fd == fd))
            .and_then(|f| img.file(f.file))
            .and_then(|f| fd_data(img, &f.kind))
            .ok_or_else(|| Failure::new(libc::ENOENT, format!("fd {fd} has no saved contents")))?;
        match data {
            FdData::Bytes(b) => {
                let s = (off.min(b.len() as u64)) as usize;
                let n = out.len().min(b.len() - s);
                out[..n].copy_from_slice(&b[s..s + n]);
                Ok(n)
            }
            FdData::Blob(b) => memio::read_blob(&self.frames, l, r, b, off, out),
            FdData::Sparse {
                blob,
                extents,
                size,
            } => {
                let n = out.len().min(size.saturating_sub(off) as usize);
                let out = &mut out[..n];
                out.fill(0);
                let end = off + n as u64;
                let mut at = 0u64; // blob offset of the current extent
                for e in extents {
                    let (s, t) = (e.offset.max(off), (e.offset + e.length).min(end));
                    if s < t {
                        let dst = &mut out[(s - off) as usize..(t - off) as usize];
                        memio::read_blob(&self.frames, l, r, blob, at + (s - e.offset), dst)?;
                    }
                    at += e.length;
                }
                Ok(n)
            }
        }
    }

    /// A read of `[addr, addr + len)` of `pid` was answered: decode the
    /// next frames in the background when it is part of a sequential read.
    pub fn after_read(&self, l: &Arc<Loaded>, pid: i32, addr: u64, len: u64) {
        self.ahead.after_read(l, pid, addr, len);
    }

    fn editor_slot(&self, id: ImgId) -> EditorSlot {
        lock(&self.editors).entry(id).or_default().clone()
    }

    /// Run `f` on an editor of image `id` (reused while the file is
    /// unchanged), holding the file's lock, and commit when it returns
    /// `Ok(Some(_))`. Any error drops the editor so the next edit starts
    /// from the committed state.
    fn with_editor<T>(
        &self,
        id: ImgId,
        f: impl FnOnce(&mut ImageEditor) -> Result<Option<T>, Failure>,
    ) -> Result<Option<(T, u32)>, Failure> {
        let slot = self.editor_slot(id);
        let mut slot = lock(&slot);
        let (path, _) = self.stat(id).ok_or_else(|| {
            Failure::new(libc::ENOENT, format!("image {} is gone", self.name(id)))
        })?;
        let (_flock, meta) = lock_file(&path)?;
        let key = FileKey::of(&meta);
        let fresh = !matches!(&*slot, Some((k, _)) if *k == key);
        if fresh {
            *slot = None;
            let ed = ImageEditor::open(&path)
                .map_err(|e| img_failure(&e, format_args!("cannot edit {}", path.display())))?;
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
        let t = std::time::Instant::now();
        if let Err(e) = ed.commit() {
            *slot = None;
            return Err(img_failure(&e, "commit failed"));
        }
        let generation = ed.image().generation;
        tracing::debug!(image = %self.name(id), generation, ms = crate::ops::ms(t), "committed");
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

    /// Write whole pages of `pid` (contiguous ranges of page-aligned
    /// bytes, already checked to lie in mappings an image can hold) and
    /// commit them as one generation. Returns the bytes written and the
    /// generation.
    pub fn write_pages(
        &self,
        id: ImgId,
        pid: i32,
        ranges: &[(u64, Vec<u8>)],
    ) -> Result<(u64, u32), Failure> {
        let total: u64 = ranges.iter().map(|(_, d)| d.len() as u64).sum();
        if total == 0 {
            return Ok((0, 0));
        }
        let r = self.with_editor(id, |ed| {
            for (addr, data) in ranges {
                ed.write_memory(pid, *addr, data).map_err(|e| {
                    img_failure(
                        &e,
                        format_args!("writing {} bytes at {addr:#x}", data.len()),
                    )
                })?;
            }
            Ok(Some(()))
        })?;
        Ok((total, r.map(|(_, g)| g).unwrap_or(0)))
    }

    /// Rewrite image `id` keeping only its live generation (the ctl
    /// `compact` command), with its editor and lock held.
    pub fn compact(&self, id: ImgId) -> Result<ckpt_image::compact::Compacted, Failure> {
        let slot = self.editor_slot(id);
        let mut slot = lock(&slot);
        let (path, _) = self.stat(id).ok_or_else(|| {
            Failure::new(libc::ENOENT, format!("image {} is gone", self.name(id)))
        })?;
        let (_flock, _) = lock_file(&path)?;
        *slot = None;
        let t = std::time::Instant::now();
        let c = ckpt_image::compact::compact(&path)
            .map_err(|e| img_failure(&e, format_args!("cannot compact {}", path.display())))?;
        tracing::info!(
            image = %self.name(id),
            before = c.before,
            after = c.after,
            ms = crate::ops::ms(t),
            "compacted"
        );
        Ok(c)
    }

    /// Forget cached state of an image (after an outside change).
    pub fn forget(&self, id: ImgId) {
        lock(&self.loaded).remove(&id);
    }
}
