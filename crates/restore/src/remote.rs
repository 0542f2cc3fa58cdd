//! System calls injected into one thread of the process being built, with
//! errors that name the thread and the call.

use crate::error::{Error, Result, SysContext};
use ckpt_sys::{Injector, Pid};

/// One thread of the target, stopped, with an injector.
pub struct Remote {
    pub tid: Pid,
    pub inj: Injector,
}

impl Remote {
    pub fn new(tid: Pid, syscall_ip: u64) -> Result<Remote> {
        let inj =
            Injector::new(tid, syscall_ip).ctx(|| format!("thread {tid}: preparing injection"))?;
        Ok(Remote { tid, inj })
    }

    /// Run a system call in the thread; a failure names the thread and `name`.
    pub fn call(&mut self, name: &str, nr: i64, args: &[u64]) -> Result<u64> {
        let r = self.raw(name, nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::Io {
                context: format!("thread {}: {name}", self.tid),
                error: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r as u64)
    }

    /// Run a system call; the raw result (negative errno on failure).
    pub fn raw(&mut self, name: &str, nr: i64, args: &[u64]) -> Result<i64> {
        let tid = self.tid;
        self.inj
            .syscall_raw(nr, args)
            .ctx(|| format!("thread {tid}: {name}"))
    }

    /// Write into the target's memory (ignores protections).
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        let tid = self.tid;
        self.inj
            .mem()
            .write(addr, data)
            .ctx(|| format!("thread {tid}: writing {} bytes at {addr:#x}", data.len()))
    }

    /// Read the target's memory.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let tid = self.tid;
        self.inj
            .mem()
            .read_vec(addr, len)
            .ctx(|| format!("thread {tid}: reading {len} bytes at {addr:#x}"))
    }

    /// Write a NUL-terminated path at `addr`.
    pub fn write_cstr(&self, addr: u64, s: &[u8]) -> Result<()> {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s);
        v.push(0);
        self.write(addr, &v)
    }

    /// Number of system calls injected through this thread.
    pub fn count(&self) -> u64 {
        self.inj.count()
    }
}

/// Native-endian bytes of `v` (arguments of injected calls, in memory).
pub(crate) fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}
