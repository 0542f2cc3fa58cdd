//! Timers: interval timers (setitimer) and POSIX timers (timer_create
//! with the saved ids, then armed); overrun counts are lost.

use crate::error::{Error, Result};
use crate::remote::{u64s, Allow, Batcher, Remote};
use crate::Report;
use ckpt_image::Process;
use std::collections::BTreeMap;

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const SIGEV_THREAD_ID: i32 = 4;

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

/// The interval timers (setitimer), where armed.
pub(crate) fn set_itimers(
    main: &mut Remote,
    b: &mut Batcher,
    p: &Process,
    scratch: u64,
) -> Result<()> {
    for t in &p.itimers {
        let Some((value, interval)) = itimer_setting(p, t) else {
            continue;
        };
        let tv = |ns: u64| [ns / 1_000_000_000, (ns % 1_000_000_000).div_ceil(1000)];
        let mut v = tv(interval).to_vec();
        v.extend(tv(value));
        let at = b.data(main, &u64s(&v), scratch)?;
        b.push(
            main,
            format!("setitimer({})", t.which),
            libc::SYS_setitimer,
            &[u64::from(t.which), at, 0],
            Allow::Nothing,
        )?;
    }
    Ok(())
}

/// POSIX timers with their saved ids (PR_TIMER_CREATE_RESTORE_IDS, else
/// by creating and deleting timers until the id comes), armed; `tid_map`
/// maps saved tids to the restored ones (for SIGEV_THREAD_ID).
pub(crate) fn posix_timers(
    main: &mut Remote,
    p: &Process,
    scratch: u64,
    tid_map: &BTreeMap<i32, i32>,
) -> Result<()> {
    let mut timers = p.posix_timers.clone();
    if timers.is_empty() {
        return Ok(());
    }
    timers.sort_by_key(|t| t.id);
    let restore_ids = main.raw(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
    )? == 0;
    let sev_at = scratch + 0x100;
    let id_at = scratch + 0x200;
    let mut dummies = Vec::new();
    for t in &timers {
        let mut sev = vec![0u8; 64];
        sev[0..8].copy_from_slice(&t.value.to_ne_bytes());
        sev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
        sev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
        let ntid = tid_map.get(&t.notify_tid).copied().unwrap_or(t.notify_tid);
        sev[16..20].copy_from_slice(&ntid.to_ne_bytes());
        main.write(sev_at, &sev)?;
        loop {
            main.write(id_at, &t.id.to_ne_bytes())?;
            main.call(
                &format!("timer_create of timer {}", t.id),
                libc::SYS_timer_create,
                &[t.clock as u64, sev_at, id_at],
            )?;
            let got = i32::from_ne_bytes(main.read(id_at, 4)?.try_into().expect("4 bytes"));
            if got == t.id {
                break;
            }
            if restore_ids || got > t.id {
                return Err(Error::Stub {
                    pid: main.tid,
                    what: format!("timer_create gave timer id {got}, not the saved {}", t.id),
                });
            }
            dummies.push(got);
        }
        if t.value_ns != 0 {
            let ts = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000];
            let mut v = ts(t.interval_ns).to_vec();
            v.extend(ts(t.value_ns));
            main.write(scratch, &u64s(&v))?;
            main.call(
                &format!("timer_settime of timer {}", t.id),
                libc::SYS_timer_settime,
                &[t.id as u64, 0, scratch, 0],
            )?;
        }
    }
    if restore_ids {
        main.call(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
        )?;
    }
    for d in dummies {
        main.call("timer_delete", libc::SYS_timer_delete, &[d as u64])?;
    }
    tracing::debug!(timers = timers.len(), "POSIX timers made");
    Ok(())
}

/// A POSIX timer must signal a thread of the image.
pub(crate) fn check(p: &Process, r: &mut Report) {
    for t in &p.posix_timers {
        if t.notify == SIGEV_THREAD_ID && !p.threads.iter().any(|th| th.tid == t.notify_tid) {
            r.errors.push(format!(
                "POSIX timer {} signals thread {}, which is not in the image",
                t.id, t.notify_tid
            ));
        }
    }
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
