//! State only the process itself can tell: queried with system calls
//! injected into its stopped threads (sigactions, sigaltstack, timers,
//! prctl values, ...); registers, signal mask and memory are put back
//! exactly as they were, on success and on failure.
//!
//! The calls are injected so that the process survives our death at any
//! instant (`Injector::new_safe`): each thread runs them at an
//! `rt_sigreturn` sequence of its own libc, with a signal frame holding
//! its own state on its stack (below the red zone; those bytes are put
//! back after), so that a vanished tracer leaves every thread going back
//! through `rt_sigreturn` to where it was. Each call then costs two stops
//! (no code of ours runs in the process), but for the single-threaded
//! processes of a tree without seccomp filters, which run their queries
//! in one go from a page mapped for that time, ending in that same
//! `rt_sigreturn` ([`Injector::safe_batch_start`]: two calls' worth of
//! stops instead of two per query, the page unmapped by the last call, on
//! the way out; a vanished tracer leaves the page mapped). A process without such a
//! sequence (no libc), with user shadow stacks, or whose stacks have no
//! room, is queried the old way instead: through the vdso's `syscall`
//! instruction and a scratch page mapped for the time of the queries,
//! where each thread runs its queries in one batch (`Injector::batch`),
//! with PTRACE_O_EXITKILL set meanwhile (our death then kills it rather
//! than let it run with foreign registers). In a tree each process is
//! queried in turn, the same way.

use crate::error::{Error, Result, SysCtx};
use crate::freeze::Frozen;
use crate::process::rlimits::RLIMIT_NAMES;
use ckpt_image::{FileOwner, ITimer, Rlimit, SigAction, SigAltStack};
use ckpt_sys::{ptrace, Injector, Pid};
use std::collections::BTreeMap;

/// The scratch area: the batch of queries (code and table) first, their
/// outputs from [`OUT`].
const SCRATCH_LEN: u64 = 16 << 10;
const OUT: u64 = 8 << 10;

const F_GETOWN_EX: u64 = 16;
const F_GETSIG: u64 = 11;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
/// prctl(PR_GET_MDWE) (Linux 6.3), which libc may lack.
const PR_GET_MDWE: i32 = 66;

/// What to ask about besides the fixed set.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    /// POSIX timer ids (from /proc/PID/timers).
    pub timer_ids: Vec<i32>,
    /// Fds whose owner (F_GETOWN_EX / F_GETSIG) to read.
    pub owner_fds: Vec<i32>,
    /// Signals whose action to read (bit `sig - 1`); the others are at
    /// their default action with no flags (from /proc/PID/status: neither
    /// caught nor ignored; SIGCHLD is always read, for its flags).
    pub sig_mask: u64,
    /// The resource limits, when read from outside (prlimit of the pid);
    /// None: read by the process itself.
    pub rlimits: Option<Vec<(u64, u64)>>,
    /// Whether the process uses user shadow stacks, when known (from
    /// its status); None: read it.
    pub shadow_stack: Option<bool>,
    /// The signals that may end a batch of its queries run in one go
    /// (bit `sig - 1`, see [`Injector::safe_batch_start`]): ignored by
    /// default, neither caught nor blocked nor pending, in a process
    /// without seccomp filters. 0: asked call by call.
    pub batch_signals: u64,
    /// Its /proc/PID/maps, read since the freeze (None: read it).
    pub maps: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ThreadRemote {
    pub altstack: SigAltStack,
    pub clear_child_tid: u64,
}

#[derive(Debug, Default)]
pub(crate) struct RemoteInfo {
    pub brk: u64,
    pub sigactions: Vec<SigAction>,
    pub itimers: Vec<ITimer>,
    /// By id; clock/notify/signal come from /proc, times from here.
    pub timer_times: BTreeMap<i32, (u64, u64, i32)>,
    pub securebits: u32,
    pub dumpable: bool,
    pub child_subreaper: bool,
    pub pdeathsig: i32,
    pub thp_disabled: bool,
    pub timer_slack_ns: u64,
    /// prctl(PR_GET_MDWE) flags; 0 where the kernel has none (before 6.3).
    pub mdwe: u32,
    /// MEMBARRIER_CMD_GET_REGISTRATIONS (0 on a kernel without it).
    pub membarrier: u32,
    pub rlimits: Vec<Rlimit>,
    pub threads: BTreeMap<Pid, ThreadRemote>,
    pub owners: BTreeMap<i32, FileOwner>,
    pub injected: u64,
}

/// How system calls are injected into a process.
enum Injection {
    /// `Injector::new_safe` at this rt_sigreturn sequence; the frames fit
    /// in these writable private mappings.
    Safe {
        sigreturn: u64,
        writable: Vec<(u64, u64)>,
    },
    /// Through this `syscall` instruction of the vdso, with EXITKILL.
    Fallback { syscall_ip: u64 },
}

/// The (start, end, perms, name) of each line of /proc/PID/maps.
fn parse_maps(maps: &str) -> Vec<(u64, u64, &str, &str)> {
    maps.lines()
        .filter_map(|l| {
            let mut it = l.splitn(6, ' ');
            let (a, b) = it.next()?.split_once('-')?;
            let perms = it.next()?;
            let name = it.nth(3).unwrap_or("").trim_start();
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms,
                name,
            ))
        })
        .collect()
}

/// The rt_sigreturn sequences found so far, with the file mapped where
/// each was: the processes of a fork tree map the same libc at the same
/// address, so one scan serves them all.
static SIGRETURNS: std::sync::Mutex<Vec<(u64, String)>> = std::sync::Mutex::new(Vec::new());

/// Longest rt_sigreturn sequence ([`ckpt_sys::inject::frame::find_sigreturn`]).
const SIGRETURN_MAX: usize = 16;

/// A sequence found in another process at an address where `pid` maps
/// the same file executable, and whose bytes in `pid` are the sequence
/// too (read again: its code may differ).
fn known_sigreturn(mem: &ckpt_sys::mm::ProcMem, maps: &[(u64, u64, &str, &str)]) -> Option<u64> {
    let known = SIGRETURNS.lock().map(|k| k.clone()).unwrap_or_default();
    known.into_iter().find_map(|(at, file)| {
        let m = maps.iter().find(|m| m.0 <= at && at < m.1)?;
        if m.2.as_bytes().get(2) != Some(&b'x') || m.3 != file {
            return None;
        }
        let len = ((m.1 - at) as usize).min(SIGRETURN_MAX);
        let code = mem.read_vec(at, len).ok()?;
        (ckpt_sys::inject::frame::find_sigreturn(&code) == Some(0)).then_some(at)
    })
}

/// An rt_sigreturn sequence in the executable mappings of `pid` (libc
/// first), read 64 KiB at a time until one is found.
fn find_sigreturn(pid: Pid, maps: &[(u64, u64, &str, &str)]) -> Option<u64> {
    let mem = ckpt_sys::mm::ProcMem::open(pid).ok()?;
    if let Some(at) = known_sigreturn(&mem, maps) {
        return Some(at);
    }
    let at = scan_sigreturn(&mem, maps)?;
    if let Some(m) = maps.iter().find(|m| m.0 <= at && at < m.1) {
        if let Ok(mut known) = SIGRETURNS.lock() {
            if known.len() < 16 {
                known.push((at, m.3.to_string()));
            }
        }
    }
    Some(at)
}

/// [`find_sigreturn`] by reading the code.
fn scan_sigreturn(mem: &ckpt_sys::mm::ProcMem, maps: &[(u64, u64, &str, &str)]) -> Option<u64> {
    let mut exec: Vec<&(u64, u64, &str, &str)> = maps
        .iter()
        .filter(|m| m.2.as_bytes().get(2) == Some(&b'x') && m.3.starts_with('/'))
        .collect();
    exec.sort_by_key(|m| !m.3.contains("/libc"));
    const CHUNK: u64 = 64 * 1024;
    for &&(start, end, _, _) in &exec {
        let mut at = start;
        while at < end {
            let len = (end - at).min(CHUNK + 16);
            let Ok(code) = mem.read_vec(at, len as usize) else {
                break;
            };
            if let Some(off) = ckpt_sys::inject::frame::find_sigreturn(&code) {
                return Some(at + off as u64);
            }
            at += CHUNK;
        }
    }
    None
}

/// Whether the process uses user shadow stacks (then rt_sigreturn needs a
/// token ours would not have).
fn uses_shadow_stack(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("x86_Thread_features:"))
                .is_some_and(shadow_stack_in)
        })
        .unwrap_or(false)
}

/// Whether the value of status's "x86_Thread_features:" has user shadow
/// stacks.
pub(crate) fn shadow_stack_in(features: &str) -> bool {
    features.split_whitespace().any(|f| f == "shstk")
}

/// How to inject into the frozen process: safely when it has an
/// rt_sigreturn sequence and every thread's stack has room for a frame.
/// `shadow_stack`: whether it uses user shadow stacks, when known.
/// `maps`: its /proc/PID/maps, when read already (since the freeze).
fn injection(frozen: &Frozen, shadow_stack: Option<bool>, maps: Option<&str>) -> Result<Injection> {
    let pid = frozen.pid;
    let text = match maps {
        Some(m) => m.to_string(),
        None => crate::procfs::read_string(pid, &format!("/proc/{pid}/maps"))?,
    };
    let maps = parse_maps(&text);
    let writable: Vec<(u64, u64)> = maps
        .iter()
        .filter(|m| m.2.starts_with("rw") && m.2.ends_with('p'))
        .map(|m| (m.0, m.1))
        .collect();
    let shadow_stack = shadow_stack.unwrap_or_else(|| uses_shadow_stack(pid));
    let sigreturn = find_sigreturn(pid, &maps).filter(|_| !shadow_stack);
    if let Some(sigreturn) = sigreturn {
        let (_, xsave) = ckpt_sys::ptrace::xsave_info();
        let all_fit = frozen.threads.iter().all(|t| {
            ckpt_sys::ptrace::get_regs(t.tid).is_ok_and(|r| {
                let (a, b) = ckpt_sys::inject::frame::region(
                    r[ckpt_sys::ptrace::reg::RSP],
                    (xsave as usize).max(512) + 64,
                );
                fits(&writable, a, b)
            })
        });
        if all_fit {
            return Ok(Injection::Safe {
                sigreturn,
                writable,
            });
        }
    }
    tracing::debug!(pid, "no safe injection: through the vdso, with EXITKILL");
    Ok(Injection::Fallback {
        syscall_ip: find_syscall_ip(pid, &text)?,
    })
}

/// An injector for the main thread of `frozen`, made as [`query`] makes
/// them: safe where it can be (the process survives our death at any
/// instant), else through the vdso with EXITKILL set, which the caller
/// clears after [`Injector::finish`] (`Frozen::set_exit_kill(false)`).
pub(crate) fn leader_injector(frozen: &mut Frozen) -> Result<Injector> {
    let pid = frozen.pid;
    let what = || "preparing system call injection".to_string();
    if let Injection::Safe {
        sigreturn,
        writable,
    } = injection(frozen, None, None)?
    {
        let fits = |a: u64, b: u64| fits(&writable, a, b);
        if let Some(inj) = Injector::new_safe(pid, sigreturn, &fits).ctx(pid, what)? {
            return Ok(inj);
        }
    }
    let maps = crate::procfs::read_string(pid, &format!("/proc/{pid}/maps"))?;
    let ip = find_syscall_ip(pid, &maps)?;
    frozen.set_exit_kill(true)?;
    Injector::new_stops(pid, ip).ctx(pid, what)
}

/// The stack regions that the signal frames of safe injection may take
/// in the threads of `frozen` ([`query`]), a page wider on each side.
pub(crate) fn frame_regions(frozen: &Frozen) -> Vec<(u64, u64)> {
    let (_, xsave) = ckpt_sys::ptrace::xsave_info();
    frozen
        .threads
        .iter()
        .filter_map(|t| ckpt_sys::ptrace::get_regs(t.tid).ok())
        .map(|r| {
            let (a, b) = ckpt_sys::inject::frame::region(
                r[ckpt_sys::ptrace::reg::RSP],
                (xsave as usize).max(512) + 64,
            );
            ((a & !0xfff).saturating_sub(0x1000), (b + 0x1fff) & !0xfff)
        })
        .collect()
}

/// Whether [a, b) lies inside one of `ranges`.
fn fits(ranges: &[(u64, u64)], a: u64, b: u64) -> bool {
    a < b && ranges.iter().any(|&(s, e)| s <= a && b <= e)
}

/// Find a `syscall` instruction in the target's `[vdso]`.
fn find_syscall_ip(pid: Pid, maps: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/maps");
    let (n, line) = maps
        .lines()
        .enumerate()
        .find(|(_, l)| l.ends_with("[vdso]"))
        .ok_or_else(|| Error::Vma {
            pid,
            start: 0,
            end: 0,
            name: "[vdso]".into(),
            what: "the process has no vdso; cannot run system calls in it".into(),
        })?;
    let range = line.split_whitespace().next().unwrap_or("");
    let (start, end) = range
        .split_once('-')
        .and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .filter(|(a, b)| a < b)
        .ok_or_else(|| {
            crate::procfs::parse_err(
                pid,
                &path,
                n + 1,
                format!("{range:?} is not an address range"),
            )
        })?;
    let mem = ckpt_sys::mm::ProcMem::open(pid).ctx(pid, || "opening its memory".into())?;
    let code = mem
        .read_vec(start, (end - start) as usize)
        .ctx(pid, || "reading [vdso]".into())?;
    let off = ckpt_sys::inject::find_syscall_insn(&code).ok_or_else(|| Error::Vma {
        pid,
        start,
        end,
        name: "[vdso]".into(),
        what: "no syscall instruction in the vdso".into(),
    })?;
    Ok(start + off as u64)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

/// Helper around one thread's injector with the shared scratch page.
struct Remote<'a> {
    pid: Pid,
    inj: &'a mut Injector,
    scratch: u64,
}

/// Queries asked in one stop of the thread (see `Injector::batch`): each
/// call names what it asks, and writes its answer, if any, to its own
/// place of the scratch area. (With safe injection they are asked one
/// by one, see [`Remote::run`].)
#[derive(Default)]
struct Batch {
    calls: Vec<(&'static str, i64, [u64; 6])>,
    /// Bytes of output places handed out.
    out_len: u64,
    /// The places: (offset, length).
    places: Vec<(u64, u64)>,
}

impl Batch {
    /// Room for `len` bytes of answer: its offset in the output area.
    fn out(&mut self, len: u64) -> u64 {
        let at = self.out_len;
        self.out_len += len.next_multiple_of(8);
        self.places.push((at, len.next_multiple_of(8)));
        at
    }

    fn push(&mut self, name: &'static str, nr: i64, args: [u64; 6]) -> usize {
        self.calls.push((name, nr, args));
        self.calls.len() - 1
    }
}

/// The answers of a batch: each call's result, and the output area.
struct Answers {
    results: Vec<i64>,
    out: Vec<u8>,
    names: Vec<&'static str>,
}

impl Answers {
    /// The result of call `i`, an error when it failed.
    fn ok(&self, pid: Pid, tid: Pid, i: usize) -> Result<u64> {
        let r = self.results[i];
        if (-4095..0).contains(&r) {
            return Err(Error::Sys {
                pid,
                what: format!("thread {tid}: querying {}", self.names[i]),
                source: ckpt_sys::Error::Injected {
                    name: self.names[i].to_string(),
                    tid,
                    source: std::io::Error::from_raw_os_error(-r as i32),
                },
            });
        }
        Ok(r as u64)
    }

    /// The 8-byte word at `off + 8 * i` of the output area.
    fn word(&self, off: u64, i: usize) -> u64 {
        u64_at(&self.out[off as usize..], i)
    }
}

impl Remote<'_> {
    /// Run a batch of queries; its output area is zeroed first.
    fn run(&mut self, b: Batch) -> Result<Answers> {
        let (pid, tid) = (self.pid, self.inj.tid());
        let out_at = self.scratch + OUT;
        if b.out_len > SCRATCH_LEN - OUT || ckpt_sys::inject::batch_len(b.calls.len()) > OUT {
            return Err(Error::Sys {
                pid,
                what: format!("thread {tid}: too many queries at once ({})", b.calls.len()),
                source: ckpt_sys::Error::Unexpected {
                    tid,
                    what: "scratch area too small".into(),
                },
            });
        }
        let (results, out) = if self.inj.scratch().is_some() {
            self.one_by_one(&b, out_at)?
        } else {
            self.inj
                .mem()
                .write(out_at, &vec![0u8; b.out_len as usize])
                .ctx(pid, || "writing the scratch page".into())?;
            let calls: Vec<(i64, [u64; 6])> = b.calls.iter().map(|c| (c.1, c.2)).collect();
            let results = self
                .inj
                .batch(self.scratch, &calls)
                .ctx(pid, || format!("thread {tid}: querying it"))?;
            let out = self
                .inj
                .mem()
                .read_vec(out_at, b.out_len as usize)
                .ctx(pid, || "reading the scratch page".into())?;
            (results, out)
        };
        Ok(Answers {
            results,
            out,
            names: b.calls.iter().map(|c| c.0).collect(),
        })
    }

    /// The calls of `b` one at a time, for a safe injector (see
    /// `Injector::new_safe`: no code of ours may run in the thread). The
    /// output area at `out_at` is not memory of the thread: each place a
    /// call's arguments point into is lent room of the injector's scratch
    /// area for that call, then copied out. Returns the results and the
    /// output area.
    fn one_by_one(&mut self, b: &Batch, out_at: u64) -> Result<(Vec<i64>, Vec<u8>)> {
        let mut out = vec![0u8; b.out_len as usize];
        let mut results = Vec::with_capacity(b.calls.len());
        for (c, (name, nr, _)) in b.calls.iter().enumerate() {
            let (args, lent) = self.lend(b, c, out_at)?;
            results.push(self.call_raw(name, *nr, &args)?);
            self.take_back(&lent, &mut out)?;
        }
        Ok((results, out))
    }

    /// The arguments of call `c` of `b`, each place of the output area
    /// (at `out_at`) it points into lent room of the scratch area, zeroed
    /// (see [`Remote::one_by_one`]); and what was lent: (offset in the
    /// output area, length, address lent).
    #[allow(clippy::type_complexity)]
    fn lend(&self, b: &Batch, c: usize, out_at: u64) -> Result<([u64; 6], Vec<(u64, u64, u64)>)> {
        let (pid, tid) = (self.pid, self.inj.tid());
        let room = ckpt_sys::inject::frame::SCRATCH_LEN;
        let (name, _, mut args) = b.calls[c];
        let mut lent: Vec<(u64, u64, u64)> = Vec::new();
        let mut at = self.scratch;
        for a in args.iter_mut() {
            if *a < out_at || *a >= out_at + b.out_len {
                continue;
            }
            let off = *a - out_at;
            let Some(&(start, len)) = b.places.iter().find(|(s, l)| *s <= off && off < s + l)
            else {
                continue;
            };
            if at + len > self.scratch + room {
                return Err(Error::Sys {
                    pid,
                    what: format!("thread {tid}: querying {name}"),
                    source: ckpt_sys::Error::Unexpected {
                        tid,
                        what: format!("its answer needs more than {room} bytes of scratch"),
                    },
                });
            }
            self.inj
                .mem()
                .write(at, &vec![0u8; len as usize])
                .ctx(pid, || "writing the scratch area".into())?;
            *a = at + (off - start);
            lent.push((start, len, at));
            at += len;
        }
        Ok((args, lent))
    }

    /// The answers in the room [`Remote::lend`] lent, into the output area.
    fn take_back(&self, lent: &[(u64, u64, u64)], out: &mut [u8]) -> Result<()> {
        for &(start, len, addr) in lent {
            let v = self
                .inj
                .mem()
                .read_vec(addr, len as usize)
                .ctx(self.pid, || "reading the scratch area".into())?;
            out[start as usize..(start + len) as usize].copy_from_slice(&v);
        }
        Ok(())
    }

    fn call(&mut self, name: &str, nr: i64, args: &[u64]) -> Result<u64> {
        let tid = self.inj.tid();
        self.inj
            .syscall(name, nr, args)
            .ctx(self.pid, || format!("thread {tid}: querying {name}"))
    }

    fn call_raw(&mut self, name: &str, nr: i64, args: &[u64]) -> Result<i64> {
        let tid = self.inj.tid();
        self.inj
            .syscall_raw(nr, args)
            .ctx(self.pid, || format!("thread {tid}: querying {name}"))
    }

    fn read(&self, len: usize) -> Result<Vec<u8>> {
        self.inj
            .mem()
            .read_vec(self.scratch, len)
            .ctx(self.pid, || "reading the scratch page".into())
    }

    fn write(&self, data: &[u8]) -> Result<()> {
        self.inj
            .mem()
            .write(self.scratch, data)
            .ctx(self.pid, || "writing the scratch page".into())
    }

    /// Queue signals again in this thread (they were dequeued while we stopped it).
    fn requeue(&mut self, sigs: &[[u8; ptrace::SIGINFO_SIZE]]) -> Result<()> {
        let tid = self.inj.tid();
        for si in sigs {
            let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
            self.write(si)?;
            self.call(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                &[self.pid as u64, tid as u64, signo as u64, self.scratch],
            )?;
        }
        Ok(())
    }

    /// Re-queue whatever the injector itself had to hold back.
    fn requeue_injector_deferred(&mut self) -> Result<()> {
        for _ in 0..16 {
            let d = std::mem::take(&mut self.inj.deferred);
            if d.is_empty() {
                return Ok(());
            }
            self.requeue(&d)?;
        }
        Ok(())
    }

    /// The thread's own values, asked in batch `b`; read them from the
    /// answers with [`Remote::thread_answers`].
    fn thread_queries(&self, b: &mut Batch) -> [(usize, u64); 2] {
        let o = self.scratch + OUT;
        let alt = b.out(24);
        let i_alt = b.push(
            "sigaltstack",
            libc::SYS_sigaltstack,
            [0, o + alt, 0, 0, 0, 0],
        );
        let tid = b.out(8);
        let i_tid = b.push(
            "prctl(PR_GET_TID_ADDRESS)",
            libc::SYS_prctl,
            [libc::PR_GET_TID_ADDRESS as u64, o + tid, 0, 0, 0, 0],
        );
        [(i_alt, alt), (i_tid, tid)]
    }

    fn thread_answers(&self, a: &Answers, q: [(usize, u64); 2]) -> Result<ThreadRemote> {
        let (pid, tid) = (self.pid, self.inj.tid());
        let [(i_alt, alt), (i_tid, tidp)] = q;
        a.ok(pid, tid, i_alt)?;
        a.ok(pid, tid, i_tid)?;
        Ok(ThreadRemote {
            altstack: SigAltStack {
                sp: a.word(alt, 0),
                flags: a.word(alt, 1) as u32,
                size: a.word(alt, 2),
            },
            clear_child_tid: a.word(tidp, 0),
        })
    }

    /// A thread other than the leader: its values in one batch.
    fn other_thread(&mut self) -> Result<ThreadRemote> {
        let mut b = Batch::default();
        let q = self.thread_queries(&mut b);
        let a = self.run(b)?;
        self.thread_answers(&a, q)
    }

    /// The process-wide values and the leader's own, in one batch (but
    /// terminals and fd owners, asked one by one after).
    fn process_queries(&mut self, q: &Queries, out: &mut RemoteInfo) -> Result<ThreadRemote> {
        let (b, asks) = self.process_batch(q);
        let a = self.run(b)?;
        let t = self.process_answers(q, &a, asks, out)?;
        self.owners(&q.owner_fds, out)?;
        Ok(t)
    }

    /// The batch of [`Remote::process_queries`] (but the fd owners), and
    /// where its answers will be.
    fn process_batch(&self, q: &Queries) -> (Batch, ProcessAsks) {
        let o = self.scratch + OUT;
        let mut b = Batch::default();
        let brk = b.push("brk", libc::SYS_brk, [0; 6]);
        let sig_timers = sig_timer_queries(&mut b, q, o);
        let prctl = |b: &mut Batch, name, opt: i32, arg: u64| {
            b.push(name, libc::SYS_prctl, [opt as u64, arg, 0, 0, 0, 0])
        };
        let securebits = prctl(
            &mut b,
            "prctl(PR_GET_SECUREBITS)",
            libc::PR_GET_SECUREBITS,
            0,
        );
        let dumpable = prctl(&mut b, "prctl(PR_GET_DUMPABLE)", libc::PR_GET_DUMPABLE, 0);
        let sub = b.out(8);
        let i_sub = prctl(
            &mut b,
            "prctl(PR_GET_CHILD_SUBREAPER)",
            libc::PR_GET_CHILD_SUBREAPER,
            o + sub,
        );
        let pds = b.out(8);
        let i_pds = prctl(
            &mut b,
            "prctl(PR_GET_PDEATHSIG)",
            libc::PR_GET_PDEATHSIG,
            o + pds,
        );
        let thp = prctl(
            &mut b,
            "prctl(PR_GET_THP_DISABLE)",
            libc::PR_GET_THP_DISABLE,
            0,
        );
        let slack = prctl(
            &mut b,
            "prctl(PR_GET_TIMERSLACK)",
            libc::PR_GET_TIMERSLACK,
            0,
        );
        // Linux 6.3+; before, EINVAL: no memory-deny-write-execute.
        let mdwe = prctl(&mut b, "prctl(PR_GET_MDWE)", PR_GET_MDWE, 0);
        // Linux 6.3+; before, EINVAL: no registrations can be told.
        let membarrier = b.push(
            "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)",
            libc::SYS_membarrier,
            [MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0],
        );
        let mut limits = Vec::new();
        if q.rlimits.is_none() {
            for res in 0..RLIMIT_NAMES.len() as u64 {
                let at = b.out(16);
                let i = b.push("prlimit64", libc::SYS_prlimit64, [0, res, 0, o + at, 0, 0]);
                limits.push((i, at));
            }
        }
        let thread = self.thread_queries(&mut b);
        let asks = ProcessAsks {
            brk,
            sig_timers,
            securebits,
            dumpable,
            subreaper: (i_sub, sub),
            pdeathsig: (i_pds, pds),
            thp,
            slack,
            mdwe,
            membarrier,
            limits,
            thread,
        };
        (b, asks)
    }

    /// The answers of [`Remote::process_batch`] into `out`; the leader's
    /// own values.
    fn process_answers(
        &self,
        q: &Queries,
        a: &Answers,
        asks: ProcessAsks,
        out: &mut RemoteInfo,
    ) -> Result<ThreadRemote> {
        let (pid, tid) = (self.pid, self.inj.tid());
        out.brk = a.ok(pid, tid, asks.brk)?;
        sig_timer_answers(a, (pid, tid), asks.sig_timers, out)?;
        out.securebits = a.ok(pid, tid, asks.securebits)? as u32;
        out.dumpable = a.ok(pid, tid, asks.dumpable)? != 0;
        a.ok(pid, tid, asks.subreaper.0)?;
        out.child_subreaper = a.word(asks.subreaper.1, 0) as u32 != 0;
        a.ok(pid, tid, asks.pdeathsig.0)?;
        out.pdeathsig = a.word(asks.pdeathsig.1, 0) as i32;
        out.thp_disabled = a.ok(pid, tid, asks.thp)? != 0;
        out.timer_slack_ns = a.ok(pid, tid, asks.slack)?;
        out.mdwe = u32::try_from(a.results[asks.mdwe]).unwrap_or(0);
        out.membarrier = u32::try_from(a.results[asks.membarrier]).unwrap_or(0);
        self.limits(q.rlimits.as_deref(), a, &asks.limits, out)?;
        self.thread_answers(a, asks.thread)
    }

    /// Resource limits: those read from `outside`, else the answers.
    fn limits(
        &self,
        outside: Option<&[(u64, u64)]>,
        a: &Answers,
        asked: &[(usize, u64)],
        out: &mut RemoteInfo,
    ) -> Result<()> {
        for (res, name) in RLIMIT_NAMES.iter().enumerate() {
            let (soft, hard) = match (outside.and_then(|l| l.get(res)), asked.get(res)) {
                (Some(&l), _) => l,
                (None, Some(&(i, at))) => {
                    a.ok(self.pid, self.inj.tid(), i)?;
                    (a.word(at, 0), a.word(at, 1))
                }
                (None, None) => continue,
            };
            out.rlimits.push(Rlimit {
                resource: res as u32,
                name: (*name).to_string(),
                soft,
                hard,
            });
        }
        Ok(())
    }

    /// The owner (F_GETOWN_EX) and signal (F_GETSIG) of O_ASYNC fds.
    fn owners(&mut self, fds: &[i32], out: &mut RemoteInfo) -> Result<()> {
        for &fd in fds {
            self.write(&[0u8; 8])?;
            let mut o = FileOwner::default();
            if self.call_raw(
                "fcntl(F_GETOWN_EX)",
                libc::SYS_fcntl,
                &[fd as u64, F_GETOWN_EX, self.scratch],
            )? == 0
            {
                let b = self.read(8)?;
                o.kind = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                o.pid = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
            }
            let sig = self.call_raw("fcntl(F_GETSIG)", libc::SYS_fcntl, &[fd as u64, F_GETSIG])?;
            o.signal = sig.max(0) as i32;
            out.owners.insert(fd, o);
        }
        Ok(())
    }
}

/// Where the answers of [`Remote::process_batch`] are: the calls, and
/// their output places.
struct ProcessAsks {
    brk: usize,
    sig_timers: SigTimerAsks,
    securebits: usize,
    dumpable: usize,
    subreaper: (usize, u64),
    pdeathsig: (usize, u64),
    thp: usize,
    slack: usize,
    mdwe: usize,
    membarrier: usize,
    limits: Vec<(usize, u64)>,
    thread: [(usize, u64); 2],
}

/// Where the answers of the signal and timer queries are in a batch:
/// (signal, call, out offset), (which, call, out offset), (timer id,
/// timer_gettime, timer_getoverrun, out offset).
struct SigTimerAsks {
    sigs: Vec<(u64, usize, u64)>,
    itimers: Vec<(u64, usize, u64)>,
    timers: Vec<(i32, usize, usize, u64)>,
}

/// Ask for the actions of the signals of `q.sig_mask`, the interval timers
/// and the POSIX timers of `q` (out buffers at `o`).
fn sig_timer_queries(b: &mut Batch, q: &Queries, o: u64) -> SigTimerAsks {
    let mut sigs = Vec::new();
    for sig in (1..=64u64).filter(|s| q.sig_mask & (1 << (s - 1)) != 0) {
        let at = b.out(32);
        let i = b.push(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [sig, 0, o + at, 8, 0, 0],
        );
        sigs.push((sig, i, at));
    }
    let mut itimers = Vec::new();
    for which in 0..3u64 {
        let at = b.out(32);
        let i = b.push(
            "getitimer",
            libc::SYS_getitimer,
            [which, o + at, 0, 0, 0, 0],
        );
        itimers.push((which, i, at));
    }
    let mut timers = Vec::new();
    for &id in &q.timer_ids {
        let at = b.out(32);
        let i = b.push(
            "timer_gettime",
            libc::SYS_timer_gettime,
            [id as u64, o + at, 0, 0, 0, 0],
        );
        let j = b.push(
            "timer_getoverrun",
            libc::SYS_timer_getoverrun,
            [id as u64, 0, 0, 0, 0, 0],
        );
        timers.push((id, i, j, at));
    }
    SigTimerAsks {
        sigs,
        itimers,
        timers,
    }
}

/// The answers of [`sig_timer_queries`] into `out`.
fn sig_timer_answers(
    a: &Answers,
    (pid, tid): (Pid, Pid),
    asks: SigTimerAsks,
    out: &mut RemoteInfo,
) -> Result<()> {
    let SigTimerAsks {
        sigs,
        itimers,
        timers,
    } = asks;
    let mut actions = vec![SigAction::default(); 64];
    for (sig, i, at) in sigs {
        a.ok(pid, tid, i)?;
        actions[sig as usize - 1] = SigAction {
            handler: a.word(at, 0),
            flags: a.word(at, 1),
            restorer: a.word(at, 2),
            mask: a.word(at, 3),
        };
    }
    out.sigactions = actions;
    let tv = |s: u64, us: u64| s.saturating_mul(1_000_000_000).saturating_add(us * 1000);
    for (which, i, at) in itimers {
        a.ok(pid, tid, i)?;
        out.itimers.push(ITimer {
            which: which as u32,
            interval_ns: tv(a.word(at, 0), a.word(at, 1)),
            value_ns: tv(a.word(at, 2), a.word(at, 3)),
        });
    }
    let ts = |s: u64, ns: u64| s.saturating_mul(1_000_000_000).saturating_add(ns);
    for (id, i, j, at) in timers {
        a.ok(pid, tid, i)?;
        let overrun = a.ok(pid, tid, j)? as i32;
        let times = (
            ts(a.word(at, 0), a.word(at, 1)),
            ts(a.word(at, 2), a.word(at, 3)),
        );
        out.timer_times.insert(id, (times.0, times.1, overrun));
    }
    Ok(())
}

/// Run all queries. Deferred signals of each thread (dequeued while it was
/// being stopped) are queued again in that thread first, so that they are
/// pending again: the pending lists read afterwards contain them, and a
/// process that goes on running receives them.
pub(crate) fn query(frozen: &mut Frozen, q: &Queries) -> Result<RemoteInfo> {
    match injection(frozen, q.shadow_stack, q.maps.as_deref())? {
        Injection::Safe {
            sigreturn,
            writable,
        } => {
            let pid = frozen.pid;
            let fits = |a: u64, b: u64| fits(&writable, a, b);
            let mut injector = |tid: Pid| -> Result<(Injector, u64)> {
                let inj = Injector::new_safe(tid, sigreturn, &fits)
                    .ctx(pid, || {
                        format!("thread {tid}: preparing system call injection")
                    })?
                    .ok_or_else(|| Error::Sys {
                        pid,
                        what: format!("thread {tid}: preparing system call injection"),
                        source: ckpt_sys::Error::Unexpected {
                            tid,
                            what: "its stack has no room for the injection frame".into(),
                        },
                    })?;
                let scratch = inj.scratch().expect("a safe injector has scratch memory");
                Ok((inj, scratch))
            };
            let mut out = RemoteInfo::default();
            // The threads but the leader that have no signal to queue
            // again are asked together, in lockstep; the others (the
            // leader first) one by one.
            let simple = |t: &&crate::freeze::FrozenThread| t.tid != pid && t.deferred.is_empty();
            let tids = |keep: bool| -> Vec<Pid> {
                let ts = frozen.threads.iter().filter(|t| simple(t) == keep);
                ts.map(|t| t.tid).collect()
            };
            let (together, alone) = (tids(true), tids(false));
            query_threads(frozen, &alone, q, &mut injector, &mut out)?;
            if !together.is_empty() {
                query_threads_lockstep(pid, &together, sigreturn, &fits, &mut out)?;
            }
            Ok(out)
        }
        Injection::Fallback { syscall_ip } => {
            // While system calls are injected this way, our death must kill
            // the process rather than let it run with foreign registers.
            frozen.set_exit_kill(true)?;
            let r = query_with_scratch_page(frozen, syscall_ip, q);
            frozen.set_exit_kill(false)?;
            r
        }
    }
}

/// The queries of threads `tids` of `frozen` (the leader's process
/// queries with its own), each through the injector (and scratch memory)
/// `injector` makes for it, one after the other.
fn query_threads(
    frozen: &mut Frozen,
    tids: &[Pid],
    q: &Queries,
    injector: &mut dyn FnMut(Pid) -> Result<(Injector, u64)>,
    out: &mut RemoteInfo,
) -> Result<()> {
    let pid = frozen.pid;
    let deferred: BTreeMap<Pid, _> = frozen
        .threads
        .iter()
        .map(|t| (t.tid, t.deferred.clone()))
        .collect();
    let mut requeued: Vec<Pid> = Vec::new();
    let mut result = Ok(());
    for &tid in tids {
        let (mut inj, scratch) = match injector(tid) {
            Ok(x) => x,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let res = (|| -> Result<ThreadRemote> {
            let mut r = Remote {
                pid,
                inj: &mut inj,
                scratch,
            };
            r.requeue(&deferred[&tid])?;
            requeued.push(tid);
            let tr = if tid == pid {
                let t = r.process_queries(q, out)?;
                // Test hook: a pause while the registers are the injector's.
                crate::worker::test_delay();
                t
            } else {
                r.other_thread()?
            };
            r.requeue_injector_deferred()?;
            Ok(tr)
        })();
        out.injected += inj.count();
        let fin = inj.finish();
        let left = match (res, fin) {
            (Ok(tr), Ok(left)) => {
                out.threads.insert(tid, tr);
                left
            }
            (Err(e), fin) => {
                result = Err(e);
                fin.unwrap_or_default()
            }
            (Ok(_), Err(e)) => {
                result = Err(e).ctx(pid, || format!("thread {tid}: restoring its registers"));
                Vec::new()
            }
        };
        // Signals caught between the last check and finish: keep them by
        // sending them again (without their details).
        for si in left {
            let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
            let _ = ckpt_sys::proc::tgkill(pid, tid, signo);
        }
        if result.is_err() {
            break;
        }
    }
    frozen.mark_requeued(&requeued);
    result
}

/// The thread queries of threads `tids` of process `pid` (none the
/// leader, none with a signal to queue again), by safe injection, each
/// step started in every thread before any is waited for: a process of
/// 2,000 threads is asked in a fraction of the time one by one takes.
/// Every injector is finished (registers, mask and stack put back)
/// whatever happened; the first error is returned.
fn query_threads_lockstep(
    pid: Pid,
    tids: &[Pid],
    sigreturn: u64,
    fits: &dyn Fn(u64, u64) -> bool,
    out: &mut RemoteInfo,
) -> Result<()> {
    let mut result: Result<()> = Ok(());
    let mut group: Vec<(usize, Injector)> = Vec::new();
    for (k, &tid) in tids.iter().enumerate() {
        let prep = || format!("thread {tid}: preparing system call injection");
        match Injector::new_safe_start(tid, sigreturn, fits) {
            Ok(Some(inj)) => group.push((k, inj)),
            Ok(None) => {
                result = Err(Error::Sys {
                    pid,
                    what: prep(),
                    source: ckpt_sys::Error::Unexpected {
                        tid,
                        what: "its stack has no room for the injection frame".into(),
                    },
                });
                break;
            }
            Err(e) => {
                result = Err(e).ctx(pid, prep);
                break;
            }
        }
    }
    // Each thread started to its rt_sigreturn before any is waited for.
    let mut ready: Vec<(usize, Injector)> = Vec::new();
    for (k, mut inj) in group {
        match inj.started() {
            Ok(()) => ready.push((k, inj)),
            Err(e) => {
                let tid = inj.tid();
                resend(pid, tid, &inj.finish().unwrap_or_default());
                keep_first(
                    &mut result,
                    Err(e).ctx(pid, || {
                        format!("thread {tid}: preparing system call injection")
                    }),
                );
            }
        }
    }
    if result.is_ok() {
        let mut asked = Vec::with_capacity(ready.len());
        for (_, inj) in ready.iter_mut() {
            let scratch = inj.scratch().expect("a safe injector has scratch memory");
            let r = Remote { pid, inj, scratch };
            let mut b = Batch::default();
            let q = r.thread_queries(&mut b);
            asked.push((b, q));
        }
        let batches: Vec<&Batch> = asked.iter().map(|(b, _)| b).collect();
        let pids = vec![pid; ready.len()];
        let answers = run_lockstep(&mut ready, &pids, &batches);
        // Test hook: a pause while these threads run on the injector's
        // registers.
        crate::worker::test_delay();
        for (((_, inj), a), (_, q)) in ready.iter_mut().zip(answers).zip(&asked) {
            let scratch = inj.scratch().expect("a safe injector has scratch memory");
            let tid = inj.tid();
            let mut r = Remote { pid, inj, scratch };
            let got = a.and_then(|a| {
                let t = r.thread_answers(&a, *q)?;
                r.requeue_injector_deferred()?;
                Ok(t)
            });
            match got {
                Ok(t) => {
                    out.threads.insert(tid, t);
                }
                Err(e) => keep_first(&mut result, Err(e)),
            }
        }
    }
    // Every thread started on its way out before any is waited for.
    for (_, inj) in ready.iter_mut() {
        let _ = inj.finish_start();
    }
    for (_, mut inj) in ready {
        let tid = inj.tid();
        let waited = inj.finish_wait();
        out.injected += inj.count();
        let fin = inj.finish();
        resend(pid, tid, fin.as_deref().unwrap_or_default());
        let r = waited.map(|_| ()).and(fin.map(|_| ()));
        keep_first(
            &mut result,
            r.ctx(pid, || format!("thread {tid}: restoring its registers")),
        );
    }
    result
}

/// `r` as the result, unless `result` already holds an error.
fn keep_first(result: &mut Result<()>, r: Result<()>) {
    if result.is_ok() {
        *result = r;
    }
}

/// The queries through the vdso's `syscall` instruction, with a scratch
/// page mapped in the process for their time.
fn query_with_scratch_page(
    frozen: &mut Frozen,
    syscall_ip: u64,
    q: &Queries,
) -> Result<RemoteInfo> {
    let pid = frozen.pid;
    let mut out = RemoteInfo::default();
    let mut leader = Injector::new_stops(pid, syscall_ip)
        .ctx(pid, || "preparing system call injection".into())?;
    let mapped = leader.syscall(
        "mmap",
        libc::SYS_mmap,
        &[
            0,
            SCRATCH_LEN,
            // Executable too: batches of queries run there.
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    );
    let scratch = match mapped {
        Ok(a) => a,
        Err(e) => {
            let _ = leader.finish();
            return Err(e).ctx(pid, || "mapping a scratch page".into());
        }
    };
    // The leader's injector stays for the unmap: the queries use their own.
    let tids: Vec<Pid> = frozen.threads.iter().map(|t| t.tid).collect();
    let result = query_threads(
        frozen,
        &tids,
        q,
        &mut |tid| {
            let inj = Injector::new_stops(tid, syscall_ip).ctx(pid, || {
                format!("thread {tid}: preparing system call injection")
            })?;
            Ok((inj, scratch))
        },
        &mut out,
    );
    let unmap = leader.syscall("munmap", libc::SYS_munmap, &[scratch, SCRATCH_LEN]);
    out.injected += leader.count();
    let fin = leader.finish();
    if let Ok(left) = &fin {
        for si in left {
            let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
            let _ = ckpt_sys::proc::tgkill(pid, pid, signo);
        }
    }
    result?;
    unmap.ctx(pid, || "unmapping the scratch page".into())?;
    fin.ctx(pid, || "restoring the registers of the main thread".into())?;
    Ok(out)
}

/// The queries of several processes (`qs[i]` for `frozen[i]`), one
/// result each, in order. The processes that allow it (one thread, safe
/// injection, no signal to queue again, no fd owner to ask) run their
/// calls in lockstep: each call is started in every one of them before
/// the tracer waits for any, so that they run while it works (the calls
/// of one process cost two stops each, see the module doc); those with
/// a signal to end a batch ([`Queries::batch_signals`]) run them all in
/// one go instead, in a page mapped by a call made in lockstep (and
/// unmapped by the last call, on the way out). The others are asked one
/// after the other ([`query`]).
pub(crate) fn query_many(frozen: &mut [&mut Frozen], qs: &[Queries]) -> Vec<Result<RemoteInfo>> {
    let mut out: Vec<Option<Result<RemoteInfo>>> = (0..frozen.len()).map(|_| None).collect();
    let mut started: Vec<(usize, Injector)> = Vec::new();
    for (i, f) in frozen.iter_mut().enumerate() {
        match lockstep_injector(f, &qs[i]) {
            Ok(Some(inj)) => started.push((i, inj)),
            Ok(None) => out[i] = Some(query(f, &qs[i])),
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    // Each thread started to its rt_sigreturn before any is waited for.
    let mut group: Vec<(usize, Injector)> = Vec::new();
    for (i, mut inj) in started {
        match inj.started() {
            Ok(()) => group.push((i, inj)),
            Err(e) => {
                let pid = frozen[i].pid;
                let _ = inj.finish();
                out[i] = Some(Err(e).ctx(pid, || "preparing system call injection".into()));
            }
        }
    }
    let pids: Vec<Pid> = group.iter().map(|(i, _)| frozen[*i].pid).collect();
    for (i, r) in lockstep(&mut group, &pids, qs) {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|o| o.expect("every process was asked"))
        .collect()
}

/// A safe injector for the one thread of `frozen`, when it may be asked
/// in lockstep (see [`query_many`]), started (`Injector::new_safe_start`);
/// None: ask it with [`query`].
fn lockstep_injector(frozen: &mut Frozen, q: &Queries) -> Result<Option<Injector>> {
    let pid = frozen.pid;
    let simple = frozen.threads.len() == 1
        && frozen.threads[0].tid == pid
        && frozen.threads[0].deferred.is_empty()
        && q.owner_fds.is_empty();
    if !simple {
        return Ok(None);
    }
    let Injection::Safe {
        sigreturn,
        writable,
    } = injection(frozen, q.shadow_stack, q.maps.as_deref())?
    else {
        return Ok(None);
    };
    let fits = |a: u64, b: u64| fits(&writable, a, b);
    Injector::new_safe_start(pid, sigreturn, &fits)
        .ctx(pid, || "preparing system call injection".into())
}

/// The process queries of the main threads of `group` (process `pids[k]`
/// for `group[k]`, asked `qs[group[k].0]`), each call started in all
/// before any is waited for; then each injector finished (registers,
/// mask and stack put back), whatever happened. (index, result) for each.
fn lockstep(
    group: &mut Vec<(usize, Injector)>,
    pids: &[Pid],
    qs: &[Queries],
) -> Vec<(usize, Result<RemoteInfo>)> {
    // A page for each process whose queries can run in one go.
    let (mapped, failed) = map_pages(group, pids, qs);
    let mut asked = Vec::new();
    let mut paged: Vec<Option<(u64, i32)>> = Vec::new();
    for (k, (i, inj)) in group.iter_mut().enumerate() {
        let stack = inj.scratch().expect("a safe injector has scratch memory");
        let mut ask = |scratch: u64| {
            let r = Remote {
                pid: pids[k],
                inj: &mut *inj,
                scratch,
            };
            r.process_batch(&qs[*i])
        };
        let mut route = mapped[k];
        let (b, asks) = match route {
            Some((page, _)) => {
                let (b, asks) = ask(page);
                if fits_page(&b) {
                    (b, asks)
                } else {
                    route = None;
                    ask(stack)
                }
            }
            None => ask(stack),
        };
        paged.push(route);
        asked.push((b, Some(asks)));
    }
    let batches: Vec<&Batch> = asked.iter().map(|(b, _)| b).collect();
    let mut answers = run_batches(group, pids, &batches, &paged);
    // Each page is unmapped on the thread's way out; not where a batch
    // failed: its thread may not be back at the rt_sigreturn (the page
    // stays, unused).
    let unmap: Vec<Option<u64>> = mapped
        .iter()
        .zip(&answers)
        .map(|(m, a)| m.filter(|_| a.is_ok()).map(|(page, _)| page))
        .collect();
    for (k, e) in failed.into_iter().enumerate() {
        if let Some(e) = e {
            answers[k] = Err(e);
        }
    }
    let mut done = Vec::new();
    for ((k, (i, mut inj)), a) in group.drain(..).enumerate().zip(answers) {
        let pid = pids[k];
        let scratch = inj.scratch().expect("a safe injector has scratch memory");
        let asks = asked[k].1.take().expect("asked once");
        let res = a.and_then(|a| {
            let mut r = Remote {
                pid,
                inj: &mut inj,
                scratch,
            };
            let mut info = RemoteInfo::default();
            let t = r.process_answers(&qs[i], &a, asks, &mut info)?;
            // Test hook: a pause while the registers are the injector's.
            crate::worker::test_delay();
            r.requeue_injector_deferred()?;
            info.threads.insert(pid, t);
            Ok(info)
        });
        // Every thread started on its way out before any is waited for
        // (a failure here is finish's again), its page unmapped then.
        let page = unmap[k].filter(|&page| {
            inj.finish_start_calling(libc::SYS_munmap, &[page, SCRATCH_LEN])
                .is_ok()
        });
        if page.is_none() {
            let _ = inj.finish_start();
        }
        done.push((k, i, inj, res, page));
    }
    let mut out = Vec::new();
    for (k, i, mut inj, res, page) in done {
        let pid = pids[k];
        let unmapped = inj
            .finish_wait()
            .ctx(pid, || format!("thread {pid}: unmapping its scratch page"))
            .and_then(|r| match (page, r) {
                (Some(_), Some(r)) if (-4095..0).contains(&r) => Err(Error::Sys {
                    pid,
                    what: "unmapping the page of its queries".into(),
                    source: ckpt_sys::Error::Injected {
                        name: "munmap".into(),
                        tid: pid,
                        source: std::io::Error::from_raw_os_error(-r as i32),
                    },
                }),
                _ => Ok(()),
            });
        let res = res.and_then(|info| unmapped.map(|()| info));
        let count = inj.count();
        let r = match (res, inj.finish()) {
            (Ok(mut info), Ok(left)) => {
                info.injected = count;
                resend(pid, pid, &left);
                Ok(info)
            }
            (Err(e), fin) => {
                resend(pid, pid, &fin.unwrap_or_default());
                Err(e)
            }
            (Ok(_), Err(e)) => Err(e).ctx(pid, || format!("thread {pid}: restoring its registers")),
        };
        out.push((i, r));
    }
    out
}

/// Map a page (rwx, private, anonymous) in each process of `group` whose
/// queries may run in one go ([`Queries::batch_signals`], the signal not
/// blocked by its thread), each mmap in all before any is waited for:
/// (page, signal to end its batch) for each, None where not (or where the
/// mmap failed); and the errors of the processes that failed.
#[allow(clippy::type_complexity)]
fn map_pages(
    group: &mut [(usize, Injector)],
    pids: &[Pid],
    qs: &[Queries],
) -> (Vec<Option<(u64, i32)>>, Vec<Option<Error>>) {
    let signals: Vec<Option<i32>> = group
        .iter()
        .map(|(i, inj)| {
            let free = qs[*i].batch_signals & !inj.saved_mask();
            [libc::SIGURG, libc::SIGWINCH, libc::SIGCHLD]
                .into_iter()
                .find(|s| free & (1 << (s - 1)) != 0)
        })
        .collect();
    let mut batches: Vec<Batch> = Vec::new();
    for sig in &signals {
        let mut b = Batch::default();
        if sig.is_some() {
            b.push(
                "mmap",
                libc::SYS_mmap,
                [
                    0,
                    SCRATCH_LEN,
                    (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                    u64::MAX,
                    0,
                ],
            );
        }
        batches.push(b);
    }
    let refs: Vec<&Batch> = batches.iter().collect();
    let mut failed = Vec::new();
    let mut pages = Vec::new();
    for (a, sig) in run_lockstep(group, pids, &refs).into_iter().zip(signals) {
        let page = match (a, sig) {
            (Ok(a), Some(sig)) => a
                .results
                .first()
                .filter(|&&r| !(-4095..0).contains(&r))
                .map(|&r| (r as u64, sig)),
            (Ok(_), None) => None,
            (Err(e), _) => {
                failed.push(Some(e));
                pages.push(None);
                continue;
            }
        };
        failed.push(None);
        pages.push(page);
    }
    (pages, failed)
}

/// Whether batch `b` fits a page of [`map_pages`]: its code and table
/// below [`OUT`], its answers above.
fn fits_page(b: &Batch) -> bool {
    b.out_len <= SCRATCH_LEN - OUT && ckpt_sys::inject::safe_batch_len(b.calls.len()) <= OUT
}

/// The calls of `batches[k]` in `group[k]`'s thread: in one go in the
/// page `paged[k]` names (see [`Injector::safe_batch_start`]), else call
/// by call ([`run_lockstep`]); each step in every thread before the next
/// step in any.
fn run_batches(
    group: &mut [(usize, Injector)],
    pids: &[Pid],
    batches: &[&Batch],
    paged: &[Option<(u64, i32)>],
) -> Vec<Result<Answers>> {
    let none = Batch::default();
    let by_call: Vec<&Batch> = batches
        .iter()
        .zip(paged)
        .map(|(b, p)| if p.is_some() { &none } else { *b })
        .collect();
    let mut out = run_lockstep(group, pids, &by_call);
    let ctx = |k: usize, tid: Pid| {
        move |e: ckpt_sys::Error| Error::Sys {
            pid: pids[k],
            what: format!("thread {tid}: querying it"),
            source: e,
        }
    };
    let mut started = vec![false; group.len()];
    for (k, (_, inj)) in group.iter_mut().enumerate() {
        let Some((page, sig)) = paged[k] else {
            continue;
        };
        let calls: Vec<(i64, [u64; 6])> = batches[k].calls.iter().map(|c| (c.1, c.2)).collect();
        let tid = inj.tid();
        match inj.safe_batch_start(page, &calls, sig) {
            Ok(()) => started[k] = true,
            Err(e) => out[k] = Err(ctx(k, tid)(e)),
        }
    }
    let mut back = vec![false; group.len()];
    for (k, (_, inj)) in group.iter_mut().enumerate() {
        let Some((page, _)) = paged[k].filter(|_| started[k]) else {
            continue;
        };
        let tid = inj.tid();
        let r = inj.safe_batch_result().and_then(|results| {
            back[k] = true;
            let out = inj
                .mem()
                .read_vec(page + OUT, batches[k].out_len as usize)?;
            Ok(Answers {
                results,
                out,
                names: batches[k].calls.iter().map(|c| c.0).collect(),
            })
        });
        out[k] = r.map_err(ctx(k, tid));
    }
    for (k, (_, inj)) in group.iter_mut().enumerate() {
        if back[k] {
            let tid = inj.tid();
            if let Err(e) = inj.safe_batch_end() {
                out[k] = Err(ctx(k, tid)(e));
            }
        }
    }
    out
}

/// Signals caught between the last check and the end of the injection:
/// kept by sending them again (without their details).
fn resend(pid: Pid, tid: Pid, left: &[[u8; ptrace::SIGINFO_SIZE]]) {
    for si in left {
        let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
        let _ = ckpt_sys::proc::tgkill(pid, tid, signo);
    }
}

/// The calls of `batches[k]` in `group[k]`'s thread, call by call: each
/// step of a call in every thread before the next step in any. A thread
/// that fails is left out of the later calls (its injector is finished
/// by the caller).
fn run_lockstep(
    group: &mut [(usize, Injector)],
    pids: &[Pid],
    batches: &[&Batch],
) -> Vec<Result<Answers>> {
    type Done = (Vec<i64>, Vec<u8>);
    let mut state: Vec<Result<Done>> = batches
        .iter()
        .map(|b| Ok((Vec::new(), vec![0u8; b.out_len as usize])))
        .collect();
    let steps = batches.iter().map(|b| b.calls.len()).max().unwrap_or(0);
    let mut lent: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); group.len()];
    for c in 0..steps {
        let live =
            |state: &[Result<Done>], k: usize| state[k].is_ok() && c < batches[k].calls.len();
        for (k, (_, inj)) in group.iter_mut().enumerate() {
            if !live(&state, k) {
                continue;
            }
            let (name, nr, _) = batches[k].calls[c];
            let scratch = inj.scratch().expect("a safe injector has scratch memory");
            let r = Remote {
                pid: pids[k],
                inj,
                scratch,
            };
            let started = r.lend(batches[k], c, scratch + OUT).and_then(|(args, l)| {
                lent[k] = l;
                let tid = r.inj.tid();
                r.inj
                    .call_start(nr, &args)
                    .ctx(pids[k], || format!("thread {tid}: querying {name}"))
            });
            if let Err(e) = started {
                state[k] = Err(e);
            }
        }
        for (k, (_, inj)) in group.iter_mut().enumerate() {
            if !live(&state, k) {
                continue;
            }
            let (name, nr, _) = batches[k].calls[c];
            let tid = inj.tid();
            match inj.call_result(nr) {
                Ok(rax) => {
                    if let Ok((results, _)) = &mut state[k] {
                        results.push(rax);
                    }
                }
                Err(e) => {
                    state[k] = Err(e).ctx(pids[k], || format!("thread {tid}: querying {name}"))
                }
            }
        }
        for (k, (_, inj)) in group.iter_mut().enumerate() {
            if !live(&state, k) {
                continue;
            }
            let (name, nr, _) = batches[k].calls[c];
            let scratch = inj.scratch().expect("a safe injector has scratch memory");
            let tid = inj.tid();
            let ended = inj
                .call_end(nr)
                .ctx(pids[k], || format!("thread {tid}: querying {name}"));
            let r = Remote {
                pid: pids[k],
                inj,
                scratch,
            };
            let taken = ended.and_then(|()| match &mut state[k] {
                Ok((_, out)) => r.take_back(&lent[k], out),
                Err(_) => Ok(()),
            });
            if let Err(e) = taken {
                state[k] = Err(e);
            }
        }
    }
    state
        .into_iter()
        .zip(batches)
        .map(|(s, b)| {
            s.map(|(results, out)| Answers {
                results,
                out,
                names: b.calls.iter().map(|c| c.0).collect(),
            })
        })
        .collect()
}
