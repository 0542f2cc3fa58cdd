//! Pty indexes shared by the tests that run at once.
//!
//! The kernel gives a new pty the lowest free index, and a pty pair of an
//! image comes back at its saved index. A test that dumps a process
//! holding a pty master frees that index when the dump kills it; a pty
//! opened meanwhile by another test (a tmux window, `script`, an openpty)
//! would take it, and the restore would find it busy. So the tests take a
//! lock (flock on one file, across threads and test binaries): shared
//! while they open ptys ([`opening`]), exclusive from such a dump to the
//! end of its restore ([`keeping`]). Never open a pty while holding
//! [`keeping`]: that waits for itself.

use std::fs::{File, OpenOptions};

/// The lock file (every test binary of the workspace uses the same one).
const LOCK: &str = "/tmp/ckpt-test-pty-indexes.lock";

/// A held lock on the pty indexes; released when dropped.
pub struct PtyLock(#[allow(dead_code)] File);

fn lock_file() -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(LOCK)
        .unwrap_or_else(|e| panic!("cannot open {LOCK}: {e}"))
}

/// Held while opening ptys (any number of tests at once).
pub fn opening() -> PtyLock {
    let f = lock_file();
    f.lock_shared()
        .unwrap_or_else(|e| panic!("cannot lock {LOCK} shared: {e}"));
    PtyLock(f)
}

/// Held from the dump of a process holding a pty master to the end of its
/// restore: no test opens a pty meanwhile.
pub fn keeping() -> PtyLock {
    let f = lock_file();
    f.lock()
        .unwrap_or_else(|e| panic!("cannot lock {LOCK}: {e}"));
    PtyLock(f)
}
