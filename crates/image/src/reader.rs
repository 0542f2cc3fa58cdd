//! The image reader.

use crate::container::{find_commit, parse_header};
use crate::model::*;
use crate::store::{self, FrameCache};
use crate::validate::{check_generation, validate};
use crate::{codec, Error, ReadAt, Result};
use std::fs::File;
use std::path::Path;

/// A parsed image: header checked, last complete commit found, metadata
/// checksum-verified, decoded and validated. Page data is read on demand.
pub struct ImageReader<R: ReadAt = File> {
    src: R,
    image: Image,
    version: (u16, u16),
    metadata: Vec<u8>,
    committed_len: u64,
    cache: FrameCache,
}

impl ImageReader<File> {
    /// Open and parse the image at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let f =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Self::new(f)
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
    /// Parse the image in `source`.
    pub fn new(source: R) -> Result<Self> {
        let p = parse(&source)?;
        Ok(ImageReader {
            src: source,
            image: p.image,
            version: p.version,
            metadata: p.metadata,
            committed_len: p.committed_len,
            cache: FrameCache::default(),
        })
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

    /// Read saved memory of `pid` at any virtual address into `buf`. Zero
    /// runs and anonymous pages without a run read as zeros; addresses
    /// outside every VMA give [`Error::Unmapped`]; file-backed (or other
    /// object-backed) pages with no saved run give [`Error::NotSaved`].
    pub fn read_memory(&self, pid: i32, addr: u64, buf: &mut [u8]) -> Result<()> {
        store::read_memory(&self.src, &self.image, &self.cache, pid, addr, buf)
    }

    /// Decoded contents of frame `index`, kept in a small cache shared by
    /// every caller (for frames many small readers take a part of: the
    /// processes of a tree restored one by one).
    pub fn cached_frame(&self, index: u32) -> Result<std::sync::Arc<Vec<u8>>> {
        store::cached_frame(&self.src, &self.image.frames, &self.cache, index)
    }

    /// Decoded contents of frame `index` (CRC-checked, bounded by `Frame.size`).
    pub fn read_frame(&self, index: u32) -> Result<Vec<u8>> {
        store::decode_frame(&self.src, &self.image.frames, index)
    }

    /// The bytes of a blob (file contents stored in frames).
    pub fn read_blob(&self, blob: &Blob) -> Result<Vec<u8>> {
        store::read_blob(&self.src, &self.image.frames, blob)
    }

    /// Iterate the saved runs of `pid` in address order with their bytes
    /// (`None` for Zero runs). Each frame is decoded once for consecutive
    /// runs in it.
    pub fn for_each_run(
        &self,
        pid: i32,
        f: impl FnMut(&MemoryRun, Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        store::for_each_run(&self.src, &self.image, &self.cache, pid, f)
    }
}
