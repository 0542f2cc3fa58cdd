//! `ckpt mount [--store DIR] MOUNTPOINT`: the same as the `ckptfs` binary.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where the images are (default: /var/lib/ckpt for root, else $XDG_DATA_HOME/ckpt).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Directory to mount the store on.
    mountpoint: PathBuf,
    /// Let other users in (file modes follow the images').
    #[arg(long)]
    allow_other: bool,
    /// Read-only: no edits, no ctl commands.
    #[arg(long)]
    read_only: bool,
    /// Create the store (mode 0700) if it does not exist.
    #[arg(long)]
    create: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.unwrap_or_else(ckptfs::default_store);
    let store = ckptfs::prepare_store(&store, a.create)
        .with_context(|| format!("cannot use store {}", store.display()))?;
    let opts = ckptfs::MountOptions {
        allow_other: a.allow_other,
        read_only: a.read_only,
        create: a.create,
        ..Default::default()
    };
    eprintln!(
        "ckpt: serving {} on {} (Ctrl-C or umount to stop)",
        store.display(),
        a.mountpoint.display()
    );
    ckptfs::mount(&store, &a.mountpoint, opts)?;
    Ok(0)
}
