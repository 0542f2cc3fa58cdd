//! The copy of a write-protected snapshot (snapshot.rs) while the process
//! runs: the calling thread reads the pages in address order; a handler
//! thread answers the process's write faults by copying the block around
//! the page first. Each page is copied once, then its protection lifted.
//!
//! Per page: `FREE` -> `CLAIMED` (by one thread) -> `COPIED` (only then is
//! it unprotected), or `LOST` (unmapped or discarded by the process before
//! it was copied: the snapshot fails by name), `ABSENT` (not present at the
//! snapshot: nothing to copy, its protection is lifted at its first
//! write). Pages keep the addresses they had at the freeze (`orig`); moves
//! since (REMAP events) are followed. A copy holds the read lock of the
//! moves from address translation to un-protect; events are applied under
//! the write lock; an un-protect refused with EAGAIN (an event not read
//! yet) gives its claims back and is retried after it.
//!
//! If the dumper dies, its userfaultfd goes with it: the kernel drops the
//! protection and wakes every waiting thread. The process never hangs.

use super::snapshot::{retry_eagain, snapshot_err};
use crate::error::{IoCtx, Result, SysCtx};
use crate::PageSink;
use ckpt_sys::mm::{read_vm, RemoteRange};
use ckpt_sys::userfaultfd::*;
use ckpt_sys::Pid;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const COPIED: u8 = 2;
const LOST: u8 = 3;
const ABSENT: u8 = 4;

/// Pages copied per fault (an aligned block around the page).
const BLOCK_PAGES: u64 = 16;
/// Pages read at once by the reader thread.
const CHUNK_PAGES: u64 = 64;
/// Room left in front of each chunk read (see `PageSink::add_page_buffer`).
const HEAD: usize = ckpt_image::PAGE_BUFFER_HEAD;
/// Chunks the reader may have read ahead of the sink.
const READ_AHEAD: usize = 8;

/// One protected area of the snapshot: a state per page.
pub(crate) struct CopyArea {
    start: u64,
    end: u64,
    name: String,
    state: Vec<AtomicU8>,
}

impl CopyArea {
    /// `[start, end)` with the pages of `present` (sorted ranges) to copy.
    pub fn new(start: u64, end: u64, present: &[(u64, u64)], page: u64, name: &[u8]) -> CopyArea {
        let n = ((end - start) / page) as usize;
        let state: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(ABSENT)).collect();
        let first = present.partition_point(|r| r.1 <= start);
        for &(a, b) in present[first..].iter().take_while(|r| r.0 < end) {
            let (a, b) = (a.max(start), b.min(end));
            for p in (a..b).step_by(page as usize) {
                state[((p - start) / page) as usize].store(FREE, Ordering::Relaxed);
            }
        }
        CopyArea {
            start,
            end,
            name: String::from_utf8_lossy(name).into_owned(),
            state,
        }
    }
}

struct Shared {
    pid: Pid,
    page: u64,
    uffd: Arc<Uffd>,
    areas: Vec<CopyArea>,
    segs: RwLock<Vec<Seg>>,
    lost: Mutex<Vec<String>>,
    done: AtomicBool,
    /// Wakes the handler from its wait once `done` is set.
    waker: Waker,
    faults: AtomicU64,
    fault_pages: AtomicU64,
}

/// A snapshot being copied. Dropping it without [`Pending::copy`] stops
/// the handler and closes the userfaultfd (the process is let go).
pub(crate) struct Pending {
    sh: Arc<Shared>,
    handler: Option<std::thread::JoinHandle<()>>,
    rx: Option<Receiver<(u64, Vec<u8>)>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.sh.done.store(true, Ordering::Release);
        self.sh.waker.wake();
        // The handler may wait to hand over a copy: let it go.
        self.rx.take();
        if let Some(h) = self.handler.take() {
            let _ = h.join();
        }
    }
}

impl Pending {
    /// Start the fault handler (the process is still frozen).
    pub fn start(pid: Pid, page: u64, uffd: Arc<Uffd>, areas: Vec<CopyArea>) -> Result<Pending> {
        let segs = areas
            .iter()
            .map(|a| Seg {
                orig: a.start,
                cur: a.start,
                len: a.end - a.start,
            })
            .collect();
        let sh = Arc::new(Shared {
            pid,
            page,
            uffd,
            areas,
            segs: RwLock::new(segs),
            lost: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
            waker: Waker::new().ctx(pid, || "starting the snapshot's fault handler".into())?,
            faults: AtomicU64::new(0),
            fault_pages: AtomicU64::new(0),
        });
        let (tx, rx) = sync_channel(64);
        let s2 = sh.clone();
        let handler = std::thread::Builder::new()
            .name("ckpt-wp-copy".into())
            .spawn(move || handler(&s2, &tx))
            .ctx(pid, || "starting the snapshot's fault handler".into())?;
        Ok(Pending {
            sh,
            handler: Some(handler),
            rx: Some(rx),
        })
    }

    /// Bytes to copy in all.
    pub fn total(&self) -> u64 {
        let n: usize = self
            .sh
            .areas
            .iter()
            .map(|a| {
                a.state
                    .iter()
                    .filter(|s| s.load(Ordering::Relaxed) != ABSENT)
                    .count()
            })
            .sum();
        n as u64 * self.sh.page
    }

    /// Copy every page (the process running) to `sink`; the bytes copied.
    /// Fails, naming them, when pages were unmapped or discarded by the
    /// process before they could be copied.
    pub fn copy(
        mut self,
        sink: &mut dyn PageSink,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64> {
        let t = Instant::now();
        let sh = self.sh.clone();
        let (pid, page) = (sh.pid, sh.page);
        let rx = self.rx.take().expect("copied once");
        let total = self.total();
        let mut done = 0u64;
        let drain = |sink: &mut dyn PageSink, done: &mut u64| -> Result<()> {
            while let Ok((addr, data)) = rx.try_recv() {
                *done += data.len() as u64;
                sink.add_pages(pid, addr, &data)?;
            }
            Ok(())
        };
        // A reader thread copies the chunks ahead (read, un-protect) while
        // this one hands them to the sink (compression, writing).
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, Pieces)>(READ_AHEAD);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let chunk_len = HEAD + (CHUNK_PAGES * page) as usize;
        for _ in 0..READ_AHEAD + 2 {
            let _ = free_tx.send(vec![0u8; chunk_len]);
        }
        std::thread::scope(|s| {
            // Dropped when this closure returns (also on an error): the
            // reader then stops at its next send or receive.
            let (full_rx, free_tx) = (full_rx, free_tx);
            let sh2 = &sh;
            std::thread::Builder::new()
                .name("ckpt-snap-read".into())
                .spawn_scoped(s, move || read_chunks(sh2, &free_rx, &full_tx))
                .ctx(pid, || "starting the snapshot reader thread".into())?;
            for (buf, pieces) in full_rx.iter() {
                done += pieces.iter().map(|p| p.2 as u64).sum::<u64>();
                // The sink may keep the buffer (the image writer makes it
                // a frame) and give another one back.
                let mut buf = sink.add_page_buffer(pid, buf, &pieces)?;
                buf.resize(chunk_len, 0);
                let _ = free_tx.send(buf);
                drain(sink, &mut done)?;
                progress(done, total);
            }
            Ok::<(), crate::Error>(())
        })?;
        // Pages the handler claimed: wait until it has handed them over.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            drain(sink, &mut done)?;
            let busy = sh
                .areas
                .iter()
                .any(|a| a.state.iter().any(|s| s.load(Ordering::Acquire) == CLAIMED));
            let gone = self.handler.as_ref().is_none_or(|h| h.is_finished());
            if !busy || gone || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        sh.done.store(true, Ordering::Release);
        sh.waker.wake();
        while self.handler.as_ref().is_some_and(|h| !h.is_finished()) {
            drain(sink, &mut done)?;
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(h) = self.handler.take() {
            let _ = h.join();
        }
        drain(sink, &mut done)?;
        progress(done, total);
        let lost = std::mem::take(&mut *sh.lost.lock().unwrap_or_else(|p| p.into_inner()));
        let faults = sh.faults.load(Ordering::Relaxed);
        let fault_pages = sh.fault_pages.load(Ordering::Relaxed);
        tracing::info!(bytes = done, faults, fault_pages, elapsed = ?t.elapsed(), "snapshot copied");
        if !lost.is_empty() {
            return Err(snapshot_err(pid, lost.join("; ")));
        }
        let unclaimed = sh.areas.iter().find_map(|a| {
            a.state
                .iter()
                .position(|s| matches!(s.load(Ordering::Acquire), FREE | CLAIMED))
                .map(|i| a.start + i as u64 * page)
        });
        if let Some(at) = unclaimed {
            return Err(snapshot_err(
                pid,
                format!("the page at {at:#x} could not be copied"),
            ));
        }
        Ok(done)
    }
}

/// The snapshot reader: every chunk of every area copied (read, then
/// un-protected) into a free buffer and sent, in address order. Stops when
/// the receiver is gone.
fn read_chunks(sh: &Shared, free: &Receiver<Vec<u8>>, full: &SyncSender<(Vec<u8>, Pieces)>) {
    let page = sh.page;
    for (ai, a) in sh.areas.iter().enumerate() {
        let mut p = a.start;
        while p < a.end {
            let n = CHUNK_PAGES.min((a.end - p) / page);
            let Ok(mut buf) = free.recv() else { return };
            let pieces = match sh.copy_run(ai, p, n, &mut buf[HEAD..]) {
                Ok(mut pieces) => {
                    for piece in &mut pieces {
                        piece.1 += HEAD;
                    }
                    if p == a.start && ai == 0 {
                        // Test hook: a pause in the middle of the copy.
                        crate::worker::test_delay();
                    }
                    p += n * page;
                    pieces
                }
                // An event is pending: the handler reads it; again.
                Err(true) => {
                    std::thread::sleep(Duration::from_micros(100));
                    Vec::new()
                }
                Err(false) => {
                    p += n * page;
                    Vec::new()
                }
            };
            // Sent even when empty: the sink's side gives the buffer back
            // and hands over what the fault handler copied meanwhile.
            if full.send((buf, pieces)).is_err() {
                return;
            }
        }
    }
}

/// Pieces of a chunk read into the caller's buffer: (address at the
/// freeze, offset in the buffer, bytes).
type Pieces = Vec<(u64, usize, usize)>;

impl Shared {
    fn lost(&self, what: String) {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    /// Copy the free pages of `[orig, orig + n pages)` of area `ai` into
    /// `buf` and lift their protection. Err(true): an event is pending,
    /// try again after it; Err(false): nothing to do there (moved out of
    /// the snapshot's view).
    fn copy_run(
        &self,
        ai: usize,
        orig: u64,
        n: u64,
        buf: &mut [u8],
    ) -> std::result::Result<Pieces, bool> {
        let page = self.page;
        let a = &self.areas[ai];
        let segs = self.segs.read().unwrap_or_else(|p| p.into_inner());
        let Some(seg) = segs
            .iter()
            .find(|s| s.orig <= orig && orig < s.orig + s.len)
            .copied()
        else {
            return Err(false);
        };
        let n = n.min((seg.orig + seg.len - orig) / page);
        let p0 = ((orig - a.start) / page) as usize;
        let mine: Vec<bool> = (0..n as usize)
            .map(|i| {
                a.state[p0 + i]
                    .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .collect();
        if !mine.iter().any(|&m| m) {
            return Ok(Vec::new());
        }
        let cur = seg.cur + (orig - seg.orig);
        // WP does not stop reads. Only the claimed pages are read: others
        // may be absent or guard pages, which fail a read.
        let read = self.read_claimed(cur, &mine, buf);
        let mut pieces = Vec::new();
        let mut i = 0usize;
        while i < n as usize {
            if !mine[i] || !read[i] {
                i += 1;
                continue;
            }
            let j = (i..n as usize)
                .find(|&j| !mine[j] || !read[j])
                .unwrap_or(n as usize);
            let (at, bytes) = (cur + i as u64 * page, (j - i) as u64 * page);
            match self.uffd.writeprotect(at, bytes, false) {
                Err(e) if e.errno() == Some(libc::EAGAIN) => {
                    // Give back what was not published: still protected.
                    for (k, _) in mine.iter().enumerate().skip(i).filter(|(_, &m)| m) {
                        let _ = a.state[p0 + k].compare_exchange(
                            CLAIMED,
                            FREE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                    return if pieces.is_empty() {
                        Err(true)
                    } else {
                        Ok(pieces)
                    };
                }
                _ => {}
            }
            let mut ok = true;
            for k in i..j {
                ok &= a.state[p0 + k]
                    .compare_exchange(CLAIMED, COPIED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            }
            if ok {
                pieces.push((
                    orig + i as u64 * page,
                    i * page as usize,
                    (j - i) * page as usize,
                ));
            }
            i = j;
        }
        for (i, &m) in mine.iter().enumerate() {
            if m && !read[i]
                && a.state[p0 + i]
                    .compare_exchange(CLAIMED, LOST, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.lost(format!(
                    "{} page {:#x}: unreadable during the copy",
                    a.name,
                    orig + i as u64 * page
                ));
            }
        }
        Ok(pieces)
    }

    /// Read the pages of `mine` (a chunk at current address `cur`) into
    /// `buf` at their offsets: whether each was read. The span of the
    /// claimed pages is read at once; after a short read (a guard page in
    /// between, which fails a read, or a page unmapped under us) the rest
    /// is read run by run, then page by page.
    fn read_claimed(&self, cur: u64, mine: &[bool], buf: &mut [u8]) -> Vec<bool> {
        let page = self.page as usize;
        let at = |k: usize| cur + (k * page) as u64;
        let read_at = |k: usize, n: usize, buf: &mut [u8]| {
            let r = RemoteRange {
                addr: at(k),
                len: n * page,
            };
            read_vm(self.pid, &mut buf[k * page..(k + n) * page], &[r]).unwrap_or(0) / page
        };
        let mut read = vec![false; mine.len()];
        let (Some(first), Some(last)) =
            (mine.iter().position(|&m| m), mine.iter().rposition(|&m| m))
        else {
            return read;
        };
        let got = read_at(first, last + 1 - first, buf);
        for r in &mut read[first..first + got] {
            *r = true;
        }
        let mut i = first + got;
        while i <= last {
            if !mine[i] {
                i += 1;
                continue;
            }
            let j = (i..=last).find(|&j| !mine[j]).unwrap_or(last + 1);
            let got = read_at(i, j - i, buf);
            for (k, r) in read.iter_mut().enumerate().take(j).skip(i) {
                *r = k < i + got || read_at(k, 1, buf) == 1;
            }
            i = j;
        }
        read
    }

    /// (area index, address at the freeze) of current address `cur`.
    fn locate(&self, cur: u64) -> Option<(usize, u64)> {
        let segs = self.segs.read().unwrap_or_else(|p| p.into_inner());
        let s = segs.iter().find(|s| s.cur <= cur && cur < s.cur + s.len)?;
        let orig = s.orig + (cur - s.cur);
        let i = self.areas.partition_point(|a| a.end <= orig);
        (self.areas.get(i)?.start <= orig).then_some((i, orig))
    }

    fn apply_event(&self, m: &UffdMsg) {
        let mut segs = self.segs.write().unwrap_or_else(|p| p.into_inner());
        match m.event {
            UFFD_EVENT_REMAP => {
                let (from, to, len) = (m.arg[0], m.arg[1], m.arg[2]);
                *segs = remap(&segs, from, to, len);
            }
            UFFD_EVENT_REMOVE | UFFD_EVENT_UNMAP => {
                let (start, end) = (m.arg[0], m.arg[1]);
                let mut lost = 0u64;
                let mut first = None;
                for s in segs.iter() {
                    let (a, b) = (s.cur.max(start), (s.cur + s.len).min(end));
                    let mut c = a;
                    while c < b {
                        let orig = s.orig + (c - s.cur);
                        let i = self.areas.partition_point(|x| x.end <= orig);
                        if let Some(area) = self.areas.get(i).filter(|x| x.start <= orig) {
                            let st = &area.state[((orig - area.start) / self.page) as usize];
                            let old = st.load(Ordering::Acquire);
                            if matches!(old, FREE | CLAIMED)
                                && !matches!(st.swap(LOST, Ordering::AcqRel), COPIED | ABSENT)
                            {
                                lost += 1;
                                first.get_or_insert(orig);
                            }
                        }
                        c += self.page;
                    }
                }
                if lost > 0 {
                    let what = if m.event == UFFD_EVENT_REMOVE {
                        "discarded (MADV_DONTNEED or the like)"
                    } else {
                        "unmapped"
                    };
                    self.lost(format!(
                        "{lost} pages {what} by the process before they were copied (first at {:#x})",
                        first.unwrap_or(0)
                    ));
                }
            }
            _ => {}
        }
    }

    /// A write fault at `cur`: copy the free pages of its block, hand them
    /// over, lift the protection. False: retry after the pending event.
    fn on_fault(&self, cur: u64, tx: &SyncSender<(u64, Vec<u8>)>) -> bool {
        let page = self.page;
        self.faults.fetch_add(1, Ordering::Relaxed);
        let Some((ai, orig)) = self.locate(cur) else {
            // Not part of the snapshot (grown or moved in since).
            return !matches!(self.uffd.writeprotect(cur, page, false), Err(e) if e.errno() == Some(libc::EAGAIN));
        };
        let a = &self.areas[ai];
        let block = (orig & !(BLOCK_PAGES * page - 1)).max(a.start);
        let n = BLOCK_PAGES.min((a.end - block) / page);
        let mut buf = vec![0u8; (n * page) as usize];
        match self.copy_run(ai, block, n, &mut buf) {
            Err(true) => return false,
            Err(false) => {}
            Ok(pieces) => {
                for (addr, off, len) in pieces {
                    self.fault_pages
                        .fetch_add(len as u64 / page, Ordering::Relaxed);
                    let data = buf[off..off + len].to_vec();
                    if tx.send((addr, data)).is_err() {
                        return true; // the copy is being abandoned
                    }
                }
            }
        }
        // The faulting page: copied now or before, absent or lost: let the
        // writer go. Claimed by the reader: its un-protect wakes it.
        let st = a.state[((orig - a.start) / page) as usize].load(Ordering::Acquire);
        if st != CLAIMED {
            if let Err(e) = retry_eagain(|| self.uffd.writeprotect(cur, page, false)) {
                if e.errno() != Some(libc::ENOENT) {
                    let _ = self.uffd.wake(cur, page);
                }
            }
        }
        true
    }
}

fn handler(sh: &Shared, tx: &SyncSender<(u64, Vec<u8>)>) {
    let mut msgs = [UffdMsg::default(); 64];
    let mut deferred: Vec<u64> = Vec::new();
    loop {
        // Long waits: the copier wakes us when it is done.
        let wait = if deferred.is_empty() { 1000 } else { 1 };
        let readable = match sh.uffd.poll_or_wake(&sh.waker, wait) {
            Ok(r) => r,
            Err(e) => {
                sh.lost(format!("waiting for faults: {e}"));
                return;
            }
        };
        let mut faults = std::mem::take(&mut deferred);
        let n = if readable {
            match sh.uffd.read_msgs(&mut msgs) {
                Ok(n) => n,
                Err(e) => {
                    sh.lost(format!("reading faults: {e}"));
                    return;
                }
            }
        } else {
            0
        };
        if n == 0 && faults.is_empty() && sh.done.load(Ordering::Acquire) {
            return;
        }
        for m in &msgs[..n] {
            match m.event {
                UFFD_EVENT_PAGEFAULT => faults.push(m.arg[1] & !(sh.page - 1)),
                _ => sh.apply_event(m),
            }
        }
        for cur in faults {
            if !sh.on_fault(cur, tx) {
                deferred.push(cur);
            }
        }
    }
}
