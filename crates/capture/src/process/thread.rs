//! One thread: registers (general and XSAVE), signal mask, rseq, robust
//! futex list, scheduling (read from outside while it is stopped; its
//! altstack, clear_child_tid and affinity are asked of it, remote.rs).

use crate::error::{Result, SysCtx};
use crate::procfs::Stat;
use ckpt_image::{Registers, RobustList, Thread, X8664Regs};
use ckpt_sys::{ptrace, Pid};

pub(crate) fn thread_state(
    pid: Pid,
    tid: Pid,
    state_before: &str,
    rseq: ckpt_sys::rseq::RseqConfig,
) -> Result<Thread> {
    let gprs = ptrace::get_regs(tid).ctx(pid, || format!("thread {tid}: reading registers"))?;
    let xsave =
        ptrace::get_xstate(tid).ctx(pid, || format!("thread {tid}: reading the XSAVE area"))?;
    let xfeatures = xsave
        .get(512..520)
        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0);
    let mut regs = X8664Regs {
        xsave,
        xfeatures,
        ..Default::default()
    };
    let blocked =
        ptrace::get_sigmask(tid).ctx(pid, || format!("thread {tid}: reading the signal mask"))?;
    regs.set_gprs(&gprs);
    let (head, len) = ckpt_sys::proc::get_robust_list(tid).ctx(pid, || {
        format!("thread {tid}: reading the robust futex list")
    })?;
    let st = Stat::read(pid, &format!("/proc/{pid}/task/{tid}/stat"))?;
    let nice = st.stat.nice;
    Ok(Thread {
        tid,
        comm: st.comm.clone(),
        state: state_before.to_string(),
        regs: Registers::X8664(regs),
        blocked,
        pending: Vec::new(),
        altstack: Default::default(),
        clear_child_tid: 0,
        robust_list: RobustList { head, len },
        rseq: ckpt_image::Rseq {
            address: rseq.address,
            length: rseq.length,
            signature: rseq.signature,
            flags: rseq.flags,
        },
        sched: ckpt_image::Sched {
            // sched_getscheduler also tells SCHED_RESET_ON_FORK, which
            // stat's field 41 leaves out.
            policy: match ckpt_sys::proc::sched::sched_getscheduler(tid) {
                Ok((policy, _)) => policy,
                Err(_) => st.need(st.stat.policy, 41, "policy")?,
            },
            priority: st.need(st.stat.rt_priority, 40, "rt_priority")?,
            nice: i32::try_from(nice).map_err(|_| st.bad(format!("nice {nice}")))?,
            ioprio: ckpt_sys::proc::sched::ioprio_get(tid)
                .ctx(pid, || format!("thread {tid}: reading its I/O priority"))?,
        },
        // From outside: one system call fewer injected per thread.
        cpu_affinity: ckpt_sys::proc::sched::sched_getaffinity(tid)
            .ctx(pid, || format!("thread {tid}: reading its CPU affinity"))?,
        creds: None,
        seccomp_filter: 0,
        cgroups_v1: Vec::new(),
    })
}

/// A thread just stopped by the freeze inside a restartable sequence is
/// made to abort it, as the kernel does at its next preemption or signal:
/// it continues at the sequence's abort handler. Otherwise the system
/// calls injected later would make the kernel forget the sequence (it
/// clears rseq_cs when they return, outside it), and the thread would go
/// on and commit, in the image and (with --leave-running) here. Returns
/// the thread's rseq registration (saved with the thread).
pub(crate) fn abort_rseq(pid: Pid, tid: Pid) -> Result<ckpt_sys::rseq::RseqConfig> {
    let rseq = ckpt_sys::rseq::get_rseq(tid).ctx(pid, || {
        format!("thread {tid}: reading the rseq registration")
    })?;
    if rseq.address == 0 {
        return Ok(rseq);
    }
    let mut gprs = ptrace::get_regs(tid).ctx(pid, || format!("thread {tid}: reading registers"))?;
    if let Some(abort_ip) = rseq_abort_ip(tid, &rseq, gprs[ptrace::reg::RIP]) {
        gprs[ptrace::reg::RIP] = abort_ip;
        ptrace::set_regs(tid, &gprs).ctx(pid, || {
            format!("thread {tid}: moving to its rseq abort handler")
        })?;
        tracing::debug!(
            tid,
            abort_ip,
            "stopped in an rseq critical section: aborted"
        );
    }
    Ok(rseq)
}

/// The abort handler of the restartable sequence `ip` is in, if the thread
/// has one registered and active (rseq_cs set, descriptor version 0, `ip`
/// in [start_ip, start_ip + post_commit_offset), the registered signature
/// in the 4 bytes before the handler, as the kernel checks).
fn rseq_abort_ip(tid: Pid, rseq: &ckpt_sys::rseq::RseqConfig, ip: u64) -> Option<u64> {
    use ckpt_sys::mm::{read_vm, RemoteRange};
    let read = |addr: u64, buf: &mut [u8]| {
        let range = [RemoteRange {
            addr,
            len: buf.len(),
        }];
        matches!(read_vm(tid, buf, &range), Ok(n) if n == buf.len())
    };
    if rseq.address == 0 {
        return None;
    }
    // struct rseq: cpu_id_start u32, cpu_id u32, rseq_cs u64 (offset 8).
    let mut w = [0u8; 8];
    if !read(rseq.address + 8, &mut w) {
        return None;
    }
    let cs = u64::from_ne_bytes(w);
    // struct rseq_cs: version u32, flags u32, start_ip, post_commit_offset,
    // abort_ip (u64 each).
    let mut d = [0u8; 32];
    if cs == 0 || !read(cs, &mut d) {
        return None;
    }
    let word = |i: usize| u64::from_ne_bytes(d[i..i + 8].try_into().expect("8 bytes"));
    let version = u32::from_ne_bytes(d[0..4].try_into().expect("4 bytes"));
    let (start, len, abort) = (word(8), word(16), word(24));
    if version != 0 || ip < start || ip - start >= len || abort < 4 {
        return None;
    }
    let mut sig = [0u8; 4];
    (read(abort - 4, &mut sig) && u32::from_ne_bytes(sig) == rseq.signature).then_some(abort)
}
