//! ckptfs with real processes: checkpoint through /ctl, edit memory and
//! registers, restore through /NAME/ctl. Needs root and /dev/fuse; fails
//! (never skips) without them.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn reg(regs: &str, name: &str) -> u64 {
    let l = regs
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap();
    u64::from_str_radix(l.split(' ').nth(1).unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Checkpoint the fixture (left running) until the dump catches it inside
/// its nanosleep (orig_rax 35), so r12 holds its loop value; returns the
/// image name.
fn checkpoint_sleeping(m: &Mount, p: &Proc, tag: &str) -> String {
    // On a loaded machine a dump can land between the fixture's sleeps
    // many times in a row: try for a while, with a pause between tries.
    for i in 0..100 {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let name = format!("{tag}{i}");
        std::fs::write(
            m.path("ctl"),
            format!("checkpoint {} {name} --leave-running\n", p.pid),
        )
        .unwrap_or_else(|e| panic!("checkpoint: {e}: {}", read(&m.path("ctl"))));
        assert!(read(&m.path("ctl")).starts_with(&format!("ok checkpoint {name} pid={}", p.pid)));
        let regs = read(&m.path(&format!("{name}/{}/regs", p.pid)));
        if reg(&regs, "orig_rax") == 35 {
            assert_eq!(reg(&regs, "r12"), 7, "{regs}");
            return name;
        }
    }
    panic!("100 dumps never caught the fixture in its nanosleep");
}

/// Kill the original (our child) so its pid is free for the restore.
fn end_original(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

fn restore(m: &Mount, name: &str, args: &str) -> i32 {
    let ctl = m.path(&format!("{name}/ctl"));
    if let Err(e) = std::fs::write(&ctl, format!("restore{args}\n")) {
        panic!("restore failed ({e}): {}\n{}", read(&ctl), m.log_text());
    }
    let status = read(&ctl);
    let first = status.lines().next().unwrap();
    first
        .strip_prefix("restored pid ")
        .unwrap_or_else(|| panic!("{status}"))
        .parse()
        .unwrap()
}

/// Wait until the restored process has been reaped by ckptfs (not a zombie).
fn wait_reaped(m: &Mount, name: &str, pid: i32) {
    let gone = wait_for(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "restored pid {pid} was not reaped by ckptfs");
    let ctl = m.path(&format!("{name}/ctl"));
    assert!(
        wait_for(Duration::from_secs(5), || read(&ctl)
            .contains(&format!("pid {pid} was killed by signal 9"))),
        "{}",
        read(&ctl)
    );
}

#[test]
fn checkpoint_through_ctl_of_a_live_process() {
    require_root_and_fuse();
    let dir = TempDir::new("live");
    let store = dir.mkdir("store");
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let p = Proc::spawn(&dir.0);
    std::fs::write(
        m.path("ctl"),
        format!("checkpoint {} --leave-running\n", p.pid),
    )
    .unwrap();
    let status = read(&m.path("ctl"));
    let name = status
        .strip_prefix("ok checkpoint ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(name.starts_with(&format!("{}-", p.pid)), "{status}");
    assert!(store.join(format!("{name}.ckpt")).exists());
    let base = m.path(&format!("{name}/{}", p.pid));
    assert_eq!(read(&base.join("comm")), "ckptfs-fixture\n");
    assert_eq!(std::fs::read_link(base.join("exe")).unwrap(), fixture());
    assert!(read(&base.join("maps")).contains(&*fixture().to_string_lossy()));
    assert!(read(&base.join("maps")).contains("[stack]"));
    assert!(read(&base.join("status")).contains(&format!("Pid:\t{}\n", p.pid)));
    assert!(read(&base.join("fds/1")).contains(&format!("path: {}\n", p.out.display())));
    // mem at &value is the saved value.
    let mem = std::fs::File::open(base.join("mem")).unwrap();
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, p.addr).unwrap();
    assert_eq!(i64::from_le_bytes(b), 1234);
    // The text of the program comes from the executable (not saved pages).
    let text = read(&base.join("maps"))
        .lines()
        .find(|l| l.contains("r-xp"))
        .unwrap()
        .to_string();
    let start = u64::from_str_radix(text.split('-').next().unwrap(), 16).unwrap();
    mem.read_exact_at(&mut b, start).unwrap();
    drop(mem);
    // --leave-running left it running.
    let before = p.output().lines().count();
    assert!(wait_for(Duration::from_secs(5), || p
        .output()
        .lines()
        .count()
        > before + 3));
    // Another checkpoint in the same second gets another name.
    std::fs::write(
        m.path("ctl"),
        format!("checkpoint {} --leave-running\n", p.pid),
    )
    .unwrap();
    let second = read(&m.path("ctl"));
    assert!(
        !second.contains(&format!("ok checkpoint {name} ")),
        "{second}"
    );
    let e = std::fs::write(m.path("ctl"), format!("checkpoint {} {name}\n", p.pid)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    m.stop();
}

#[test]
fn edited_memory_is_restored() {
    require_root_and_fuse();
    let dir = TempDir::new("memrestore");
    let store = dir.mkdir("store");
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let mut p = Proc::spawn(&dir.0);
    let name = checkpoint_sleeping(&m, &p, "mem");
    end_original(&mut p);
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(&format!("{name}/{}/mem", p.pid)))
        .unwrap();
    assert_eq!(mem.write_at(&999i64.to_le_bytes(), p.addr).unwrap(), 8);
    drop(mem);
    let lines_before = p.output().lines().count();
    let pid = restore(&m, &name, "");
    assert_eq!(pid, p.pid, "restored under the saved pid");
    let ok = wait_for(Duration::from_secs(10), || {
        p.output()
            .lines()
            .skip(lines_before / 2)
            .any(|l| l.starts_with("value=999 "))
    });
    assert!(
        ok,
        "the restored process does not print the edited value:\n{}",
        p.output()
    );
    kill_pid(pid);
    wait_reaped(&m, &name, pid);
    m.stop();
}

#[test]
fn edited_register_is_restored() {
    require_root_and_fuse();
    let dir = TempDir::new("regrestore");
    let store = dir.mkdir("store");
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let mut p = Proc::spawn(&dir.0);
    let name = checkpoint_sleeping(&m, &p, "reg");
    end_original(&mut p);
    let regs = m.path(&format!("{name}/{}/regs", p.pid));
    // The shell's way.
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo 'r12 4242' > {}", regs.display()))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(reg(&read(&regs), "r12"), 4242);
    let pid = restore(&m, &name, "");
    let ok = wait_for(Duration::from_secs(10), || {
        p.output().lines().any(|l| l.ends_with(" r12=4242"))
    });
    assert!(
        ok,
        "the restored process does not print the edited register:\n{}",
        p.output()
    );
    kill_pid(pid);
    wait_reaped(&m, &name, pid);
    m.stop();
}

#[test]
fn restore_with_a_new_pid_while_the_original_runs() {
    require_root_and_fuse();
    let dir = TempDir::new("newpid");
    let store = dir.mkdir("store");
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let p = Proc::spawn(&dir.0);
    std::fs::write(
        m.path("ctl"),
        format!("checkpoint {} twin --leave-running\n", p.pid),
    )
    .unwrap();
    // The saved pid is taken: a plain restore fails with a reason.
    let e = std::fs::write(m.path("twin/ctl"), "restore\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert!(
        read(&m.path("twin/ctl")).starts_with("error: restore failed"),
        "{}",
        read(&m.path("twin/ctl"))
    );
    let pid = restore(&m, "twin", " --new-pid");
    assert_ne!(pid, p.pid);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    kill_pid(pid);
    wait_reaped(&m, "twin", pid);
    m.stop();
}
