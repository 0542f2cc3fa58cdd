//! The ctl files: their text, and running the commands written to them.

use super::CkptFs;
use crate::ctl::{self, ImageCmd, RootCmd};
use crate::store::{Failure, Store};
use crate::tree::ImgId;
use std::time::{SystemTime, UNIX_EPOCH};

fn with_usage(last: String, usage: &str) -> Vec<u8> {
    let mut s = String::new();
    if !last.is_empty() {
        s.push_str(&last);
        s.push_str("\n\n");
    }
    s.push_str(usage);
    s.into_bytes()
}

/// `/ctl`: the last result, then the usage.
pub fn root_text(store: &Store) -> Vec<u8> {
    with_usage(store.root_status(), ctl::ROOT_USAGE)
}

/// `/NAME/ctl`: the last command's result, the last edit's, then the usage.
pub fn image_text(store: &Store, id: ImgId) -> Vec<u8> {
    let mut last = store.status(id);
    let edit = store.edit_status(id);
    if !edit.is_empty() {
        if !last.is_empty() {
            last.push('\n');
        }
        last.push_str("last edit: ");
        last.push_str(&edit);
    }
    with_usage(last, ctl::IMAGE_USAGE)
}

/// Whether every process of the image runs as `uid` with no capabilities.
fn runs_as(img: &ckpt_image::Image, uid: u32) -> bool {
    img.processes.iter().all(|p| {
        let c = &p.creds;
        [c.ruid, c.euid, c.suid, c.fsuid].iter().all(|&u| u == uid)
            && c.cap_permitted == 0
            && c.cap_effective == 0
    })
}

impl CkptFs {
    /// Run a command written to `/ctl`; its answer line on success.
    pub(super) fn run_root_ctl(&self, uid: u32, data: &[u8]) -> Result<String, Failure> {
        if !self.privileged(uid) {
            return Err(Failure::new(
                libc::EACCES,
                "only the owner of the mount may checkpoint",
            ));
        }
        let cmd = ctl::parse_root(data).map_err(|m| Failure::new(libc::EINVAL, m))?;
        tracing::info!(uid, "ctl: {cmd:?}");
        match cmd {
            RootCmd::Checkpoint {
                pid,
                name,
                leave_running,
            } => {
                let name = match name {
                    Some(n) => {
                        if self.store.name_taken(&n) {
                            return Err(Failure::new(
                                libc::EEXIST,
                                format!("an image named {n} exists"),
                            ));
                        }
                        n
                    }
                    None => self.free_name(pid),
                };
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(Failure::new(
                        libc::ESRCH,
                        format!("checkpoint {pid}: no such process"),
                    ));
                }
                let path = self.store.new_image_path(&name);
                self.ops
                    .checkpoint(pid, &path, leave_running)
                    .map_err(|m| Failure::new(libc::EIO, format!("checkpoint {pid}: {m}")))?;
                Ok(format!("ok checkpoint {name} pid={pid}"))
            }
        }
    }

    /// `PID-YYYYmmdd-HHMMSS`, with `-2`, `-3`... when taken.
    fn free_name(&self, pid: i32) -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = ctl::default_name(pid, secs as i64);
        let mut n = base.clone();
        let mut k = 2;
        while self.store.name_taken(&n) {
            n = format!("{base}-{k}");
            k += 1;
        }
        n
    }

    /// Run a command written to `/NAME/ctl`; its answer on success.
    pub(super) fn run_image_ctl(
        &self,
        id: ImgId,
        uid: u32,
        data: &[u8],
    ) -> Result<String, Failure> {
        let cmd = ctl::parse_image(data).map_err(|m| Failure::new(libc::EINVAL, m))?;
        tracing::info!(image = %self.store.name(id), uid, "ctl: {cmd:?}");
        match cmd {
            ImageCmd::Restore { new_pid } => self.restore(id, uid, new_pid),
            ImageCmd::Compact => {
                if self.cfg.read_only {
                    return Err(Failure::new(libc::EROFS, "the mount is read-only"));
                }
                let c = self.store.compact(id)?;
                self.changed(id);
                Ok(format!(
                    "ok compact: {} -> {} ({} of {} frames kept, generation {})",
                    ckpt_image::summary::human_bytes(c.before),
                    ckpt_image::summary::human_bytes(c.after),
                    c.frames_kept,
                    c.frames_kept + c.frames_dropped,
                    c.generation
                ))
            }
        }
    }

    fn restore(&self, id: ImgId, uid: u32, new_pid: bool) -> Result<String, Failure> {
        let l = self
            .store
            .load(id)
            .ok_or_else(|| Failure::new(libc::ENOENT, "the image is gone"))?;
        let img = l.image().ok_or_else(|| {
            Failure::new(
                libc::EIO,
                format!(
                    "cannot restore: {}",
                    l.reader.as_ref().err().cloned().unwrap_or_default()
                ),
            )
        })?;
        if !self.privileged(uid) && !runs_as(img, uid) {
            return Err(Failure::new(
                libc::EACCES,
                format!("uid {uid} may only restore images of processes running as uid {uid} without capabilities"),
            ));
        }
        // The process gets only what the user who asked could hold (its
        // uids, its groups from the user database, no capability...),
        // whoever owns or may write the image file: ckptfs may run as
        // root, and an image file is only data.
        let requester = (uid != nix::unistd::geteuid().as_raw()).then_some(uid);
        let (pid, warnings) = self
            .ops
            .restore(id, &l.path, new_pid, requester)
            .map_err(|m| Failure::new(libc::EIO, format!("restore failed: {m}")))?;
        let mut s = format!("restored pid {pid}");
        for w in warnings {
            s.push_str(&format!("\nwarning: {w}"));
        }
        Ok(s)
    }
}
