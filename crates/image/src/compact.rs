//! Dead space and compaction.
//!
//! Edits append (spec/format.md section 5): the frames and metadata of
//! earlier generations stay in the file, unreferenced. [`usage`] says how
//! much of a file the live generation uses; [`compact`] rewrites an image
//! with only that, crash-safely (a temp file, fsync, rename).

use crate::atomic::AtomicFile;
use crate::codec;
use crate::container::*;
use crate::model::*;
use crate::reader::ImageReader;
use crate::store::{check_frame_record, frame_record};
use crate::validate::validate;
use crate::{Error, ReadAt, Result, FORMAT_MINOR};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How the bytes of an image file are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Length of the file.
    pub file_len: u64,
    /// Bytes the live generation needs: the header, the frame records its
    /// runs and blobs reference, its metadata record and its commit.
    pub live: u64,
    /// Frames the live generation references, of `frames` listed.
    pub frames_live: usize,
    pub frames: usize,
}

impl Usage {
    /// Bytes no reader of the live generation looks at: frames and
    /// metadata of earlier generations, a torn tail.
    pub fn dead(&self) -> u64 {
        self.file_len.saturating_sub(self.live)
    }
}

/// The frame indices the image references (data runs and blobs), sorted.
pub fn referenced_frames(image: &Image) -> BTreeSet<u32> {
    let mut used = BTreeSet::new();
    for p in &image.processes {
        used.extend(
            p.memory
                .iter()
                .filter(|r| r.kind == RunKind::Data)
                .map(|r| r.frame),
        );
    }
    for f in &image.files {
        match &f.kind {
            FileKind::Regular(r) => used.extend(&r.contents.frames),
            FileKind::MemFd(m) => used.extend(&m.contents.frames),
            _ => {}
        }
    }
    used
}

fn record_len(payload: u64) -> u64 {
    RECORD_HEADER_LEN + payload + pad8(payload)
}

/// How much of the file behind `reader` the live generation uses.
pub fn usage<R: ReadAt>(reader: &ImageReader<R>) -> Result<Usage> {
    let image = reader.image();
    let used = referenced_frames(image);
    let frames: u64 = used
        .iter()
        .filter_map(|&i| image.frames.get(i as usize))
        .map(|f| record_len(u64::from(f.stored_size)))
        .sum();
    let live =
        HEADER_LEN + frames + record_len(reader.metadata_bytes().len() as u64) + COMMIT_RECORD_LEN;
    Ok(Usage {
        file_len: reader.source().len()?,
        live,
        frames_live: used.len(),
        frames: image.frames.len(),
    })
}

/// What [`compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// File length before and after.
    pub before: u64,
    pub after: u64,
    /// Frames kept and dropped.
    pub frames_kept: usize,
    pub frames_dropped: usize,
    /// The generation (unchanged by compaction).
    pub generation: u32,
}

/// Identity of the file at a path, to notice a change.
fn stamp(m: &std::fs::Metadata) -> (u64, u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())
}

/// Rewrite the image at `path` keeping only its live generation: the same
/// header, the referenced frames' records byte for byte (CRC-checked),
/// the metadata with the frames renumbered (same generation), a commit.
/// Crash-safe: written to a temp file in the same directory with the
/// image's mode and owner, fsynced, renamed over `path`, directory fsynced.
/// The caller must keep other writers away (ckptfs and `ckpt compact` hold
/// an exclusive lock on the file); a change of the file seen before the
/// rename aborts without touching it.
pub fn compact(path: &Path) -> Result<Compacted> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let reader = ImageReader::new(file)?;
    let (major, minor) = reader.format_version();
    if minor > FORMAT_MINOR || reader.image().format_minor > FORMAT_MINOR {
        return Err(Error::NewerMinor {
            major,
            minor: minor.max(reader.image().format_minor),
            supported_minor: FORMAT_MINOR,
        });
    }
    let mut image = reader.image().clone();
    let used: Vec<u32> = referenced_frames(&image).into_iter().collect();

    let mut out = AtomicFile::create(path)?;
    out.set_mode_and_owner(meta.mode() & 0o7777, meta.uid(), meta.gid())?;
    let werr = |e| {
        Error::io(
            format!("writing the compacted copy of {}", path.display()),
            e,
        )
    };
    out.write_all(&encode_header(major, minor)).map_err(werr)?;
    let mut pos = HEADER_LEN;
    let mut remap = vec![u32::MAX; image.frames.len()];
    let mut frames = Vec::with_capacity(used.len());
    let mut rec = Vec::new();
    for &i in &used {
        let (f, rec_off, end) = frame_record(&image.frames, i)?;
        rec.resize((end - rec_off) as usize, 0);
        reader.source().read_at(&mut rec, rec_off)?;
        check_frame_record(f, i, rec_off, &rec)?;
        let pad = pad8(u64::from(f.stored_size)) as usize;
        out.write_all(&rec).map_err(werr)?;
        out.write_all(&[0u8; 8][..pad]).map_err(werr)?;
        remap[i as usize] = frames.len() as u32;
        frames.push(Frame {
            offset: pos + RECORD_HEADER_LEN,
            ..*f
        });
        pos += rec.len() as u64 + pad as u64;
    }
    renumber(&mut image, &remap, frames);

    validate(&image, pos)?;
    let msg = codec::encode(&image);
    out.write_all(&encode_record_header(KIND_METADATA, &msg))
        .and_then(|_| out.write_all(&msg))
        .and_then(|_| out.write_all(&[0u8; 8][..pad8(msg.len() as u64) as usize]))
        .map_err(werr)?;
    let metadata_offset = pos;
    pos += record_len(msg.len() as u64);
    let commit = Commit {
        metadata_offset,
        metadata_len: msg.len() as u64,
        generation: u64::from(image.generation),
        end: pos + COMMIT_RECORD_LEN,
    };
    out.write_all(&encode_commit_record(&commit))
        .map_err(werr)?;

    let now =
        std::fs::metadata(path).map_err(|e| Error::io(format!("stat of {}", path.display()), e))?;
    if stamp(&now) != stamp(&meta) {
        return Err(Error::InvalidArgument(format!(
            "{} changed while it was being compacted; it was left as it is",
            path.display()
        )));
    }
    out.commit()?;
    Ok(Compacted {
        before: meta.len(),
        after: commit.end,
        frames_kept: used.len(),
        frames_dropped: reader.image().frames.len() - used.len(),
        generation: image.generation,
    })
}

/// Point the runs and blobs of `image` at the renumbered frames.
fn renumber(image: &mut Image, remap: &[u32], frames: Vec<Frame>) {
    image.frames = frames;
    let new = |i: &mut u32| *i = remap[*i as usize];
    for p in &mut image.processes {
        for r in p.memory.iter_mut().filter(|r| r.kind == RunKind::Data) {
            new(&mut r.frame);
        }
    }
    for f in &mut image.files {
        match &mut f.kind {
            FileKind::Regular(r) => r.contents.frames.iter_mut().for_each(new),
            FileKind::MemFd(m) => m.contents.frames.iter_mut().for_each(new),
            _ => {}
        }
    }
}
