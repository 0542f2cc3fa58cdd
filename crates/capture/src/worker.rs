//! Dumps that survive the death of the process that asked for them.
//!
//! While a process is frozen, ckpt holds it by ptrace: if the tracer died
//! at an arbitrary point the kernel would let the target go on with whatever
//! state it had at that instant (in the middle of an injected system call:
//! foreign registers, every signal blocked, a scratch page mapped). So
//! [`crate::dump()`], when called from a single-threaded process (the `ckpt`
//! command), forks a **worker** that does the whole dump and reports the
//! result on a pipe; the caller only waits for it. If the caller is killed
//! (even with SIGKILL), the worker notices at its next check (its parent
//! changed), abandons the dump the way any error does (registers, mask and
//! mappings put back, every thread detached, the temp file removed) and
//! exits: the target goes on as it was and no image appears.
//!
//! Checks happen between the phases of the capture and before every block
//! of pages written; the injected queries (a few ms) run to their end
//! first. Only a caller that is a single-threaded process forks (forking a
//! multi-threaded one, e.g. ckptfs, is not safe); other callers run the
//! dump in-process.
//!
//! SIGINT, SIGTERM and SIGHUP (Ctrl-C, `timeout`, a service manager
//! stopping the job: they reach every process of the group, the worker
//! too) cancel the dump cleanly: the caller blocks them before forking,
//! so the worker starts with them blocked; the caller waits for the
//! worker or one of them, and sends one it receives on to the worker. The
//! worker finds it pending at its next check and abandons the dump like
//! any error ([`Error::Cancelled`]). If the worker itself is killed
//! (SIGKILL), the target is let go by the kernel, as it was (the injected
//! calls are made so that this is safe at any instant, see `remote.rs`),
//! and the caller removes the temp file the worker left.
//!
//! Test hook: `CKPT_TEST_DELAY_MS=N` (N ≤ 10000) sleeps N ms at each phase
//! boundary, and once in the middle of the injected queries while the
//! target's registers are the injector's, so that tests can kill or
//! disturb a dump at every phase deterministically. It changes nothing else.

use crate::error::{Error, Result};
use ckpt_sys::clone::{fork_with_pid, Forked};
use ckpt_sys::proc::signals::{self, Woken, CANCEL, CANCEL_MASK};
use ckpt_sys::proc::{self, wait};
use ckpt_sys::Pid;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// In a worker: the pid of the process that forked it; 0 elsewhere.
static PARENT: AtomicI32 = AtomicI32::new(0);

/// Whether this process has only one thread (then forking is safe).
pub(crate) fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|v| v.trim() == "1")
        })
        .unwrap_or(false)
}

/// In a worker whose caller is gone: [`Error::Abandoned`]; in a worker
/// asked to stop: [`Error::Cancelled`].
pub(crate) fn check(pid: Pid) -> Result<()> {
    let parent = PARENT.load(Ordering::Relaxed);
    if parent == 0 {
        return Ok(());
    }
    if proc::getppid() != parent {
        return Err(Error::Abandoned { pid });
    }
    let pending = signals::pending().unwrap_or(0) & CANCEL_MASK;
    if let Some(&signal) = CANCEL.iter().find(|&&s| pending & signals::bit(s) != 0) {
        return Err(Error::Cancelled { pid, signal });
    }
    Ok(())
}

/// The test hook (see the module doc): sleep `CKPT_TEST_DELAY_MS` ms.
pub(crate) fn test_delay() {
    static MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ms = *MS.get_or_init(|| {
        std::env::var("CKPT_TEST_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(10_000)
    });
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Run `work` in a forked worker and return its result here. The stats
/// travel back as numbers, an error as its message ([`Error::Worker`]),
/// except the few kinds callers match on, which keep their variant.
/// SIGINT, SIGTERM and SIGHUP are blocked meanwhile and passed on to the
/// worker (see the module doc). `died` is called with the worker's pid if
/// it dies without an answer; it says whether the dump was complete
/// nonetheless (killed between its commit and its answer).
pub(crate) fn run_in_worker(
    pid: Pid,
    work: impl FnOnce() -> Result<crate::DumpStats>,
    died: impl FnOnce(Pid) -> Option<crate::DumpStats>,
) -> Result<crate::DumpStats> {
    let sys_err = |what: &str| {
        let what = what.to_string();
        move |source| Error::Sys { pid, what, source }
    };
    let (r, w) = ckpt_sys::fds::pipe::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .map_err(sys_err("creating the worker's pipe"))?;
    let blocked = signals::block(CANCEL_MASK).map_err(sys_err("blocking SIGINT and SIGTERM"))?;
    let parent = proc::getpid();
    match fork_with_pid(None) {
        Ok(Forked::Child) => {
            drop(r);
            PARENT.store(parent, Ordering::Relaxed);
            let msg = encode(&work());
            let mut w = std::fs::File::from(w);
            let _ = w.write_all(&msg);
            drop(w);
            proc::exit_now(0);
        }
        Ok(Forked::Parent(child)) => {
            drop(w);
            let (exit, cancelled) = wait_worker(pid, child)?;
            // A signal that came after the worker's end must not kill us
            // when the mask comes back: it was for the dump.
            let late = signals::take_pending(CANCEL_MASK);
            drop(blocked);
            let mut buf = Vec::new();
            let _ = std::fs::File::from(r).read_to_end(&mut buf);
            if buf.is_empty() {
                // The worker died mid-dump: undo a connection lock it left
                // (sockets in repair mode, netfilter rules).
                ckpt_sys::netlock::cleanup_stale(std::path::Path::new(
                    ckpt_sys::netlock::STATE_DIR,
                ));
            }
            let result = decode(&buf).unwrap_or_else(|| {
                if let Some(stats) = died(child) {
                    return Ok(stats);
                }
                let how = match exit {
                    wait::ExitKind::Exited(c) => format!("exited with status {c}"),
                    wait::ExitKind::Signaled(s) => {
                        format!("was killed by {}", crate::error::signal_name(s))
                    }
                };
                Err(Error::Worker {
                    message: format!(
                        "pid {pid}: the dump worker (pid {child}) {how} before it finished; no image was written and the process goes on as it was"
                    ),
                })
            });
            match (result, cancelled.or(late)) {
                (Err(_), Some(signal)) => Err(Error::Cancelled { pid, signal }),
                (r, _) => r,
            }
        }
        Err(source) => Err(Error::Sys {
            pid,
            what: "forking the dump worker".into(),
            source,
        }),
    }
}

/// Wait for the worker to exit, passing on the signals that cancel; the
/// exit status and the first such signal.
fn wait_worker(pid: Pid, child: Pid) -> Result<(wait::ExitKind, Option<i32>)> {
    let sys_err = |what: &'static str| {
        move |source| Error::Sys {
            pid,
            what: what.into(),
            source,
        }
    };
    let pidfd =
        ckpt_sys::proc::pidfd::pidfd_open(child).map_err(sys_err("watching the dump worker"))?;
    let sigfd = ckpt_sys::fds::signalfd::signalfd(CANCEL_MASK, libc::SFD_CLOEXEC)
        .map_err(sys_err("watching for SIGINT and SIGTERM"))?;
    let mut cancelled = None;
    while let Woken::Signal(s) = signals::wait_child_or_signal(&pidfd, &sigfd, child)
        .map_err(sys_err("waiting for the dump worker"))?
    {
        tracing::info!(signal = s, "cancelling the dump");
        cancelled.get_or_insert(s);
        let _ = proc::kill(child, s);
    }
    let exit = wait::wait_child_exit(child).map_err(sys_err("waiting for the dump worker"))?;
    Ok((exit, cancelled))
}

/// At most this much of a message goes through the pipe (its buffer is
/// larger, so the worker never blocks on it).
const MAX_MSG: usize = 16 * 1024;

fn encode(r: &Result<crate::DumpStats>) -> Vec<u8> {
    let s = match r {
        Ok(s) => format!(
            "ok {} {} {} {} {} {} {} {} {}",
            s.freeze.as_nanos(),
            s.total.as_nanos(),
            s.pages_bytes,
            s.image_bytes,
            s.threads,
            s.injected_syscalls,
            s.processes,
            s.mode.name(),
            s.note.as_deref().unwrap_or("")
        ),
        Err(e) => {
            // The pid each names: the root's, or another process's of the tree.
            let kind = match e {
                Error::NoSuchProcess { pid } => format!("nosuch:{pid}"),
                Error::Exited { pid } => format!("exited:{pid}"),
                Error::Zombie { pid } => format!("zombie:{pid}"),
                Error::AlreadyTraced { pid, tracer } => format!("traced:{pid}:{tracer}"),
                Error::Cancelled { pid, signal } => format!("cancelled:{pid}:{signal}"),
                _ => "other".to_string(),
            };
            let mut m = e.to_string();
            if m.len() > MAX_MSG {
                let mut cut = MAX_MSG;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            format!("err {kind} {m}")
        }
    };
    s.into_bytes()
}

fn decode(b: &[u8]) -> Option<Result<crate::DumpStats>> {
    let s = String::from_utf8_lossy(b);
    if let Some(rest) = s.strip_prefix("ok ") {
        let mut words = rest.splitn(9, ' ');
        let n: Vec<u64> = words
            .by_ref()
            .take(7)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        if n.len() != 7 {
            return None;
        }
        let mode = crate::DumpMode::from_name(words.next()?)?;
        let note = words.next().filter(|n| !n.is_empty()).map(str::to_string);
        return Some(Ok(crate::DumpStats {
            freeze: Duration::from_nanos(n[0]),
            total: Duration::from_nanos(n[1]),
            pages_bytes: n[2],
            image_bytes: n[3],
            threads: n[4] as usize,
            injected_syscalls: n[5],
            processes: n[6] as usize,
            mode,
            note,
        }));
    }
    let rest = s.strip_prefix("err ")?;
    let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut f = kind.split(':');
    let name = f.next().unwrap_or("");
    let mut num = || f.next().and_then(|x| x.parse::<Pid>().ok());
    let worker = || Error::Worker {
        message: message.to_string(),
    };
    Some(Err(match (name, num(), num()) {
        ("nosuch", Some(p), _) => Error::NoSuchProcess { pid: p },
        ("exited", Some(p), _) => Error::Exited { pid: p },
        ("zombie", Some(p), _) => Error::Zombie { pid: p },
        ("traced", Some(p), Some(tracer)) => Error::AlreadyTraced { pid: p, tracer },
        ("cancelled", Some(p), Some(signal)) => Error::Cancelled { pid: p, signal },
        _ => worker(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_travel() {
        let s = crate::DumpStats {
            freeze: Duration::from_nanos(5),
            total: Duration::from_nanos(7),
            pages_bytes: 4096,
            image_bytes: 9000,
            threads: 3,
            injected_syscalls: 42,
            processes: 2,
            mode: crate::DumpMode::Incremental,
            note: Some("a full dump: because".into()),
        };
        let back = decode(&encode(&Ok(s))).unwrap().unwrap();
        assert_eq!(back.image_bytes, 9000);
        assert_eq!(back.threads, 3);
        assert_eq!(back.processes, 2);
        assert_eq!(back.freeze, Duration::from_nanos(5));
        assert_eq!(back.mode, crate::DumpMode::Incremental);
        assert_eq!(back.note.as_deref(), Some("a full dump: because"));
        let e = decode(&encode(&Err(Error::AlreadyTraced { pid: 9, tracer: 77 })))
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e, Error::AlreadyTraced { pid: 9, tracer: 77 }),
            "{e}"
        );
        // A child of the tree keeps its own pid.
        let e = decode(&encode(&Err(Error::Exited { pid: 13 })))
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, Error::Exited { pid: 13 }), "{e}");
        let e = decode(&encode(&Err(Error::Fd {
            fd: 3,
            what: "x y".into(),
        })))
        .unwrap()
        .unwrap_err();
        assert_eq!(e.to_string(), "fd 3: x y");
        assert!(decode(b"").is_none());
        assert!(decode(b"ok 1 2").is_none());
    }
}
