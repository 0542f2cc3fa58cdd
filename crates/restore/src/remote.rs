//! System calls injected into one thread of the process being built, with
//! errors that name the thread and the call.

use crate::error::{Error, Result, SysContext};
use ckpt_sys::{Injector, Pid};

/// One thread of the target, stopped, with an injector.
pub struct Remote {
    pub tid: Pid,
    pub inj: Injector,
    /// Where batches of calls run: (batch code, scratch, scratch bytes).
    batch: Option<(u64, u64, u64)>,
}

impl Remote {
    pub fn new(tid: Pid, syscall_ip: u64) -> Result<Remote> {
        let inj =
            Injector::new(tid, syscall_ip).ctx(|| format!("thread {tid}: preparing injection"))?;
        Ok(Remote {
            tid,
            inj,
            batch: None,
        })
    }

    /// From now on, calls run without trap signals (no single steps, no
    /// batches ending in int3): for the calls after pending signals are
    /// queued again, which a forced SIGTRAP would disturb.
    pub fn without_traps(&mut self) {
        self.inj.use_syscall_stops();
        self.batch = None;
    }

    /// From now on [`Remote::batcher`] runs calls many at a time through
    /// the batch code at `code`, with `len` bytes of scratch at `scratch`.
    pub fn enable_batch(&mut self, code: u64, scratch: u64, len: u64) {
        self.batch = Some((code, scratch, len));
    }

    /// Whether [`Remote::batcher`] runs calls in batches.
    pub fn batched(&self) -> bool {
        self.batch.is_some()
    }

    /// A batcher of calls for this thread (one call at a time until
    /// [`Remote::enable_batch`]).
    pub fn batcher(&self) -> Batcher {
        match self.batch {
            Some((code, scratch, len)) => Batcher::new(code, scratch, len),
            None => Batcher::direct(),
        }
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

    /// openat(AT_FDCWD, path, flags) in the thread, `path` written at
    /// `addr` first; the new fd. A failure names the thread and `name`.
    pub fn open(&mut self, name: &str, addr: u64, path: &[u8], flags: i32) -> Result<u64> {
        self.write_cstr(addr, path)?;
        let args = [libc::AT_FDCWD as u64, addr, flags as u64, 0];
        self.call(name, libc::SYS_openat, &args)
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

/// Which failures of a batched call are fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allow {
    /// None: a failure fails the batch (and stops it).
    Nothing,
    /// This errno.
    Errno(i32),
    /// Any.
    Any,
}

/// System calls injected many at a time: collected, then run in one ptrace
/// round trip through the batch code of the trampoline page (a restore of
/// 10,000 mappings makes 20,000-50,000 calls: one round trip each took
/// seconds). The table and the strings the calls point to live in the
/// scratch area: nothing else may use it until [`Batcher::flush`].
pub(crate) struct Batcher {
    code: u64,
    table: u64,
    cap: usize,
    strings_at: u64,
    strings_cap: usize,
    calls: Vec<ckpt_sys::inject::BatchCall>,
    names: Vec<String>,
    allow: Vec<Allow>,
    strings: Vec<u8>,
    /// No batch code: each call runs at once.
    direct: bool,
    /// The results of the calls run so far, when kept
    /// ([`Batcher::keep_results`]).
    kept: Option<Vec<i64>>,
}

impl Batcher {
    /// Calls made one by one (no batch code in the process yet).
    pub fn direct() -> Batcher {
        let mut b = Batcher::new(0, 0, 0);
        b.direct = true;
        b
    }

    /// Batches run by the code at `code`, with `len` bytes of scratch at
    /// `scratch` for their table and strings.
    pub fn new(code: u64, scratch: u64, len: u64) -> Batcher {
        let table_bytes = len * 3 / 4;
        let cap = (table_bytes as usize / ckpt_sys::inject::BATCH_ENTRY).saturating_sub(1);
        Batcher {
            code,
            table: scratch,
            cap,
            strings_at: scratch + table_bytes,
            strings_cap: (len - table_bytes) as usize,
            calls: Vec::new(),
            names: Vec::new(),
            allow: Vec::new(),
            strings: Vec::new(),
            direct: false,
            kept: None,
        }
    }

    /// From now on keep the raw result of every call, for
    /// [`Batcher::results`] (calls whose result the next ones need, such as
    /// opens, run in one round trip and are read back after).
    pub fn keep_results(&mut self) {
        self.kept.get_or_insert_with(Vec::new);
    }

    /// Run what is collected; the raw results of every call pushed since
    /// [`Batcher::keep_results`], in order (and stop keeping them).
    pub fn results(&mut self, main: &mut Remote) -> Result<Vec<i64>> {
        self.flush(main)?;
        Ok(self.kept.take().unwrap_or_default())
    }

    /// Add a call (run at the next flush, or now when the batch is full).
    pub fn push(
        &mut self,
        main: &mut Remote,
        name: String,
        nr: i64,
        args: &[u64],
        allow: Allow,
    ) -> Result<()> {
        if self.direct {
            let r = main.raw(&name, nr, args)?;
            if let Some(k) = self.kept.as_mut() {
                k.push(r);
            }
            let ok = !(-4095..0).contains(&r)
                || match allow {
                    Allow::Nothing => false,
                    Allow::Errno(e) => -r == i64::from(e),
                    Allow::Any => true,
                };
            if !ok {
                return Err(Error::Io {
                    context: format!("thread {}: {name}", main.tid),
                    error: std::io::Error::from_raw_os_error(-r as i32),
                });
            }
            return Ok(());
        }
        if self.calls.len() >= self.cap {
            self.flush(main)?;
        }
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        self.calls.push(ckpt_sys::inject::BatchCall {
            nr,
            args: a,
            may_fail: allow != Allow::Nothing,
        });
        self.names.push(name);
        self.allow.push(allow);
        Ok(())
    }

    /// A NUL-terminated string for a call of this batch: its address.
    pub fn string(&mut self, main: &mut Remote, s: &[u8]) -> Result<u64> {
        if self.direct {
            return Err(Error::Stub {
                pid: main.tid,
                what: "strings for injected calls need the batch scratch area".into(),
            });
        }
        // Flushed now, not by the push of the call that uses the string
        // (that flush would free the string before its call runs).
        if self.strings.len() + s.len() + 1 > self.strings_cap || self.calls.len() >= self.cap {
            self.flush(main)?;
        }
        if s.len() + 1 > self.strings_cap {
            return Err(Error::Stub {
                pid: main.tid,
                what: format!(
                    "a string of {} bytes for an injected call is too long",
                    s.len()
                ),
            });
        }
        let at = self.strings_at + self.strings.len() as u64;
        self.strings.extend_from_slice(s);
        self.strings.push(0);
        Ok(at)
    }

    /// Bytes a call of this batch reads (a struct, a table), 8-aligned in
    /// the batch's scratch: their address. Direct calls have no scratch
    /// of the batch: then they are written at `direct_at` (which must be
    /// free until the call that uses them has run).
    pub fn data(&mut self, main: &mut Remote, bytes: &[u8], direct_at: u64) -> Result<u64> {
        if self.direct {
            main.write(direct_at, bytes)?;
            return Ok(direct_at);
        }
        let pad = self.strings.len().next_multiple_of(8) - self.strings.len();
        if self.strings.len() + pad + bytes.len() > self.strings_cap || self.calls.len() >= self.cap
        {
            self.flush(main)?;
        }
        if bytes.len() > self.strings_cap {
            return Err(Error::Stub {
                pid: main.tid,
                what: format!(
                    "{} bytes of arguments for an injected call are too many",
                    bytes.len()
                ),
            });
        }
        let pad = self.strings.len().next_multiple_of(8) - self.strings.len();
        self.strings.resize(self.strings.len() + pad, 0);
        let at = self.strings_at + self.strings.len() as u64;
        self.strings.extend_from_slice(bytes);
        Ok(at)
    }

    /// Make room for `bytes` of [`Batcher::data`] (in pieces, 8-aligned
    /// each) and a call: flushed now if they would not all fit, so that no
    /// flush comes between the pieces (a flush frees the data of the calls
    /// it ran, and later data would take its place).
    pub fn room(&mut self, main: &mut Remote, pieces: &[usize]) -> Result<()> {
        if self.direct {
            return Ok(());
        }
        let need: usize = pieces.iter().map(|n| n.next_multiple_of(8)).sum::<usize>() + 8;
        if self.strings.len() + need > self.strings_cap || self.calls.len() + 1 >= self.cap {
            self.flush(main)?;
        }
        Ok(())
    }

    /// Run the calls collected; the first failure not allowed is the error.
    pub fn flush(&mut self, main: &mut Remote) -> Result<()> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let tid = main.tid;
        if !self.strings.is_empty() {
            main.write(self.strings_at, &self.strings)?;
        }
        let results = main
            .inj
            .syscall_batch(self.code, self.table, &self.calls)
            .ctx(|| {
                format!(
                    "thread {tid}: a batch of {} injected calls",
                    self.calls.len()
                )
            })?;
        let calls = std::mem::take(&mut self.calls);
        let names = std::mem::take(&mut self.names);
        let allow = std::mem::take(&mut self.allow);
        self.strings.clear();
        if let Some(k) = self.kept.as_mut() {
            k.extend_from_slice(&results);
        }
        for (i, &r) in results.iter().enumerate() {
            if !(-4095..0).contains(&r) {
                continue;
            }
            let ok = match allow[i] {
                Allow::Nothing => false,
                Allow::Errno(e) => -r == i64::from(e),
                Allow::Any => true,
            };
            if !ok {
                return Err(Error::Io {
                    context: format!("thread {tid}: {}", names[i]),
                    error: std::io::Error::from_raw_os_error(-r as i32),
                });
            }
        }
        if results.len() < calls.len() {
            return Err(Error::Stub {
                pid: tid,
                what: format!(
                    "a batch of injected calls stopped after {} of {} calls ({})",
                    results.len(),
                    calls.len(),
                    names.get(results.len()).map(String::as_str).unwrap_or("")
                ),
            });
        }
        Ok(())
    }
}
