//! POSIX timers: their setup from /proc/PID/timers, their times (asked of
//! the process, remote.rs) merged in. (Interval timers come whole from
//! remote.rs.)

use crate::error::Result;
use crate::procfs::{self, parse_err};
use crate::remote::RemoteInfo;
use ckpt_image::PosixTimer;
use ckpt_sys::Pid;

/// /proc/PID/timers: id, signal, sigev value, notify, clock of each timer.
pub(crate) fn read_posix_timers(pid: Pid) -> Result<Vec<PosixTimer>> {
    let path = format!("/proc/{pid}/timers");
    parse(pid, &path, &procfs::read_string(pid, &path)?)
}

fn parse(pid: Pid, path: &str, text: &str) -> Result<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |what: &str| parse_err(pid, path, i + 1, format!("{line:?}: {what}"));
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(bad("no ':'"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k == "ID" {
            out.push(PosixTimer {
                id: v.parse().map_err(|_| bad("bad ID"))?,
                ..Default::default()
            });
            continue;
        }
        let Some(t) = out.last_mut() else {
            return Err(bad("before the first ID line"));
        };
        match k {
            // "14/0000000000000000": signal number / sigev_value
            "signal" => {
                let (sig, val) = v.split_once('/').ok_or_else(|| bad("no '/'"))?;
                t.signo = sig.parse().map_err(|_| bad("bad signal number"))?;
                t.value = u64::from_str_radix(val.trim_start_matches("0x"), 16)
                    .map_err(|_| bad("bad value"))?;
            }
            // "signal/pid.123", "none/pid.123", "thread/tid.456"
            "notify" => {
                let (how, who) = v.split_once('/').ok_or_else(|| bad("no '/'"))?;
                let base = match how {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    "thread" => libc::SIGEV_THREAD,
                    _ => return Err(bad("unknown notification")),
                };
                let (kind, id) = who.split_once('.').ok_or_else(|| bad("no '.'"))?;
                let tid_flag = match kind {
                    "tid" => libc::SIGEV_THREAD_ID,
                    "pid" => 0,
                    _ => return Err(bad("neither pid nor tid")),
                };
                t.notify = base | tid_flag;
                t.notify_tid = id.parse().map_err(|_| bad("bad pid"))?;
            }
            "ClockID" => t.clock = v.parse().map_err(|_| bad("bad clock"))?,
            _ => {}
        }
    }
    Ok(out)
}

/// The timers with their times (interval, value, overrun) as the process
/// told them.
pub(crate) fn with_times(timers: Vec<PosixTimer>, remote: &RemoteInfo) -> Vec<PosixTimer> {
    timers
        .into_iter()
        .map(|mut t| {
            if let Some(&(interval, value, overrun)) = remote.timer_times.get(&t.id) {
                t.interval_ns = interval;
                t.value_ns = value;
                t.overrun = overrun;
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_file() {
        let text = "ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.77\nClockID: 1\nID: 3\nsignal: 10/0000000000000000\nnotify: thread/tid.78\nClockID: 0\n";
        let t = parse(77, "/proc/77/timers", text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id, t[0].signo, t[0].value), (0, 14, 0xdeadbeef));
        assert_eq!(
            (t[0].notify, t[0].notify_tid, t[0].clock),
            (libc::SIGEV_SIGNAL, 77, 1)
        );
        assert_eq!(t[1].notify, libc::SIGEV_THREAD | libc::SIGEV_THREAD_ID);
        assert_eq!(t[1].notify_tid, 78);
        let e = parse(77, "/proc/77/timers", "ID: 0\nsignal: x/0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pid 77: cannot parse /proc/77/timers line 2: \"signal: x/0\": bad signal number"
        );
        let e = parse(77, "/proc/77/timers", "ID: 0\nnotify: odd/pid.1\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
