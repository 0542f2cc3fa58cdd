//! ckpt image format: the model of a saved process tree, the container
//! writer and reader, crash-safe in-place editing, JSON and text views.
//!
//! The byte layout is specified in `spec/format.md`; the metadata schema is
//! `schema/ckpt.capnp`. This crate is pure: no `unsafe`, no libc. Every
//! reader entry point is meant to be safe on hostile input: it returns an
//! [`Error`] naming what is wrong and where, and never panics, hangs or
//! allocates more than a bounded multiple of the input size.
#![forbid(unsafe_code)]

use std::fs::File;

pub mod model;
pub use model::*;

#[allow(clippy::all, unused)]
#[rustfmt::skip]
pub mod ckpt_capnp;

mod atomic;
pub mod chain;
mod codec;
pub mod compact;
mod container;
mod editor;
mod error_text;
mod frames;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
mod reader;
pub mod signal;
mod store;
pub mod summary;
mod validate;
mod writer;

pub use atomic::AtomicFile;
pub use editor::ImageEditor;
pub use error_text::{chain, error_chain};
pub use frames::{FrameBatch, FrameBatchReader};
pub use reader::ImageReader;
pub use store::FrameScratch;
pub use validate::validate;
pub use writer::{is_zero as is_zero_page, ImageWriter, PAGE_BUFFER_HEAD};

/// Container format major version written by this crate (and the only one it reads).
pub const FORMAT_MAJOR: u16 = 1;
/// Container/schema minor version written by this crate.
pub const FORMAT_MINOR: u16 = 2;

/// Smallest and largest page size an image may declare.
pub const MIN_PAGE_SIZE: u32 = 4096;
pub const MAX_PAGE_SIZE: u32 = 65536;

/// Everything that can go wrong reading or writing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed (`context` says which and on what).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the `CKPTIMG\0` magic.
    #[error("not a ckpt image: bad magic {found:02x?} at offset 0 (expected \"CKPTIMG\\0\")")]
    BadMagic { found: [u8; 8] },
    /// The image was written for a format major this crate cannot read.
    #[error("image format {major}.{minor} is {} this ckpt (reads {supported}.x)",
        if *major > *supported { "newer than" } else { "not supported by" })]
    UnsupportedVersion {
        major: u16,
        minor: u16,
        supported: u16,
    },
    /// Editing an image of a newer minor would drop the fields this version does not know.
    #[error("image format {major}.{minor} is newer than this ckpt ({major}.{supported_minor}): it can be read but not edited")]
    NewerMinor {
        major: u16,
        minor: u16,
        supported_minor: u16,
    },
    /// The file ends before something it must contain.
    #[error(
        "truncated image: {what} at offset {offset} needs {need} bytes but the file has {len}"
    )]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        len: u64,
    },
    /// A CRC does not match.
    #[error("checksum mismatch in {what} at offset {offset}: stored {stored:#010x}, computed {actual:#010x}")]
    Checksum {
        what: String,
        offset: u64,
        stored: u32,
        actual: u32,
    },
    /// The container structure is broken at `offset`.
    #[error("corrupt image at offset {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    /// No complete commit record was found (the file was never finished).
    #[error("no complete commit in the image ({len} bytes): {detail}")]
    NoCommit { len: u64, detail: String },
    /// The Cap'n Proto metadata message could not be decoded.
    #[error("metadata: {context}: {source}")]
    Metadata {
        context: String,
        #[source]
        source: capnp::Error,
    },
    /// The metadata decoded but contradicts itself (`0` says which field of what).
    #[error("invalid image metadata: {0}")]
    Invalid(String),
    /// A size or count beyond what a reader accepts.
    #[error("{what} is {value} bytes, over the limit of {limit}")]
    Limit {
        what: String,
        value: u64,
        limit: u64,
    },
    /// A page frame cannot be decoded.
    #[error("frame {index} (file offset {offset}): {what}")]
    Frame {
        index: u32,
        offset: u64,
        what: String,
    },
    /// Decompressing a page frame failed (`codec` names the codec).
    #[error("frame {index} (file offset {offset}): {codec}: {source}")]
    Decompress {
        index: u32,
        offset: u64,
        codec: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Compressing a page frame failed.
    #[error("compressing a page frame: {source}")]
    Compress {
        #[source]
        source: std::io::Error,
    },
    /// The image has no process with this pid.
    #[error("no process with pid {pid} in the image")]
    NoSuchProcess { pid: i32 },
    /// The address is outside every VMA of the process.
    #[error("pid {pid}: address {addr:#x} is not in any mapping")]
    Unmapped { pid: i32, addr: u64 },
    /// A page whose contents are not in the image (a file's page the dump
    /// left to the file, kernel-provided mappings such as `[vvar]`, ...);
    /// `why` says which (from [`Vma::unsaved_reason`]).
    #[error("pid {pid}: the page at {addr:#x} is not in the image: {why}")]
    NotSaved { pid: i32, addr: u64, why: String },
    /// A caller passed something this API cannot do.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An incremental image whose chain of parents cannot be used (`0`
    /// says which image and why).
    #[error("{0}")]
    Chain(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How page frames are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Store frames raw.
    None,
    /// LZ4 (the default): the fastest to write and to read back, about
    /// 2-3x on text-like data.
    #[default]
    Fast,
    /// zstd level 1: smaller images (about 2x smaller than LZ4 on
    /// text-like data) for about 2x the CPU time.
    Zstd,
    /// zstd level 19: slow, smallest.
    Best,
}

impl Compression {
    /// The zstd level used, None when not zstd.
    pub fn zstd_level(self) -> Option<i32> {
        match self {
            Compression::None | Compression::Fast => None,
            Compression::Zstd => Some(1),
            Compression::Best => Some(19),
        }
    }
}

/// Options of [`ImageWriter`].
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Page size of the saved processes (power of two, 4096..=65536).
    pub page_size: u32,
    /// Target uncompressed size of a page frame (page_size..=64 MiB).
    pub frame_size: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Fast,
            page_size: 4096,
            frame_size: 1 << 20,
        }
    }
}

/// A source the reader can read at offsets: a File, or a `Vec<u8>`/`&[u8]`
/// (for tests and fuzzing).
pub trait ReadAt {
    /// Length of the source in bytes.
    fn len(&self) -> Result<u64>;
    /// Fill `buf` from offset `off`; an error if the source is shorter.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Read `len` bytes at `off` into `buf` (its old contents are
    /// overwritten, it may grow), at a place in it the source chooses;
    /// returns where. A source that reads around the page cache
    /// (O_DIRECT) puts them where its alignment wants; by default they
    /// are at the start.
    fn read_into(&self, buf: &mut Vec<u8>, off: u64, len: usize) -> Result<std::ops::Range<usize>> {
        if buf.len() >= len {
            buf.truncate(len);
        } else if buf.capacity() == 0 {
            // Allocated zeroed: fresh memory is not written before the read.
            *buf = vec![0u8; len];
        } else {
            // Zeroes only bytes the buffer never had.
            buf.resize(len, 0);
        }
        self.read_at(buf, off)?;
        Ok(0..len)
    }
    /// The owner (uid) and mode of the file this source reads, when it
    /// reads one (None: bytes in memory, or not known).
    fn file_owner(&self) -> Option<(u32, u32)> {
        None
    }
}

impl ReadAt for File {
    fn len(&self) -> Result<u64> {
        Ok(self
            .metadata()
            .map_err(|e| Error::io("stat of the image file", e))?
            .len())
    }
    fn file_owner(&self) -> Option<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let m = self.metadata().ok()?;
        m.is_file().then(|| (m.uid(), m.mode()))
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.read_exact_at(buf, off).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Truncated {
                    what: "read".into(),
                    offset: off,
                    need: buf.len() as u64,
                    len: ReadAt::len(self).unwrap_or(0),
                }
            } else {
                Error::io(
                    format!(
                        "reading {} bytes at offset {off} of the image file",
                        buf.len()
                    ),
                    e,
                )
            }
        })
    }
}

impl ReadAt for [u8] {
    fn len(&self) -> Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let total = <[u8]>::len(self) as u64;
        let src = usize::try_from(off)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(buf.len())?))
            .ok_or(Error::Truncated {
                what: "read".into(),
                offset: off,
                need: buf.len() as u64,
                len: total,
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> Result<u64> {
        ReadAt::len(self.as_slice())
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.as_slice().read_at(buf, off)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn len(&self) -> Result<u64> {
        (**self).len()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        (**self).read_at(buf, off)
    }
    fn file_owner(&self) -> Option<(u32, u32)> {
        (**self).file_owner()
    }
    fn read_into(&self, buf: &mut Vec<u8>, off: u64, len: usize) -> Result<std::ops::Range<usize>> {
        (**self).read_into(buf, off, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn len(&self) -> Result<u64> {
        (**self).len()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        (**self).read_at(buf, off)
    }
    fn file_owner(&self) -> Option<(u32, u32)> {
        (**self).file_owner()
    }
    fn read_into(&self, buf: &mut Vec<u8>, off: u64, len: usize) -> Result<std::ops::Range<usize>> {
        (**self).read_into(buf, off, len)
    }
}
