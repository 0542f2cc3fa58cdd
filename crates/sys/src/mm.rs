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
