//! Signals: which actions to ask the process for, and the pending queues
//! (per thread and shared) with their siginfo.

use crate::error::{Result, SysCtx};
use crate::procfs::Status;
use ckpt_image::SigInfo;
use ckpt_sys::{ptrace, Pid};

/// The signals whose action the process must be asked for: the caught and
/// the ignored ones (/proc/PID/status), and SIGCHLD (whose flags matter
/// even at its default action).
pub(crate) fn to_query(status: &Status) -> Result<u64> {
    let caught = status.radix("SigCgt", 16)?;
    let ignored = status.radix("SigIgn", 16)?;
    Ok(caught | ignored | (1 << (libc::SIGCHLD - 1)))
}

/// The signals that may end a batch of injected calls
/// (`remote::Queries::batch_signals`), from the process's status: SIGURG,
/// SIGWINCH and SIGCHLD (ignored at their default action) when not caught,
/// blocked or pending; none with a seccomp filter (it may refuse the calls
/// that end the batch).
pub(crate) fn batch_signals(status: &Status) -> Result<u64> {
    if status.num::<u32>("Seccomp")? != 0 {
        return Ok(0);
    }
    let busy = status.radix("SigCgt", 16)?
        | status.radix("SigBlk", 16)?
        | status.radix("SigPnd", 16)?
        | status.radix("ShdPnd", 16)?;
    let ignored_by_default = [libc::SIGURG, libc::SIGWINCH, libc::SIGCHLD]
        .iter()
        .fold(0u64, |m, &s| m | 1 << (s - 1));
    Ok(ignored_by_default & !busy)
}

/// The signals pending for thread `tid` (`shared`: for the whole process).
pub(crate) fn pending(pid: Pid, tid: Pid, shared: bool) -> Result<Vec<SigInfo>> {
    let what = || {
        if shared {
            "reading shared pending signals".to_string()
        } else {
            format!("thread {tid}: reading pending signals")
        }
    };
    Ok(ptrace::peek_siginfo(tid, shared)
        .ctx(pid, what)?
        .iter()
        .map(siginfo)
        .collect())
}

fn siginfo(raw: &[u8; ptrace::SIGINFO_SIZE]) -> SigInfo {
    let i = |o: usize| i32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
    SigInfo {
        signo: i(0),
        code: i(8),
        raw: raw.to_vec(),
    }
}
