//! The image file, made durable while it is written.

use crate::error::{Error, Result};
use std::io::Write;
use std::time::Instant;

/// The image file, made durable while it is written: at every flush (the
/// image writer flushes every 16 MiB) a thread of its own starts the
/// writeback of what was written (sync_file_range) and waits for it to be
/// on stable storage (fdatasync).
///
/// Without it every byte waits in the page cache for the final fsync, which
/// then alone takes as long as the disk needs for the whole image; worse, a
/// virtual disk with a cache on the host acknowledges the writes quickly
/// and does the real work in the flush at the end. Measured on this kind
/// of machine (1 GiB of mixed data, 607 MiB image): 1.5 s with one fsync at
/// the end, 1.2 s with writeback started every 16 MiB and synced every
/// 16 MiB; `dd conv=fsync` of 1 GiB took 2.3-2.6 s in the same runs.
///
/// The thread never holds the dump up: it coalesces the flushes that came
/// while it waited, so a slow disk means fewer, larger syncs.
pub(crate) struct Writeback {
    file: ckpt_image::AtomicFile,
    /// Bytes written.
    pos: u64,
    /// Writeback requested up to here.
    started: u64,
    /// Writeback started (not waited for) up to here, by `write`.
    kicked: u64,
    tx: Option<std::sync::mpsc::Sender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether starting the thread was tried.
    tried: bool,
}

impl Writeback {
    pub fn new(file: ckpt_image::AtomicFile) -> Self {
        Writeback {
            file,
            pos: 0,
            started: 0,
            kicked: 0,
            tx: None,
            thread: None,
            tried: false,
        }
    }

    /// The sync thread, started at the first flush worth it (a small image
    /// needs none). Without a second descriptor or a thread, everything
    /// waits for the final fsync, as it would anyway.
    fn sender(&mut self) -> Option<&std::sync::mpsc::Sender<u64>> {
        use std::os::fd::AsFd;
        if !self.tried {
            self.tried = true;
            let fd = self.file.as_fd().try_clone_to_owned().ok()?;
            let (tx, rx) = std::sync::mpsc::channel::<u64>();
            let spawned = std::thread::Builder::new()
                .name("ckpt-writeback".into())
                .spawn(move || {
                    let file = std::fs::File::from(fd);
                    let mut synced = 0u64;
                    while let Ok(mut end) = rx.recv() {
                        // The flushes that came while the last sync ran.
                        while let Ok(e) = rx.try_recv() {
                            end = e;
                        }
                        // Failures are not reported here: the final fsync
                        // sees them (and fails the dump).
                        let t = Instant::now();
                        let _ = ckpt_sys::fds::regular::start_writeback(file.as_fd(), synced, end - synced);
                        let _ = file.sync_data();
                        tracing::debug!(bytes = end - synced, elapsed = ?t.elapsed(), "image synced so far");
                        synced = end;
                    }
                });
            if let Ok(t) = spawned {
                self.tx = Some(tx);
                self.thread = Some(t);
            }
        }
        self.tx.as_ref()
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Wait for the sync thread, then fsync and rename the file into place.
    pub fn commit(mut self) -> Result<()> {
        // Dropped without commit, the thread ends by itself when the
        // sender goes.
        let t = Instant::now();
        self.stop();
        self.file.commit().map_err(Error::from)?;
        tracing::info!(bytes = self.pos, elapsed = ?t.elapsed(), "fsync");
        Ok(())
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        // The disk starts on each MiB as soon as it is written (without
        // waiting for it): the final fsync of an image smaller than the
        // writer's flushes then waits only for the rest.
        const KICK: u64 = 1 << 20;
        if self.pos >= self.kicked + KICK {
            use std::os::fd::AsFd;
            let start = self.kicked.max(self.started);
            if self.pos > start {
                // Failures show at the final fsync.
                let _ = ckpt_sys::fds::regular::start_writeback(
                    self.file.as_fd(),
                    start,
                    self.pos - start,
                );
            }
            self.kicked = self.pos;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        // Less than this is left to the final fsync (a small image is
        // synced once).
        const MIN_SYNC: u64 = 1 << 20;
        if self.pos >= self.started + MIN_SYNC {
            let pos = self.pos;
            if let Some(tx) = self.sender() {
                let _ = tx.send(pos);
            }
            self.started = pos;
        }
        Ok(())
    }
}
