//! Registers of a restored thread: the syscall-restart fixup.

use ckpt_image::{Process, SigAction, Thread};

pub const ERESTARTSYS: i64 = -512;
pub const ERESTARTNOINTR: i64 = -513;
pub const ERESTARTNOHAND: i64 = -514;
pub const ERESTART_RESTARTBLOCK: i64 = -516;
const EINTR: i64 = -(libc::EINTR as i64);
const SA_RESTART: u64 = 0x1000_0000;

/// Indices into the 27 general registers (user_regs_struct order).
pub mod idx {
    pub const RAX: usize = 10;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
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

/// Turn the registers a thread had when it was stopped into the registers
/// to resume it with, doing what the kernel does with a system call that was
/// interrupted by the stop: restart it, or fail it with EINTR when a handler
/// runs first and the call may not be restarted across it.
///
/// ERESTART_RESTARTBLOCK re-executes the original call rather than
/// `restart_syscall`: the kernel's restart block (e.g. the remaining time of
/// a nanosleep) lives in the old task and does not survive; a fresh task's
/// restart_syscall would fail with EINTR, which programs without handlers
/// never expect. Timeouts are therefore restarted in full.
///
/// `orig_rax` is always set to -1 so that the kernel does not apply its own
/// restart logic a second time.
pub fn restart_fixup(gprs: &mut [u64; 27], handler: Option<&SigAction>) {
    let orig = gprs[idx::ORIG_RAX] as i64;
    if orig >= 0 {
        let rax = gprs[idx::RAX] as i64;
        let restart = match rax {
            ERESTARTNOINTR => true,
            ERESTARTSYS => handler.is_none_or(|h| h.flags & SA_RESTART != 0),
            ERESTARTNOHAND | ERESTART_RESTARTBLOCK => handler.is_none(),
            _ => {
                gprs[idx::ORIG_RAX] = u64::MAX;
                return;
            }
        };
        if restart {
            gprs[idx::RAX] = orig as u64;
            gprs[idx::RIP] = gprs[idx::RIP].wrapping_sub(2);
        } else {
            gprs[idx::RAX] = EINTR as u64;
        }
    }
    gprs[idx::ORIG_RAX] = u64::MAX;
}

/// Fit a saved XSAVE area to the size this kernel's regset has: pad with
/// zeros (components the image lacks are in their init state) or cut bytes
/// past the end (check() made sure the image uses no component we lack).
pub fn fit_xsave(saved: &[u8], size: usize) -> Vec<u8> {
    let mut v = saved.to_vec();
    v.resize(size, 0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_image::*;

    fn regs(orig: i64, rax: i64) -> [u64; 27] {
        let mut r = [0u64; 27];
        r[idx::ORIG_RAX] = orig as u64;
        r[idx::RAX] = rax as u64;
        r[idx::RIP] = 0x1002;
        r
    }

    #[test]
    fn interrupted_calls_restart_without_handlers() {
        for rax in [
            ERESTARTSYS,
            ERESTARTNOINTR,
            ERESTARTNOHAND,
            ERESTART_RESTARTBLOCK,
        ] {
            let mut r = regs(230, rax);
            restart_fixup(&mut r, None);
            assert_eq!(r[idx::RAX], 230, "rax {rax}");
            assert_eq!(r[idx::RIP], 0x1000);
            assert_eq!(r[idx::ORIG_RAX], u64::MAX);
        }
    }

    #[test]
    fn handlers_decide_between_restart_and_eintr() {
        let restart = SigAction {
            handler: 0x5000,
            flags: SA_RESTART,
            ..Default::default()
        };
        let plain = SigAction {
            handler: 0x5000,
            ..Default::default()
        };
        let cases = [
            (ERESTARTSYS, &restart, true),
            (ERESTARTSYS, &plain, false),
            (ERESTARTNOINTR, &plain, true),
            (ERESTARTNOHAND, &restart, false),
            (ERESTART_RESTARTBLOCK, &restart, false),
        ];
        for (rax, h, restarted) in cases {
            let mut r = regs(0, rax);
            restart_fixup(&mut r, Some(h));
            if restarted {
                assert_eq!((r[idx::RAX], r[idx::RIP]), (0, 0x1000), "rax {rax}");
            } else {
                assert_eq!(
                    (r[idx::RAX] as i64, r[idx::RIP]),
                    (EINTR, 0x1002),
                    "rax {rax}"
                );
            }
        }
    }

    #[test]
    fn finished_calls_and_user_code_are_left_alone() {
        let mut r = regs(0, 5);
        restart_fixup(&mut r, None);
        assert_eq!(
            (r[idx::RAX], r[idx::RIP], r[idx::ORIG_RAX]),
            (5, 0x1002, u64::MAX)
        );
        let mut r = regs(-1, ERESTARTSYS);
        restart_fixup(&mut r, None);
        assert_eq!((r[idx::RAX] as i64, r[idx::RIP]), (ERESTARTSYS, 0x1002));
    }

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

/// The (value, interval) to arm an interval timer with, or None to leave it
/// disarmed. ITIMER_REAL is re-armed by the kernel only when its SIGALRM is
/// dequeued: a periodic one that fired and whose SIGALRM is still pending
/// reads as value 0. The new process's kernel does not know to re-arm it
/// when the re-queued SIGALRM is delivered, so arm it one period ahead.
pub fn itimer_setting(p: &Process, t: &ckpt_image::ITimer) -> Option<(u64, u64)> {
    if t.value_ns != 0 {
        return Some((t.value_ns, t.interval_ns));
    }
    let alrm_pending = p.shared_pending.iter().any(|s| s.signo == libc::SIGALRM);
    (t.which == 0 && t.interval_ns != 0 && alrm_pending).then_some((t.interval_ns, t.interval_ns))
}

#[cfg(test)]
mod itimer_tests {
    use super::*;
    use ckpt_image::*;

    #[test]
    fn a_fired_periodic_real_timer_is_rearmed() {
        let mut p = Process::default();
        let t = ITimer {
            which: 0,
            interval_ns: 15_000_000,
            value_ns: 0,
        };
        assert_eq!(
            itimer_setting(&p, &t),
            None,
            "disarmed (interval kept by setitimer)"
        );
        p.shared_pending.push(SigInfo {
            signo: libc::SIGALRM,
            code: 0x80,
            raw: vec![0; 128],
        });
        assert_eq!(itimer_setting(&p, &t), Some((15_000_000, 15_000_000)));
        let virt = ITimer { which: 1, ..t };
        assert_eq!(itimer_setting(&p, &virt), None);
        let armed = ITimer { value_ns: 5, ..t };
        assert_eq!(itimer_setting(&p, &armed), Some((5, 15_000_000)));
    }
}
