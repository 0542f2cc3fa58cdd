//! A copy-on-write snapshot of a running process's memory, for
//! `--leave-running`: the freeze takes registers and the rest of the
//! state, and only protects memory; the pages are copied after the process
//! was let go, each before its first write (snapcopy.rs).
//!
//! A userfaultfd in write-protect mode, made in the process (an injected
//! `userfaultfd()` in a short stop) and held only by the dumper (the
//! process's fd is closed at once: if the dumper dies, the kernel drops the
//! protection and the process goes on; a thread waiting on a fault is
//! woken), protects the private anonymous areas. Two phases, so that the
//! freeze does not grow with memory:
//!
//! 1. **Arm** (the process running): register and protect every area (an
//!    unpopulated page too: UFFD_FEATURE_WP_UNPOPULATED). A fault now only
//!    lifts the protection of its page and remembers it as dirty: the
//!    snapshot will see its later contents. The dirty pages are protected
//!    again while there are many (a write to a protected page costs its
//!    writer a round trip; protecting a page again costs ~1 µs: it
//!    converges).
//! 2. **Freeze**: the areas from /proc/PID/maps; the last dirty pages and
//!    areas new since arming protected; which pages exist (the present
//!    map taken while arming, corrected where pages changed since).
//!
//! The present map: a page present when its area was armed (or after, if
//! it was never written) is still there unless a mapping-change event
//! (REMOVE: MADV_DONTNEED and co; UNMAP; REMAP) said otherwise; the pages
//! that were written, discarded or moved since, and new areas, are scanned
//! again in the freeze. There a "swapped" entry may be the marker of an
//! unpopulated page: it is read anyway (a marker reads as zeros).
//!
//! Private file mappings (their copied-on-write pages), shared memory and
//! areas that cannot be protected or read (PROT_NONE) are copied in the
//! freeze, as before: their cost grows with their size (shared memory:
//! another process may write it, which this userfaultfd would not see).
//!
//! Needs Linux 6.7+ (PAGEMAP_SCAN), a userfaultfd the process may make for
//! kernel faults too (CAP_SYS_PTRACE in the process, or the sysctl
//! vm.unprivileged_userfaultfd; a user-mode-only one would fail the
//! process's own system calls on protected pages), and no dirty tracking
//! of ckpt in the process (one userfaultfd per area): otherwise the dump
//! copies everything in the freeze.

use super::intervals::{inter, minus, norm, of_pages};
use super::pages::{self, Range};
use super::present;
use super::snapcopy::{CopyArea, Pending};
use super::vmas::{self, MapEntry, Policy};
use crate::error::{IoCtx, Result, SysCtx};
use crate::freeze::Frozen;
use crate::{procfs, PageSink};
use ckpt_image::Vma;
use ckpt_sys::mm::{page_is, PageRegion, Pagemap, ScanQuery};
use ckpt_sys::userfaultfd::*;
use ckpt_sys::Pid;
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EVENTS: u64 = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;
const FEATURES: u64 = EVENTS | UFFD_FEATURE_WP_UNPOPULATED;
/// Re-protect rounds while arming: until this few pages are dirty, at most
/// this many rounds.
const REARM_FEW: usize = 512;
const REARM_ROUNDS: usize = 6;

/// What the handler of phase 1 learns (current addresses).
#[derive(Default)]
struct Pre {
    /// Ranges unmapped or moved away since arming began.
    gone: Vec<(u64, u64)>,
    /// Pages whose protection a fault lifted, not protected again yet.
    dirty: BTreeSet<u64>,
    /// Ranges whose pages may have changed presence since the present map
    /// was taken (discarded, moved here, or dirty then protected again).
    uncertain: Vec<(u64, u64)>,
    faults: u64,
    /// The handler failed: the snapshot is not possible.
    failed: Option<String>,
}

/// Phase 1 done: the process runs with its private anonymous memory
/// write-protected. Dropping it (an error before the freeze) closes the
/// userfaultfd: the kernel drops every protection.
pub(crate) struct Armed {
    pid: Pid,
    page: u64,
    uffd: Arc<Uffd>,
    /// smaps read before arming (the VmFlags of the areas at the freeze).
    before: Vec<MapEntry>,
    /// Pages present when their area was armed (sorted ranges).
    present: Vec<(u64, u64)>,
    /// The ranges armed (registered and protected).
    armed: Vec<(u64, u64)>,
    pre: Arc<Mutex<Pre>>,
    stop: Arc<AtomicBool>,
    /// Wakes the handler from its wait once `stop` is set.
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Arm a snapshot of `pid` (phase 1), or None when it is not possible
/// here (see the module doc): the dump then copies in the freeze.
pub(crate) fn arm(pid: Pid, page: u64) -> Result<Option<Armed>> {
    let t = Instant::now();
    if !present::scan_works(pid) {
        tracing::debug!("no PAGEMAP_SCAN: no copy-on-write snapshot");
        return Ok(None);
    }
    let before = vmas::parse_smaps(pid, &procfs::read(pid, &format!("/proc/{pid}/smaps"))?)?;
    let Some(fd) = userfaultfd_of(pid)? else {
        return Ok(None);
    };
    let uffd = Uffd::from_fd(fd, pid);
    match uffd.api(FEATURES) {
        Ok(got) if got & FEATURES == FEATURES => {}
        _ => {
            tracing::debug!("userfaultfd lacks write-protect features: no snapshot");
            return Ok(None);
        }
    }
    let stopped = t.elapsed();
    let mut armed = Armed {
        pid,
        page,
        uffd: Arc::new(uffd),
        before,
        present: Vec::new(),
        armed: Vec::new(),
        pre: Arc::new(Mutex::new(Pre::default())),
        stop: Arc::new(AtomicBool::new(false)),
        waker: Arc::new(Waker::new().ctx(pid, || "starting the write-protect handler".into())?),
        thread: None,
    };
    armed.start_handler()?;
    let pm = Pagemap::open(pid).ctx(pid, || "opening its pagemap".into())?;
    let mut present = Vec::new();
    let mut armed_ranges = Vec::new();
    for e in armed.before.iter().filter(|e| protectable(pid, e)) {
        if armed
            .uffd
            .register(e.start, e.end - e.start, UFFDIO_REGISTER_MODE_WP)
            .is_err()
        {
            continue; // changed since smaps was read: new at the freeze
        }
        let before = present::saved_regions(&pm, pid, e.start, e.end, Policy::Anon)?;
        if retry_eagain(|| armed.uffd.writeprotect(e.start, e.end - e.start, true)).is_err() {
            continue;
        }
        // Pages populated between the first scan and the protection.
        let after = scan(&pm, pid, e.start, e.end, page_is::PRESENT)?;
        present.extend(before);
        present.extend(after);
        armed_ranges.push((e.start, e.end));
    }
    armed.present = norm(present);
    armed.armed = norm(armed_ranges);
    let protected = t.elapsed();
    let rounds = armed.rearm()?;
    tracing::info!(
        areas = armed.armed.len(),
        stopped = ?stopped,
        protected = ?protected,
        rounds,
        elapsed = ?t.elapsed(),
        "snapshot armed"
    );
    Ok(Some(armed))
}

/// Areas of the snapshot: private anonymous memory that can be read, at
/// most `MAX_PROTECTED` long unless an eighth of it is in memory:
/// protecting an unpopulated page makes its page table (8 bytes a page),
/// so protecting a 1 TiB reservation took 20 s and 512 MiB of page
/// tables. Larger sparse areas (reservations that are mostly holes) are
/// copied in the freeze, which reads only their populated pages.
fn protectable(pid: Pid, e: &MapEntry) -> bool {
    let len = e.end - e.start;
    let used = (e.rss_kb + e.swap_kb).saturating_mul(1024);
    e.perms[0] == b'r'
        && (len <= MAX_PROTECTED || used.saturating_mul(8) >= len)
        && matches!(vmas::classify(pid, e), Ok((_, Policy::Anon)))
}

/// The largest area the snapshot protects (its page tables: 64 MiB).
const MAX_PROTECTED: u64 = 32 << 30;

/// A userfaultfd made in `pid` (a short stop: one injected call and a
/// close), now held by us only; None when the process may not make one.
fn userfaultfd_of(pid: Pid) -> Result<Option<OwnedFd>> {
    let mut f = Frozen::freeze(pid)?;
    let mut inj = crate::remote::leader_injector(&mut f)?;
    let r = (|| -> Result<Option<OwnedFd>> {
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let theirs = inj
            .syscall_raw(libc::SYS_userfaultfd, &[flags])
            .ctx(pid, || "injected userfaultfd".into())?;
        if theirs < 0 {
            tracing::debug!(errno = -theirs, "the process may not make a userfaultfd");
            return Ok(None);
        }
        let ours = ckpt_sys::proc::pidfd::fd_of(pid, theirs as i32);
        inj.syscall("close", libc::SYS_close, &[theirs as u64])
            .ctx(pid, || "closing its userfaultfd".into())?;
        Ok(Some(ours.ctx(pid, || "taking its userfaultfd".into())?))
    })();
    let fin = inj.finish();
    f.set_exit_kill(false)?;
    if let Ok(left) = &fin {
        for si in left {
            let signo = i32::from_ne_bytes([si[0], si[1], si[2], si[3]]);
            let _ = ckpt_sys::proc::tgkill(pid, pid, signo);
        }
    }
    fin.ctx(pid, || "restoring the registers of the main thread".into())?;
    f.release()?;
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Retry while a mapping-change event is being reported (EAGAIN), up to 1 s.
pub(super) fn retry_eagain(mut f: impl FnMut() -> ckpt_sys::Result<()>) -> ckpt_sys::Result<()> {
    for _ in 0..10_000 {
        match f() {
            Err(e) if e.errno() == Some(libc::EAGAIN) => {
                std::thread::sleep(Duration::from_micros(100))
            }
            r => return r,
        }
    }
    f()
}

/// The ranges of `[start, end)` with any of the categories `anyof`.
fn scan(pm: &Pagemap, pid: Pid, start: u64, end: u64, anyof: u64) -> Result<Vec<(u64, u64)>> {
    let q = ScanQuery {
        anyof,
        returned: anyof,
        ..Default::default()
    };
    let mut out: Vec<PageRegion> = Vec::new();
    pm.scan(start, end, &q, &mut out)
        .ctx(pid, || format!("PAGEMAP_SCAN of {start:#x}-{end:#x}"))?;
    Ok(out.iter().map(|r| (r.start, r.end)).collect())
}

impl Armed {
    fn start_handler(&mut self) -> Result<()> {
        let (u, stop, waker, pre, page) = (
            self.uffd.clone(),
            self.stop.clone(),
            self.waker.clone(),
            self.pre.clone(),
            self.page,
        );
        let t = std::thread::Builder::new()
            .name("ckpt-wp-arm".into())
            .spawn(move || pre_handler(&u, (&stop, &waker), &pre, page))
            .ctx(self.pid, || "starting the write-protect handler".into())?;
        self.thread = Some(t);
        Ok(())
    }

    /// Lift the protection of `regions` (the stack pages that injected
    /// calls will write through /proc/PID/mem, which a write-protected
    /// page refuses) and count them dirty: they are protected again, and
    /// their contents then taken, in the freeze phase.
    pub fn release(&self, regions: &[(u64, u64)]) {
        let page = self.page;
        for &(a, b) in regions {
            let (a, b) = (a & !(page - 1), (b + page - 1) & !(page - 1));
            // ENOENT: not armed there (nothing to lift).
            if retry_eagain(|| self.uffd.writeprotect(a, b - a, false)).is_ok() {
                lock(&self.pre).dirty.extend((a..b).step_by(page as usize));
            }
        }
    }

    /// Protect the dirty pages again while there are many; the rounds made.
    fn rearm(&self) -> Result<usize> {
        for round in 0..REARM_ROUNDS {
            let dirty = {
                let mut pre = lock(&self.pre);
                if pre.dirty.len() <= REARM_FEW {
                    return Ok(round);
                }
                let d = std::mem::take(&mut pre.dirty);
                let ranges = of_pages(d, self.page);
                pre.uncertain.extend(ranges.iter().copied());
                ranges
            };
            for (a, b) in dirty {
                // ENOENT: unmapped since (the event said so).
                let _ = retry_eagain(|| self.uffd.writeprotect(a, b - a, true));
            }
        }
        Ok(REARM_ROUNDS)
    }

    /// Phase 2, in the freeze: the areas now, the last protections, the
    /// present map; pages of the areas that are not protected are copied
    /// to `sink` now. Returns the areas, the bytes copied in the freeze,
    /// and the copy to finish once the process runs again.
    pub fn freeze_phase(
        mut self,
        sink: &mut dyn PageSink,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Vec<Vma>, u64, Pending)> {
        let (pid, page) = (self.pid, self.page);
        let t = Instant::now();
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(th) = self.thread.take() {
            let _ = th.join();
        }
        let pre = std::mem::take(&mut *lock(&self.pre));
        if let Some(e) = pre.failed {
            return Err(snapshot_err(pid, e));
        }
        let entries = present::areas_now(pid, &self.before)?;
        let mut out = Vec::with_capacity(entries.len());
        let mut areas = Vec::with_capacity(entries.len());
        for e in entries {
            let (vma, policy) = vmas::classify(pid, &e)?;
            out.push(vma);
            areas.push((e, policy));
        }
        // What is still armed: not unmapped or moved away since.
        let armed = minus(&self.armed, &norm(pre.gone.clone()));
        let mut wp = vec![false; areas.len()];
        let mut changed: Vec<(u64, u64)> = pre.uncertain.clone();
        changed.extend(of_pages(pre.dirty.iter().copied(), page));
        // The parts of the areas not armed before (one sweep for all).
        let candidates: Vec<usize> = (0..areas.len())
            .filter(|&i| protectable(pid, &areas[i].0))
            .collect();
        let spans: Vec<(u64, u64)> = candidates
            .iter()
            .map(|&i| (areas[i].0.start, areas[i].0.end))
            .collect();
        let new_parts = minus(&norm(spans), &armed);
        for i in candidates {
            let e = &areas[i].0;
            let k = new_parts.partition_point(|r| r.1 <= e.start);
            let new = inter(&new_parts[k..], &[(e.start, e.end)]);
            if !new.is_empty()
                && self
                    .uffd
                    .register(e.start, e.end - e.start, UFFDIO_REGISTER_MODE_WP)
                    .is_err()
            {
                continue;
            }
            wp[i] = true;
            changed.extend(new);
        }
        let wp_ranges: Vec<(u64, u64)> = areas
            .iter()
            .zip(&wp)
            .filter(|(_, &w)| w)
            .map(|((e, _), _)| (e.start, e.end))
            .collect();
        let changed = inter(&norm(changed), &wp_ranges);
        for &(a, b) in &changed {
            match self.uffd.writeprotect(a, b - a, true) {
                Err(e) if e.errno() != Some(libc::ENOENT) => {
                    return Err(e).ctx(pid, || format!("write-protecting {a:#x}-{b:#x}"))
                }
                _ => {}
            }
        }
        let pm = Pagemap::open(pid).ctx(pid, || "opening its pagemap".into())?;
        let mut present = minus(&inter(&self.present, &armed), &changed);
        for &(a, b) in &changed {
            present.extend(scan(&pm, pid, a, b, page_is::PRESENT | page_is::SWAPPED)?);
        }
        // Guard pages look swapped out (PTE markers): never copied.
        let guards = norm(present::guard_regions(pid)?);
        let present = minus(&inter(&norm(present), &wp_ranges), &guards);
        let protected = t.elapsed();
        // The rest, now.
        let ranges: Vec<Range> = present::plan(pid, &areas, page, &|i| wp[i])?;
        let bytes = pages::save(pid, &areas, &ranges, page, sink, progress)?;
        let copy_areas: Vec<CopyArea> = areas
            .iter()
            .zip(&wp)
            .filter(|(_, &w)| w)
            .map(|((e, _), _)| CopyArea::new(e.start, e.end, &present, page, &e.name))
            .collect();
        tracing::info!(
            protected_areas = copy_areas.len(),
            changed = changed.len(),
            dirty = pre.dirty.len(),
            faults = pre.faults,
            to_copy = present.iter().map(|r| r.1 - r.0).sum::<u64>(),
            frozen_bytes = bytes,
            protect = ?protected,
            elapsed = ?t.elapsed(),
            "snapshot taken"
        );
        let uffd = self.uffd.clone();
        let pending = Pending::start(pid, page, uffd, copy_areas)?;
        Ok((out, bytes, pending))
    }
}

pub(super) fn snapshot_err(pid: Pid, what: String) -> crate::Error {
    crate::Error::Snapshot { pid, what }
}

/// Phase 1's handler: a fault lifts the protection of its page (the
/// snapshot has not been taken yet: its later contents are what counts)
/// and makes it dirty; events update the armed ranges.
fn pre_handler(uffd: &Uffd, (stop, waker): (&AtomicBool, &Waker), pre: &Mutex<Pre>, page: u64) {
    let mut msgs = [UffdMsg::default(); 64];
    let mut deferred: Vec<u64> = Vec::new();
    loop {
        // Long waits: the freeze wakes us.
        let wait = if deferred.is_empty() { 1000 } else { 1 };
        let readable = match uffd.poll_or_wake(waker, wait) {
            Ok(r) => r,
            Err(e) => {
                lock(pre).failed = Some(format!("waiting for faults: {e}"));
                return;
            }
        };
        let mut faults = std::mem::take(&mut deferred);
        let n = if readable {
            match uffd.read_msgs(&mut msgs) {
                Ok(n) => n,
                Err(e) => {
                    lock(pre).failed = Some(format!("reading faults: {e}"));
                    return;
                }
            }
        } else {
            0
        };
        if n == 0 && faults.is_empty() && stop.load(Ordering::Acquire) {
            return;
        }
        let mut st = lock(pre);
        for m in &msgs[..n] {
            match m.event {
                UFFD_EVENT_PAGEFAULT => faults.push(m.arg[1] & !(page - 1)),
                UFFD_EVENT_REMAP => {
                    let (from, to, len) = (m.arg[0], m.arg[1], m.arg[2]);
                    st.gone.push((from, from + len));
                    st.uncertain.push((to, to + len));
                    let moved: Vec<u64> = st.dirty.range(from..from + len).copied().collect();
                    for d in moved {
                        st.dirty.remove(&d);
                    }
                }
                UFFD_EVENT_UNMAP => {
                    let (a, b) = (m.arg[0], m.arg[1]);
                    st.gone.push((a, b));
                    let gone: Vec<u64> = st.dirty.range(a..b).copied().collect();
                    for d in gone {
                        st.dirty.remove(&d);
                    }
                }
                UFFD_EVENT_REMOVE => {
                    // Discarded: unprotected holes after the zap.
                    st.uncertain.push((m.arg[0], m.arg[1]));
                }
                _ => {}
            }
        }
        for f in faults {
            st.faults += 1;
            match uffd.writeprotect(f, page, false) {
                Ok(()) => {
                    st.dirty.insert(f);
                }
                Err(e) if e.errno() == Some(libc::EAGAIN) => deferred.push(f),
                Err(_) => {
                    // Not registered (moved, unmapped): wake it anyway.
                    let _ = uffd.wake(f, page);
                }
            }
        }
    }
}
