//! One thread: registers (general and XSAVE), signal mask, rseq, robust
//! futex list, scheduling (read from outside while it is stopped; its
//! altstack, clear_child_tid and affinity are asked of it, remote.rs).

use crate::error::{Result, SysCtx};
use crate::procfs::Stat;
use ckpt_image::{Registers, RobustList, Thread, X8664Regs};
use ckpt_sys::{ptrace, Pid};

pub(crate) fn thread_state(pid: Pid, tid: Pid, state_before: &str) -> Result<Thread> {
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
    regs.set_gprs(&gprs);
    let blocked =
        ptrace::get_sigmask(tid).ctx(pid, || format!("thread {tid}: reading the signal mask"))?;
    let rseq = ckpt_sys::rseq::get_rseq(tid).ctx(pid, || {
        format!("thread {tid}: reading the rseq registration")
    })?;
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
        },
        cpu_affinity: Vec::new(),
        creds: None,
        seccomp_filter: 0,
        cgroups_v1: Vec::new(),
    })
}
