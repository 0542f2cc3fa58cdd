//! `ckpt restore` as a shell job: the restored process leads its own
//! process group in the restorer's session and has the terminal; the
//! restorer stays its parent and stands for it towards the shell, which
//! knows only the restorer.
//!
//! - Signals sent to the restorer (SIGINT, SIGTERM, SIGHUP, SIGQUIT, a
//!   SIGTSTP from the terminal while the restorer holds it) go to the
//!   job's group.
//! - When the job stops (Ctrl-Z, SIGTTIN, SIGSTOP), the restorer takes
//!   the terminal back with its own settings (remembering the job's), and
//!   stops itself: the shell says "Stopped", and `fg` continues the
//!   restorer, which gives the terminal back with the job's settings,
//!   continues the job and sends it SIGWINCH (the size may have changed).
//!   `bg` continues it without the terminal. A restorer whose group is
//!   orphaned (it is the pane's command, or ran under `exec`) cannot stop:
//!   it continues the job at once.
//! - Started in the background (`&`), it hands the terminal over once the
//!   shell gives it the terminal (`fg`: polled, since bash sends no
//!   SIGCONT to a running job it brings to the foreground).
//! - When the job ends, the restorer takes the terminal back with its own
//!   settings and ends the same way: the same exit code, or killed by the
//!   same signal (so the shell abandons the rest of a command line after
//!   a Ctrl-C, as for any job).
//!
//! The signals are blocked before the restore starts (before any thread
//! exists, so every thread has them blocked) and taken one at a time with
//! sigtimedwait; SIGTTOU and SIGTTIN stay blocked, so the restorer may set
//! the terminal's foreground group and settings from the background.

use anyhow::Context;
use ckpt_restore::Handover;
use ckpt_sys::fds::tty::{self, Termios};
use ckpt_sys::proc::job::{self, bit, ChildEvent};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// Signals the restorer takes with sigtimedwait.
const WAITED: [i32; 7] = [
    libc::SIGCHLD,
    libc::SIGCONT,
    libc::SIGHUP,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTSTP,
];

/// How often a restorer without the terminal looks whether the shell gave
/// it the terminal.
const FG_POLL: Duration = Duration::from_millis(200);

fn mask(sigs: &[i32]) -> u64 {
    sigs.iter().fold(0, |m, &s| m | bit(s))
}

/// Block the signals the job control takes, and SIGTTOU/SIGTTIN; call
/// before any thread exists.
pub fn block_signals() -> anyhow::Result<()> {
    job::block_signals(mask(&WAITED) | bit(libc::SIGTTOU) | bit(libc::SIGTTIN))
        .context("blocking signals")?;
    Ok(())
}

/// How the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// The restorer's side of a restored job.
pub struct Job {
    pid: i32,
    pgrp: i32,
    /// The restorer's terminal, when the job is attached to it (job
    /// control); None: the job has no terminal of the restorer's, or one of
    /// its own by path (signals are still passed on).
    tty: Option<File>,
    own_termios: Termios,
    job_termios: Option<Termios>,
    /// The job has the terminal now.
    handed: bool,
    /// The job leads a session of its own (a terminal given by path): the
    /// shell has no job control over it.
    own_session: bool,
}

impl Job {
    /// The restored process `pid` and what the restore did with the
    /// terminal.
    pub fn new(pid: i32, handover: Option<&Handover>) -> Job {
        let mut j = Job {
            pid,
            pgrp: pid,
            tty: None,
            own_termios: Termios::default(),
            job_termios: None,
            handed: false,
            own_session: false,
        };
        let Some(h) = handover else { return j };
        j.pgrp = h.job_pgrp;
        j.own_termios = h.own_termios;
        j.job_termios = h.job_termios;
        j.handed = h.handed;
        j.own_session = h.path.is_some();
        if h.path.is_none() {
            j.tty = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open("/dev/tty")
                .ok();
        }
        j
    }

    /// Tell a job that has a terminal to redraw (the new terminal's size
    /// stays; full-screen programs repaint on SIGWINCH even when the size is
    /// the same).
    pub fn winch(&self) {
        let _ = ckpt_sys::proc::kill(-self.pgrp, libc::SIGWINCH);
    }

    /// Whether the restorer's group is the terminal's foreground.
    fn in_foreground(&self) -> bool {
        self.tty
            .as_ref()
            .is_some_and(|t| tty::foreground(t.as_raw_fd()).ok() == Some(job::getpgrp()))
    }

    /// Give the terminal to the job's group, with its settings.
    fn give(&mut self) {
        let Some(t) = &self.tty else { return };
        if let Some(s) = &self.job_termios {
            let _ = tty::tcsets2(t.as_raw_fd(), s);
        }
        if let Err(e) = tty::set_foreground(t.as_raw_fd(), self.pgrp) {
            tracing::warn!(error = %e, "giving the terminal to the job");
            return;
        }
        self.handed = true;
        tracing::debug!(pgrp = self.pgrp, "terminal given to the job");
    }

    /// Take the terminal back with the restorer's settings, remembering
    /// the job's.
    fn take(&mut self) {
        let Some(t) = &self.tty else { return };
        if !self.handed {
            return;
        }
        if let Ok(s) = tty::tcgets2(t.as_raw_fd()) {
            self.job_termios = Some(s);
        }
        let _ = tty::set_foreground(t.as_raw_fd(), job::getpgrp());
        let _ = tty::tcsets2(t.as_raw_fd(), &self.own_termios);
        self.handed = false;
        tracing::debug!("terminal taken back");
    }

    /// Stand for the job until it ends.
    pub fn run(&mut self) -> anyhow::Result<Ended> {
        loop {
            let timeout = (self.tty.is_some() && !self.handed).then_some(FG_POLL);
            let sig = job::wait_signal(mask(&WAITED), timeout).context("waiting for signals")?;
            if self.tty.is_some() && !self.handed && self.in_foreground() {
                // `fg` of the restorer while the job ran without the
                // terminal (running: no SIGCONT, as a shell does; vim, for
                // one, takes a SIGCONT for a resume and waits for a key).
                self.give();
                self.winch();
            }
            match sig {
                None | Some(libc::SIGCONT) => {}
                Some(libc::SIGCHLD) => {
                    if let Some(end) = self.child_events()? {
                        return Ok(end);
                    }
                }
                Some(s) => {
                    tracing::debug!(signal = s, "passed on to the job");
                    let _ = ckpt_sys::proc::kill(-self.pgrp, s);
                    if s == libc::SIGHUP {
                        let _ = ckpt_sys::proc::kill(-self.pgrp, libc::SIGCONT);
                    }
                }
            }
        }
    }

    /// Every state change of the job's process: its end, or a stop.
    fn child_events(&mut self) -> anyhow::Result<Option<Ended>> {
        while let Some(ev) =
            job::child_event(self.pid).context("waiting for the restored process")?
        {
            match ev {
                ChildEvent::Exited(c) => {
                    self.take();
                    return Ok(Some(Ended::Exited(c)));
                }
                ChildEvent::Signaled(s) => {
                    self.take();
                    return Ok(Some(Ended::Signaled(s)));
                }
                ChildEvent::Stopped(s) => self.stopped(s)?,
                ChildEvent::Continued => {}
            }
        }
        Ok(None)
    }

    /// The job stopped: stop the restorer too, then go on as the shell says.
    fn stopped(&mut self, sig: i32) -> anyhow::Result<()> {
        tracing::debug!(signal = sig, "the job stopped");
        if self.own_session {
            // A session of its own (--tty): not a job of this shell.
            return Ok(());
        }
        self.take();
        job::stop_self().context("stopping")?;
        // Continued by the shell (fg or bg); no SIGCONT pending: the kernel
        // discarded the stop (orphaned group), go on at once.
        let cont = job::wait_signal(bit(libc::SIGCONT), Some(Duration::ZERO))
            .context("waiting for signals")?
            .is_some();
        tracing::debug!(continued = cont, "the restorer goes on");
        if self.in_foreground() {
            self.give();
        }
        let _ = ckpt_sys::proc::kill(-self.pgrp, libc::SIGCONT);
        if self.handed {
            self.winch();
        }
        Ok(())
    }
}

/// End the restorer the way the job ended.
pub fn exit_like(end: Ended) -> i32 {
    match end {
        Ended::Exited(c) => c,
        Ended::Signaled(s) => job::die_of(s),
    }
}
