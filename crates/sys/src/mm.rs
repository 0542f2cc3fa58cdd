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
