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
