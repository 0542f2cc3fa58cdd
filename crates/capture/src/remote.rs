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
//! through `rt_sigreturn` to where it was. A process without such a
//! sequence (no libc), with user shadow stacks, or whose stacks have no
//! room, is queried the old way instead: through the vdso's `syscall`
//! instruction and a scratch page mapped for the time of the queries, with
//! PTRACE_O_EXITKILL set meanwhile (our death then kills it rather than
//! let it run with foreign registers).

use crate::error::{Error, Result, SysCtx};
use crate::freeze::Frozen;
use crate::process::rlimits::RLIMIT_NAMES;
use ckpt_image::{FileOwner, ITimer, Rlimit, SigAction, SigAltStack};
use ckpt_sys::{ptrace, Injector, Pid};
use std::collections::BTreeMap;

const SCRATCH_LEN: u64 = 4096;

const TCGETS2: u64 = 0x802c_542a;
const TERMIOS2_SIZE: usize = 44;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCGPGRP: u64 = 0x540f;
const F_GETOWN_EX: u64 = 16;
const F_GETSIG: u64 = 11;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;

/// What to ask about besides the fixed set.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    /// POSIX timer ids (from /proc/PID/timers).
    pub timer_ids: Vec<i32>,
    /// Fds that are terminals.
    pub tty_fds: Vec<i32>,
    /// Fds whose owner (F_GETOWN_EX / F_GETSIG) to read.
    pub owner_fds: Vec<i32>,
    /// Signals whose action to read (bit `sig - 1`); the others are at
    /// their default action with no flags (from /proc/PID/status: neither
    /// caught nor ignored; SIGCHLD is always read, for its flags).
    pub sig_mask: u64,
    /// The resource limits, when read from outside (prlimit of the pid);
    /// None: read by the process itself.
    pub rlimits: Option<Vec<(u64, u64)>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ThreadRemote {
    pub altstack: SigAltStack,
    pub clear_child_tid: u64,
    pub cpu_affinity: Vec<u64>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct TtyRemote {
    pub termios: Vec<u8>,
    pub rows: u16,
    pub cols: u16,
    /// TIOCGPGRP, when the terminal is the process's controlling one.
    pub pgrp: Option<i32>,
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
    /// MEMBARRIER_CMD_GET_REGISTRATIONS (0 on a kernel without it).
    pub membarrier: u32,
    pub rlimits: Vec<Rlimit>,
    pub threads: BTreeMap<Pid, ThreadRemote>,
    pub ttys: BTreeMap<i32, TtyRemote>,
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

/// An rt_sigreturn sequence in the executable mappings of `pid` (libc
/// first), read 64 KiB at a time until one is found.
fn find_sigreturn(pid: Pid, maps: &[(u64, u64, &str, &str)]) -> Option<u64> {
    let mem = ckpt_sys::mm::ProcMem::open(pid).ok()?;
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
                .is_some_and(|v| v.split_whitespace().any(|f| f == "shstk"))
        })
        .unwrap_or(false)
}

/// How to inject into the frozen process: safely when it has an
/// rt_sigreturn sequence and every thread's stack has room for a frame.
fn injection(frozen: &Frozen) -> Result<Injection> {
    let pid = frozen.pid;
    let path = format!("/proc/{pid}/maps");
    let text = crate::procfs::read_string(pid, &path)?;
    let maps = parse_maps(&text);
    let writable: Vec<(u64, u64)> = maps
        .iter()
        .filter(|m| m.2.starts_with("rw") && m.2.ends_with('p'))
        .map(|m| (m.0, m.1))
        .collect();
    let sigreturn = find_sigreturn(pid, &maps).filter(|_| !uses_shadow_stack(pid));
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

impl Remote<'_> {
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

    fn thread_queries(&mut self) -> Result<ThreadRemote> {
        let mut t = ThreadRemote::default();
        self.call("sigaltstack", libc::SYS_sigaltstack, &[0, self.scratch])?;
        let b = self.read(24)?;
        t.altstack = SigAltStack {
            sp: u64_at(&b, 0),
            flags: u64_at(&b, 1) as u32,
            size: u64_at(&b, 2),
        };
        self.call(
            "prctl(PR_GET_TID_ADDRESS)",
            libc::SYS_prctl,
            &[libc::PR_GET_TID_ADDRESS as u64, self.scratch],
        )?;
        t.clear_child_tid = u64_at(&self.read(8)?, 0);
        let n = self.call(
            "sched_getaffinity",
            libc::SYS_sched_getaffinity,
            &[0, 512, self.scratch],
        )? as usize;
        let b = self.read(n.min(512))?;
        t.cpu_affinity = b.chunks_exact(8).map(|c| u64_at(c, 0)).collect();
        Ok(t)
    }

    /// The process-wide values.
    fn process_queries(&mut self, q: &Queries, out: &mut RemoteInfo) -> Result<()> {
        out.brk = self.call("brk", libc::SYS_brk, &[0])?;
        self.sigactions(q.sig_mask, out)?;
        self.timers(&q.timer_ids, out)?;
        self.prctls(out)?;
        self.rlimits(q.rlimits.as_deref(), out)?;
        self.ttys(&q.tty_fds, out)?;
        self.owners(&q.owner_fds, out)?;
        Ok(())
    }

    /// The action of every signal in `mask` (bit `sig - 1`); the others are default.
    fn sigactions(&mut self, mask: u64, out: &mut RemoteInfo) -> Result<()> {
        for sig in 1..=64u64 {
            if mask & (1 << (sig - 1)) == 0 {
                out.sigactions.push(SigAction::default());
                continue;
            }
            self.call(
                "rt_sigaction",
                libc::SYS_rt_sigaction,
                &[sig, 0, self.scratch, 8],
            )?;
            let b = self.read(32)?;
            out.sigactions.push(SigAction {
                handler: u64_at(&b, 0),
                flags: u64_at(&b, 1),
                restorer: u64_at(&b, 2),
                mask: u64_at(&b, 3),
            });
        }
        Ok(())
    }

    /// Interval timers, and the times of the POSIX timers `ids`.
    fn timers(&mut self, ids: &[i32], out: &mut RemoteInfo) -> Result<()> {
        for which in 0..3u32 {
            self.call(
                "getitimer",
                libc::SYS_getitimer,
                &[which as u64, self.scratch],
            )?;
            let b = self.read(32)?;
            let tv = |s: u64, us: u64| s.saturating_mul(1_000_000_000).saturating_add(us * 1000);
            out.itimers.push(ITimer {
                which,
                interval_ns: tv(u64_at(&b, 0), u64_at(&b, 1)),
                value_ns: tv(u64_at(&b, 2), u64_at(&b, 3)),
            });
        }
        for &id in ids {
            self.call(
                "timer_gettime",
                libc::SYS_timer_gettime,
                &[id as u64, self.scratch],
            )?;
            let b = self.read(32)?;
            let ts = |s: u64, ns: u64| s.saturating_mul(1_000_000_000).saturating_add(ns);
            let overrun =
                self.call("timer_getoverrun", libc::SYS_timer_getoverrun, &[id as u64])?;
            out.timer_times.insert(
                id,
                (
                    ts(u64_at(&b, 0), u64_at(&b, 1)),
                    ts(u64_at(&b, 2), u64_at(&b, 3)),
                    overrun as i32,
                ),
            );
        }
        Ok(())
    }

    /// securebits, dumpable, child subreaper, parent death signal, THP, timer
    /// slack, membarrier registrations.
    fn prctls(&mut self, out: &mut RemoteInfo) -> Result<()> {
        out.securebits = self.call(
            "prctl(PR_GET_SECUREBITS)",
            libc::SYS_prctl,
            &[libc::PR_GET_SECUREBITS as u64],
        )? as u32;
        out.dumpable = self.call(
            "prctl(PR_GET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_GET_DUMPABLE as u64],
        )? != 0;
        self.write(&[0u8; 8])?;
        self.call(
            "prctl(PR_GET_CHILD_SUBREAPER)",
            libc::SYS_prctl,
            &[libc::PR_GET_CHILD_SUBREAPER as u64, self.scratch],
        )?;
        out.child_subreaper = u64_at(&self.read(8)?, 0) as u32 != 0;
        self.write(&[0u8; 8])?;
        self.call(
            "prctl(PR_GET_PDEATHSIG)",
            libc::SYS_prctl,
            &[libc::PR_GET_PDEATHSIG as u64, self.scratch],
        )?;
        out.pdeathsig = u64_at(&self.read(8)?, 0) as i32;
        out.thp_disabled = self.call(
            "prctl(PR_GET_THP_DISABLE)",
            libc::SYS_prctl,
            &[libc::PR_GET_THP_DISABLE as u64],
        )? != 0;
        out.timer_slack_ns = self.call(
            "prctl(PR_GET_TIMERSLACK)",
            libc::SYS_prctl,
            &[libc::PR_GET_TIMERSLACK as u64],
        )?;
        // Linux 6.3+; before, EINVAL: no registrations can be told.
        let r = self.call_raw(
            "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)",
            libc::SYS_membarrier,
            &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0],
        )?;
        out.membarrier = u32::try_from(r).unwrap_or(0);
        Ok(())
    }

    /// Resource limits: those read from `outside`, else asked.
    fn rlimits(&mut self, outside: Option<&[(u64, u64)]>, out: &mut RemoteInfo) -> Result<()> {
        for (res, name) in RLIMIT_NAMES.iter().enumerate() {
            if let Some(&(soft, hard)) = outside.and_then(|l| l.get(res)) {
                out.rlimits.push(Rlimit {
                    resource: res as u32,
                    name: (*name).to_string(),
                    soft,
                    hard,
                });
                continue;
            }
            self.call(
                "prlimit64",
                libc::SYS_prlimit64,
                &[0, res as u64, 0, self.scratch],
            )?;
            let b = self.read(16)?;
            out.rlimits.push(Rlimit {
                resource: res as u32,
                name: (*name).to_string(),
                soft: u64_at(&b, 0),
                hard: u64_at(&b, 1),
            });
        }
        Ok(())
    }

    /// Settings, window size and foreground group of terminal fds.
    fn ttys(&mut self, fds: &[i32], out: &mut RemoteInfo) -> Result<()> {
        for &fd in fds {
            let mut t = TtyRemote::default();
            self.call(
                "ioctl(TCGETS2)",
                libc::SYS_ioctl,
                &[fd as u64, TCGETS2, self.scratch],
            )
            .map_err(|e| Error::Fd {
                fd,
                what: format!("reading the terminal settings: {e}"),
            })?;
            t.termios = self.read(TERMIOS2_SIZE)?;
            if self.call_raw(
                "ioctl(TIOCGWINSZ)",
                libc::SYS_ioctl,
                &[fd as u64, TIOCGWINSZ, self.scratch],
            )? == 0
            {
                let b = self.read(4)?;
                t.rows = u16::from_ne_bytes([b[0], b[1]]);
                t.cols = u16::from_ne_bytes([b[2], b[3]]);
            }
            if self.call_raw(
                "ioctl(TIOCGPGRP)",
                libc::SYS_ioctl,
                &[fd as u64, TIOCGPGRP, self.scratch],
            )? == 0
            {
                let b = self.read(4)?;
                t.pgrp = Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
            out.ttys.insert(fd, t);
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

/// Run all queries. Deferred signals of each thread (dequeued while it was
/// being stopped) are queued again in that thread first, so that they are
/// pending again: the pending lists read afterwards contain them, and a
/// process that goes on running receives them.
pub(crate) fn query(frozen: &mut Frozen, q: &Queries) -> Result<RemoteInfo> {
    match injection(frozen)? {
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
            let r = query_threads(frozen, q, &mut injector, &mut out);
            r.map(|()| out)
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

/// The queries of every thread, the leader first, each through the
/// injector (and scratch memory) `injector` makes for it.
fn query_threads(
    frozen: &mut Frozen,
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
    let tids: Vec<Pid> = frozen.threads.iter().map(|t| t.tid).collect();
    let mut requeued: Vec<Pid> = Vec::new();
    let mut result = Ok(());
    for tid in tids {
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
            if tid == pid {
                r.process_queries(q, out)?;
                // Test hook: a pause while the registers are the injector's.
                crate::worker::test_delay();
            }
            let tr = r.thread_queries()?;
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
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
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
    let result = query_threads(
        frozen,
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
            let _ = ckpt_sys::sys::tgkill(pid, pid, signo);
        }
    }
    result?;
    unmap.ctx(pid, || "unmapping the scratch page".into())?;
    fin.ctx(pid, || "restoring the registers of the main thread".into())?;
    Ok(out)
}
