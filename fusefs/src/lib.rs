//! ckptfs: a store of ckpt images as a FUSE filesystem (spec/fusefs.md).
//!
//! Layers, from the bottom:
//! - [`tree`]: the pure tree model (nodes, names, listing, permissions);
//! - [`render`] and [`edit`]: file contents from the image model, and
//!   edits parsed back into it (pure);
//! - [`ctl`]: the ctl commands (pure);
//! - [`store`]: the store directory, lazy loading with a cache keyed by
//!   the file's identity, memory reads, crash-safe edits;
//! - [`memio`]: fast memory reads (shared frame cache, read-ahead);
//! - [`ops`]: checkpoint and restore, and reaping restored children;
//! - [`fuse`]: the thin fuser adapter;
//! - [`mount()`]: mounting, signals and unmounting.

pub mod ctl;
pub mod edit;
pub mod fuse;
pub mod memio;
pub mod ops;
pub mod render;
pub mod store;
pub mod tree;

use anyhow::{bail, Context};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Mount settings.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let other users in (`-o allow_other`); the kernel then checks each
    /// file's permission bits, which follow the image file's mode and owner.
    pub allow_other: bool,
    /// Read-only mount (`-o ro`): no edits, no ctl commands.
    pub read_only: bool,
    /// Threads serving requests (a dump or restore blocks one).
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            read_only: false,
            threads: 4,
        }
    }
}

/// The default store: /var/lib/ckpt for root, else $XDG_DATA_HOME/ckpt or
/// ~/.local/share/ckpt.
pub fn default_store() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/ckpt");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("ckpt");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/ckpt")
}

/// Create the store (mode 0700) if it does not exist; return its canonical path.
pub fn prepare_store(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the store {}", dir.display()))?;
        // The umask may have taken bits away; 0700 is what we want.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod the store {}", dir.display()))?;
    }
    let c = dir
        .canonicalize()
        .with_context(|| format!("store {}", dir.display()))?;
    if !c.is_dir() {
        bail!("store {} is not a directory", c.display());
    }
    Ok(c)
}

/// Mount the store at `mountpoint` and serve it until SIGINT, SIGTERM or
/// SIGHUP (which unmount it) or until it is unmounted from outside.
pub fn mount(store: &Path, mountpoint: &Path, opts: MountOptions) -> anyhow::Result<()> {
    mount_with(store, mountpoint, opts, Box::new(ops::Real), |_| {})
}

/// [`mount()`] with another checkpoint/restore backend, calling `ready`
/// once the filesystem is mounted (with the canonical mountpoint).
pub fn mount_with(
    store: &Path,
    mountpoint: &Path,
    opts: MountOptions,
    backend: Box<dyn ops::Backend>,
    ready: impl FnOnce(&Path),
) -> anyhow::Result<()> {
    let store_dir = prepare_store(store)?;
    let mp = mountpoint
        .canonicalize()
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if !mp.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    raise_nofile();
    let st = Arc::new(store::Store::new(&store_dir));
    let ops = ops::Ops::new(backend);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let cfg = fuse::FsConfig {
        read_only: opts.read_only,
        allow_other: opts.allow_other,
        uid,
        gid,
    };
    let fs = fuse::CkptFs::new(st.clone(), ops.clone(), cfg);

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(store_dir.display().to_string()),
        fuser::MountOption::Subtype("ckptfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        if opts.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));

    // Catch the signals before mounting, so none is lost.
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .context("installing signal handlers")?;
    let session = fuser::spawn_mount(fs, &mp, &config)
        .with_context(|| format!("cannot mount {} on {}", store_dir.display(), mp.display()))?;
    ready(&mp);

    let stop = Arc::new(AtomicBool::new(false));
    let reaper = {
        let (stop, ops, st) = (stop.clone(), ops.clone(), st.clone());
        std::thread::Builder::new()
            .name("ckptfs-reaper".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    for (pid, id, how) in ops.reap() {
                        st.add_status(id, &format!("pid {pid} {how}"));
                    }
                }
            })?
    };

    let mut unmounting = false;
    while !session.guard.is_finished() {
        if let Some(sig) = signals.pending().next() {
            if unmounting {
                eprintln!("ckptfs: signal {sig} again: exiting without waiting for open files");
                std::process::exit(1);
            }
            unmounting = true;
            if let Err(e) = unmount(&mp) {
                eprintln!("ckptfs: unmounting {}: {e}", mp.display());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let r = session.join();
    let _ = reaper.join();
    if unmounting {
        // We asked for the unmount: the kernel closing the connection (at
        // once, or at the last close after a lazy detach) may end the
        // session threads with an error; the filesystem is gone as asked.
        if let Err(e) = r {
            eprintln!("ckptfs: the FUSE session ended after the unmount: {e}");
        }
        return Ok(());
    }
    r.context("the FUSE session failed")
}

/// Unmount `mp`; when it is busy, detach it lazily (it goes away once the
/// last open file is closed).
pub fn unmount(mp: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(mp.as_os_str()))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        eprintln!(
            "ckptfs: {} is busy: detaching it; it goes away when its files are closed",
            mp.display()
        );
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(std::io::Error::last_os_error());
    }
    Err(e)
}

/// Raise the soft limit of open files to the hard limit (loaded images keep
/// their file open).
fn raise_nofile() {
    // SAFETY: `r` is a valid out-pointer, then a valid in-pointer.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_created_private() {
        let base = std::env::temp_dir().join(format!("ckptfs-store-test-{}", std::process::id()));
        let dir = base.join("a/b");
        let c = prepare_store(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&c).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // An existing directory is used as it is.
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o750)).unwrap();
        prepare_store(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&c).unwrap().permissions().mode() & 0o777,
            0o750
        );
        std::fs::write(base.join("file"), b"").unwrap();
        assert!(prepare_store(&base.join("file")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn default_store_of_root() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(default_store(), PathBuf::from("/var/lib/ckpt"));
        }
    }
}
