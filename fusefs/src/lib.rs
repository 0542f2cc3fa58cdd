//! ckptfs: a store of ckpt images as a FUSE filesystem (spec/fusefs.md).
//!
//! Layers, from the bottom:
//! - [`tree`]: the pure tree model (nodes, names, listing, permissions);
//! - [`render`] and [`edit`]: file contents from the image model, and
//!   edits parsed back into it (pure);
//! - [`ctl`]: the ctl commands (pure);
//! - [`store`]: the store directory, lazy loading with a cache keyed by
//!   the file's identity, memory reads, crash-safe edits;
//! - [`memio`]: fast memory reads (shared frame cache, read-ahead), with
//!   the reason when a page cannot be read; where the data is (SEEK_DATA);
//! - [`pages`] and [`scratch`]: writes collected until close, editors'
//!   temp files (pure);
//! - [`ops`]: checkpoint and restore, and reaping restored children;
//! - [`fuse`]: the thin fuser adapter;
//! - [`mount()`]: mounting, signals and unmounting.
//!
//! Logs go through `tracing` (operations at debug level, edits, commands
//! and every refused edit or failed read, with its reason, above).
#![forbid(unsafe_code)]

pub mod ctl;
pub mod edit;
pub mod fuse;
pub mod imagefile;
pub mod memio;
pub mod ops;
pub mod pages;
pub mod render;
pub mod scratch;
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
    /// Create the store (mode 0700) when it does not exist (`-o create`);
    /// otherwise a missing store is an error.
    pub create: bool,
    /// Threads serving requests (a dump or restore blocks one).
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            read_only: false,
            create: false,
            threads: 4,
        }
    }
}

/// The default store: /var/lib/ckpt for root, else $XDG_DATA_HOME/ckpt or
/// ~/.local/share/ckpt.
pub fn default_store() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
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

/// The store's canonical path. A missing store is an error, unless
/// `create` asks to create it (mode 0700, with its parents).
pub fn prepare_store(dir: &Path, create: bool) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        if !create {
            bail!(
                "the store {} does not exist (create it, or mount with -o create)",
                dir.display()
            );
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the store {}", dir.display()))?;
        // The umask may have taken bits away; 0700 is what we want.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod the store {}", dir.display()))?;
        tracing::info!(store = %dir.display(), "created the store");
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
    let store_dir = prepare_store(store, opts.create)?;
    let mp = mountpoint
        .canonicalize()
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if !mp.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    raise_nofile();
    let st = Arc::new(store::Store::new(&store_dir));
    let ops = ops::Ops::new(backend);
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let cfg = fuse::FsConfig {
        read_only: opts.read_only,
        allow_other: opts.allow_other,
        uid,
        gid,
    };
    let notifier = fuse::NotifierSlot::default();
    let fs = fuse::CkptFs::new(st.clone(), ops.clone(), cfg, notifier.clone());

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
    let _ = notifier.set(session.notifier());
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
                tracing::warn!("signal {sig} again: exiting without waiting for open files");
                std::process::exit(1);
            }
            unmounting = true;
            tracing::info!(signal = sig, mountpoint = %mp.display(), "unmounting");
            if let Err(e) = unmount(&mp) {
                tracing::error!("unmounting {}: {e}", mp.display());
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
            tracing::info!("the FUSE session ended after the unmount: {e}");
        }
        return Ok(());
    }
    r.context("the FUSE session failed")
}

/// Unmount `mp`; when it is busy, detach it lazily (it goes away once the
/// last open file is closed).
pub fn unmount(mp: &Path) -> std::io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(mp, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            tracing::warn!(
                mountpoint = %mp.display(),
                "busy: detaching it; it goes away when its files are closed"
            );
            umount2(mp, MntFlags::MNT_DETACH).map_err(std::io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Raise the soft limit of open files to the hard limit (loaded images keep
/// their file open).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!("cannot raise RLIMIT_NOFILE to {hard}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_created_private_only_when_asked() {
        let base = std::env::temp_dir().join(format!("ckptfs-store-test-{}", std::process::id()));
        let dir = base.join("a/b");
        let e = prepare_store(&dir, false).unwrap_err().to_string();
        assert!(
            e.contains("does not exist") && e.contains("-o create"),
            "{e}"
        );
        assert!(!dir.exists(), "nothing is created without -o create");
        let c = prepare_store(&dir, true).unwrap();
        assert_eq!(
            std::fs::metadata(&c).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // An existing directory is used as it is.
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o750)).unwrap();
        prepare_store(&dir, false).unwrap();
        assert_eq!(
            std::fs::metadata(&c).unwrap().permissions().mode() & 0o777,
            0o750
        );
        std::fs::write(base.join("file"), b"").unwrap();
        assert!(prepare_store(&base.join("file"), true).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn default_store_of_root() {
        if nix::unistd::geteuid().is_root() {
            assert_eq!(default_store(), PathBuf::from("/var/lib/ckpt"));
        }
    }
}
