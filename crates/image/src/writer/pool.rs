//! Compression workers: frames go in numbered, come back encoded as records
//! (in any order; the writer puts them back in order).

use super::{FrameCoder, Record};
use crate::{Compression, Error, Result};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A frame to encode: its sequence number, the frame buffer (header room +
/// payload) and a buffer for the compressed record.
struct Job {
    seq: u32,
    frame: Vec<u8>,
    out: Vec<u8>,
}

pub(super) struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<(u32, Record)>,
    workers: Vec<JoinHandle<()>>,
}

fn stopped() -> Error {
    Error::Compress {
        source: std::io::Error::other("a compression thread stopped"),
    }
}

impl Pool {
    /// `n` workers sharing one queue of at most `queue` jobs.
    pub fn new(n: usize, compression: Compression, queue: usize) -> Result<Pool> {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let (tx, done) = channel();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let mut coder = FrameCoder::new(compression)?;
            let rx = Arc::clone(&rx);
            let tx = tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("ckpt-compress-{i}"))
                .spawn(move || loop {
                    // The lock is held while waiting: the others wait on it
                    // instead of on the queue, which is the same.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let r = coder.encode_record(job.frame, job.out);
                    if tx.send((job.seq, r)).is_err() {
                        return;
                    }
                })
                .map_err(|e| Error::io("starting a compression thread", e))?;
            workers.push(h);
        }
        Ok(Pool {
            jobs: Some(jobs),
            done,
            workers,
        })
    }

    /// Queue a frame (blocks while the queue is full).
    pub fn submit(&self, seq: u32, frame: Vec<u8>, out: Vec<u8>) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Job { seq, frame, out }).map_err(|_| stopped())
    }

    /// An encoded frame, waiting for one.
    pub fn recv(&self) -> Result<(u32, Record)> {
        self.done.recv().map_err(|_| stopped())
    }

    /// An encoded frame if one is ready.
    pub fn try_recv(&self) -> Result<Option<(u32, Record)>> {
        match self.done.try_recv() {
            Ok(r) => Ok(Some(r)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(stopped()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue makes every worker return after its current frame.
        self.jobs.take();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
