//! Memory: the page size, and another process's memory (/proc/PID/mem,
//! process_vm_readv/writev, on nix).

use crate::{nix_pid, Error, OsResult, Pid, Result};
use nix::sys::uio::RemoteIoVec;
use nix::unistd::SysconfVar;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;

/// The system page size (4096 if sysconf cannot tell).
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// /proc/PID/mem of a process: positional reads and writes that ignore page
/// protections (the kernel uses FOLL_FORCE for a ptracer).
pub struct ProcMem {
    pid: Pid,
    file: File,
}

impl ProcMem {
    pub fn open(pid: Pid) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| Error::Os {
                op: "open /proc/PID/mem",
                tid: pid,
                source,
            })?;
        Ok(ProcMem { pid, file })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|source| Error::Os {
                op: "read /proc/PID/mem",
                tid: self.pid,
                source,
            })
    }

    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, addr)
            .map_err(|source| Error::Os {
                op: "write /proc/PID/mem",
                tid: self.pid,
                source,
            })
    }
}

/// A range of another process's address space, laid out as a `struct
/// iovec` (and as nix's `RemoteIoVec`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRange {
    pub addr: u64,
    pub len: usize,
}

const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RemoteRange>() == size_of::<RemoteIoVec>());
    assert!(align_of::<RemoteRange>() == align_of::<RemoteIoVec>());
    assert!(offset_of!(RemoteRange, addr) == offset_of!(RemoteIoVec, base));
    assert!(offset_of!(RemoteRange, len) == offset_of!(RemoteIoVec, len));
    assert!(size_of::<u64>() == size_of::<usize>());
};

/// The ranges as nix's type, without copying them.
fn as_remote_iovecs(remote: &[RemoteRange]) -> &[RemoteIoVec] {
    // SAFETY: RemoteRange and RemoteIoVec are both repr(C) with two fields
    // of the same size at the same offsets (checked above) and every bit
    // pattern valid; the new slice has the same length and lifetime.
    unsafe { std::slice::from_raw_parts(remote.as_ptr().cast::<RemoteIoVec>(), remote.len()) }
}

/// At most this many ranges per process_vm_readv/writev.
const IOV_MAX: usize = 1024;

fn too_small(pid: Pid, what: &str) -> Error {
    Error::Unexpected {
        tid: pid,
        what: format!("{what}: local buffer smaller than remote ranges"),
    }
}

/// process_vm_readv: fill `local` from the remote ranges, in order. Returns
/// the number of bytes read (short when a remote page is not readable).
pub fn read_vm(pid: Pid, local: &mut [u8], remote: &[RemoteRange]) -> Result<usize> {
    let mut done = 0usize;
    for chunk in remote.chunks(IOV_MAX) {
        let want: usize = chunk.iter().map(|r| r.len).sum();
        if done + want > local.len() {
            return Err(too_small(pid, "read_vm"));
        }
        let mut liov = [IoSliceMut::new(&mut local[done..done + want])];
        let n = nix::sys::uio::process_vm_readv(nix_pid(pid), &mut liov, as_remote_iovecs(chunk))
            .op_tid("process_vm_readv", pid)?;
        done += n;
        if n < want {
            return Ok(done);
        }
    }
    Ok(done)
}

/// process_vm_writev: write `local` to the remote ranges, in order. The
/// remote pages must be writable and present or faultable.
pub fn write_vm(pid: Pid, local: &[u8], remote: &[RemoteRange]) -> Result<usize> {
    let mut done = 0usize;
    for chunk in remote.chunks(IOV_MAX) {
        let want: usize = chunk.iter().map(|r| r.len).sum();
        if done + want > local.len() {
            return Err(too_small(pid, "write_vm"));
        }
        let n = vm_writev(pid, &[IoSlice::new(&local[done..done + want])], chunk)?;
        done += n;
        if n < want {
            return Ok(done);
        }
    }
    Ok(done)
}

/// One process_vm_writev(2) of the local slices to the remote ranges of
/// `pid` (at most IOV_MAX of each; the lengths need not match piece by
/// piece). Returns the bytes written, short when a remote page fails.
pub fn vm_writev(pid: Pid, local: &[IoSlice<'_>], remote: &[RemoteRange]) -> Result<usize> {
    nix::sys::uio::process_vm_writev(nix_pid(pid), local, as_remote_iovecs(remote))
        .op_tid("process_vm_writev", pid)
}

/// struct pm_scan_arg (linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// struct page_region (linux/fs.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGE_IS_GUARD: u64 = 1 << 8;
/// _IOWR('f', 16, struct pm_scan_arg).
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// The top of the user address space on x86_64 (47 bits, 4-level paging,
/// and what mmap hands out without a hint above it).
const USER_END: u64 = 0x7fff_ffff_f000;

/// The guard regions (MADV_GUARD_INSTALL) of process `pid`, as sorted
/// [start, end) ranges, found with the PAGEMAP_SCAN ioctl of its pagemap.
/// A kernel that does not know guard regions (or PAGEMAP_SCAN) has none
/// to report: an empty list.
pub fn guard_regions(pid: Pid) -> Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let pm = File::open(format!("/proc/{pid}/pagemap")).map_err(|source| Error::Os {
        op: "open /proc/PID/pagemap",
        tid: pid,
        source,
    })?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut regions = vec![PageRegion::default(); 512];
    let mut start = 0u64;
    while start < USER_END {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start,
            end: USER_END,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_mask: PAGE_IS_GUARD,
            return_mask: PAGE_IS_GUARD,
            ..Default::default()
        };
        // SAFETY: `arg` is a live pm_scan_arg whose `vec` points at
        // `regions`, room for vec_len page_region entries the kernel fills.
        let n = unsafe { libc::ioctl(pm.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) {
                return Ok(Vec::new());
            }
            return Err(Error::Os {
                op: "ioctl(PAGEMAP_SCAN)",
                tid: pid,
                source: e,
            });
        }
        for r in &regions[..n as usize] {
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if (n as usize) < regions.len() || arg.walk_end <= start {
            break;
        }
        start = arg.walk_end;
    }
    Ok(out)
}

/// A table of `i32`s in memory shared with every process forked after it
/// was made (MAP_SHARED | MAP_ANONYMOUS): restore's stubs, each a fork of
/// the restorer or of another stub, tell each other (and the restorer)
/// their pids through it. Reading and writing allocate nothing.
pub struct SharedWords {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicI32>,
    len: usize,
    bytes: usize,
}

// SAFETY: the memory is only accessed through atomics.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// `len` words, all 0.
    pub fn new(len: usize) -> Result<SharedWords> {
        let bytes = (len.max(1) * 4).next_multiple_of(page_size() as usize);
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(crate::last_os("mmap(MAP_SHARED|MAP_ANONYMOUS)", 0));
        }
        let ptr = std::ptr::NonNull::new(p.cast()).ok_or_else(|| crate::Error::Unexpected {
            tid: 0,
            what: "mmap returned NULL".into(),
        })?;
        Ok(SharedWords { ptr, len, bytes })
    }

    fn words(&self) -> &[std::sync::atomic::AtomicI32] {
        // SAFETY: the mapping holds `bytes` >= 4 * len zero-initialised,
        // page-aligned bytes, valid while `self` lives; AtomicI32 has the
        // size and alignment of i32 and any bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Word `i` (0 when out of range).
    pub fn get(&self, i: usize) -> i32 {
        self.words()
            .get(i)
            .map_or(0, |w| w.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Set word `i` (ignored when out of range).
    pub fn set(&self, i: usize, v: i32) {
        if let Some(w) = self.words().get(i) {
            w.store(v, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of `bytes` bytes; no reference into it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}

/// A new shared anonymous memory object of `size` bytes (what
/// mmap(MAP_SHARED | MAP_ANONYMOUS) makes), as an fd that mapping it
/// (MAP_SHARED) or opening /proc/self/fd/N gives the same memory: it is
/// mapped once, opened through /proc/self/map_files (needs CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE) and unmapped. Allocates nothing (restore's stub
/// calls it after a fork).
pub fn shared_anon_fd(size: u64) -> Result<std::os::fd::OwnedFd> {
    const OP: &str = "mmap(MAP_SHARED|MAP_ANONYMOUS)";
    let len = (size.max(1)).next_multiple_of(page_size()) as usize;
    // SAFETY: a fresh mapping at an address the kernel picks.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(crate::last_os(OP, 0));
    }
    let start = p as u64;
    let mut buf = [0u8; 64];
    let path = map_files_path(start, start + len as u64, &mut buf);
    let r = crate::fds::open(path, libc::O_RDWR | libc::O_CLOEXEC, 0);
    // SAFETY: the mapping made above, which nothing else refers to.
    unsafe {
        libc::munmap(p, len);
    }
    r
}

/// "/proc/self/map_files/START-END" (lower-case hex) in `buf`.
fn map_files_path(start: u64, end: u64, buf: &mut [u8; 64]) -> &std::ffi::CStr {
    const PREFIX: &[u8] = b"/proc/self/map_files/";
    let mut n = PREFIX.len();
    buf[..n].copy_from_slice(PREFIX);
    fn hex(v: u64, buf: &mut [u8; 64], n: &mut usize) {
        let digits = (64 - v.max(1).leading_zeros()).div_ceil(4) as usize;
        for i in 0..digits {
            let d = ((v >> (4 * (digits - 1 - i))) & 0xf) as u8;
            buf[*n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            *n += 1;
        }
    }
    hex(start, buf, &mut n);
    buf[n] = b'-';
    n += 1;
    hex(end, buf, &mut n);
    buf[n] = 0;
    std::ffi::CStr::from_bytes_with_nul(&buf[..=n]).unwrap_or(c"/")
}

#[cfg(test)]
mod tree_tests {
    use super::*;

    #[test]
    fn map_files_paths_are_hex() {
        let mut b = [0u8; 64];
        assert_eq!(
            map_files_path(0x7f12_3456_0000, 0x7f12_3457_0000, &mut b).to_bytes(),
            b"/proc/self/map_files/7f1234560000-7f1234570000"
        );
        assert_eq!(
            map_files_path(0, 0x1000, &mut b).to_bytes(),
            b"/proc/self/map_files/0-1000"
        );
    }

    #[test]
    fn shared_words_are_seen_by_a_child() {
        let w = SharedWords::new(3).unwrap();
        w.set(1, 42);
        match crate::clone::fork_with_pid(None).unwrap() {
            crate::clone::Forked::Child => {
                w.set(2, w.get(1) + 1);
                crate::proc::exit_now(0)
            }
            crate::clone::Forked::Parent(c) => {
                crate::proc::wait::reap_blocking(c);
                assert_eq!(w.get(2), 43);
                assert_eq!(w.get(7), 0);
            }
        }
    }

    #[test]
    fn shared_anon_fd_maps_one_object() {
        // Needs CAP_SYS_ADMIN (the tests run as root).
        use std::os::unix::fs::FileExt;
        let fd = shared_anon_fd(8192).unwrap();
        let f = std::fs::File::from(fd);
        f.write_all_at(b"hello", 4096).unwrap();
        let again = std::fs::File::open(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            f.as_raw_fd()
        }))
        .unwrap();
        let mut b = [0u8; 5];
        again.read_exact_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(f.metadata().unwrap().len(), 8192);
    }
}
