//! Crash-safe in-place editing of an image (append-only; see spec/format.md).

use crate::codec;
use crate::container::*;
use crate::model::*;
use crate::reader::parse;
use crate::store::{self, FrameCache};
use crate::validate::validate;
use crate::writer::{is_zero, FrameCoder};
use crate::{Compression, Error, Result, FORMAT_MINOR};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of the frames appended by [`ImageEditor::write_memory`].
const EDIT_FRAME: usize = 1 << 20;

/// Crash-safe in-place editing: new frames, metadata and a commit record are
/// appended; until [`ImageEditor::commit`] returns, readers (and a crash)
/// see the previous state. A single editor per file is assumed.
pub struct ImageEditor {
    file: File,
    path: PathBuf,
    image: Image,
    /// Where the next record goes (after the last commit, plus uncommitted frames).
    append_pos: u64,
    cache: FrameCache,
    coder: FrameCoder,
}

impl ImageEditor {
    /// Open `path` for editing: find the last complete commit and truncate a
    /// torn tail after it before anything is appended.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {} for editing", path.display()), e))?;
        let parsed = parse(&file)?;
        let (major, minor) = parsed.version;
        let (image, committed, clean) = (parsed.image, parsed.committed_len, parsed.clean);
        if minor > FORMAT_MINOR || image.format_minor > FORMAT_MINOR {
            return Err(Error::NewerMinor {
                major,
                minor: minor.max(image.format_minor),
                supported_minor: FORMAT_MINOR,
            });
        }
        if !clean {
            file.set_len(committed)
                .and_then(|_| file.sync_all())
                .map_err(|e| {
                    Error::io(
                        format!(
                            "truncating the torn tail of {} at {committed}",
                            path.display()
                        ),
                        e,
                    )
                })?;
        }
        // Edited pages of a 1.0 image are stored with zstd, which 1.0
        // readers know: an edit does not make an image unreadable to them.
        let compression = if image.format_minor == 0 {
            Compression::Zstd
        } else {
            Compression::Fast
        };
        Ok(ImageEditor {
            coder: FrameCoder::new(compression)?,
            file,
            path: path.to_path_buf(),
            image,
            append_pos: committed,
            cache: FrameCache::default(),
        })
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The model to change; the changes are written by [`ImageEditor::commit`].
    pub fn image_mut(&mut self) -> &mut Image {
        &mut self.image
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read memory as [`crate::ImageReader::read_memory`], including uncommitted writes.
    pub fn read_memory(&self, pid: i32, addr: u64, buf: &mut [u8]) -> Result<()> {
        store::read_memory(&self.file, &self.image, &self.cache, pid, addr, buf)
    }

    /// The bytes of a blob.
    pub fn read_blob(&self, blob: &Blob) -> Result<Vec<u8>> {
        store::read_blob(&self.file, &self.image.frames, blob)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, self.append_pos)
            .map_err(|e| {
                Error::io(
                    format!(
                        "appending to {} at offset {}",
                        self.path.display(),
                        self.append_pos
                    ),
                    e,
                )
            })?;
        self.append_pos += bytes.len() as u64;
        Ok(())
    }

    /// Append one frame; returns its index.
    fn append_frame(&mut self, data: Vec<u8>) -> Result<u32> {
        let e = self.coder.encode(data, Vec::new());
        let len = e.stored.len() as u64;
        let header = encode_record_header_crc(KIND_FRAME, len, e.crc32);
        let mut rec = Vec::with_capacity(RECORD_HEADER_LEN as usize + e.stored.len() + 8);
        rec.extend_from_slice(&header);
        rec.extend_from_slice(&e.stored);
        rec.resize(rec.len() + pad8(len) as usize, 0);
        let offset = self.append_pos + RECORD_HEADER_LEN;
        self.append(&rec)?;
        let index = u32::try_from(self.image.frames.len())
            .map_err(|_| Error::InvalidArgument("too many frames in the image".into()))?;
        self.image.frames.push(Frame {
            offset,
            stored_size: len as u32,
            size: e.size,
            codec: e.codec,
            crc32: e.crc32,
        });
        Ok(index)
    }

    /// Store a byte string in new frames (uncommitted until [`ImageEditor::commit`]);
    /// returns the Blob to put in the model (e.g. new memfd contents).
    pub fn add_blob(&mut self, data: &[u8]) -> Result<Blob> {
        let mut blob = Blob {
            size: data.len() as u64,
            frames: Vec::new(),
        };
        for chunk in data.chunks(EDIT_FRAME) {
            blob.frames.push(self.append_frame(chunk.to_vec())?);
        }
        Ok(blob)
    }

    /// Overwrite saved memory of `pid` (any length, any alignment) inside its
    /// mapped VMAs: the touched pages are appended as new frames and the runs
    /// are split around them. A partial page of a file-backed mapping whose
    /// contents were not saved cannot be written ([`Error::NotSaved`]).
    pub fn write_memory(&mut self, pid: i32, addr: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let ps = u64::from(self.image.host.page_size);
        if !ps.is_power_of_two() {
            return Err(Error::Invalid(format!(
                "host.pageSize {ps} is not a power of two"
            )));
        }
        let p = store::process(&self.image, pid)?;
        let end = addr.checked_add(data.len() as u64).ok_or(Error::Unmapped {
            pid,
            addr: u64::MAX,
        })?;
        // Every byte must be mapped.
        let mut cur = addr;
        while cur < end {
            let v = store::find_vma(p, cur).ok_or(Error::Unmapped { pid, addr: cur })?;
            cur = v.end;
        }
        let first = addr - addr % ps;
        let last = end.div_ceil(ps) * ps;
        let span = usize::try_from(last - first).map_err(|_| {
            Error::InvalidArgument(format!("write of {} bytes is too large", data.len()))
        })?;
        let mut pages = vec![0u8; span];
        let head = (addr - first) as usize;
        if head != 0 {
            self.read_memory(pid, first, &mut pages[..ps as usize])?;
        }
        if end % ps != 0 {
            // the last page is partially written (may be the first page too)
            let tail_start = span - ps as usize;
            self.read_memory(pid, last - ps, &mut pages[tail_start..])?;
        }
        pages[head..head + data.len()].copy_from_slice(data);

        let new_runs = self.runs_of_pages(first, ps, &pages)?;

        // Splice: keep the parts of old runs outside [first, last).
        let p = self
            .image
            .process_mut(pid)
            .ok_or(Error::NoSuchProcess { pid })?;
        let old = std::mem::take(&mut p.memory);
        p.memory = splice_runs(old, new_runs, first, last, ps);
        Ok(())
    }

    /// Runs for the pages `pages` written at `first` (zero runs for zero
    /// pages, data runs in newly appended frames for the others).
    fn runs_of_pages(&mut self, first: u64, ps: u64, pages: &[u8]) -> Result<Vec<MemoryRun>> {
        let span = pages.len();
        let mut new_runs: Vec<MemoryRun> = Vec::new();
        let mut frame_buf: Vec<u8> = Vec::new();
        let mut pending: Vec<usize> = Vec::new(); // indices of runs in frame_buf
        let psz = ps as usize;
        let mut i = 0usize;
        while i < span {
            let zero = is_zero(&pages[i..i + psz]);
            let start = first + i as u64;
            if zero {
                match new_runs.last_mut() {
                    Some(r)
                        if r.kind == RunKind::Zero
                            && r.start + u64::from(r.pages) * ps == start =>
                    {
                        r.pages += 1
                    }
                    _ => new_runs.push(MemoryRun {
                        start,
                        pages: 1,
                        kind: RunKind::Zero,
                        frame: 0,
                        frame_offset: 0,
                    }),
                }
            } else {
                if frame_buf.len() + psz > EDIT_FRAME {
                    let idx = self.append_frame(std::mem::take(&mut frame_buf))?;
                    for &k in &pending {
                        new_runs[k].frame = idx;
                    }
                    pending.clear();
                }
                let off = frame_buf.len() as u32;
                let last_pending = pending.last().copied();
                let n_runs = new_runs.len();
                let extend = match new_runs.last_mut() {
                    Some(r)
                        if r.kind == RunKind::Data
                            && r.start + u64::from(r.pages) * ps == start
                            && last_pending == Some(n_runs - 1) =>
                    {
                        r.pages += 1;
                        true
                    }
                    _ => false,
                };
                if !extend {
                    pending.push(new_runs.len());
                    new_runs.push(MemoryRun {
                        start,
                        pages: 1,
                        kind: RunKind::Data,
                        frame: u32::MAX,
                        frame_offset: off,
                    });
                }
                frame_buf.extend_from_slice(&pages[i..i + psz]);
            }
            i += psz;
        }
        if !frame_buf.is_empty() {
            let idx = self.append_frame(frame_buf)?;
            for &k in &pending {
                new_runs[k].frame = idx;
            }
        }

        Ok(new_runs)
    }

    /// Append the metadata (generation + 1) and a commit record, fsyncing
    /// before and after the commit record. Until this returns, readers see
    /// the old state.
    pub fn commit(&mut self) -> Result<()> {
        let old_generation = self.image.generation;
        self.image.generation = old_generation.checked_add(1).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} is at generation {old_generation}, the last one the format can count",
                self.path.display()
            ))
        })?;
        let r = self.commit_inner();
        if r.is_err() {
            self.image.generation = old_generation;
        }
        r
    }

    fn commit_inner(&mut self) -> Result<()> {
        let meta_offset = self.append_pos;
        validate(&self.image, meta_offset)?;
        let msg = codec::encode(&self.image);
        if msg.len() as u64 > MAX_METADATA {
            return Err(Error::Limit {
                what: "metadata message".into(),
                value: msg.len() as u64,
                limit: MAX_METADATA,
            });
        }
        let mut rec = Vec::with_capacity(msg.len() + 32);
        rec.extend_from_slice(&encode_record_header(KIND_METADATA, &msg));
        rec.extend_from_slice(&msg);
        rec.resize(rec.len() + pad8(msg.len() as u64) as usize, 0);
        let start = self.append_pos;
        let result = (|| {
            self.append(&rec)?;
            self.sync()?;
            let commit = Commit {
                metadata_offset: meta_offset,
                metadata_len: msg.len() as u64,
                generation: u64::from(self.image.generation),
                end: self.append_pos + COMMIT_RECORD_LEN,
            };
            self.append(&encode_commit_record(&commit))?;
            self.sync()
        })();
        if result.is_err() {
            // Retry later from the same place (frames before it stay).
            self.append_pos = start;
        }
        result
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("fsync of {}", self.path.display()), e))
    }
}

/// `memory` with the pages of [first, last) replaced by `new_runs`: the
/// parts of old runs outside the range are kept (split where they straddle
/// it).
fn splice_runs(
    memory: Vec<MemoryRun>,
    mut new_runs: Vec<MemoryRun>,
    first: u64,
    last: u64,
    ps: u64,
) -> Vec<MemoryRun> {
    let mut out = Vec::with_capacity(memory.len() + new_runs.len() + 2);
    let mut inserted = false;
    for r in memory {
        let r_end = r.start.saturating_add(u64::from(r.pages) * ps);
        if r_end <= first {
            out.push(r);
            continue;
        }
        if r.start >= last {
            if !inserted {
                out.append(&mut new_runs);
                inserted = true;
            }
            out.push(r);
            continue;
        }
        // overlapping
        if r.start < first {
            let mut left = r;
            left.pages = ((first - r.start) / ps) as u32;
            out.push(left);
        }
        if !inserted {
            out.append(&mut new_runs);
            inserted = true;
        }
        if r_end > last {
            let mut right = r;
            let skip = last - r.start;
            right.start = last;
            right.pages = ((r_end - last) / ps) as u32;
            if right.kind == RunKind::Data {
                right.frame_offset = r.frame_offset.wrapping_add(skip as u32);
            }
            out.push(right);
        }
    }
    if !inserted {
        out.append(&mut new_runs);
    }
    out
}
