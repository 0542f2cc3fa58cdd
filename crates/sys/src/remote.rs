//! Reading and writing another process's memory.

use crate::{Error, Pid, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

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

/// A range of the remote address space.
#[derive(Debug, Clone, Copy)]
pub struct RemoteRange {
    pub addr: u64,
    pub len: usize,
}

const IOV_MAX: usize = 1024;

/// process_vm_readv: fill `local` from the remote ranges, in order. Returns
/// the number of bytes read (short when a remote page is not readable).
pub fn read_vm(pid: Pid, local: &mut [u8], remote: &[RemoteRange]) -> Result<usize> {
    let mut done = 0usize;
    for chunk in remote.chunks(IOV_MAX) {
        let want: usize = chunk.iter().map(|r| r.len).sum();
        if done + want > local.len() {
            return Err(Error::Unexpected {
                tid: pid,
                what: "read_vm: local buffer smaller than remote ranges".into(),
            });
        }
        let riov: Vec<libc::iovec> = chunk
            .iter()
            .map(|r| libc::iovec {
                iov_base: r.addr as *mut libc::c_void,
                iov_len: r.len,
            })
            .collect();
        let liov = libc::iovec {
            iov_base: local[done..].as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: the local iovec covers `want` bytes inside `local` (checked
        // above); remote iovecs are only addresses in the other process, which
        // the kernel validates.
        let n = unsafe { libc::process_vm_readv(pid, &liov, 1, riov.as_ptr(), riov.len() as _, 0) };
        if n < 0 {
            return Err(Error::Os {
                op: "process_vm_readv",
                tid: pid,
                source: std::io::Error::last_os_error(),
            });
        }
        done += n as usize;
        if (n as usize) < want {
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
            return Err(Error::Unexpected {
                tid: pid,
                what: "write_vm: local buffer smaller than remote ranges".into(),
            });
        }
        let riov: Vec<libc::iovec> = chunk
            .iter()
            .map(|r| libc::iovec {
                iov_base: r.addr as *mut libc::c_void,
                iov_len: r.len,
            })
            .collect();
        let liov = libc::iovec {
            iov_base: local[done..].as_ptr() as *mut libc::c_void,
            iov_len: want,
        };
        // SAFETY: the local iovec covers `want` bytes inside `local`, which the
        // kernel only reads; remote addresses are validated by the kernel.
        let n =
            unsafe { libc::process_vm_writev(pid, &liov, 1, riov.as_ptr(), riov.len() as _, 0) };
        if n < 0 {
            return Err(Error::Os {
                op: "process_vm_writev",
                tid: pid,
                source: std::io::Error::last_os_error(),
            });
        }
        done += n as usize;
        if (n as usize) < want {
            return Ok(done);
        }
    }
    Ok(done)
}
