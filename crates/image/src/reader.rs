//! The image reader.

use crate::chain::{self, AnyReader, ResolvedRun};
use crate::container::{find_commit, parse_header};
use crate::model::*;
use crate::store::{self, Chain, FrameCache, FrameScratch};
use crate::validate::{check_generation, validate};
use crate::{codec, Error, ReadAt, Result};
use std::fs::File;
use std::path::Path;

/// A parsed image: header checked, last complete commit found, metadata
/// checksum-verified, decoded and validated. Page data is read on demand.
///
/// An incremental image (one with `Image.parent`) keeps its chain of
/// parents: [`ImageReader::open`] opens them, each checked to be the image
/// its child names (by `imageId`), and reads of `parent` runs go up the
/// chain. A chain that cannot be opened does not stop the image from being
/// read: [`ImageReader::chain_error`] says why, and only the pages saved in
/// the missing part fail ([`Error::Chain`]).
pub struct ImageReader<R: ReadAt = File> {
    src: R,
    image: Image,
    version: (u16, u16),
    metadata: Vec<u8>,
    committed_len: u64,
    /// Decoded frames of this image and of its ancestors.
    cache: FrameCache,
    /// The parent, its parent, and so on (each without a chain of its own).
    ancestors: Vec<AnyReader>,
    /// Why the chain stops before its oldest image (None: complete).
    chain_error: Option<String>,
}

impl ImageReader<File> {
    /// Open and parse the image at `path`, and its chain of parents if it
    /// is incremental (see [`ImageReader::chain_error`]).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_as(path, |f| f)
    }
}

impl<R: ReadAt> ImageReader<R> {
    /// [`ImageReader::open`], reading the image (not its parents) through
    /// the source `wrap` makes of the opened file.
    pub fn open_as(path: &Path, wrap: impl FnOnce(File) -> R) -> Result<Self> {
        let f =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut r = Self::new(wrap(f))?;
        if !r.image.parent.image_id.is_empty() {
            let (ancestors, err) = chain::open_ancestors(path, &r.image);
            r.ancestors = ancestors;
            r.chain_error = err;
        }
        Ok(r)
    }
}

/// What parsing an image found.
pub(crate) struct Parsed {
    pub version: (u16, u16),
    pub metadata: Vec<u8>,
    pub image: Image,
    /// End of the commit in use.
    pub committed_len: u64,
    /// Nothing follows the commit.
    pub clean: bool,
}

/// Parse an image from `src`.
pub(crate) fn parse(src: &dyn ReadAt) -> Result<Parsed> {
    let len = src.len()?;
    let version = parse_header(src, len)?;
    let found = find_commit(src, len)?;
    let image = codec::decode(&found.metadata)?;
    validate(&image, found.commit.metadata_offset)?;
    let commit_offset = found.commit.end - crate::container::COMMIT_RECORD_LEN;
    check_generation(&image, found.commit.generation, commit_offset)?;
    Ok(Parsed {
        version,
        metadata: found.metadata,
        image,
        committed_len: found.commit.end,
        clean: found.clean,
    })
}

impl<R: ReadAt> ImageReader<R> {
    /// Parse the image in `source` (an incremental image's parents are not
    /// opened: see [`ImageReader::with_parent`]).
    pub fn new(source: R) -> Result<Self> {
        let p = parse(&source)?;
        let chain_error = (!p.image.parent.image_id.is_empty())
            .then(|| "its parent image was not opened".to_string());
        Ok(ImageReader {
            src: source,
            image: p.image,
            version: p.version,
            metadata: p.metadata,
            committed_len: p.committed_len,
            cache: FrameCache::default(),
            ancestors: Vec::new(),
            chain_error,
        })
    }

    /// Give an incremental image its parent (with the parent's own chain):
    /// it must be the image this one names (same `imageId`).
    pub fn with_parent(mut self, parent: AnyReader) -> Result<Self> {
        chain::check_parent(&self.image, parent.image(), "the given parent")?;
        let mut parent = parent;
        let mut ancestors = vec![];
        let rest = std::mem::take(&mut parent.ancestors);
        self.chain_error = parent.chain_error.take();
        ancestors.push(parent);
        ancestors.extend(rest);
        self.ancestors = ancestors;
        Ok(self)
    }

    /// The decoded metadata.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// (major, minor) of the file header.
    pub fn format_version(&self) -> (u16, u16) {
        self.version
    }

    /// The raw Cap'n Proto metadata message (for `capnp decode`, JSON).
    pub fn metadata_bytes(&self) -> &[u8] {
        &self.metadata
    }

    /// Length of the file up to the end of the commit in use (a torn tail
    /// after it is not counted).
    pub fn committed_len(&self) -> u64 {
        self.committed_len
    }

    /// The underlying source.
    pub fn source(&self) -> &R {
        &self.src
    }

    /// The parents of an incremental image that could be opened: the
    /// parent first, then its parent, and so on.
    pub fn ancestors(&self) -> &[AnyReader] {
        &self.ancestors
    }

    /// Why the chain of parents is incomplete (a parent missing, not the
    /// image named, unreadable); None for a complete chain or an image
    /// that has no parent.
    pub fn chain_error(&self) -> Option<&str> {
        self.chain_error.as_deref()
    }

    /// The runs of `pid` with every `parent` run replaced by what the
    /// chain holds for those pages: each run with the level of the image
    /// whose frames hold it (0: this one, 1: its parent, ...). Fails when a
    /// `parent` run needs a missing part of the chain.
    pub fn resolved_memory(&self, pid: i32) -> Result<Vec<ResolvedRun>> {
        chain::resolve(self, pid)
    }

    /// Read saved memory of `pid` at any virtual address into `buf`. Zero
    /// runs and anonymous pages without a run read as zeros; addresses
    /// outside every VMA give [`Error::Unmapped`]; file-backed (or other
    /// object-backed) pages with no saved run give [`Error::NotSaved`];
    /// pages of an incremental image saved in its parents are read from
    /// them ([`Error::Chain`] when they are missing).
    pub fn read_memory(&self, pid: i32, addr: u64, buf: &mut [u8]) -> Result<()> {
        store::read_memory_chain(self, 0, pid, addr, buf)
    }

    /// Decoded contents of frame `index`, kept in a small cache shared by
    /// every caller (for frames many small readers take a part of: the
    /// processes of a tree restored one by one).
    pub fn cached_frame(&self, index: u32) -> Result<std::sync::Arc<Vec<u8>>> {
        store::cached_frame(&self.src, &self.image.frames, &self.cache, 0, index)
    }

    /// Decoded contents of frame `index` (CRC-checked, bounded by `Frame.size`).
    pub fn read_frame(&self, index: u32) -> Result<Vec<u8>> {
        store::decode_frame(&self.src, &self.image.frames, index)
    }

    /// Decode frame `index` into `out`, reusing its memory and `scratch`'s
    /// (the checks of [`ImageReader::read_frame`]); returns the range of
    /// `out` that holds the frame's bytes.
    pub fn decode_frame_into(
        &self,
        index: u32,
        scratch: &mut FrameScratch,
        out: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>> {
        store::decode_frame_into(&self.src, &self.image.frames, index, scratch, out)
    }

    /// Decoded contents of frame `index` of the image `level` steps up the
    /// chain (0: this one), through the shared frame cache.
    pub fn chain_frame(&self, level: usize, index: u32) -> Result<std::sync::Arc<Vec<u8>>> {
        let (src, image) = self.level(level).map_err(Error::Chain)?;
        store::cached_frame(src, &image.frames, &self.cache, level, index)
    }

    /// The bytes of a blob (file contents stored in frames).
    pub fn read_blob(&self, blob: &Blob) -> Result<Vec<u8>> {
        store::read_blob(&self.src, &self.image.frames, blob)
    }

    /// Iterate the saved runs of `pid` in address order with their bytes
    /// (`None` for Zero and Guard runs). Each frame is decoded once for
    /// consecutive runs in it. The runs of an incremental image are the
    /// resolved ones ([`ImageReader::resolved_memory`]).
    pub fn for_each_run(
        &self,
        pid: i32,
        mut f: impl FnMut(&MemoryRun, Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        if self.image.parent.image_id.is_empty() {
            return store::for_each_run(&self.src, &self.image, &self.cache, pid, f);
        }
        let ps = u64::from(self.image.host.page_size);
        for rr in self.resolved_memory(pid)? {
            let r = &rr.run;
            if r.kind != RunKind::Data {
                f(r, None)?;
                continue;
            }
            let frame = self.chain_frame(rr.level, r.frame)?;
            let start = u64::from(r.frame_offset);
            let data = usize::try_from(start)
                .ok()
                .and_then(|s| frame.get(s..s.checked_add(usize::try_from(run_bytes(r, ps)).ok()?)?))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "pid {pid}: run at {:#x} reaches past the end of frame {}",
                        r.start, r.frame
                    ))
                })?;
            f(r, Some(data))?;
        }
        Ok(())
    }
}

fn run_bytes(r: &MemoryRun, ps: u64) -> u64 {
    u64::from(r.pages) * ps
}

impl<R: ReadAt> Chain for ImageReader<R> {
    fn level(&self, level: usize) -> std::result::Result<(&dyn ReadAt, &Image), String> {
        if level == 0 {
            return Ok((&self.src, &self.image));
        }
        match self.ancestors.get(level - 1) {
            Some(a) => Ok((&a.src, &a.image)),
            None => Err(self
                .chain_error
                .clone()
                .unwrap_or_else(|| "the chain of parent images ends here".into())),
        }
    }
    fn cache(&self) -> &FrameCache {
        &self.cache
    }
}
