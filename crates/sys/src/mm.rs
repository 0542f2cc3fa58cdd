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
