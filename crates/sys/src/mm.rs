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

/// Give the kernel back the free memory of the allocator's heaps
/// (glibc's malloc_trim(0)): pages freed but still resident stop
/// counting, so that a fork copies and its child unmaps fewer pages.
/// True when some memory was released.
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes the allocator's own locks and only
    // releases memory no allocation holds.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// One large heap allocation left out of the processes this one forks
/// (MADV_DONTFORK) until dropped: a fork then neither copies its page
/// table entries nor makes its pages copy-on-write, and the child has
/// nothing of it to unmap. The child must never touch it (its addresses
/// are unmapped there).
pub struct NoFork {
    start: u64,
    len: u64,
}

/// Leave the allocation holding `data` out of forks ([`NoFork`]), when it
/// is one glibc malloc served with a mapping of its own (large ones): the
/// whole mapping, checked against /proc/self/maps to be private anonymous
/// memory. None (nothing done) otherwise.
pub fn exclude_from_forks(data: &[u8]) -> Option<NoFork> {
    let page = page_size();
    let ptr = data.as_ptr() as u64;
    // glibc puts a large allocation 16 bytes into a fresh mapping, after
    // the chunk header (previous size, then size | IS_MMAPPED).
    // Already out of forks (crate::heap): nothing to do.
    if !cfg!(target_env = "gnu")
        || crate::heap::is_fork_private(data.as_ptr())
        || data.len() < (1 << 20)
        || !ptr.wrapping_sub(16).is_multiple_of(page)
    {
        return None;
    }
    // SAFETY: ptr - 8 is in the same page as `data` (ptr - 16 starts it),
    // so it is mapped and readable; it is read as plain bits.
    let size_word = unsafe { std::ptr::read_volatile((ptr - 8) as *const u64) };
    const IS_MMAPPED: u64 = 2;
    let len = size_word & !7;
    let (start, end) = (ptr - 16, (ptr - 16).checked_add(len)?);
    if size_word & IS_MMAPPED == 0 || !len.is_multiple_of(page) || end < ptr + data.len() as u64 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let anonymous = maps.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (Some(range), Some(perms), _, _, Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return false;
        };
        let Some((a, b)) = range.split_once('-') else {
            return false;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            return false;
        };
        a <= start && end <= b && perms == "rw-p" && inode == "0" && f.next().is_none()
    });
    if !anonymous {
        return None;
    }
    // SAFETY: the range is the allocation's own private anonymous mapping
    // (checked above); MADV_DONTFORK changes no byte of it here.
    let r = unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            len as usize,
            libc::MADV_DONTFORK,
        )
    };
    (r == 0).then_some(NoFork { start, len })
}

impl Drop for NoFork {
    fn drop(&mut self) {
        // SAFETY: the range this guard excluded, still the allocation's
        // (the guard is dropped before it is freed).
        unsafe {
            libc::madvise(
                self.start as *mut libc::c_void,
                self.len as usize,
                libc::MADV_DOFORK,
            );
        }
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

/// PAGEMAP_SCAN page categories (linux/fs.h, Linux 6.7+).
pub mod page_is {
    /// In a VMA registered with an async write-protecting userfaultfd.
    pub const WPALLOWED: u64 = 1 << 0;
    /// Written since it was last write-protected (async userfaultfd only).
    pub const WRITTEN: u64 = 1 << 1;
    /// A page of a file (page cache; shared memory too).
    pub const FILE: u64 = 1 << 2;
    pub const PRESENT: u64 = 1 << 3;
    pub const SWAPPED: u64 = 1 << 4;
    /// The shared zero page.
    pub const PFNZERO: u64 = 1 << 5;
    pub const HUGE: u64 = 1 << 6;
    pub const GUARD: u64 = 1 << 8;
}

/// PAGEMAP_SCAN flags: write-protect the matching pages in the same walk
/// (re-arms dirty tracking), and fail with EPERM when part of the range is
/// not in an async write-protected VMA.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

const PAGEMAP_SCAN: u64 = 0xC060_6610;

/// A run of pages with the same categories (struct page_region).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    /// The categories asked for in the return mask.
    pub categories: u64,
}

#[repr(C)]
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

const _: () = {
    assert!(std::mem::size_of::<PageRegion>() == 24);
    assert!(std::mem::size_of::<PmScanArg>() == 96);
};

/// What one PAGEMAP_SCAN asks for. A page matches when
/// `((categories ^ inverted) & mask) == mask` and, if `anyof` is not 0,
/// `(categories ^ inverted) & anyof != 0`; `returned` are the categories
/// reported for each region.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanQuery {
    pub flags: u64,
    pub inverted: u64,
    pub mask: u64,
    pub anyof: u64,
    pub returned: u64,
}

/// /proc/PID/pagemap of a process, for PAGEMAP_SCAN.
pub struct Pagemap {
    pid: Pid,
    file: File,
}

impl Pagemap {
    pub fn open(pid: Pid) -> Result<Pagemap> {
        let file = File::open(format!("/proc/{pid}/pagemap")).map_err(|source| Error::Os {
            op: "open /proc/PID/pagemap",
            tid: pid,
            source,
        })?;
        Ok(Pagemap { pid, file })
    }

    /// The regions of `[start, end)` matching `q`, appended to `out` in
    /// address order (adjacent pages with equal categories merged by the
    /// kernel). EPERM with [`PM_SCAN_CHECK_WPASYNC`] when part of the range
    /// is not tracked; EINVAL from a kernel without PAGEMAP_SCAN (< 6.7).
    pub fn scan(
        &self,
        start: u64,
        end: u64,
        q: &ScanQuery,
        out: &mut Vec<PageRegion>,
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        let mut vec = vec![PageRegion::default(); 1024];
        let mut at = start;
        while at < end {
            let mut a = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: q.flags,
                start: at,
                end,
                walk_end: 0,
                vec: vec.as_mut_ptr() as u64,
                vec_len: vec.len() as u64,
                max_pages: 0,
                category_inverted: q.inverted,
                category_mask: q.mask,
                category_anyof_mask: q.anyof,
                return_mask: q.returned,
            };
            // SAFETY: `a` is a pm_scan_arg whose `vec` points to `vec`, a
            // live, writable array of `vec_len` page_regions, which the
            // kernel fills during the call only.
            let r = unsafe {
                libc::ioctl(
                    self.file.as_raw_fd(),
                    PAGEMAP_SCAN as libc::c_ulong,
                    &mut a as *mut PmScanArg,
                )
            };
            if r < 0 {
                return Err(crate::last_os("ioctl(PAGEMAP_SCAN)", self.pid));
            }
            let n = (r as usize).min(vec.len());
            // A region split by a full vector continues in the next call.
            for reg in &vec[..n] {
                match out.last_mut() {
                    Some(l) if l.end == reg.start && l.categories == reg.categories => {
                        l.end = reg.end
                    }
                    _ => out.push(*reg),
                }
            }
            if a.walk_end <= at || a.walk_end >= end {
                break;
            }
            at = a.walk_end;
        }
        Ok(())
    }
}

/// The top of the user address space on x86_64 (47 bits, 4-level paging,
/// and what mmap hands out without a hint above it).
const USER_END: u64 = 0x7fff_ffff_f000;

/// The guard regions (MADV_GUARD_INSTALL) of process `pid`, as sorted
/// [start, end) ranges, found with PAGEMAP_SCAN ([`Pagemap::scan`]). A
/// kernel that does not know guard regions (or PAGEMAP_SCAN) has none to
/// report: an empty list.
pub fn guard_regions(pid: Pid) -> Result<Vec<(u64, u64)>> {
    let pm = Pagemap::open(pid)?;
    let q = ScanQuery {
        mask: page_is::GUARD,
        returned: page_is::GUARD,
        ..Default::default()
    };
    let mut regions = Vec::new();
    match pm.scan(0, USER_END, &q, &mut regions) {
        Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::ENOTTY)) => return Ok(Vec::new()),
        r => r?,
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in &regions {
        match out.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
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

/// The mmap (and memfd_create) flags of hugetlb memory of `huge`-byte
/// pages: MAP_HUGETLB with the page size's log2 at MAP_HUGE_SHIFT; 0 for
/// ordinary memory.
pub fn hugetlb_flags(huge: u64) -> i32 {
    if huge == 0 {
        0
    } else {
        libc::MAP_HUGETLB | ((huge.trailing_zeros() as i32) << libc::MAP_HUGE_SHIFT)
    }
}

/// A new shared anonymous memory object of `size` bytes (what
/// mmap(MAP_SHARED | MAP_ANONYMOUS) makes), as an fd that mapping it
/// (MAP_SHARED) or opening /proc/self/fd/N gives the same memory: it is
/// mapped once, opened through /proc/self/map_files (needs CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE) and unmapped. `huge`: hugetlb memory of pages
/// of that size (MAP_HUGETLB), 0: ordinary. Allocates nothing (restore's
/// stub calls it after a fork).
pub fn shared_anon_fd(size: u64, huge: u64) -> Result<std::os::fd::OwnedFd> {
    const OP: &str = "mmap(MAP_SHARED|MAP_ANONYMOUS)";
    let len = (size.max(1)).next_multiple_of(page_size().max(huge)) as usize;
    // SAFETY: a fresh mapping at an address the kernel picks.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | hugetlb_flags(huge),
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

/// Private memory this process maps at fixed addresses that must be free
/// (MAP_FIXED_NOREPLACE: nothing already mapped is ever replaced), read and
/// written only through system calls (process_vm_writev), never through
/// references: restore fills it before forking its stubs, which inherit
/// it copy-on-write. Unmapped when dropped.
pub struct FixedArea {
    maps: Vec<(u64, u64)>,
}

impl FixedArea {
    pub fn new() -> FixedArea {
        FixedArea { maps: Vec::new() }
    }

    /// Map `len` bytes (page-aligned) at `addr`, read-write: anonymous
    /// memory (`fd` None) or file `fd` at `offset`, MAP_PRIVATE.
    pub fn map(&mut self, addr: u64, len: u64, fd: Option<i32>, offset: u64) -> Result<()> {
        let anon = if fd.is_none() { libc::MAP_ANONYMOUS } else { 0 };
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping:
        // the call fails instead, so no memory of this process changes.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE | anon,
                fd.unwrap_or(-1),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(crate::last_os("mmap(MAP_FIXED_NOREPLACE)", 0));
        }
        self.maps.push((p as u64, len));
        if p as u64 != addr {
            // A kernel without MAP_FIXED_NOREPLACE takes it as a hint.
            return Err(crate::Error::Unexpected {
                tid: 0,
                what: format!("mmap at {addr:#x} gave {:#x}", p as u64),
            });
        }
        Ok(())
    }
}

impl Default for FixedArea {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FixedArea {
    fn drop(&mut self) {
        for &(a, len) in &self.maps {
            // SAFETY: mappings this value made; nothing refers into them
            // (they are only reached through system calls).
            unsafe {
                libc::munmap(a as *mut libc::c_void, len as usize);
            }
        }
    }
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
        let fd = shared_anon_fd(8192, 0).unwrap();
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
