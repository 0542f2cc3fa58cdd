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

const SCRATCH_LEN: u64 = 4096;

const F_GETOWN_EX: u64 = 16;
const F_GETSIG: u64 = 11;

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
    let mem = ckpt_sys::remote::ProcMem::open(pid).ctx(pid, || "opening its memory".into())?;
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

    /// securebits, dumpable, child subreaper, parent death signal, THP, timer slack.
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
            r.process_queries(q, &mut out)?;
            // Test hook: a pause while the registers are the injector's.
            crate::worker::test_delay();
            let t = r.thread_queries()?;
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
                let tr = r.thread_queries()?;
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
                    let _ = ckpt_sys::sys::tgkill(pid, tid, signo);
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
            let _ = ckpt_sys::sys::tgkill(pid, pid, signo);
        }
    }
    result?;
    unmap.ctx(pid, || "unmapping the scratch page".into())?;
    fin.ctx(pid, || "restoring the registers of the main thread".into())?;
    Ok(out)
}
