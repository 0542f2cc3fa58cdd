//! Chains of incremental images.
//!
//! An incremental dump stores the pages written since an earlier dump, its
//! parent, and `parent` runs for the pages that did not change: their
//! contents are those of the same pages in the parent image (which may
//! itself be incremental). `Image.imageId` names every dump (16 random
//! bytes); `Image.parent` names the parent by its imageId, with the path it
//! had when the child was written as a hint.
//!
//! Here: finding and checking the parents of an image
//! ([`crate::ImageReader::open`] does it), the runs of a process with
//! `parent` runs resolved through the chain (`resolve`), and
//! [`flatten`], which writes the whole chain as one image.

use crate::model::*;
use crate::store::Chain;
use crate::writer::ImageWriter;
use crate::{Error, ImageReader, ReadAt, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A reader over any source: how the parents of an image are held.
pub type AnyReader = ImageReader<Box<dyn ReadAt + Send + Sync>>;

/// Most images in a chain (the image and its parents): deeper chains are
/// refused rather than followed (a loop is caught earlier, by imageId).
pub const MAX_CHAIN: usize = 1024;

/// A run of a process with the level of the image whose frames hold its
/// bytes (0: the image itself, 1: its parent, ...). Never of kind `parent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRun {
    pub run: MemoryRun,
    pub level: usize,
}

/// An imageId as text (hex), for messages and `ckpt show`.
pub fn id_hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `parent` is the image `child` names as its parent.
pub fn check_parent(child: &Image, parent: &Image, at: &str) -> Result<()> {
    let want = &child.parent.image_id;
    if want.is_empty() {
        return Err(Error::Chain(
            "the image is not incremental: it has no parent".into(),
        ));
    }
    if &parent.image_id != want {
        return Err(Error::Chain(format!(
            "{at} is image {}, not the parent {} this image was dumped against",
            if parent.image_id.is_empty() {
                "without an id".to_string()
            } else {
                id_hex(&parent.image_id)
            },
            id_hex(want)
        )));
    }
    if parent.host.page_size != child.host.page_size {
        return Err(Error::Chain(format!(
            "{at} has pages of {} bytes, this image of {}",
            parent.host.page_size, child.host.page_size
        )));
    }
    Ok(())
}

/// Where to look for the parent of the image at `child_path`: the path
/// it names (relative to the child's directory when relative), then a
/// file of that name next to the child (the chain moved together).
fn candidates(child_path: &Path, parent: &ParentRef) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let dir = child_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let named = Path::new(std::ffi::OsStr::from_bytes(&parent.path));
    let mut out = Vec::new();
    if !parent.path.is_empty() {
        out.push(if named.is_absolute() {
            named.to_path_buf()
        } else {
            dir.join(named)
        });
        if let Some(name) = named.file_name() {
            let next_to = dir.join(name);
            if !out.contains(&next_to) {
                out.push(next_to);
            }
        }
    }
    out
}

/// Open the parent of `image` (read from `path`), its parent, and so on:
/// the readers opened, and why the chain stops early (None: it reached an
/// image without a parent).
pub(crate) fn open_ancestors(path: &Path, image: &Image) -> (Vec<AnyReader>, Option<String>) {
    let mut out: Vec<AnyReader> = Vec::new();
    let mut seen: Vec<Vec<u8>> = vec![image.image_id.clone()];
    let mut child_path = path.to_path_buf();
    loop {
        let child = out.last().map(|r| r.image()).unwrap_or(image);
        if child.parent.image_id.is_empty() {
            return (out, None);
        }
        if out.len() + 1 >= MAX_CHAIN {
            return (
                out,
                Some(format!(
                    "the chain of parent images is longer than {MAX_CHAIN}"
                )),
            );
        }
        let want = id_hex(&child.parent.image_id);
        let mut tried = Vec::new();
        let mut found = None;
        for cand in candidates(&child_path, &child.parent) {
            match open_one(&cand, child) {
                Ok(r) => {
                    found = Some((cand, r));
                    break;
                }
                Err(e) => tried.push(format!("{}: {e}", cand.display())),
            }
        }
        let Some((cand, r)) = found else {
            let what = if tried.is_empty() {
                "the image does not say where it is".to_string()
            } else {
                tried.join("; ")
            };
            return (out, Some(format!("parent image {want} not found ({what})")));
        };
        if seen.contains(&r.image().image_id) {
            return (
                out,
                Some(format!(
                    "the chain of parent images loops at {}",
                    cand.display()
                )),
            );
        }
        seen.push(r.image().image_id.clone());
        out.push(r);
        child_path = cand;
    }
}

/// The image at `path`, if it is the parent `child` names.
fn open_one(path: &Path, child: &Image) -> Result<AnyReader> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("opening it", e))?;
    let src: Box<dyn ReadAt + Send + Sync> = Box::new(f);
    let r = ImageReader::new(src)?;
    check_parent(child, r.image(), "the file")?;
    Ok(r)
}

/// The runs of `pid` in `chain`'s image (level 0) with `parent` runs
/// resolved through the levels above (see [`ResolvedRun`]).
pub(crate) fn resolve(chain: &dyn Chain, pid: i32) -> Result<Vec<ResolvedRun>> {
    let (_, image) = chain.level(0).map_err(Error::Chain)?;
    let p = image.process(pid).ok_or(Error::NoSuchProcess { pid })?;
    let ps = u64::from(image.host.page_size);
    let mut out = Vec::with_capacity(p.memory.len());
    // Parent runs of this level, to be resolved one level up.
    let mut pending: Vec<(u64, u64)> = Vec::new();
    for r in &p.memory {
        if r.kind == RunKind::Parent {
            pending.push((r.start, r.start + u64::from(r.pages) * ps));
        } else {
            out.push(ResolvedRun { run: *r, level: 0 });
        }
    }
    let mut level = 0;
    while !pending.is_empty() {
        level += 1;
        let (_, img) = chain
            .level(level)
            .map_err(|why| crate::store::parent_error(pid, pending[0].0, &why))?;
        let Some(pp) = img.process(pid) else {
            return Err(Error::Chain(format!(
                "pid {pid}: the parent image (level {level} of the chain) has no process {pid}"
            )));
        };
        let mut next = Vec::new();
        for &(s, e) in &pending {
            let mut covered = s;
            let first = pp
                .memory
                .partition_point(|r| r.start + u64::from(r.pages) * ps <= s);
            for r in pp.memory[first..].iter().take_while(|r| r.start < e) {
                let (a, b) = (r.start.max(s), (r.start + u64::from(r.pages) * ps).min(e));
                if a >= b {
                    continue;
                }
                covered = covered.max(b);
                if r.kind == RunKind::Parent {
                    next.push((a, b));
                    continue;
                }
                let skip = (a - r.start) / ps;
                let run = MemoryRun {
                    start: a,
                    pages: ((b - a) / ps) as u32,
                    frame_offset: if r.kind == RunKind::Data {
                        r.frame_offset + (skip * ps) as u32
                    } else {
                        r.frame_offset
                    },
                    ..*r
                };
                out.push(ResolvedRun { run, level });
            }
            let _ = covered;
        }
        pending = next;
    }
    out.sort_by_key(|r| r.run.start);
    Ok(out)
}

/// Write the image of `reader` (with its chain) as one image without a
/// parent to `out`: the same metadata and imageId, every page it holds.
/// Frames are copied as they are stored (not decoded again): the image's
/// own frames all, in order (so its blobs keep their frame numbers), then
/// the frames of its parents that hold pages it uses. Returns the output.
pub fn flatten<R: ReadAt, W: Write>(reader: &ImageReader<R>, out: W) -> Result<W> {
    if let Some(e) = reader.chain_error() {
        return Err(Error::Chain(format!("cannot flatten: {e}")));
    }
    let image = reader.image();
    let opts = crate::WriteOptions {
        page_size: image.host.page_size,
        ..Default::default()
    };
    let mut w = ImageWriter::new(out, opts)?;
    for i in 0..image.frames.len() {
        w.copy_frame(reader.source(), &image.frames, i as u32)?;
    }
    let mut copied: HashMap<(usize, u32), u32> = HashMap::new();
    for p in &image.processes {
        for rr in reader.resolved_memory(p.pid)? {
            let mut run = rr.run;
            if run.kind == RunKind::Data && rr.level > 0 {
                let a = &reader.ancestors()[rr.level - 1];
                run.frame = match copied.get(&(rr.level, run.frame)) {
                    Some(&f) => f,
                    None => {
                        let f = w.copy_frame(a.source(), &a.image().frames, run.frame)?;
                        copied.insert((rr.level, run.frame), f);
                        f
                    }
                };
            }
            w.add_run(p.pid, run)?;
        }
    }
    let mut flat = image.clone();
    let chain_len = reader.ancestors().len() + 1;
    flat.parent = ParentRef::default();
    flat.notes.push(Note {
        key: "ckpt.flattened".into(),
        value: format!("from a chain of {chain_len} images"),
    });
    w.finish(flat)
}
