//! Telling the kernel to drop what it cached of files an edit changed.
//! Notifications are sent from their own thread: the kernel may wait, while
//! handling one, for a request that a request thread is serving.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// Where the session's notifier goes once the session runs.
pub type NotifierSlot = Arc<OnceLock<fuser::Notifier>>;

/// What to drop.
pub enum Inval {
    /// An inode's attributes, and with offset 0 its cached pages too
    /// (-1: the attributes only).
    Inode(u64, i64),
    /// The entry `name` of directory inode `parent`.
    Entry(u64, String),
}

type Batch = Vec<Inval>;

pub struct Invalidator {
    tx: Mutex<Option<Sender<Batch>>>,
}

impl Invalidator {
    pub fn start(slot: NotifierSlot) -> Invalidator {
        let (tx, rx) = channel::<Batch>();
        let spawned = std::thread::Builder::new()
            .name("ckptfs-inval".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    let Some(n) = slot.get() else { continue };
                    for i in batch {
                        let r = match &i {
                            Inval::Inode(ino, off) => n.inval_inode(fuser::INodeNo(*ino), *off, 0),
                            Inval::Entry(parent, name) => {
                                n.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name))
                            }
                        };
                        // ENOENT: the kernel does not have it cached; fine.
                        if let Err(e) = r {
                            if e.raw_os_error() != Some(libc::ENOENT) {
                                tracing::debug!("invalidating a cache entry: {e}");
                            }
                        }
                    }
                }
            });
        Invalidator {
            tx: Mutex::new(spawned.ok().map(|_| tx)),
        }
    }

    pub fn send(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        if let Some(tx) = super::lock(&self.tx).as_ref() {
            let _ = tx.send(batch);
        }
    }
}
