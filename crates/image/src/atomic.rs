//! Crash-safe creation of a file.

use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Create `path` crash-safely: writes go to a temp file in the same
/// directory created with mode 0600; [`AtomicFile::commit`] fsyncs it,
/// renames it over `path`, and fsyncs the directory; dropping without commit
/// removes the temp file.
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let name = path.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} has no file name", path.display()))
        })?;
        let dir = parent_dir(path);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut tmp_name = name.to_os_string();
            tmp_name.push(format!(".tmp.{}.{n}", std::process::id()));
            let tmp = dir.join(tmp_name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file: Some(file),
                        tmp,
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating {}", tmp.display()), e)),
            }
        }
    }

    /// Give the temp file this mode and owner (before [`AtomicFile::commit`]
    /// makes it the file at the final path): a rewrite keeps the
    /// original's.
    pub fn set_mode_and_owner(&mut self, mode: u32, uid: u32, gid: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.tmp.display().to_string();
        let f = self
            .file()
            .map_err(|e| Error::io(format!("chmod of {tmp}"), e))?;
        std::os::unix::fs::fchown(&*f, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("chown of {tmp} to {uid}:{gid}"), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod of {tmp} to {mode:o}"), e))
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsync the data, rename over the final path, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file present until commit");
        file.sync_all()
            .map_err(|e| Error::io(format!("fsync of {}", self.tmp.display()), e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", self.tmp.display(), self.path.display()),
                e,
            )
        })?;
        // Renamed: nothing to clean up any more.
        self.tmp = PathBuf::new();
        let dir = parent_dir(&self.path);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("fsync of directory {}", dir.display()), e))?;
        Ok(())
    }

    fn file(&mut self) -> std::io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("AtomicFile already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file()?.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file()?.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file()?.flush()
    }
}

impl std::os::fd::AsFd for AtomicFile {
    /// The temp file's descriptor (for hints such as starting writeback).
    /// Panics after commit, which consumes the AtomicFile anyway.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file
            .as_ref()
            .expect("file present until commit")
            .as_fd()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
