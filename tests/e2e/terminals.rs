//! Terminals, driven through tmux as a user would (send-keys,
//! capture-pane): programs dumped in one pane and restored by `ckpt
//! restore` in another come back as jobs of that pane's shell, with their
//! terminal settings, a redraw, and job control; `--tty PATH`; terminals
//! reopened by path.

use crate::util::*;
use ckpt_testkit::ptys;
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
    let opening = ptys::opening();
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
    drop(opening);
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

/// Dump the tree of `pid` (killing it) into `image`; wait until every
/// process of the image is gone (reaping those that are ours): a pid a
/// zombie holds is not free for the restore.
fn dump_tree(pid: i32, image: &Path) {
    dump(pid, image);
    let show = ckpt_ok(&["show", image.to_str().unwrap()]);
    for l in show.lines() {
        let Some(p) = l
            .strip_prefix("process ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        ckpt_testkit::wait_gone(p);
    }
}

/// A counter typed at a pane's shell: "TAG count=N" every 0.2 s.
fn counter_line(tag: &str) -> String {
    format!("i=0; while :; do echo \"{tag} count=$i\"; i=$((i+1)); sleep 0.2; done")
}

/// The counts "TAG count=N" a screen shows at the start of its lines.
fn counts(screen: &str, tag: &str) -> Vec<i64> {
    let key = format!("{tag} count=");
    screen
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(&key)?.parse().ok())
        .collect()
}

/// The highest "TAG count=N" a screen shows (-1: none).
fn last_count(screen: &str, tag: &str) -> i64 {
    counts(screen, tag).into_iter().max().unwrap_or(-1)
}

#[test]
fn tmux_server_with_two_counting_panes_is_restored_whole() {
    let dir = TempDir::new("tty-tmuxsrv");
    // The terminal a client attaches from after the restore.
    let outer = Tmux::start("tmuxsrv-outer", SHELL, 100, 30);
    outer.wait_prompt("t");
    // The server under test: two panes, each a shell running a counter.
    let inner = Tmux::start("tmuxsrv", SHELL, 100, 30);
    inner.wait_prompt("t");
    let a = inner.display("t", "#{pane_id}");
    let b = inner.split(&a, SHELL);
    inner.wait_prompt(&b);
    let panes = [(a.as_str(), "A"), (b.as_str(), "B")];
    for (p, tag) in panes {
        inner.line(p, &counter_line(tag));
    }
    for (p, tag) in panes {
        inner.wait_until(p, "3 counts", |s| counts(s, tag).len() >= 3);
    }
    let server = inner.server_pid();
    let ttys: Vec<String> = panes.iter().map(|(p, _)| inner.pane_tty(p)).collect();
    let shells: Vec<i32> = panes.iter().map(|(p, _)| inner.pane_pid(p)).collect();
    let image = dir.join("tmux.ckpt");
    {
        // The panes' pty indexes stay free until the server has them again.
        let _keep = ptys::keeping();
        dump_tree(server, &image);
        let out = ckpt_ok(&["restore", "--detach", image.to_str().unwrap()]);
        assert_eq!(out.trim(), server.to_string(), "{out}");
    }
    // Still a daemon leading its own session.
    let s = stat_line(server).expect("the restored server");
    assert_eq!((s.sid, s.tty_nr), (server, 0), "{s:?}");
    // Clients reach the restored server through its socket; each pane has
    // its terminal again, as its shell's controlling terminal, and counts
    // on from where it was, in its history (no count lost or repeated).
    for (i, (p, tag)) in panes.iter().enumerate() {
        assert_eq!(inner.pane_tty(p), ttys[i]);
        let s = stat_line(shells[i]).expect("the pane's shell");
        assert_eq!(
            (s.sid, s.tty_nr),
            (shells[i], pts_tty_nr(&ttys[i])),
            "{s:?}"
        );
        let before = last_count(&inner.capture(p), tag);
        let s = inner.wait_until(p, "the counter going on", |s| {
            last_count(s, tag) > before + 2
        });
        let seen = counts(&s, tag);
        assert_eq!(seen[0], 0, "{s}");
        assert_steps(&seen, 1, None, &format!("pane {tag}"));
    }
    // `tmux attach` from another terminal shows both panes counting.
    outer.line(
        "t",
        &format!("tmux -L {} -f /dev/null attach -t t", inner.socket),
    );
    let shown = outer.wait_until("t", "both panes attached", |s| {
        last_count(s, "A") >= 0 && last_count(s, "B") >= 0
    });
    let (a0, b0) = (last_count(&shown, "A"), last_count(&shown, "B"));
    outer.wait_until("t", "both panes counting on", |s| {
        last_count(s, "A") > a0 + 2 && last_count(s, "B") > b0 + 2
    });
    // The panes' shells take keys: Ctrl-C ends pane A's counter, and a
    // command runs there; pane B counts on.
    inner.keys(&a, &["C-c"]);
    inner.wait_prompt(&a);
    inner.line(&a, "echo after-$((40+2))");
    outer.wait_screen("t", "after-42");
    let b1 = last_count(&outer.screen("t"), "B");
    outer.wait_until("t", "pane B counting on", |s| last_count(s, "B") > b1 + 2);
    // Detached, the client leaves the terminal to its shell.
    outer.keys("t", &["C-b", "d"]);
    outer.wait_for("t", "[detached");
    outer.wait_prompt("t");
}

#[test]
fn script_recording_a_counter_goes_on_recording() {
    require!(require::tool("script", "apt-get install bsdutils"));
    const N: i64 = 40;
    let dir = TempDir::new("tty-script");
    let ts = dir.join("typescript");
    let t = Tmux::start("script", SHELL, 100, 30);
    t.wait_prompt("t");
    // The pane to restore in, opened while script holds its pty (whose
    // index comes back with it).
    let w = shell_window(&t, "restored");
    t.line(
        "t",
        &format!(
            "script -q -f -c 'for i in $(seq 1 {N}); do echo count=$i; sleep 0.15; done' {}; echo rc=$?",
            ts.display()
        ),
    );
    let recorded = || values(&std::fs::read_to_string(&ts).unwrap_or_default(), "count=");
    wait_until("script recording", TIMEOUT, || recorded().len() >= 5);
    let pid = t.process_on("t", "script");
    let image = dir.join("script.ckpt");
    let before;
    {
        let _keep = ptys::keeping();
        dump_tree(pid, &image);
        before = recorded();
        restore_in(&t, &w, &image, "");
        t.wait_for(&w, &format!("ckpt: restored pid {pid} (script)"));
    }
    assert!(before.len() < N as usize, "{before:?}");
    // It records on, into the same file, and copies to its new terminal.
    t.wait_for(&w, &format!("count={N}"));
    t.wait_for(&w, "rc=0");
    let all = recorded();
    assert_eq!((all[0], all.len() as i64), (1, N), "{all:?}");
    assert_steps(&all, 1, None, "the typescript");
    // script set its terminal back; the shell's is in line mode again.
    t.wait_prompt(&w);
    t.line(&w, "stty -a | grep -o -- '-\\?icanon' | head -1");
    t.wait_for(&w, "\nicanon");
}

#[test]
fn bash_i_with_jobs_comes_back_as_a_job() {
    let dir = TempDir::new("tty-bashi");
    let log = dir.join("bg.txt");
    let t = Tmux::start("bashi", SHELL, 100, 30);
    t.wait_prompt("t");
    // An interactive bash with a job in the background and cat in the
    // foreground.
    t.line("t", "env PS1='in$ ' bash --norc --noprofile -i");
    t.wait_for("t", "\nin$ ");
    t.line(
        "t",
        &format!(
            "(i=0; while :; do echo count=$i >> {}; i=$((i+1)); sleep 0.1; done) &",
            log.display()
        ),
    );
    t.wait_for("t", "[1] ");
    t.line("t", "cat");
    let cat = t.process_on("t", "cat");
    let bash = stat_line(cat).expect("cat").ppid;
    let logged = || values(&std::fs::read_to_string(&log).unwrap_or_default(), "count=");
    wait_until("the background job counting", TIMEOUT, || {
        logged().len() >= 3
    });
    let image = dir.join("bash.ckpt");
    dump_tree(bash, &image);

    let w = shell_window(&t, "restored");
    restore_in(&t, &w, &image, "");
    t.wait_for(&w, &format!("ckpt: restored pid {bash} (bash)"));
    // cat has the terminal, as at the dump, in the new pane's session.
    assert_foreground_job(&t, &w, cat);
    let s = stat_line(bash).expect("the restored bash");
    assert_eq!((s.pgrp, s.tpgid), (bash, cat), "{s:?}");
    t.line(&w, "meow");
    t.wait_until(&w, "meow twice (echo, then cat)", |s| {
        s.matches("\nmeow").count() >= 2
    });
    // The background job counts on, with no gap.
    let n = logged().len();
    wait_until("the background job going on", TIMEOUT, || {
        logged().len() > n + 3
    });
    assert_steps(&logged(), 1, None, "the background job");
    // Ctrl-C ends cat; bash takes the terminal back and has its job.
    t.keys(&w, &["C-c"]);
    t.wait_for(&w, "\nin$ ");
    t.retry_more(&w, "\nin-42", || t.line(&w, "jobs; echo in-$((40+2))"));
    assert!(t.capture(&w).contains("Running"), "{}", t.capture(&w));
    // fg, then Ctrl-C: the job ends.
    let prompts = t.count(&w, "\nin$ ");
    t.line(&w, "fg");
    t.wait_for(&w, "\n( i=0");
    t.keys(&w, &["C-c"]);
    t.wait_until(&w, "the prompt after the job", |s| {
        s.matches("\nin$ ").count() > prompts
    });
    let n = logged().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(logged().len(), n, "the job still counts");
    // bash exits; the restorer with its status.
    t.line(&w, "exit 5");
    t.wait_for(&w, "rc=5");
}

/// `expect LOG`: an expect-like parent: bash runs on a pty of its own
/// (pty.fork) answering each line it reads; the parent sends "pingN",
/// waits for "got pingN n=N" and logs "count=N".
const EXPECT_PY: &str = r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp('bash', ['bash', '--norc', '--noprofile', '-c',
        'i=0; while read -r line; do echo "got $line n=$i"; i=$((i+1)); done'])
log = open(sys.argv[1], 'ab', buffering=0)
print('READY pid=%d child=%d' % (os.getpid(), pid), flush=True)
i = 0
buf = b''
while True:
    os.write(fd, b'ping%d\n' % i)
    want = b'got ping%d n=%d' % (i, i)
    while want not in buf:
        buf += os.read(fd, 4096)
    buf = buf[buf.index(want) + len(want):]
    log.write(b'count=%d\n' % i)
    i += 1
    time.sleep(0.01)
"#;

#[test]
fn expect_like_parent_and_its_child_on_a_pty_go_on_through_dumps() {
    let dir = TempDir::new("tty-expect");
    let log = dir.join("log.txt");
    let opening = ptys::opening();
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new("python3").args(["-c", EXPECT_PY, log.to_str().unwrap()]),
    );
    let ready = p.wait_for("READY");
    drop(opening);
    let child: i32 = field(&ready, "child").parse().unwrap();
    let logged = || values(&std::fs::read_to_string(&log).unwrap_or_default(), "count=");
    let more = |n: usize| {
        wait_until("more exchanges", TIMEOUT, || logged().len() >= n + 10);
    };
    more(0);
    // Dumped at any moment, with bytes in flight both ways on the pty:
    // left running, then killed and restored, three times.
    let image = dir.join("img.ckpt");
    for _ in 0..3 {
        dump_leave_running(p.pid, &image);
        more(logged().len());
        let _keep = ptys::keeping();
        dump_kill(&mut p, &image);
        ckpt_testkit::wait_gone(child);
        p = restore_detached(&image, &p.out, p.pid);
        drop(_keep);
        more(logged().len());
    }
    let all = logged();
    assert_eq!(all[0], 0);
    assert_steps(&all, 1, None, "the exchanges");
    let s = stat_line(child).expect("the child on the pty");
    assert_eq!((s.sid, s.ppid), (child, p.pid), "{s:?}");
    assert_ne!(s.tty_nr, 0, "the pty is its controlling terminal: {s:?}");
}

/// The terminals of a tree are saved together: each pair's queues are
/// watched until they stay quiet, and a tmux server with six panes is
/// frozen hardly longer than one with a single pane (it was frozen that
/// wait once per pane: about 60 ms each).
#[test]
fn many_terminals_are_saved_at_once() {
    // Frozen times are compared: not beside other heavy tests.
    let _turn = heavy();
    let dir = TempDir::new("tty-many");
    let frozen = |panes: usize| -> f64 {
        let t = Tmux::start(&format!("many{panes}"), SHELL, 100, 40);
        t.wait_prompt("t");
        let first = t.display("t", "#{pane_id}");
        for _ in 1..panes {
            let p = t.split(&first, SHELL);
            t.wait_prompt(&p);
            let _ = Command::new("tmux")
                .args(["-L", &t.socket, "select-layout", "-t", "t", "tiled"])
                .status();
        }
        let image = dir.join(format!("many{panes}.ckpt"));
        let out = ckpt()
            .args(["dump", &t.server_pid().to_string(), "-o"])
            .arg(&image)
            .arg("--leave-running")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let ms = err
            .split("(frozen ")
            .nth(1)
            .and_then(|r| r.split(" ms").next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no frozen time in {err:?}"));
        ms
    };
    let one = frozen(1);
    let six = frozen(6);
    eprintln!("frozen: one pane {one:.1} ms, six panes {six:.1} ms");
    // One wait per pane would add five more (about 300 ms).
    assert!(
        six < one + 200.0,
        "six panes frozen {six:.1} ms, one pane {one:.1} ms"
    );
}
