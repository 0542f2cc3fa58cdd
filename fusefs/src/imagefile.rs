//! The image file as ckptfs reads it: frames that are not in the page
//! cache are read around it (O_DIRECT), straight from the disk into the
//! frame's buffer. A cold read of memory then costs no copy out of the
//! page cache and fills no page cache with compressed bytes that are
//! decoded once and kept, decoded, in the frame cache. A frame the page
//! cache holds (an image just written, or read by another tool) is read
//! from it as usual.

use ckpt_image::{ReadAt, Result};
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of O_DIRECT reads (offset, length and memory): the largest
/// logical block size of common devices.
const ALIGN: usize = 4096;
/// Smaller reads go through the page cache.
const DIRECT_MIN: usize = 64 << 10;

/// An opened image file, with a second descriptor on the same file opened
/// O_DIRECT when the filesystem allows it.
pub struct ImageFile {
    file: File,
    direct: Option<File>,
    /// Set when a direct read failed with EINVAL: not again for this file.
    no_direct: AtomicBool,
}

impl ImageFile {
    pub fn new(file: File) -> ImageFile {
        // The same open file (whatever its path is now), opened again.
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok();
        ImageFile {
            file,
            direct,
            no_direct: AtomicBool::new(false),
        }
    }

    /// Read `[off, off + len)` with O_DIRECT into `buf`; where the bytes
    /// are, or None when it could not be done (a buffered read follows,
    /// which reports any error).
    fn read_direct(&self, buf: &mut Vec<u8>, off: u64, len: usize) -> Option<Range<usize>> {
        let d = self.direct.as_ref()?;
        if len < DIRECT_MIN || self.no_direct.load(Ordering::Relaxed) {
            return None;
        }
        let a = ALIGN as u64;
        let start = off - off % a;
        let end = off.checked_add(len as u64)?.div_ceil(a) * a;
        let n = usize::try_from(end - start).ok()?;
        // Mostly in the page cache (or unknown: a kernel before 6.5):
        // read from there.
        match ckpt_sys::fs::cached_pages(self.file.as_raw_fd(), start, n as u64) {
            Ok(c) if c.saturating_mul(ALIGN as u64) < n as u64 / 2 => {}
            _ => return None,
        }
        // Room to start at an aligned address in the buffer.
        let need = n + ALIGN;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let shift = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        let dst = &mut buf[shift..shift + n];
        let lead = (off - start) as usize;
        let mut done = 0;
        while done < lead + len {
            match FileExt::read_at(d, &mut dst[done..], start + done as u64) {
                Ok(0) => return None,
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        self.no_direct.store(true, Ordering::Relaxed);
                    }
                    tracing::debug!("O_DIRECT read at {off} ({len} bytes): {e}");
                    return None;
                }
            }
            // A read that ends short of an aligned end is the end of file.
            if done % ALIGN != 0 {
                break;
            }
        }
        (done >= lead + len).then_some(shift + lead..shift + lead + len)
    }
}

impl ReadAt for ImageFile {
    fn len(&self) -> Result<u64> {
        ReadAt::len(&self.file)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        ReadAt::read_at(&self.file, buf, off)
    }

    fn file_owner(&self) -> Option<(u32, u32)> {
        self.file.file_owner()
    }

    fn read_into(&self, buf: &mut Vec<u8>, off: u64, len: usize) -> Result<Range<usize>> {
        match self.read_direct(buf, off, len) {
            Some(r) => Ok(r),
            None => self.file.read_into(buf, off, len),
        }
    }
}

/// The reader of a loaded image.
pub type Reader = ckpt_image::ImageReader<ImageFile>;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::io::Write;

    #[test]
    fn direct_reads_give_the_bytes_at_any_offset() {
        let path = std::env::temp_dir().join(format!("ckptfs-imagefile-{}", std::process::id()));
        let data: Vec<u8> = (0..(3u32 << 20) + 777)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        let img = ImageFile::new(file);
        assert!(
            img.direct.is_some(),
            "{} cannot be opened O_DIRECT",
            path.display()
        );
        let mut buf = Vec::new();
        let total = data.len() as u64;
        for (off, len) in [
            (0u64, 1usize << 20),
            (56, 1 << 20),
            (1_048_656, 387_339),
            (4095, 65_537),
            (total - 70_000, 70_000),
            (total - (1 << 20) - 5, 1 << 20),
            (100, 4000), // small: through the page cache
        ] {
            let r = img.read_into(&mut buf, off, len).unwrap();
            assert_eq!(r.len(), len);
            assert_eq!(&buf[r], &data[off as usize..off as usize + len], "at {off}");
        }
        // The large reads went around the page cache.
        let cached = ckpt_sys::fs::cached_pages(img.file.as_raw_fd(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(cached, 0);
        assert!(!img.no_direct.load(Ordering::Relaxed));
        // Past the end: an error that says so, from the buffered read.
        let e = img.read_into(&mut buf, total - 1000, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("read"), "{e}");
        // In the page cache: read from there.
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut File::open(&path).unwrap(), &mut all).unwrap();
        let r = img.read_into(&mut buf, 56, 1 << 20).unwrap();
        assert_eq!(r, 0..1 << 20);
        assert_eq!(&buf[r], &data[56..56 + (1 << 20)]);
        std::fs::remove_file(&path).unwrap();
    }

    /// An image on disk, read cold (O_DIRECT): the same frames as through
    /// the page cache, and a damaged frame is an error, never other bytes.
    #[test]
    fn cold_frames_are_checked() {
        use ckpt_image::{FrameScratch, Image, ImageReader, ImageWriter, Process, Vma};
        let mut w = ImageWriter::new(Vec::new(), Default::default()).unwrap();
        let mut x = 1u64;
        let random: Vec<u8> = (0..(2 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text: Vec<u8> = b"checkpoint "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        w.add_pages(1, 0x10_0000, &random).unwrap();
        w.add_pages(1, 0x30_0000, &text).unwrap();
        let img = Image {
            processes: vec![Process {
                pid: 1,
                vmas: vec![Vma {
                    start: 0x10_0000,
                    end: 0x40_0000,
                    prot: 3,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = w.finish(img).unwrap();
        let want = ImageReader::new(bytes.clone()).unwrap();
        let path = std::env::temp_dir().join(format!("ckptfs-cold-{}.ckpt", std::process::id()));
        let write_cold = |b: &[u8]| {
            let mut f = File::create(&path).unwrap();
            f.write_all(b).unwrap();
            f.sync_all().unwrap();
            posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        };
        write_cold(&bytes);
        let r = Reader::open_as(&path, ImageFile::new).unwrap();
        let frames = r.image().frames.clone();
        assert!(frames.len() >= 3);
        let (mut scratch, mut out) = (FrameScratch::default(), Vec::new());
        for i in 0..frames.len() as u32 {
            let got = r.decode_frame_into(i, &mut scratch, &mut out).unwrap();
            assert_eq!(&out[got], &want.read_frame(i).unwrap()[..], "frame {i}");
        }
        // The raw (random) frames were read around the page cache.
        let raw = frames
            .iter()
            .find(|f| f.codec == ckpt_image::Codec::None)
            .unwrap();
        let fd = File::open(&path).unwrap();
        let cached =
            ckpt_sys::fs::cached_pages(fd.as_raw_fd(), raw.offset, raw.size.into()).unwrap();
        assert!(cached < 8, "{cached} pages of a raw frame cached");
        // Each frame damaged in turn, read cold again.
        for (i, f) in frames.iter().enumerate() {
            let mut bad = bytes.clone();
            bad[(f.offset + u64::from(f.stored_size) / 2) as usize] ^= 0x55;
            write_cold(&bad);
            let r = Reader::open_as(&path, ImageFile::new).unwrap();
            let e = r.decode_frame_into(i as u32, &mut scratch, &mut out);
            assert!(e.is_err(), "damaged frame {i} ({:?}) decoded", f.codec);
        }
        std::fs::remove_file(&path).unwrap();
    }
}
