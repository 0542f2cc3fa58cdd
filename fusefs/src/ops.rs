//! Checkpoint and restore behind the ctl files, and reaping the processes
//! ckptfs restored (they are its children).
//!
//! Dumps and restores ptrace and wait for their own tasks, so they run one
//! at a time, and the reaper only waits for the pids it restored, and only
//! while no dump or restore is running (a wait could otherwise take a
//! ptrace stop meant for them).

use crate::tree::ImgId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// What checkpoint and restore do; the real one calls ckpt-capture and
/// ckpt-restore, tests may use another.
pub trait Backend: Send + Sync {
    /// Dump `pid` into a new image file `out`.
    fn checkpoint(&self, pid: i32, out: &Path, leave_running: bool) -> Result<(), String>;
    /// Restore the image at `image` for user `requester` (None: for
    /// ckptfs's own user); the process must end up as a child of the
    /// caller and may hold only what `requester` could
    /// (`ckpt_restore::RestoreOptions::requester`). Returns its pid and
    /// warnings about the restore.
    fn restore(
        &self,
        image: &Path,
        new_pid: bool,
        requester: Option<u32>,
    ) -> Result<(i32, Vec<String>), String>;
}

/// ckpt-capture and ckpt-restore.
pub struct Real;

impl Backend for Real {
    fn checkpoint(&self, pid: i32, out: &Path, leave_running: bool) -> Result<(), String> {
        let opts = ckpt_capture::DumpOptions {
            leave_running,
            ..Default::default()
        };
        ckpt_capture::dump(pid, out, opts)
            .map(drop)
            .map_err(|e| ckpt_image::error_chain(&e))
    }

    fn restore(
        &self,
        image: &Path,
        new_pid: bool,
        requester: Option<u32>,
    ) -> Result<(i32, Vec<String>), String> {
        let reader =
            ckpt_image::ImageReader::open(image).map_err(|e| ckpt_image::error_chain(&e))?;
        let opts = ckpt_restore::RestoreOptions {
            new_pid,
            requester,
            ..Default::default()
        };
        let report = ckpt_restore::check(&reader, &opts);
        if !report.errors.is_empty() {
            return Err(format!(
                "cannot be restored here: {}",
                report.errors.join("; ")
            ));
        }
        let r = ckpt_restore::restore(&reader, &opts).map_err(|e| ckpt_image::error_chain(&e))?;
        Ok((r.pid, report.warnings))
    }
}

/// Milliseconds since `t`, for logs.
pub(crate) fn ms(t: std::time::Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checkpoint/restore, serialized, and the restored children.
pub struct Ops {
    backend: Box<dyn Backend>,
    busy: Mutex<()>,
    children: Mutex<HashMap<i32, ImgId>>,
}

impl Ops {
    pub fn new(backend: Box<dyn Backend>) -> Arc<Ops> {
        Arc::new(Ops {
            backend,
            busy: Mutex::new(()),
            children: Mutex::default(),
        })
    }

    pub fn checkpoint(&self, pid: i32, out: &Path, leave_running: bool) -> Result<(), String> {
        let _g = lock(&self.busy);
        let _span = tracing::info_span!("checkpoint", pid, image = %out.display()).entered();
        let t = std::time::Instant::now();
        let r = self.backend.checkpoint(pid, out, leave_running);
        match &r {
            Ok(()) => tracing::info!(ms = ms(t), leave_running, "checkpoint done"),
            Err(e) => tracing::warn!(ms = ms(t), "checkpoint failed: {e}"),
        }
        r
    }

    pub fn restore(
        &self,
        id: ImgId,
        image: &Path,
        new_pid: bool,
        requester: Option<u32>,
    ) -> Result<(i32, Vec<String>), String> {
        let _g = lock(&self.busy);
        let _span =
            tracing::info_span!("restore", image = %image.display(), new_pid, ?requester).entered();
        let t = std::time::Instant::now();
        let (pid, warnings) = self
            .backend
            .restore(image, new_pid, requester)
            .inspect_err(|e| {
                tracing::warn!(ms = ms(t), "restore failed: {e}");
            })?;
        tracing::info!(ms = ms(t), pid, warnings = warnings.len(), "restored");
        lock(&self.children).insert(pid, id);
        Ok((pid, warnings))
    }

    /// Reap restored children that ended: (pid, image, how it ended).
    pub fn reap(&self) -> Vec<(i32, ImgId, String)> {
        let Ok(_g) = self.busy.try_lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut children = lock(&self.children);
        children.retain(|&pid, &mut id| match wait_nohang(pid) {
            Some(how) => {
                out.push((pid, id, how));
                false
            }
            None => true,
        });
        out
    }
}

/// waitpid(pid, WNOHANG) for an exit: None while it runs; Some(description)
/// once reaped (or when it is not our child any more).
fn wait_nohang(pid: i32) -> Option<String> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => None,
        Ok(WaitStatus::Exited(_, code)) => Some(format!("exited with status {code}")),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(format!("was killed by signal {}", sig as i32)),
        Ok(other) => Some(format!("ended ({other:?})")),
        Err(e) => Some(format!("is gone ({})", std::io::Error::from(e))),
    }
}
