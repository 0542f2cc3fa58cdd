//! Lazy restore (`ckpt restore --lazy`): the process runs before its
//! pages are written; they are filled on demand and in the background
//! with userfaultfd.
//!
//! While the mappings are made, a userfaultfd is made in the process (an
//! injected `userfaultfd()`, before its credentials are set: a full one,
//! so that the kernel's own accesses to a missing page wait for it too,
//! not only the process's) and its private anonymous mappings that get
//! saved data are registered for missing pages instead of being written.
//! From then on a handler thread of the restorer answers every fault,
//! also during the rest of the build: the faulting page's block (16
//! pages) is copied from the image (UFFDIO_COPY), or mapped as zeros where
//! nothing was saved. Once the process runs, a prefetch thread fills the
//! rest in image order. The process's own mapping changes are followed
//! (UFFD_FEATURE_EVENT_REMAP/REMOVE/UNMAP: a discarded page is not filled
//! again with stale data; a moved range is filled where it went), and a
//! child it forks gets its own userfaultfd (EVENT_FORK), served the same
//! way. When every saved page is in, the ranges are unregistered (they
//! keep their flags) and the restorer lets the process go.
//!
//! So that the process never waits on a fault nobody answers:
//! - the image stays open (a file deleted or renamed meanwhile is still
//!   read), every frame is checked (CRC, sizes) before its pages are
//!   copied; if it cannot be read, the process is killed (SIGKILL) and
//!   the restore reports the error: it never runs on missing data;
//! - the process keeps a copy of its userfaultfd at a high close-on-exec
//!   fd (closed at the end by an injected close()), so that pages stay
//!   missing (not zero) if the restorer's copy goes away;
//! - the restorer stays the process's ptrace tracer with
//!   PTRACE_O_EXITKILL, following its threads and children: if the
//!   restorer dies (killed, crashed), the kernel kills the process and its
//!   children. The tracer passes every signal on (a stop signal puts the
//!   process in a group stop as usual); meanwhile another debugger cannot
//!   attach, and /proc/PID/status shows the tracer.

use super::chain::Runs;
use super::vmas::{Backing, MapStep};
use super::PageWrite;
use crate::error::{Error, Result, SysContext};
use crate::remote::Remote;
use ckpt_image::{ImageReader, ReadAt, PROT_WRITE};
use ckpt_sys::userfaultfd::*;
use ckpt_sys::{ptrace, Pid, Stop};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const FEATURES: u64 = UFFD_FEATURE_EVENT_FORK
    | UFFD_FEATURE_EVENT_REMAP
    | UFFD_FEATURE_EVENT_REMOVE
    | UFFD_FEATURE_EVENT_UNMAP;
const MISSING: u8 = 0;
const FILLED: u8 = 1;
const GONE: u8 = 2;
/// Pages filled per fault (an aligned block around the page).
const BLOCK_PAGES: u64 = 16;

/// Where the lazily filled pages come from: the image (and its chain),
/// kept open.
pub trait FrameSource: Send + Sync {
    /// Decoded frame `index` of the image `level` steps up the chain (0:
    /// the image), checked (CRC, sizes).
    fn frame(&self, level: usize, index: u32) -> ckpt_image::Result<Arc<Vec<u8>>>;
}

impl<R: ReadAt + Send + Sync> FrameSource for ImageReader<R> {
    fn frame(&self, level: usize, index: u32) -> ckpt_image::Result<Arc<Vec<u8>>> {
        self.chain_frame(level, index)
    }
}

/// A piece of saved data to fill: `len` bytes at `addr`, from run `run`.
#[derive(Clone, Copy)]
struct Piece {
    addr: u64,
    len: u64,
    run: usize,
}

/// One address space being filled: the restored process, or a child it
/// forked (with its own userfaultfd).
struct Space {
    uffd: Uffd,
    /// Per registered range: its page states (saved addresses).
    state: Vec<Vec<AtomicU8>>,
    segs: RwLock<Vec<Seg>>,
    alive: AtomicBool,
}

/// What the handler and the prefetcher share.
struct Shared {
    reader: Arc<dyn FrameSource>,
    runs: Runs,
    page: u64,
    /// Registered ranges (saved addresses), sorted.
    ranges: Vec<(u64, u64)>,
    /// The saved data to fill, sorted by address.
    pieces: Vec<Piece>,
    spaces: Mutex<Vec<Arc<Space>>>,
    /// Why the pages cannot be filled (the image cannot be read).
    failed: Mutex<Option<String>>,
    stop: AtomicBool,
    faults: AtomicU64,
    prefetched: AtomicU64,
}

/// The lazy part of a restore: from the registration of the mappings to
/// the last page (see the module doc).
pub struct Server {
    sh: Arc<Shared>,
    pid: Pid,
    /// The process's own copy of the userfaultfd.
    theirs: u64,
    handler: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

/// How the lazy phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LazyEnd {
    /// Every page is in; the process runs untraced.
    Filled {
        /// From the process running to the last page.
        elapsed: Duration,
        /// Faults answered, and bytes filled by the prefetcher.
        faults: u64,
        prefetched: u64,
    },
    /// The process ended meanwhile (reaped: this is its wait status).
    Exited(ckpt_sys::proc::wait::ExitKind),
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sh.stop.store(true, Ordering::Release);
        if let Some(h) = self.handler.take() {
            let _ = h.join();
        }
    }
}

/// Which mappings are filled lazily: private anonymous ones that get
/// saved data.
fn lazy_steps(steps: &[MapStep], writes: &[PageWrite]) -> Vec<bool> {
    let mut want = vec![false; steps.len()];
    for w in writes.iter().filter(|w| !w.zero) {
        let i = steps.partition_point(|s| s.start + s.len <= w.addr);
        if let Some(s) = steps.get(i) {
            if s.start <= w.addr
                && s.backing == Backing::Anon
                && !s.shared
                && s.map_prot & PROT_WRITE != 0
                // Locked memory is filled now: mlock2 faults it in before
                // the server runs.
                && s.lock.is_none()
            {
                want[i] = true;
            }
        }
    }
    want
}

/// Make the userfaultfd in `main` (at an fd number just below `nofile`)
/// and take a copy of it; its API checked. Returns it and its number in
/// the process.
fn make_uffd(main: &mut Remote, nofile: u64) -> Result<(Uffd, u64)> {
    let pid = main.tid;
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = main.call(
        "userfaultfd (lazy restore)",
        libc::SYS_userfaultfd,
        &[flags],
    )?;
    let base = nofile.saturating_sub(8).clamp(3, 1000);
    let theirs = main.call(
        "fcntl(F_DUPFD_CLOEXEC) of the userfaultfd",
        libc::SYS_fcntl,
        &[fd, libc::F_DUPFD_CLOEXEC as u64, base],
    )?;
    main.call("close", libc::SYS_close, &[fd])?;
    let ours = ckpt_sys::proc::pidfd::fd_of(pid, theirs as i32)
        .ctx(|| format!("pid {pid}: taking its userfaultfd"))?;
    let uffd = Uffd::from_fd(ours, pid);
    let got = uffd
        .api(FEATURES)
        .ctx(|| format!("pid {pid}: UFFDIO_API for a lazy restore"))?;
    if got & FEATURES != FEATURES {
        return Err(Error::Stub {
            pid,
            what: "this kernel's userfaultfd lacks the events a lazy restore needs".into(),
        });
    }
    Ok((uffd, theirs))
}

/// Make the userfaultfd in the process being built (`main`, before its
/// credentials are set), register the mappings to fill lazily and start
/// answering faults. Returns the server and the writes to make now (the
/// others are filled lazily). `nofile`: the process's saved soft fd limit
/// (where its copy of the userfaultfd goes, below it).
pub(crate) fn setup(
    main: &mut Remote,
    reader: Arc<dyn FrameSource>,
    runs: &Runs,
    steps: &[MapStep],
    writes: &[PageWrite],
    page: u64,
    nofile: u64,
) -> Result<(Server, Vec<PageWrite>)> {
    let pid = main.tid;
    let (uffd, theirs) = make_uffd(main, nofile)?;
    let want = lazy_steps(steps, writes);
    let mut ranges = Vec::new();
    for (s, _) in steps.iter().zip(&want).filter(|(_, &w)| w) {
        uffd.register(s.start, s.len, UFFDIO_REGISTER_MODE_MISSING)
            .ctx(|| format!("pid {pid}: registering {} for lazy filling", s.what))?;
        ranges.push((s.start, s.start + s.len));
    }
    let covered = |a: u64| {
        let i = ranges.partition_point(|r| r.1 <= a);
        ranges.get(i).is_some_and(|r| r.0 <= a)
    };
    let (mut lazy, mut eager) = (Vec::new(), Vec::new());
    for w in writes {
        if !w.zero && covered(w.addr) {
            lazy.push(*w);
        } else {
            eager.push(*w);
        }
    }
    lazy.sort_by_key(|w| w.addr);
    let state = ranges
        .iter()
        .map(|r| {
            (0..(r.1 - r.0) / page)
                .map(|_| AtomicU8::new(MISSING))
                .collect()
        })
        .collect();
    let segs = ranges
        .iter()
        .map(|&(a, b)| Seg {
            orig: a,
            cur: a,
            len: b - a,
        })
        .collect();
    let space = Arc::new(Space {
        uffd,
        state,
        segs: RwLock::new(segs),
        alive: AtomicBool::new(true),
    });
    let sh = Arc::new(Shared {
        reader,
        runs: Runs {
            memory: runs.memory.clone(),
            levels: runs.levels.clone(),
        },
        page,
        ranges,
        pieces: lazy
            .iter()
            .map(|w| Piece {
                addr: w.addr,
                len: w.len,
                run: w.run,
            })
            .collect(),
        spaces: Mutex::new(vec![space]),
        failed: Mutex::new(None),
        stop: AtomicBool::new(false),
        faults: AtomicU64::new(0),
        prefetched: AtomicU64::new(0),
    });
    let s2 = sh.clone();
    let handler = std::thread::Builder::new()
        .name("ckpt-lazy-faults".into())
        .spawn(move || s2.handle())
        .map_err(|e| Error::Io {
            context: "starting the lazy restore's fault handler".into(),
            error: e,
        })?;
    tracing::info!(
        ranges = sh.ranges.len(),
        lazy_bytes = sh.pieces.iter().map(|p| p.len).sum::<u64>(),
        fd = theirs,
        "lazy restore: mappings registered"
    );
    Ok((
        Server {
            sh,
            pid,
            theirs,
            handler: Some(handler),
            started: Instant::now(),
        },
        eager,
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn fail(&self, what: String) {
        let mut f = lock(&self.failed);
        if f.is_none() {
            tracing::error!("lazy restore: {what}");
            *f = Some(what);
        }
        self.stop.store(true, Ordering::Release);
    }

    /// (range index, page index) of saved address `orig`.
    fn locate(&self, orig: u64) -> Option<(usize, usize)> {
        let i = self.ranges.partition_point(|r| r.1 <= orig);
        let r = self.ranges.get(i)?;
        (r.0 <= orig).then(|| (i, ((orig - r.0) / self.page) as usize))
    }

    /// The saved data for the page at `orig`: (level, frame, offset of the
    /// page in the decoded frame), or None (zeros).
    fn source(&self, orig: u64) -> Option<(usize, u32, u64)> {
        let i = self.pieces.partition_point(|p| p.addr + p.len <= orig);
        let p = self.pieces.get(i).filter(|p| p.addr <= orig)?;
        let run = &self.runs.memory[p.run];
        Some((
            self.runs.levels[p.run],
            run.frame,
            u64::from(run.frame_offset) + (orig - run.start),
        ))
    }

    /// Fill the missing pages of `[orig, orig + n pages)` (one range) of
    /// `space`; with `zeros`, pages without saved data too. False when the
    /// space is gone or the image failed.
    fn fill(&self, space: &Space, orig: u64, n: u64, zeros: bool) -> bool {
        let page = self.page;
        let Some((ri, p0)) = self.locate(orig) else {
            return true;
        };
        let segs = space.segs.read().unwrap_or_else(|p| p.into_inner());
        let mut i = 0u64;
        while i < n {
            let a = orig + i * page;
            let st = &space.state[ri][p0 + i as usize];
            if st.load(Ordering::Acquire) != MISSING {
                i += 1;
                continue;
            }
            let Some(s) = segs.iter().find(|s| s.orig <= a && a < s.orig + s.len) else {
                i += 1;
                continue;
            };
            let cur = s.cur + (a - s.orig);
            // A run of pages with the same source (contiguous in one frame,
            // or zeros), within the segment.
            let src = self.source(a);
            let mut j = i + 1;
            while j < n && orig + j * page < s.orig + s.len {
                let b = orig + j * page;
                let next = self.source(b);
                let same = match (src, next) {
                    (Some((l, f, o)), Some((l2, f2, o2))) => {
                        l == l2 && f == f2 && o2 == o + (b - a)
                    }
                    (None, None) => true,
                    _ => false,
                };
                if !same || space.state[ri][p0 + j as usize].load(Ordering::Acquire) != MISSING {
                    break;
                }
                j += 1;
            }
            let len = (j - i) * page;
            let (done, r) = match src {
                Some((level, frame, off)) => match self.reader.frame(level, frame) {
                    Ok(data) => {
                        let Some(bytes) = data.get(off as usize..(off + len) as usize) else {
                            self.fail(format!(
                                "the image is inconsistent: pages at {a:#x} lie past the end of frame {frame}"
                            ));
                            return false;
                        };
                        space.uffd.copy(cur, bytes, 0)
                    }
                    Err(e) => {
                        self.fail(format!("the image cannot be read any more: {e}"));
                        return false;
                    }
                },
                None if zeros => space.uffd.zeropage(cur, len),
                None => {
                    i = j;
                    continue;
                }
            };
            let filled = match r {
                Ok(()) => j - i,
                // EEXIST: there already (filled by the other thread).
                Err(e) if e.errno() == Some(libc::EEXIST) => (done / page).max(1),
                // EAGAIN: the mappings are changing; what was done counts.
                Err(e) if e.errno() == Some(libc::EAGAIN) => done / page,
                Err(_) => {
                    // ESRCH/ENOENT/EFAULT: the space or range is gone.
                    space.alive.store(false, Ordering::Release);
                    return false;
                }
            };
            for k in i..i + filled {
                let _ = space.state[ri][p0 + k as usize].compare_exchange(
                    MISSING,
                    FILLED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            if filled == 0 {
                return true; // retried at the next fault / pass
            }
            i += filled;
        }
        true
    }

    /// A fault at `cur` in `space`: fill its block, wake it.
    fn on_fault(&self, space: &Space, cur: u64) {
        let page = self.page;
        self.faults.fetch_add(1, Ordering::Relaxed);
        let orig = {
            let segs = space.segs.read().unwrap_or_else(|p| p.into_inner());
            segs.iter()
                .find(|s| s.cur <= cur && cur < s.cur + s.len)
                .map(|s| s.orig + (cur - s.cur))
        };
        if let Some(orig) = orig {
            if let Some((ri, pi)) = self.locate(orig) {
                let (rs, re) = self.ranges[ri];
                let block = (orig & !(BLOCK_PAGES * page - 1)).max(rs);
                let n = BLOCK_PAGES.min((re - block) / page);
                self.fill(space, block, n, true);
                // Discarded by the process since: it reads zeros again.
                if space.state[ri][pi].load(Ordering::Acquire) == GONE {
                    let _ = space.uffd.zeropage(cur, page);
                }
            }
        } else {
            // Not a saved address (moved or grown in since): zeros.
            let _ = space.uffd.zeropage(cur, page);
        }
        let _ = space.uffd.wake(cur, page);
    }

    fn apply_event(&self, space: &Space, m: &UffdMsg) -> Option<Arc<Space>> {
        let page = self.page;
        match m.event {
            UFFD_EVENT_REMAP => {
                let (from, to, len) = (m.arg[0], m.arg[1], m.arg[2]);
                let mut segs = space.segs.write().unwrap_or_else(|p| p.into_inner());
                *segs = remap(&segs, from, to, len);
                None
            }
            UFFD_EVENT_REMOVE | UFFD_EVENT_UNMAP => {
                let (start, end) = (m.arg[0], m.arg[1]);
                let segs = space.segs.read().unwrap_or_else(|p| p.into_inner());
                for s in segs.iter() {
                    let (a, b) = (s.cur.max(start), (s.cur + s.len).min(end));
                    let mut c = a;
                    while c < b {
                        if let Some((ri, pi)) = self.locate(s.orig + (c - s.cur)) {
                            space.state[ri][pi].store(GONE, Ordering::Release);
                        }
                        c += page;
                    }
                }
                None
            }
            UFFD_EVENT_FORK => {
                let uffd = Uffd::from_fork_event(m, space.uffd.pid())?;
                // The child has what the parent had filled (copied at fork).
                let state = space
                    .state
                    .iter()
                    .map(|r| {
                        r.iter()
                            .map(|s| AtomicU8::new(s.load(Ordering::Acquire)))
                            .collect()
                    })
                    .collect();
                let segs = space.segs.read().unwrap_or_else(|p| p.into_inner()).clone();
                Some(Arc::new(Space {
                    uffd,
                    state,
                    segs: RwLock::new(segs),
                    alive: AtomicBool::new(true),
                }))
            }
            _ => None,
        }
    }

    /// The fault handler: faults first, then mapping events, of every space.
    fn handle(&self) {
        let mut msgs = [UffdMsg::default(); 64];
        while !self.stop.load(Ordering::Acquire) {
            let spaces: Vec<Arc<Space>> = lock(&self.spaces)
                .iter()
                .filter(|s| s.alive.load(Ordering::Acquire))
                .cloned()
                .collect();
            if spaces.is_empty() {
                return;
            }
            let ready = poll_any(&spaces, 20);
            for i in ready {
                let space = &spaces[i];
                let n = match space.uffd.read_msgs(&mut msgs) {
                    Ok(n) => n,
                    Err(_) => {
                        space.alive.store(false, Ordering::Release);
                        continue;
                    }
                };
                for m in &msgs[..n] {
                    if m.event == UFFD_EVENT_PAGEFAULT {
                        self.on_fault(space, m.arg[1] & !(self.page - 1));
                    } else if let Some(child) = self.apply_event(space, m) {
                        lock(&self.spaces).push(child);
                    }
                }
            }
        }
    }

    /// Fill every saved page of every space, in image order.
    fn prefetch(&self) {
        // Test hook: CKPT_TEST_DELAY_MS=N (N <= 10000) delays the prefetch
        // by N ms, so that tests can act while pages are still missing.
        if let Some(ms) = std::env::var("CKPT_TEST_DELAY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            let until = Instant::now() + Duration::from_millis(ms.min(10_000));
            while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Pieces grouped by frame, each frame decoded once.
        let mut order: Vec<usize> = (0..self.pieces.len()).collect();
        order.sort_by_key(|&i| {
            let r = self.pieces[i].run;
            (
                self.runs.levels[r],
                self.runs.memory[r].frame,
                self.pieces[i].addr,
            )
        });
        let mut k = 0usize;
        loop {
            let spaces: Vec<Arc<Space>> = lock(&self.spaces)
                .iter()
                .filter(|s| s.alive.load(Ordering::Acquire))
                .cloned()
                .collect();
            if k >= spaces.len() || self.stop.load(Ordering::Acquire) {
                return;
            }
            let space = &spaces[k];
            for &i in &order {
                if self.stop.load(Ordering::Acquire) || !space.alive.load(Ordering::Acquire) {
                    break;
                }
                let p = self.pieces[i];
                if !self.fill(space, p.addr, p.len / self.page, false)
                    && self.stop.load(Ordering::Acquire)
                {
                    return;
                }
                self.prefetched.fetch_add(p.len, Ordering::Relaxed);
            }
            k += 1;
        }
    }

    /// Whether every saved page of every live space is in (or gone).
    fn complete(&self) -> bool {
        let spaces = lock(&self.spaces).clone();
        spaces
            .iter()
            .filter(|s| s.alive.load(Ordering::Acquire))
            .all(|s| {
                self.pieces.iter().all(|p| {
                    let Some((ri, p0)) = self.locate(p.addr) else {
                        return true;
                    };
                    (0..(p.len / self.page) as usize)
                        .all(|k| s.state[ri][p0 + k].load(Ordering::Acquire) != MISSING)
                })
            })
    }
}

/// Indices of the spaces with a message pending (waits up to `ms`).
fn poll_any(spaces: &[Arc<Space>], ms: i32) -> Vec<usize> {
    let uffds: Vec<&Uffd> = spaces.iter().map(|s| &s.uffd).collect();
    match poll_many(&uffds, ms) {
        Ok(ready) => ready
            .iter()
            .enumerate()
            .filter(|(_, &r)| r)
            .map(|(i, _)| i)
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl Server {
    /// Let the process run (its threads `tids`, registers set, still
    /// traced) and fill the rest of its pages; then let it go. Must be
    /// called from the thread that restored it (its ptrace tracer).
    pub fn serve(mut self, tids: &[Pid]) -> Result<LazyEnd> {
        let pid = self.pid;
        let opts = ptrace::PTRACE_O_EXITKILL
            | ptrace::PTRACE_O_TRACECLONE
            | ptrace::PTRACE_O_TRACEFORK
            | ptrace::PTRACE_O_TRACEVFORK;
        for &t in tids {
            ptrace::set_options(t, opts).ctx(|| format!("thread {t}: ptrace options"))?;
        }
        for &t in tids.iter().skip(1).chain(tids.first()) {
            ptrace::cont(t, 0).ctx(|| format!("thread {t}: letting it run"))?;
        }
        self.started = Instant::now();
        tracing::info!(pid, "lazy restore: the process runs");
        let s2 = self.sh.clone();
        let prefetch = std::thread::Builder::new()
            .name("ckpt-lazy-fill".into())
            .spawn(move || s2.prefetch())
            .map_err(|e| Error::Io {
                context: "starting the lazy restore's prefetch".into(),
                error: e,
            })?;
        let end = self.trace(tids);
        self.sh.stop.store(true, Ordering::Release);
        let _ = prefetch.join();
        if let Some(h) = self.handler.take() {
            let _ = h.join();
        }
        end
    }

    /// The tracer: pass stops on until every page is in, the process ends
    /// or the image fails.
    fn trace(&mut self, tids: &[Pid]) -> Result<LazyEnd> {
        let pid = self.pid;
        let mut traced: Vec<Pid> = tids.to_vec();
        let mut idle = Duration::from_micros(50);
        let mut last_check = Instant::now();
        loop {
            if let Some(why) = lock(&self.sh.failed).clone() {
                let _ = ckpt_sys::proc::kill(pid, libc::SIGKILL);
                self.reap_all(&mut traced);
                return Err(Error::Stub {
                    pid,
                    what: format!("the process was killed: its pages could not be filled: {why}"),
                });
            }
            match ptrace::try_wait_any() {
                Ok(Some((tid, stop))) => {
                    idle = Duration::from_micros(50);
                    if let Some(end) = self.on_stop(tid, stop, &mut traced)? {
                        return Ok(end);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) if e.errno() == Some(libc::ECHILD) => {
                    return Ok(LazyEnd::Exited(ckpt_sys::proc::wait::ExitKind::Signaled(0)));
                }
                Err(e) => return Err(e).ctx(|| "waiting for the process".into()),
            }
            if last_check.elapsed() > Duration::from_millis(20) {
                last_check = Instant::now();
                if self.sh.complete() {
                    return self.finish(&traced);
                }
            }
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(2));
        }
    }

    /// One stop of a traced thread; Some when the lazy phase is over.
    fn on_stop(&mut self, tid: Pid, stop: Stop, traced: &mut Vec<Pid>) -> Result<Option<LazyEnd>> {
        use ckpt_sys::proc::wait::ExitKind;
        match stop {
            Stop::Exited(c) | Stop::Killed(c) => {
                traced.retain(|&t| t != tid);
                if tid == self.pid {
                    let how = if matches!(stop, Stop::Exited(_)) {
                        ExitKind::Exited(c)
                    } else {
                        ExitKind::Signaled(c)
                    };
                    return Ok(Some(LazyEnd::Exited(how)));
                }
            }
            Stop::Event { event, sig } if event == ptrace::PTRACE_EVENT_STOP => {
                if !traced.contains(&tid) {
                    traced.push(tid);
                }
                let r = if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    ptrace::listen(tid)
                } else {
                    ptrace::cont(tid, 0)
                };
                let _ = r;
            }
            Stop::Event { .. } => {
                let _ = ptrace::cont(tid, 0);
            }
            Stop::Signal(sig) => {
                let _ = ptrace::cont(tid, sig);
            }
        }
        Ok(None)
    }

    /// Every page is in: unregister, close the process's copy of the
    /// userfaultfd (a short stop of its main thread), let it go.
    fn finish(&mut self, traced: &[Pid]) -> Result<LazyEnd> {
        let spaces = lock(&self.sh.spaces).clone();
        for s in &spaces {
            let segs = s.segs.read().unwrap_or_else(|p| p.into_inner()).clone();
            for g in segs {
                let _ = s.uffd.unregister(g.cur, g.len);
            }
        }
        // The main thread is left stopped by close_theirs; every thread
        // is detached from a stop.
        let main = match self.close_theirs() {
            Ok(sig) => sig,
            Err(e) => {
                tracing::warn!("lazy restore: could not close the process's userfaultfd: {e}");
                None
            }
        };
        for &t in traced.iter().filter(|&&t| t != self.pid) {
            detach_running(t);
        }
        match main {
            Some(sig) => {
                let _ = ptrace::detach(self.pid, sig);
            }
            None => detach_running(self.pid),
        }
        let end = LazyEnd::Filled {
            elapsed: self.started.elapsed(),
            faults: self.sh.faults.load(Ordering::Relaxed),
            prefetched: self.sh.prefetched.load(Ordering::Relaxed),
        };
        tracing::info!(?end, "lazy restore: every page is in");
        Ok(end)
    }

    /// Inject close() of the process's copy of the userfaultfd: its main
    /// thread is stopped for it and left stopped (Some: the signal to
    /// deliver when it is let go; None: it is gone).
    fn close_theirs(&mut self) -> Result<Option<i32>> {
        let pid = self.pid;
        let Some(pending) = stop_thread(pid) else {
            return Ok(None);
        };
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .ctx(|| format!("reading /proc/{pid}/maps"))?;
        let mem =
            ckpt_sys::mm::ProcMem::open(pid).ctx(|| format!("pid {pid}: opening its memory"))?;
        let ip = super::layout::syscall_ip(pid, &mem, &super::layout::parse_maps(&maps))?;
        let mut inj = ckpt_sys::Injector::new(pid, ip).ctx(|| format!("pid {pid}: injecting"))?;
        let r = inj.syscall("close", libc::SYS_close, &[self.theirs]);
        let left = inj
            .finish()
            .ctx(|| format!("pid {pid}: restoring its registers"))?;
        for si in left {
            // Dequeued while we injected: send it again.
            let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
            let _ = ckpt_sys::proc::tgkill(pid, pid, signo);
        }
        r.ctx(|| format!("pid {pid}: closing its userfaultfd"))?;
        Ok(Some(pending))
    }

    /// The process was killed: collect its threads.
    fn reap_all(&self, traced: &mut Vec<Pid>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !traced.is_empty() && Instant::now() < deadline {
            match ptrace::try_wait_any() {
                Ok(Some((tid, Stop::Exited(_) | Stop::Killed(_)))) => traced.retain(|&t| t != tid),
                Ok(Some((tid, _))) => {
                    let _ = ptrace::cont(tid, 0);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => break,
            }
        }
    }
}

/// Bring a traced thread to an interrupt stop (signals met on the way are
/// held back: the last one is returned, to deliver when it is let go);
/// None when it is gone.
fn stop_thread(tid: Pid) -> Option<i32> {
    if ptrace::interrupt(tid).is_err() {
        return None;
    }
    let mut pending = 0;
    loop {
        match ptrace::wait(tid) {
            // Our interrupt, or a group stop it re-trapped: stopped now.
            Ok(Stop::Event { event, .. }) if event == ptrace::PTRACE_EVENT_STOP => {
                return Some(pending)
            }
            Ok(Stop::Signal(sig)) => {
                if pending != 0 {
                    let _ = ckpt_sys::proc::kill(tid, pending);
                }
                pending = sig;
                if ptrace::cont(tid, 0).is_err() {
                    return None;
                }
            }
            Ok(Stop::Exited(_) | Stop::Killed(_)) | Err(_) => return None,
            // Another event (a clone, a fork): our interrupt comes next.
            Ok(_) => {
                if ptrace::cont(tid, 0).is_err() {
                    return None;
                }
            }
        }
    }
}

/// Detach a traced thread, stopped or running (PTRACE_DETACH needs a
/// stop: a running one is stopped first).
fn detach_running(tid: Pid) {
    if ptrace::detach(tid, 0).is_err() {
        if let Some(sig) = stop_thread(tid) {
            let _ = ptrace::detach(tid, sig);
        }
    }
}
