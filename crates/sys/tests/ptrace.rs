//! ckpt-sys against real processes on the running kernel.

use ckpt_sys::{inject, mm, ptrace, Injector, Stop};
use ckpt_testkit::{wait_until, Proc};
use std::process::Command;
use std::time::Duration;

/// `sleep 30`, once it sleeps in clock_nanosleep (not a fixed pause that a
/// loaded machine outruns); killed and reaped on drop, even on failure.
fn spawn_sleeper() -> Proc {
    let p = Proc::start(Command::new("sleep").arg("30"));
    let nr = libc::SYS_clock_nanosleep.to_string();
    wait_until(
        "sleep(1) to block in clock_nanosleep",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{}/syscall", p.pid))
                .is_ok_and(|s| s.split_whitespace().next() == Some(nr.as_str()))
        },
    );
    p
}

fn vdso_range(pid: i32) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .expect("no [vdso]");
    let (a, b) = line
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap();
    (
        u64::from_str_radix(a, 16).unwrap(),
        u64::from_str_radix(b, 16).unwrap(),
    )
}

#[test]
fn seize_read_state_inject_and_release() {
    let child = spawn_sleeper();
    let pid = child.pid;
    let deferred = ptrace::seize_and_stop(pid, ptrace::PTRACE_O_EXITKILL).expect("seize");
    assert!(deferred.is_empty());

    let regs = ptrace::get_regs(pid).unwrap();
    // sleep(1) is blocked in clock_nanosleep: stopped inside a syscall.
    assert_eq!(
        regs[ptrace::reg::ORIG_RAX],
        libc::SYS_clock_nanosleep as u64
    );
    let xs = ptrace::get_xstate(pid).unwrap();
    assert!(xs.len() >= 576, "xsave area too small: {}", xs.len());
    let mask = ptrace::get_sigmask(pid).unwrap();
    assert!(ptrace::peek_siginfo(pid, false).unwrap().is_empty());
    assert!(ptrace::peek_siginfo(pid, true).unwrap().is_empty());
    let _ = ckpt_sys::rseq::get_rseq(pid).unwrap();
    let _ = ckpt_sys::proc::get_robust_list(pid).unwrap();

    let (vs, ve) = vdso_range(pid);
    let code = mm::ProcMem::open(pid)
        .unwrap()
        .read_vec(vs, (ve - vs) as usize)
        .unwrap();
    let ip = vs + inject::find_syscall_insn(&code).expect("syscall insn in vdso") as u64;
    let mut inj = Injector::new(pid, ip).unwrap();
    assert_eq!(
        inj.syscall("getpid", libc::SYS_getpid, &[]).unwrap(),
        pid as u64
    );
    // A failing call is reported with its errno.
    let e = inj.syscall("close", libc::SYS_close, &[9999]).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EBADF));
    // A batch in one stop: code and table in a page mapped for it (the
    // thread writes the results into the table).
    let page = inj
        .syscall(
            "mmap",
            libc::SYS_mmap,
            &[
                0,
                4096,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    let before = inj.count();
    let r = inj
        .batch(
            page,
            &[
                (libc::SYS_getpid, [0; 6]),
                (libc::SYS_close, [9999, 0, 0, 0, 0, 0]),
                (libc::SYS_getppid, [0; 6]),
            ],
        )
        .unwrap();
    assert_eq!(
        r,
        [pid as i64, -(libc::EBADF as i64), std::process::id() as i64]
    );
    assert_eq!(inj.count(), before + 3);
    assert!(inj.batch(page, &[]).unwrap().is_empty());
    // Not writable: the fault is an error, not a hang.
    inj.syscall(
        "mprotect",
        libc::SYS_mprotect,
        &[page, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64],
    )
    .unwrap();
    let e = inj.batch(page, &[(libc::SYS_getpid, [0; 6])]).unwrap_err();
    assert!(e.to_string().contains("signal 11"), "{e}");
    inj.syscall("munmap", libc::SYS_munmap, &[page, 4096])
        .unwrap();
    assert!(inj.finish().unwrap().is_empty());
    assert_eq!(ptrace::get_regs(pid).unwrap(), regs);
    assert_eq!(ptrace::get_sigmask(pid).unwrap(), mask);

    ptrace::detach(pid, 0).unwrap();
    // Still alive and well after we let go.
    std::thread::sleep(Duration::from_millis(20));
    assert!(child.alive());
}

#[test]
fn exiting_target_is_reported_not_hung() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let e = ptrace::seize_and_stop(pid, 0).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
    let _ = Stop::Exited(0);
}

#[test]
fn read_vm_reads_remote_memory() {
    let child = spawn_sleeper();
    let pid = child.pid;
    let (vs, _) = vdso_range(pid);
    let mut buf = vec![0u8; 4096];
    let n = mm::read_vm(
        pid,
        &mut buf,
        &[mm::RemoteRange {
            addr: vs,
            len: 4096,
        }],
    )
    .unwrap();
    assert_eq!(n, 4096);
    assert_eq!(&buf[..4], b"\x7fELF");
    drop(child);
}

#[test]
fn a_batch_of_injected_calls_runs_in_one_go() {
    let child = spawn_sleeper();
    let pid = child.pid;
    ptrace::seize_and_stop(pid, ptrace::PTRACE_O_EXITKILL).expect("seize");
    let regs = ptrace::get_regs(pid).unwrap();
    let (vs, ve) = vdso_range(pid);
    let mem = mm::ProcMem::open(pid).unwrap();
    let code = mem.read_vec(vs, (ve - vs) as usize).unwrap();
    let ip = vs + inject::find_syscall_insn(&code).unwrap() as u64;
    let mut inj = Injector::new(pid, ip).unwrap();
    // A page for the code and the table.
    let page = inj
        .syscall(
            "mmap",
            libc::SYS_mmap,
            &[
                0,
                8192,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    mem.write(page, &inject::BATCH_CODE).unwrap();
    let call = |nr: i64, args: &[u64], may_fail: bool| {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        inject::BatchCall {
            nr,
            args: a,
            may_fail,
        }
    };
    let calls = [
        call(libc::SYS_getpid, &[], false),
        call(libc::SYS_close, &[9999], true),
        call(libc::SYS_getppid, &[], false),
        call(libc::SYS_close, &[9998], false),
        call(libc::SYS_getpid, &[], false),
    ];
    let r = inj.syscall_batch(page, page + 4096, &calls).unwrap();
    // The fourth fails and may not: the batch stops there.
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(r[0], i64::from(pid));
    assert_eq!(r[1], -i64::from(libc::EBADF));
    assert_eq!(r[2], i64::from(std::process::id() as i32));
    assert_eq!(r[3], -i64::from(libc::EBADF));
    assert_eq!(inj.count(), 5);
    // Code and table together, every call run whatever it returns.
    let r = inj
        .batch(
            page + 4096,
            &[
                (libc::SYS_close, [9999, 0, 0, 0, 0, 0]),
                (libc::SYS_getpid, [0; 6]),
            ],
        )
        .unwrap();
    assert_eq!(r, [-i64::from(libc::EBADF), i64::from(pid)]);
    assert_eq!(inj.count(), 7);
    // Not writable: the fault is an error, not a hang.
    inj.syscall(
        "mprotect",
        libc::SYS_mprotect,
        &[
            page + 4096,
            4096,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
        ],
    )
    .unwrap();
    let e = inj
        .batch(page + 4096, &[(libc::SYS_getpid, [0; 6])])
        .unwrap_err();
    assert!(e.to_string().contains("signal 11"), "{e}");
    inj.syscall("munmap", libc::SYS_munmap, &[page, 8192])
        .unwrap();
    assert!(inj.finish().unwrap().is_empty());
    assert_eq!(ptrace::get_regs(pid).unwrap(), regs);
    ptrace::detach(pid, 0).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(child.alive());
}

/// Address of an rt_sigreturn sequence in `pid`'s executable mappings.
fn sigreturn_ip(pid: i32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = mm::ProcMem::open(pid).unwrap();
    for l in maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("r-xp"))
    {
        let (a, b) = l
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        if let Ok(code) = mem.read_vec(a, (b - a) as usize) {
            if let Some(off) = inject::frame::find_sigreturn(&code) {
                return a + off as u64;
            }
        }
    }
    panic!("no rt_sigreturn sequence in pid {pid}");
}

/// /proc/PID/syscall and the state letter.
fn syscall_and_state(pid: i32) -> (String, String) {
    let sc = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap();
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = st
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    (sc.trim().to_string(), state)
}

#[test]
fn safe_injection_puts_everything_back() {
    let mut child = spawn_sleeper();
    let pid = child.pid;
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = syscall_and_state(pid);
    ptrace::seize_and_stop(pid, ptrace::PTRACE_O_TRACESYSGOOD).unwrap();
    let regs = ptrace::get_regs(pid).unwrap();
    let mask = ptrace::get_sigmask(pid).unwrap();
    let (lo, hi) = inject::frame::region(
        regs[ptrace::reg::RSP],
        ptrace::get_xstate(pid).unwrap().len(),
    );
    let mem = mm::ProcMem::open(pid).unwrap();
    let stack = mem.read_vec(lo, (hi - lo) as usize).unwrap();
    let ip = sigreturn_ip(pid);
    let mut inj = Injector::new_safe(pid, ip, &|_, _| true).unwrap().unwrap();
    let scratch = inj.scratch().unwrap();
    assert_eq!(
        inj.syscall("getpid", libc::SYS_getpid, &[]).unwrap(),
        pid as u64
    );
    inj.syscall("sigaltstack", libc::SYS_sigaltstack, &[0, scratch])
        .unwrap();
    let e = inj.syscall("close", libc::SYS_close, &[9999]).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EBADF));
    assert!(inj.finish().unwrap().is_empty());
    assert_eq!(ptrace::get_regs(pid).unwrap(), regs);
    assert_eq!(ptrace::get_sigmask(pid).unwrap(), mask);
    assert_eq!(mem.read_vec(lo, (hi - lo) as usize).unwrap(), stack);
    ptrace::detach(pid, 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // The kernel resumes the interrupted sleep through restart_syscall
    // (219), as after any stop; from the same place.
    let after = syscall_and_state(pid);
    let rest = |s: &str| s.split_once(' ').map(|x| x.1.to_string());
    assert!(
        after.0.starts_with("219 ") || after.0.starts_with("230 "),
        "{after:?}"
    );
    assert_eq!((rest(&after.0), &after.1), (rest(&before.0), &before.1));
    child.kill();
}

/// A tracer killed in the middle of safe injection: the thread goes back
/// to exactly where it was (the same system call, from the same place),
/// running, not stopped.
#[test]
fn safe_injection_survives_the_tracers_death() {
    use ckpt_sys::clone::{fork_with_pid, Forked};
    for calls in [0u32, 1, 3] {
        let mut child = spawn_sleeper();
        let pid = child.pid;
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = syscall_and_state(pid);
        let ip = sigreturn_ip(pid);
        match fork_with_pid(None).unwrap() {
            Forked::Child => {
                let ok = (|| {
                    ptrace::seize_and_stop(pid, ptrace::PTRACE_O_TRACESYSGOOD).ok()?;
                    let mut inj = Injector::new_safe(pid, ip, &|_, _| true).ok()??;
                    for _ in 0..calls {
                        inj.syscall("getpid", libc::SYS_getpid, &[]).ok()?;
                    }
                    Some(())
                })();
                // Die holding the thread at an injection stop.
                ckpt_sys::proc::exit_now(if ok.is_some() { 0 } else { 1 });
            }
            Forked::Parent(tracer) => {
                let st = ckpt_sys::proc::wait::wait_child_exit(tracer).unwrap();
                assert_eq!(
                    st,
                    ckpt_sys::proc::wait::ExitKind::Exited(0),
                    "tracer failed"
                );
            }
        }
        let t = std::time::Instant::now();
        let after = loop {
            let now = syscall_and_state(pid);
            if now == before || t.elapsed() > std::time::Duration::from_secs(2) {
                break now;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(after, before, "after {calls} injected calls");
        assert!(child.try_wait().is_none(), "the target died");
        child.kill();
    }
}

/// Map a page for a safe batch in the thread of `inj`.
fn batch_page(inj: &mut Injector) -> u64 {
    inj.syscall(
        "mmap",
        libc::SYS_mmap,
        &[
            0,
            4096,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )
    .unwrap()
}

/// A safe batch runs its calls in one go, gives their results, and puts
/// everything back, as calls one by one do.
#[test]
fn safe_batch_runs_the_calls_and_puts_everything_back() {
    let mut child = spawn_sleeper();
    let pid = child.pid;
    let before = syscall_and_state(pid);
    ptrace::seize_and_stop(pid, ptrace::PTRACE_O_TRACESYSGOOD).unwrap();
    let regs = ptrace::get_regs(pid).unwrap();
    let mask = ptrace::get_sigmask(pid).unwrap();
    let ip = sigreturn_ip(pid);
    let mut inj = Injector::new_safe(pid, ip, &|_, _| true).unwrap().unwrap();
    let page = batch_page(&mut inj);
    let out = page + 2048;
    let calls = [
        (libc::SYS_getpid, [0; 6]),
        (libc::SYS_sigaltstack, [0, out, 0, 0, 0, 0]),
        (libc::SYS_close, [9999, 0, 0, 0, 0, 0]),
    ];
    assert!(inject::safe_batch_len(calls.len()) <= 2048);
    inj.safe_batch_start(page, &calls, libc::SIGURG).unwrap();
    let results = inj.safe_batch_result().unwrap();
    inj.safe_batch_end().unwrap();
    assert_eq!(results, vec![pid as i64, 0, -(libc::EBADF as i64)]);
    // sigaltstack's answer: ss_flags SS_DISABLE (2).
    let ss = inj.mem().read_vec(out, 24).unwrap();
    assert_eq!(i32::from_ne_bytes(ss[8..12].try_into().unwrap()), 2);
    inj.syscall("munmap", libc::SYS_munmap, &[page, 4096])
        .unwrap();
    assert!(inj.finish().unwrap().is_empty());
    assert_eq!(ptrace::get_regs(pid).unwrap(), regs);
    assert_eq!(ptrace::get_sigmask(pid).unwrap(), mask);
    ptrace::detach(pid, 0).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let rest = |s: &str| s.split_once(' ').map(|x| x.1.to_string());
    let after = syscall_and_state(pid);
    assert_eq!((rest(&after.0), &after.1), (rest(&before.0), &before.1));
    assert!(child.try_wait().is_none(), "the target died");
    child.kill();
}

/// A tracer that dies while a safe batch runs: the thread ends the calls,
/// drops the signal that was to stop it, and goes back to exactly where
/// it was, running (the page stays mapped).
#[test]
fn safe_batch_survives_the_tracers_death() {
    use ckpt_sys::clone::{fork_with_pid, Forked};
    let mut child = spawn_sleeper();
    let pid = child.pid;
    let before = syscall_and_state(pid);
    let ip = sigreturn_ip(pid);
    match fork_with_pid(None).unwrap() {
        Forked::Child => {
            let ok = (|| {
                ptrace::seize_and_stop(pid, ptrace::PTRACE_O_TRACESYSGOOD).ok()?;
                let mut inj = Injector::new_safe(pid, ip, &|_, _| true).ok()??;
                let page = batch_page(&mut inj);
                let calls = [(libc::SYS_getpid, [0; 6]); 8];
                inj.safe_batch_start(page, &calls, libc::SIGURG).ok()
            })();
            // Die while the batch runs (or just after).
            ckpt_sys::proc::exit_now(if ok.is_some() { 0 } else { 1 });
        }
        Forked::Parent(tracer) => {
            let st = ckpt_sys::proc::wait::wait_child_exit(tracer).unwrap();
            assert_eq!(
                st,
                ckpt_sys::proc::wait::ExitKind::Exited(0),
                "tracer failed"
            );
        }
    }
    let t = std::time::Instant::now();
    let after = loop {
        let now = syscall_and_state(pid);
        if now == before || t.elapsed() > Duration::from_secs(2) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(after, before);
    assert!(child.try_wait().is_none(), "the target died");
    child.kill();
}
