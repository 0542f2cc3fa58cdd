//! Terminals, driven through tmux as a user would (send-keys,
//! capture-pane): programs dumped in one pane and restored by `ckpt
//! restore` in another come back as jobs of that pane's shell, with their
//! terminal settings, a redraw, and job control; `--tty PATH`; terminals
//! reopened by path.

use crate::util::*;
use ckpt_testkit::tmux::{pts_tty_nr, stat_line, Tmux, SHELL};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ckpt_bin() -> String {
    ckpt().get_program().to_string_lossy().into_owned()
}

/// Dump `pid` (killing it) into `image`.
fn dump(pid: i32, image: &Path) {
    ckpt_ok(&[
        "dump",
        &pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "-q",
    ]);
    wait_gone(pid);
}

/// Wait until `pid` is gone (or a zombie its parent has yet to reap).
fn wait_gone(pid: i32) {
    wait_until("the dumped process to go", TIMEOUT, || {
        stat_line(pid).is_none_or(|s| s.state == 'Z')
    });
}

/// A window running the shell, at its prompt.
fn shell_window(t: &Tmux, name: &str) -> String {
    let w = t.window(name, SHELL);
    t.wait_prompt(&w);
    w
}

/// `ckpt restore IMAGE` typed in pane `w`, then `echo rc=$?`.
fn restore_in(t: &Tmux, w: &str, image: &Path, args: &str) {
    t.line(
        w,
        &format!(
            "{} restore {args}{}; echo rc=$?",
            ckpt_bin(),
            image.display()
        ),
    );
}

/// The restored job leads its own group, in the pane shell's session, and
/// holds the pane's terminal.
fn assert_foreground_job(t: &Tmux, w: &str, pid: i32) {
    let tty = t.pane_tty(w);
    let shell = t.pane_pid(w);
    wait_until("the job in the foreground", TIMEOUT, || {
        stat_line(pid).is_some_and(|s| s.tpgid == pid)
    });
    let s = stat_line(pid).expect("the restored process");
    assert_eq!(
        (s.pgrp, s.sid, s.tty_nr, s.tpgid),
        (pid, shell, pts_tty_nr(&tty), pid),
        "{s:?}"
    );
}

#[test]
fn vim_restored_into_a_new_pane_redraws_takes_keys_and_writes() {
    require!(require::tool("vim", "apt-get install vim"));
    let dir = TempDir::new("tty-vim");
    let file = dir.join("notes.txt");
    let t = Tmux::start("vim", SHELL, 100, 30);
    t.wait_prompt("t");
    t.line("t", &format!("vim -u NONE -N -n {}", file.display()));
    t.wait_screen("t", "notes.txt");
    t.text("t", "ihello before the dump");
    t.keys("t", &["Escape"]);
    t.wait_screen("t", "hello before the dump");
    // Past vim's wait for the rest of an escape sequence.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = t.process_on("t", "vim");
    let image = dir.join("vim.ckpt");
    dump(pid, &image);

    let w = shell_window(&t, "restored");
    restore_in(&t, &w, &image, "");
    // Redrawn on the new pane (SIGWINCH), in the foreground, raw mode back.
    t.wait_screen(&w, "hello before the dump");
    assert_foreground_job(&t, &w, pid);
    t.text(&w, "A and after");
    t.keys(&w, &["Escape"]);
    t.wait_screen(&w, "hello before the dump and after");
    // Ctrl-Z: vim stops itself; the shell sees its job (the restorer) stop.
    t.keys(&w, &["C-z"]);
    t.wait_for(&w, "Stopped");
    t.line(&w, "echo outer-$((40+2))");
    t.wait_for(&w, "\nouter-42");
    // fg: the job has the terminal again, and redraws.
    t.line(&w, "fg");
    t.wait_screen(&w, "hello before the dump and after");
    assert_foreground_job(&t, &w, pid);
    // :wq writes the file (vim drops typeahead when it resumes: retry).
    let written = || std::fs::read_to_string(&file).unwrap_or_default();
    for _ in 0..5 {
        if !written().is_empty() {
            break;
        }
        t.keys(&w, &["Escape"]);
        t.line(&w, ":wq");
        wait_until_or("the file written", Duration::from_secs(5), || {
            !written().is_empty()
        });
    }
    assert_eq!(written(), "hello before the dump and after\n");
    t.wait_prompt(&w);
    t.line(&w, "echo status=$?");
    t.wait_for(&w, "status=0");
    // The shell has its terminal back in line mode.
    t.line(&w, "stty -a | grep -o -- '-\\?icanon' | head -1");
    t.wait_for(&w, "\nicanon");
}

#[test]
fn started_in_the_background_it_takes_the_terminal_at_fg() {
    require!(require::tool("vim", "apt-get install vim"));
    let dir = TempDir::new("tty-bg");
    let t = Tmux::start("bg", SHELL, 100, 30);
    t.wait_prompt("t");
    t.line("t", "vim -u NONE -N -n");
    t.wait_screen("t", "~");
    t.text("t", "iwaiting in the background");
    t.keys("t", &["Escape"]);
    t.wait_screen("t", "waiting in the background");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = t.process_on("t", "vim");
    let image = dir.join("vim.ckpt");
    dump(pid, &image);

    let w = shell_window(&t, "restored");
    t.line(&w, &format!("{} restore {} &", ckpt_bin(), image.display()));
    t.wait_for(&w, "[1] ");
    wait_until("the restored vim", TIMEOUT, || stat_line(pid).is_some());
    // Running, not stopped, without the terminal: the shell has it.
    std::thread::sleep(Duration::from_millis(500));
    let s = stat_line(pid).unwrap();
    assert_ne!(s.tpgid, pid, "{s:?}");
    assert_ne!(s.state, 'T', "{s:?}");
    // vim polls the terminal in the background too: the "fg" typed may
    // wake it into a read, which stops it (SIGTTIN) and the restorer with
    // it, as for any background job; then `fg` again. Stopped inside a
    // read, it redraws at the next key (Ctrl-L).
    t.line(&w, "fg");
    for _ in 0..5 {
        if wait_until_or("vim redrawn", Duration::from_secs(3), || {
            t.screen(&w).contains("waiting in the background")
        }) {
            break;
        }
        if t.at_prompt(&w) {
            t.line(&w, "fg");
        } else {
            t.keys(&w, &["C-l"]);
        }
    }
    t.wait_screen(&w, "waiting in the background");
    assert_foreground_job(&t, &w, pid);
    t.line(&w, ":q!");
    t.wait_prompt(&w);
    t.line(&w, "echo status=$?");
    t.wait_for(&w, "status=0");
}

/// Like `wait_until`, without failing: whether `f` came true in time.
fn wait_until_or(_what: &str, limit: Duration, f: impl Fn() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn python_repl_keeps_its_variables_and_job_control() {
    require!(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("tty-python");
    let t = Tmux::start("python", SHELL, 100, 30);
    t.wait_prompt("t");
    t.line("t", "python3 -q");
    t.wait_screen("t", ">>>");
    t.line("t", "x = 41");
    t.wait_until("t", "a second prompt", |s| s.matches(">>>").count() >= 2);
    let pid = t.process_on("t", "python3");
    let image = dir.join("py.ckpt");
    dump(pid, &image);

    let w = shell_window(&t, "restored");
    restore_in(&t, &w, &image, "");
    t.wait_for(&w, &format!("ckpt: restored pid {pid} (python3)"));
    assert_foreground_job(&t, &w, pid);
    t.line(&w, "print(x + 1)");
    t.wait_for(&w, "\n42");
    // Ctrl-C reaches the REPL, which lives on.
    t.keys(&w, &["C-c"]);
    t.wait_for(&w, "KeyboardInterrupt");
    t.retry_more(&w, "alive 41", || t.line(&w, "print('alive', x)"));
    t.keys(&w, &["C-z"]);
    t.wait_for(&w, "Stopped");
    t.line(&w, "fg");
    t.retry_more(&w, "\n82", || t.line(&w, "print(x * 2)"));
    t.line(&w, "import sys; sys.exit(3)");
    t.wait_prompt(&w);
    t.line(&w, "echo status=$?");
    t.wait_for(&w, "status=3");
}

#[test]
fn ctrl_c_kills_the_job_and_the_restorer_dies_the_same_way() {
    let dir = TempDir::new("tty-cat");
    let t = Tmux::start("cat", SHELL, 100, 30);
    t.wait_prompt("t");
    t.line("t", "cat");
    let pid = t.process_on("t", "cat");
    let image = dir.join("cat.ckpt");
    dump(pid, &image);

    let w = shell_window(&t, "restored");
    restore_in(&t, &w, &image, "");
    t.wait_for(&w, &format!("ckpt: restored pid {pid} (cat)"));
    t.line(&w, "meow");
    t.wait_until(&w, "meow twice (echo, then cat)", |s| {
        s.matches("\nmeow").count() >= 2
    });
    t.keys(&w, &["C-c"]);
    t.wait_prompt(&w);
    // Killed by SIGINT like any job: the rest of the line is abandoned.
    assert!(!t.capture(&w).contains("\nrc="), "{}", t.capture(&w));
    t.line(&w, "echo status=$?");
    t.wait_for(&w, "status=130");
}

#[test]
fn less_and_top_redraw_suspend_and_quit() {
    require!(
        require::tool("less", "apt-get install less"),
        require::tool("top", "apt-get install procps")
    );
    let dir = TempDir::new("tty-less");
    let text = dir.join("text.txt");
    let lines: String = (0..200).map(|i| format!("line number {i}\n")).collect();
    std::fs::write(&text, lines).unwrap();
    let t = Tmux::start("less", SHELL, 100, 30);
    t.wait_prompt("t");
    t.line("t", &format!("less {}", text.display()));
    t.wait_screen("t", "line number 20");
    t.keys("t", &["Space"]);
    t.wait_screen("t", "line number 40");
    let pid = t.process_on("t", "less");
    let image = dir.join("less.ckpt");
    dump(pid, &image);
    t.keys("t", &["q"]);
    t.line("t", "clear");
    t.wait_prompt("t");
    t.line("t", "top -d 0.5");
    t.wait_screen("t", "PID");
    let top = t.process_on("t", "top");
    let top_image = dir.join("top.ckpt");
    dump(top, &top_image);

    let w = shell_window(&t, "restored");
    restore_in(&t, &w, &image, "");
    // The page it showed, redrawn; keys reach it; Ctrl-Z and fg.
    t.wait_screen(&w, "line number 40");
    assert_foreground_job(&t, &w, pid);
    t.retry_screen(&w, "line number 70", || t.keys(&w, &["Space"]));
    t.keys(&w, &["C-z"]);
    t.wait_for(&w, "Stopped");
    t.line(&w, "fg");
    t.wait_screen(&w, "line number 70");
    for _ in 0..5 {
        t.keys(&w, &["q"]);
        if wait_until_or("less to quit", Duration::from_secs(4), || t.at_prompt(&w)) {
            break;
        }
    }
    t.wait_prompt(&w);

    t.line(&w, "clear");
    t.wait_prompt(&w);
    restore_in(&t, &w, &top_image, "");
    t.wait_screen(&w, "PID");
    assert_foreground_job(&t, &w, top);
    // It goes on refreshing: the load line changes its time.
    t.wait_screen(&w, "Tasks:");
    for _ in 0..5 {
        t.keys(&w, &["q"]);
        if wait_until_or("top to quit", Duration::from_secs(4), || {
            t.capture(&w).contains("rc=0")
        }) {
            break;
        }
    }
    t.wait_for(&w, "rc=0");
}

/// `ptyhold LOG FIFO`: a pty no session has; prints its slave's path,
/// copies what the master reads into LOG and what FIFO gets to the master.
const PTYHOLD_PY: &str = r#"
import os, sys, select, time
log = open(sys.argv[1], 'ab', buffering=0)
m, s = os.openpty()
os.set_blocking(m, False)
print('PTY ' + os.ttyname(s), flush=True)
os.close(s)
fifo = os.open(sys.argv[2], os.O_RDWR)
while True:
    r, _, _ = select.select([m, fifo], [], [])
    if m in r:
        try:
            log.write(os.read(m, 4096))
        except BlockingIOError:
            pass
        except OSError:
            time.sleep(0.05)  # no slave open yet (EIO)
    if fifo in r:
        os.write(m, os.read(fifo, 4096))
"#;

#[test]
fn tty_path_makes_the_job_lead_a_session_there() {
    let dir = TempDir::new("tty-path");
    // The job: cat on a pane of its own.
    let t = Tmux::start("ttypath", SHELL, 100, 30);
    t.wait_prompt("t");
    t.line("t", "cat");
    let pid = t.process_on("t", "cat");
    let image = dir.join("cat.ckpt");
    dump(pid, &image);
    // A pane's terminal belongs to its shell's session: refused by name.
    let o = ckpt_run(&[
        "restore",
        "--tty",
        &t.pane_tty("t"),
        image.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(
        err.contains("is the controlling terminal of session") && err.contains("bash"),
        "{err}"
    );
    // A pty with no session.
    let log = dir.join("pty.log");
    let fifo = dir.join("in.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut holder = Proc::spawn_cmd(
        &dir,
        Command::new("python3").args([
            "-c",
            PTYHOLD_PY,
            log.to_str().unwrap(),
            fifo.to_str().unwrap(),
        ]),
    );
    let line = holder.wait_for("PTY ");
    let tty = line.trim_start_matches("PTY ").to_string();
    let mut restorer = ckpt()
        .args(["restore", "--tty", &tty, image.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ckpt restore --tty");
    wait_until("cat on the pty", TIMEOUT, || {
        stat_line(pid).is_some_and(|s| s.tty_nr == pts_tty_nr(&tty))
    });
    let s = stat_line(pid).unwrap();
    assert_eq!((s.sid, s.pgrp, s.tpgid), (pid, pid, pid), "{s:?}");
    let send = |b: &[u8]| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(b).unwrap();
    };
    send(b"purr\n");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    if !wait_until_or("the echo and cat's copy", TIMEOUT, || {
        logged().matches("purr").count() >= 2
    }) {
        panic!(
            "the pty shows {:?}; cat is {:?}; its holder says {}",
            logged(),
            stat_line(pid),
            holder.output()
        );
    }
    // Ctrl-C on that terminal ends the job; the restorer dies the same way.
    send(b"\x03");
    let t0 = std::time::Instant::now();
    let st = loop {
        if let Some(st) = restorer.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < TIMEOUT, "ckpt restore --tty did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
    holder.kill();
}

/// Holds /dev/console, /dev/tty1 and /dev/ttyS0-like terminals by path
/// (fds 5, 6) and, when it has one, its controlling terminal as /dev/tty
/// (fd 7), then counts.
const BY_PATH_C: &str = r#"
#include "fixture.h"
#include <fcntl.h>
int main(void)
{
    fx_init();
    int c = open("/dev/console", O_RDONLY | O_NOCTTY | O_NONBLOCK);
    int v = open("/dev/tty1", O_RDONLY | O_NOCTTY | O_NONBLOCK);
    if (c < 0 || v < 0 || dup2(c, 5) < 0 || dup2(v, 6) < 0)
        fail("open: %s", strerror(errno));
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (t >= 0)
        dup2(t, 7);
    say("READY pid=%d devtty=%d", getpid(), t >= 0);
    for (long i = 0;; i++) {
        say("count=%ld", i);
        if (t >= 0)
            dprintf(7, "via-dev-tty %ld\n", i);
        msleep(200);
    }
}
"#;

#[test]
fn console_and_virtual_terminals_are_reopened_by_path() {
    require!(
        require::path("/dev/console", "a system console"),
        require::path("/dev/tty1", "a virtual console")
    );
    let dir = TempDir::new("tty-bypath");
    let bin = c_fixture("bypath", BY_PATH_C);
    let mut p = Proc::spawn(&dir, &bin, &[]);
    p.wait_for("READY");
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(2);
    for (fd, path) in [(5, "/dev/console"), (6, "/dev/tty1")] {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", r.pid)).unwrap();
        assert_eq!(link, Path::new(path));
    }
}

#[test]
fn dev_tty_held_open_follows_the_new_terminal() {
    let dir = TempDir::new("tty-devtty");
    let bin = c_fixture("bypath", BY_PATH_C);
    let t = Tmux::start("devtty", SHELL, 100, 30);
    t.wait_prompt("t");
    let out = dir.join("out.txt");
    t.line("t", &format!("{} > {}", bin.display(), out.display()));
    let p = Proc::watch(t.process_on("t", "bypath"), &out);
    assert!(p.wait_for("READY").ends_with("devtty=1"));
    t.wait_for("t", "via-dev-tty 1");
    let image = dir.join("img.ckpt");
    dump(p.pid, &image);
    let w = shell_window(&t, "restored");
    restore_in(&t, &w, &image, "");
    // Its /dev/tty is the new pane's terminal.
    let before = t.count(&w, "via-dev-tty");
    t.wait_until(&w, "more lines through /dev/tty", |s| {
        s.matches("via-dev-tty").count() > before + 1
    });
    t.keys(&w, &["C-c"]);
    t.wait_prompt(&w);
}
