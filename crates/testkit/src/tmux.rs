//! A private tmux server per test (`tmux -L NAME`), driven the way a user
//! would: keys typed with send-keys, the screen read with capture-pane.
//! Terminal tests run programs in its panes (each pane is a real pty with
//! a shell as its session leader), dump them and restore them into other
//! panes.
//!
//! Every wait fails with what the pane shows. Dropping the server kills
//! everything its panes started (some programs outlive a server that
//! goes away, `script` for one).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a wait for something on a screen lasts.
pub const SCREEN_WAIT: Duration = Duration::from_secs(20);

/// A shell for panes: no rc files, prompt `$ `.
pub const SHELL: &str = "env PS1='$ ' TERM=screen bash --norc --noprofile -i";

/// A tmux server of the test's own, with session "t".
pub struct Tmux {
    pub socket: String,
}

impl Tmux {
    /// A new server whose session "t" (window 0) runs `cmd` in a `w` x `h`
    /// window.
    pub fn start(tag: &str, cmd: &str, w: u16, h: u16) -> Tmux {
        crate::need(crate::require::tool("tmux", "apt-get install tmux"));
        let t = Tmux {
            socket: format!("ckpt-{tag}-{}", std::process::id()),
        };
        let _ = t.run(&["kill-server"]);
        let _ptys = crate::ptys::opening();
        t.ok(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            cmd,
        ]);
        t.ok(&["set-option", "-g", "remain-on-exit", "off"]);
        t.ok(&["set-option", "-g", "history-limit", "5000"]);
        t
    }

    /// Run tmux on this server.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux")
    }

    /// Run tmux and require success: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A new window `name` running `cmd` (target "t:NAME").
    pub fn window(&self, name: &str, cmd: &str) -> String {
        let _ptys = crate::ptys::opening();
        self.ok(&["new-window", "-d", "-t", "t:", "-n", name, cmd]);
        format!("t:{name}")
    }

    /// A new pane running `cmd`, split from `target` (below it); its id
    /// (`%N`, a target that stays the pane's whatever the layout).
    pub fn split(&self, target: &str, cmd: &str) -> String {
        let _ptys = crate::ptys::opening();
        self.ok(&[
            "split-window",
            "-d",
            "-P",
            "-F",
            "#{pane_id}",
            "-t",
            target,
            cmd,
        ])
        .trim()
        .to_string()
    }

    /// Keys by name (Enter, C-z, Escape, ...).
    pub fn keys(&self, target: &str, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", target];
        a.extend_from_slice(keys);
        self.ok(&a);
    }

    /// Text typed literally.
    pub fn text(&self, target: &str, s: &str) {
        self.ok(&["send-keys", "-t", target, "-l", s]);
    }

    /// A line typed: the text, then Enter.
    pub fn line(&self, target: &str, s: &str) {
        self.text(target, s);
        self.keys(target, &["Enter"]);
    }

    /// The history and the screen, wrapped lines joined.
    pub fn capture(&self, target: &str) -> String {
        self.ok(&["capture-pane", "-p", "-J", "-S", "-", "-t", target])
    }

    /// The visible screen only.
    pub fn screen(&self, target: &str) -> String {
        self.ok(&["capture-pane", "-p", "-t", target])
    }

    /// Wait until `f` holds for `what` (history and screen), else fail
    /// showing the pane.
    pub fn wait_until(&self, target: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let s = self.capture(target);
            if f(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what} in pane {target}; it shows:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the pane (history and screen) shows `needle`.
    pub fn wait_for(&self, target: &str, needle: &str) -> String {
        self.wait_until(target, &format!("{needle:?}"), |s| s.contains(needle))
    }

    /// Wait until the visible screen shows `needle`.
    pub fn wait_screen(&self, target: &str, needle: &str) -> String {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let s = self.screen(target);
            if s.contains(needle) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {needle:?} on the screen of {target}; it shows:\n{s}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How often `needle` shows in the pane (history and screen).
    pub fn count(&self, target: &str, needle: &str) -> usize {
        self.capture(target).matches(needle).count()
    }

    /// Do `act` until `needle` shows once more than before on the visible
    /// screen (at most 5 times, 6 s each): programs drop typeahead when
    /// they set their modes again (after a resume, a ^C), which races with
    /// keys typed at once.
    pub fn retry_screen(&self, target: &str, needle: &str, act: impl Fn()) -> String {
        let before = self.screen(target).matches(needle).count();
        for _ in 0..5 {
            act();
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                let s = self.screen(target);
                if s.matches(needle).count() > before {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "{needle:?} never showed in {target}:\n{}",
            self.screen(target)
        );
    }

    /// Same, counting in the history too.
    pub fn retry_more(&self, target: &str, needle: &str, act: impl Fn()) -> String {
        let before = self.count(target, needle);
        for _ in 0..5 {
            act();
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                let s = self.capture(target);
                if s.matches(needle).count() > before {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "{needle:?} never showed once more in {target}:\n{}",
            self.capture(target)
        );
    }

    /// Whether the last non-empty line of the screen is the shell prompt.
    pub fn at_prompt(&self, target: &str) -> bool {
        self.screen(target)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_end() == "$")
    }

    /// Wait for the shell prompt.
    pub fn wait_prompt(&self, target: &str) {
        let deadline = Instant::now() + SCREEN_WAIT;
        while !self.at_prompt(target) {
            if Instant::now() > deadline {
                panic!("no shell prompt in {target}:\n{}", self.screen(target));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A format variable of a pane (`#{pane_tty}`, ...).
    pub fn display(&self, target: &str, format: &str) -> String {
        self.ok(&["display", "-p", "-t", target, format])
            .trim()
            .to_string()
    }

    /// The pane's terminal, /dev/pts/N.
    pub fn pane_tty(&self, target: &str) -> String {
        self.display(target, "#{pane_tty}")
    }

    /// The pid of the pane's command (its shell).
    pub fn pane_pid(&self, target: &str) -> i32 {
        self.display(target, "#{pane_pid}")
            .parse()
            .expect("pane pid")
    }

    /// The server's pid.
    pub fn server_pid(&self) -> i32 {
        self.display("t", "#{pid}").parse().expect("server pid")
    }

    /// The process of the pane's terminal whose command is `comm` (waits
    /// for it).
    pub fn process_on(&self, target: &str, comm: &str) -> i32 {
        let tty = self.pane_tty(target);
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            if let Some(p) = processes_on(&tty).into_iter().find(|p| p.comm == comm) {
                return p.pid;
            }
            if Instant::now() > deadline {
                panic!("no {comm} on {tty} ({target}):\n{}", self.screen(target));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Ok(server) = self.display("t", "#{pid}").parse::<i32>() {
            for p in descendants(server) {
                let _ = crate::signal(p, 9);
            }
        }
        let _ = self.run(&["kill-server"]);
    }
}

/// Every descendant of `pid`, deepest first.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for k in kids
            .split_whitespace()
            .filter_map(|s| s.parse::<i32>().ok())
        {
            out.extend(descendants(k));
            out.push(k);
        }
    }
    out
}

/// A process as /proc/PID/stat shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub sid: i32,
    /// The controlling terminal as the kernel encodes it (0: none).
    pub tty_nr: u32,
    pub tpgid: i32,
}

/// /proc/PID/stat of `pid`.
pub fn stat_line(pid: i32) -> Option<StatLine> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let f: Vec<&str> = s[close + 2..].split(' ').collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    Some(StatLine {
        pid,
        comm: s[open + 1..close].to_string(),
        state: f.first()?.chars().next()?,
        ppid: n(1) as i32,
        pgrp: n(2) as i32,
        sid: n(3) as i32,
        tty_nr: n(4) as u32,
        tpgid: n(5) as i32,
    })
}

/// The kernel's encoding (stat's tty_nr) of /dev/pts/N.
pub fn pts_tty_nr(tty: &str) -> u32 {
    let n: u32 = tty
        .trim_start_matches("/dev/pts/")
        .parse()
        .expect("a /dev/pts/N path");
    let (major, minor) = (136 + n / 256, n % 256);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Every process whose controlling terminal is `tty` (/dev/pts/N).
pub fn processes_on(tty: &str) -> Vec<StatLine> {
    let nr = pts_tty_nr(tty);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<StatLine> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat_line)
        .filter(|s| s.tty_nr == nr)
        .collect();
    v.sort_by_key(|s| s.pid);
    v
}
