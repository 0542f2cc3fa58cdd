//! Signals: the process's handlers, each thread's alternate stack and the
//! pending signals (queued again while every signal is blocked; the saved
//! masks are set with the registers), and which handler runs first when a
//! thread resumes (for the syscall-restart fixup, thread.rs).

use crate::error::{Result, SysContext};
use crate::remote::{u64s, Allow, Batcher, Remote};
use ckpt_image::{Process, SigAction, Thread};

const SS_DISABLE: u32 = 2;
const SS_AUTODISARM: u32 = 1 << 31;

/// Handlers for every signal but SIGKILL and SIGSTOP. Signals the stub has
/// at their default (neither caught nor ignored: an all-zero action, as
/// after exec) need no call when the image's action is all-zero too.
pub(crate) fn set_handlers(
    main: &mut Remote,
    b: &mut Batcher,
    p: &Process,
    scratch: u64,
) -> Result<()> {
    let pid = main.tid;
    let acts: Vec<u64> = p
        .sigactions
        .iter()
        .flat_map(|a| [a.handler, a.flags, a.restorer, a.mask])
        .collect();
    let status = ckpt_sys::proc::read_text(&format!("/proc/{pid}/status"))
        .ctx(|| format!("reading /proc/{pid}/status"))?;
    let mask_of = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    let not_default = mask_of("SigCgt:") | mask_of("SigIgn:");
    let mut set = 0;
    for (i, a) in p.sigactions.iter().enumerate().take(64) {
        let sig = i as u64 + 1;
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            continue;
        }
        let zero = a.handler == 0 && a.flags == 0 && a.restorer == 0 && a.mask == 0;
        if zero && not_default & (1 << i) == 0 {
            continue;
        }
        // Each action right before its call: a flush between two calls
        // frees the data of the first (later data takes its place).
        let at = b.data(main, &u64s(&acts[i * 4..i * 4 + 4]), scratch)?;
        b.push(
            main,
            format!("rt_sigaction({sig})"),
            libc::SYS_rt_sigaction,
            &[sig, at, 0, 8],
            Allow::Nothing,
        )?;
        set += 1;
    }
    tracing::debug!(handlers = set, "signal actions set");
    Ok(())
}

/// The thread's alternate signal stack (disabled when it had none).
pub(crate) fn set_altstack(
    r: &mut Remote,
    b: &mut Batcher,
    t: &Thread,
    scratch: u64,
) -> Result<()> {
    let a = &t.altstack;
    let ss: [u64; 3] = if a.flags & SS_DISABLE != 0 || a.size == 0 {
        [0, u64::from(SS_DISABLE), 0]
    } else {
        [a.sp, u64::from(a.flags & SS_AUTODISARM), a.size]
    };
    let at = b.data(r, &u64s(&ss), scratch)?;
    b.push(
        r,
        "sigaltstack".into(),
        libc::SYS_sigaltstack,
        &[at, 0],
        Allow::Nothing,
    )
}

/// Signals pending for the whole process: all are blocked while injecting,
/// so they queue.
pub(crate) fn queue_shared(main: &mut Remote, p: &Process, scratch: u64) -> Result<()> {
    let pid = main.tid;
    for si in &p.shared_pending {
        main.write(scratch, &si.raw)?;
        main.call(
            &format!("rt_sigqueueinfo({})", si.signo),
            libc::SYS_rt_sigqueueinfo,
            &[pid as u64, si.signo as u64, scratch],
        )?;
    }
    Ok(())
}

/// Signals pending for one thread, queued by the thread itself.
pub(crate) fn queue_thread(r: &mut Remote, pid: i32, t: &Thread, scratch: u64) -> Result<()> {
    let tid = r.tid;
    for si in &t.pending {
        r.write(scratch, &si.raw)?;
        r.call(
            &format!("rt_tgsigqueueinfo({})", si.signo),
            libc::SYS_rt_tgsigqueueinfo,
            &[pid as u64, tid as u64, si.signo as u64, scratch],
        )?;
    }
    Ok(())
}

/// The handler that will run first when the thread resumes, if any: the
/// lowest-numbered pending signal (thread-private or shared) that the thread
/// does not block and that has a handler. Returns its sigaction.
pub fn first_handler(proc: &Process, thread: &Thread) -> Option<SigAction> {
    let mut sigs: Vec<i32> = thread
        .pending
        .iter()
        .chain(proc.shared_pending.iter())
        .map(|s| s.signo)
        .filter(|&s| (1..=64).contains(&s) && thread.blocked & (1u64 << (s - 1)) == 0)
        .collect();
    sigs.sort();
    sigs.into_iter()
        .filter_map(|s| proc.sigactions.get(s as usize - 1).copied())
        .find(|a| a.handler > 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::*;

    #[test]
    fn first_handler_skips_blocked_and_default_signals() {
        let mut p = Process {
            sigactions: vec![SigAction::default(); 64],
            ..Default::default()
        };
        p.sigactions[9] = SigAction {
            handler: 0x100,
            ..Default::default()
        }; // SIGUSR1
        p.sigactions[11] = SigAction {
            handler: 0x200,
            ..Default::default()
        }; // SIGUSR2
        let si = |s| SigInfo {
            signo: s,
            code: 0,
            raw: vec![0; 128],
        };
        p.shared_pending = vec![si(12), si(17)];
        let mut t = Thread {
            blocked: 1 << 11,
            ..Default::default()
        };
        assert_eq!(first_handler(&p, &t), None);
        t.pending = vec![si(10)];
        assert_eq!(first_handler(&p, &t).unwrap().handler, 0x100);
        t.blocked = 1 << 9;
        assert_eq!(first_handler(&p, &t).unwrap().handler, 0x200);
    }
}
