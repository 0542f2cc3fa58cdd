//! State only the process itself can tell: queried with system calls
//! injected into its stopped threads (sigactions, sigaltstack, timers,
//! prctl values, ...). Uses one scratch page mapped in the target for the
//! duration of the queries; registers, signal mask and mappings are put back
//! exactly as they were, on success and on failure.

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
}

#[derive(Debug, Default, Clone)]
pub(crate) struct ThreadRemote {
    pub altstack: SigAltStack,
    pub clear_child_tid: u64,
    pub cpu_affinity: Vec<u64>,
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
    pub owners: BTreeMap<i32, FileOwner>,
    pub injected: u64,
}

/// Find a `syscall` instruction in the target's `[vdso]`.
pub(crate) fn find_syscall_ip(pid: Pid) -> Result<u64> {
    let path = format!("/proc/{pid}/maps");
    let maps = crate::procfs::read_string(pid, &path)?;
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
/// place of the scratch area.
#[derive(Default)]
struct Batch {
    calls: Vec<(&'static str, i64, [u64; 6])>,
    /// Bytes of output places handed out.
    out_len: u64,
}

impl Batch {
    /// Room for `len` bytes of answer: its offset in the output area.
    fn out(&mut self, len: u64) -> u64 {
        let at = self.out_len;
        self.out_len += len.next_multiple_of(8);
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
        Ok(Answers {
            results,
            out,
            names: b.calls.iter().map(|c| c.0).collect(),
        })
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
    fn thread_queries(&self, b: &mut Batch) -> [(usize, u64); 3] {
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
        let aff = b.out(512);
        let i_aff = b.push(
            "sched_getaffinity",
            libc::SYS_sched_getaffinity,
            [0, 512, o + aff, 0, 0, 0],
        );
        [(i_alt, alt), (i_tid, tid), (i_aff, aff)]
    }

    fn thread_answers(&self, a: &Answers, q: [(usize, u64); 3]) -> Result<ThreadRemote> {
        let (pid, tid) = (self.pid, self.inj.tid());
        let [(i_alt, alt), (i_tid, tidp), (i_aff, aff)] = q;
        a.ok(pid, tid, i_alt)?;
        a.ok(pid, tid, i_tid)?;
        let n = (a.ok(pid, tid, i_aff)? as usize).min(512);
        Ok(ThreadRemote {
            altstack: SigAltStack {
                sp: a.word(alt, 0),
                flags: a.word(alt, 1) as u32,
                size: a.word(alt, 2),
            },
            clear_child_tid: a.word(tidp, 0),
            cpu_affinity: (0..n / 8).map(|i| a.word(aff, i)).collect(),
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
        let o = self.scratch + OUT;
        let mut b = Batch::default();
        let i_brk = b.push("brk", libc::SYS_brk, [0; 6]);
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
        let prctl = |b: &mut Batch, name, opt: i32, arg: u64| {
            b.push(name, libc::SYS_prctl, [opt as u64, arg, 0, 0, 0, 0])
        };
        let i_sec = prctl(
            &mut b,
            "prctl(PR_GET_SECUREBITS)",
            libc::PR_GET_SECUREBITS,
            0,
        );
        let i_dump = prctl(&mut b, "prctl(PR_GET_DUMPABLE)", libc::PR_GET_DUMPABLE, 0);
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
        let i_thp = prctl(
            &mut b,
            "prctl(PR_GET_THP_DISABLE)",
            libc::PR_GET_THP_DISABLE,
            0,
        );
        let i_slack = prctl(
            &mut b,
            "prctl(PR_GET_TIMERSLACK)",
            libc::PR_GET_TIMERSLACK,
            0,
        );
        // Linux 6.3+; before, EINVAL: no registrations can be told.
        let i_mb = b.push(
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
        let tq = self.thread_queries(&mut b);
        let a = self.run(b)?;
        let (pid, tid) = (self.pid, self.inj.tid());
        out.brk = a.ok(pid, tid, i_brk)?;
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
        out.securebits = a.ok(pid, tid, i_sec)? as u32;
        out.dumpable = a.ok(pid, tid, i_dump)? != 0;
        a.ok(pid, tid, i_sub)?;
        out.child_subreaper = a.word(sub, 0) as u32 != 0;
        a.ok(pid, tid, i_pds)?;
        out.pdeathsig = a.word(pds, 0) as i32;
        out.thp_disabled = a.ok(pid, tid, i_thp)? != 0;
        out.timer_slack_ns = a.ok(pid, tid, i_slack)?;
        out.membarrier = u32::try_from(a.results[i_mb]).unwrap_or(0);
        self.limits(q.rlimits.as_deref(), &a, &limits, out)?;
        let t = self.thread_answers(&a, tq)?;
        self.owners(&q.owner_fds, out)?;
        Ok(t)
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

/// Run all queries. Deferred signals of each thread (dequeued while it was
/// being stopped) are queued again in that thread first, so that they are
/// pending again: the pending lists read afterwards contain them, and a
/// process that goes on running receives them.
pub(crate) fn query(frozen: &mut Frozen, syscall_ip: u64, q: &Queries) -> Result<RemoteInfo> {
    let pid = frozen.pid;
    let mut out = RemoteInfo::default();
    let mut leader =
        Injector::new(pid, syscall_ip).ctx(pid, || "preparing system call injection".into())?;
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
    let mut requeued: Vec<Pid> = Vec::new();
    let result = (|| -> Result<()> {
        let deferred: BTreeMap<Pid, _> = frozen
            .threads
            .iter()
            .map(|t| (t.tid, t.deferred.clone()))
            .collect();
        {
            let mut r = Remote {
                pid,
                inj: &mut leader,
                scratch,
            };
            r.requeue(&deferred[&pid])?;
            requeued.push(pid);
            let t = r.process_queries(q, &mut out)?;
            // Test hook: a pause while the registers are the injector's.
            crate::worker::test_delay();
            r.requeue_injector_deferred()?;
            out.threads.insert(pid, t);
        }
        for t in frozen.threads.iter().filter(|t| t.tid != pid) {
            let tid = t.tid;
            let mut inj = Injector::new(tid, syscall_ip).ctx(pid, || {
                format!("thread {tid}: preparing system call injection")
            })?;
            let res = (|| -> Result<ThreadRemote> {
                let mut r = Remote {
                    pid,
                    inj: &mut inj,
                    scratch,
                };
                r.requeue(&deferred[&tid])?;
                requeued.push(tid);
                let tr = r.other_thread()?;
                r.requeue_injector_deferred()?;
                Ok(tr)
            })();
            out.injected += inj.count();
            let fin = inj.finish();
            let tr = res?;
            let left = fin.ctx(pid, || format!("thread {tid}: restoring registers"))?;
            if !left.is_empty() {
                // Signals caught between the last check and finish: keep them
                // by sending them again (without their details).
                for si in left {
                    let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
                    let _ = ckpt_sys::proc::tgkill(pid, tid, signo);
                }
            }
            out.threads.insert(tid, tr);
        }
        Ok(())
    })();
    // Always unmap the scratch page and put the leader back.
    let unmap = leader.syscall("munmap", libc::SYS_munmap, &[scratch, SCRATCH_LEN]);
    out.injected += leader.count();
    let fin = leader.finish();
    frozen.mark_requeued(&requeued);
    if let Ok(left) = &fin {
        // Caught after the scratch page was gone: send them again (without details).
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
