//! Filling private anonymous mappings with UFFDIO_COPY: a userfaultfd made
//! in the target (Linux 5.11+, UFFD_FEATURE_SIGBUS so nothing can wait on
//! it), duplicated into the restorer, with the mappings that get most of
//! the pages registered for missing pages until the pages are written.
//! UFFDIO_COPY allocates and fills each page without the page fault,
//! clearing and pinning of a process_vm_writev into fresh memory: a third
//! less CPU for the fill (measured). Without a userfaultfd (older kernel,
//! seccomp, CKPT_UFFD_COPY=0) process_vm_writev does it all.

use super::vmas::{Backing, MapStep};
use super::PageWrite;
use crate::error::{Error, Result};
use crate::remote::{u64s, Remote};
use ckpt_image::PROT_WRITE;
use ckpt_sys::proc;
use ckpt_sys::userfaultfd::{self, UFFDIO_COPY_MODE_DONTWAKE};
use std::os::fd::{AsRawFd, OwnedFd};

// userfaultfd(2) ABI (linux/userfaultfd.h; UFFDIO_MOVE since 6.8).
const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_API: u64 = 0xaa;
pub(super) const UFFD_FEATURE_MOVE: u64 = 1 << 16;
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const UFFDIO_API: u64 = 0xc018_aa3f;
pub(super) const UFFDIO_REGISTER: u64 = 0xc020_aa00;
pub(super) const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;
pub(super) const UFFDIO_MOVE: u64 = 0xc028_aa05;
pub(super) const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
pub(super) const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 2;

/// A userfaultfd made in the process being built (user faults only,
/// close-on-exec, non-blocking) and its UFFDIO_API handshake asking for
/// `features`: the fd and whether the handshake succeeded; None when the
/// kernel refuses userfaultfd.
pub(super) fn remote_userfaultfd(
    main: &mut Remote,
    scratch: u64,
    features: u64,
) -> Result<Option<(u64, bool)>> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
    let fd = main.raw("userfaultfd", libc::SYS_userfaultfd, &[flags])?;
    if fd < 0 {
        return Ok(None);
    }
    let fd = fd as u64;
    main.write(scratch, &u64s(&[UFFD_API, features, 0]))?;
    let api = main.raw(
        "ioctl(UFFDIO_API)",
        libc::SYS_ioctl,
        &[fd, UFFDIO_API, scratch],
    )?;
    Ok(Some((fd, api == 0)))
}

/// A userfaultfd of the target for UFFDIO_COPY: its number there, our
/// duplicate, the registered ranges.
pub(crate) struct CopyFd {
    ours: OwnedFd,
    theirs: u64,
    ranges: Vec<(u64, u64)>,
}

impl CopyFd {
    /// What the page writer fills through it.
    pub fn target(&self) -> CopyTarget<'_> {
        CopyTarget {
            fd: self.ours.as_raw_fd(),
            ranges: &self.ranges,
        }
    }
}

/// A duplicate of fd `fd` of `pid` (pidfd_getfd), or None.
fn dup_fd_of(pid: i32, fd: i32) -> Option<OwnedFd> {
    proc::pidfd::fd_of(pid, fd).ok()
}

/// Which mappings are worth registering: private anonymous mappings (not
/// stacks) that get at least 1 MiB of data (each costs two injected calls,
/// which 1 MiB of faults saved pays for), 4 MiB in all (for the
/// userfaultfd itself): a small process is quicker without.
fn worth_registering(steps: &[MapStep], writes: &[PageWrite]) -> Option<Vec<bool>> {
    let mut bytes = vec![0u64; steps.len()];
    for w in writes.iter().filter(|w| !w.zero) {
        let i = steps.partition_point(|s| s.start + s.len <= w.addr);
        if let Some(s) = steps.get(i) {
            if s.start <= w.addr
                && s.backing == Backing::Anon
                && !s.shared
                && !s.grows_down
                && s.map_prot & PROT_WRITE != 0
            {
                bytes[i] += w.len;
            }
        }
    }
    let want: Vec<bool> = bytes.iter().map(|&b| b >= 1 << 20).collect();
    let total: u64 = bytes
        .iter()
        .zip(&want)
        .filter(|(_, &w)| w)
        .map(|(b, _)| b)
        .sum();
    (total >= 4 << 20).then_some(want)
}

/// A userfaultfd of the target with its anonymous mappings that get
/// pages registered, duplicated into this process, for UFFDIO_COPY (see
/// [`CopyTarget`]). None where that is not possible (older kernel, no
/// permission) or does not pay: the pages are written with
/// process_vm_writev.
pub(crate) fn copy_setup(
    main: &mut Remote,
    steps: &[MapStep],
    writes: &[PageWrite],
    scratch: u64,
) -> Result<Option<CopyFd>> {
    if std::env::var("CKPT_UFFD_COPY").as_deref() == Ok("0") {
        return Ok(None);
    }
    let Some(want) = worth_registering(steps, writes) else {
        return Ok(None);
    };
    let Some((theirs, api_ok)) = remote_userfaultfd(main, scratch, UFFD_FEATURE_SIGBUS)? else {
        return Ok(None);
    };
    let ours = if api_ok {
        dup_fd_of(main.tid, theirs as i32)
    } else {
        None
    };
    let Some(ours) = ours else {
        main.call("close", libc::SYS_close, &[theirs])?;
        return Ok(None);
    };
    let mut ranges = Vec::new();
    for (s, _) in steps.iter().zip(&want).filter(|(_, &w)| w) {
        main.write(
            scratch,
            &u64s(&[s.start, s.len, UFFDIO_REGISTER_MODE_MISSING, 0]),
        )?;
        let r = main.raw(
            &format!("ioctl(UFFDIO_REGISTER) of {}", s.what),
            libc::SYS_ioctl,
            &[theirs, UFFDIO_REGISTER, scratch],
        )?;
        if r == 0 {
            ranges.push((s.start, s.start + s.len));
        }
    }
    tracing::debug!(mappings = ranges.len(), "pages filled with UFFDIO_COPY");
    Ok(Some(CopyFd {
        ours,
        theirs,
        ranges,
    }))
}

/// Unregister the mappings (they keep their flags) and close the
/// userfaultfd in the target.
pub(crate) fn copy_finish(main: &mut Remote, c: CopyFd, scratch: u64) -> Result<()> {
    for &(start, end) in &c.ranges {
        main.write(scratch, &u64s(&[start, end - start]))?;
        main.call(
            &format!("ioctl(UFFDIO_UNREGISTER) of {start:#x}..{end:#x}"),
            libc::SYS_ioctl,
            &[c.theirs, UFFDIO_UNREGISTER, scratch],
        )?;
    }
    main.call("close of the userfaultfd", libc::SYS_close, &[c.theirs])?;
    Ok(())
}

/// A userfaultfd of the target, duplicated into this process, with
/// `ranges` (sorted, disjoint: whole anonymous mappings) registered for
/// missing pages. Pages there are filled with UFFDIO_COPY. It is created
/// with UFFD_FEATURE_SIGBUS, so a stray access there fails instead of
/// waiting.
pub struct CopyTarget<'a> {
    pub fd: i32,
    pub ranges: &'a [(u64, u64)],
}

impl CopyTarget<'_> {
    pub fn covers(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        self.ranges.get(i).is_some_and(|r| r.0 <= addr)
    }
}

/// UFFDIO_COPY of `data` to `addr` (page-aligned, whole pages).
pub(super) fn uffd_copy(fd: i32, addr: u64, data: &[u8]) -> Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        let dst = addr + done as u64;
        let (copied, r) = userfaultfd::uffd_copy(fd, dst, &data[done..], UFFDIO_COPY_MODE_DONTWAKE);
        done += copied as usize;
        match r {
            Ok(()) => continue,
            Err(e) if e.errno() == Some(libc::EAGAIN) => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: format!(
                        "UFFDIO_COPY of saved pages at {:#x} ({} bytes)",
                        addr + done as u64,
                        data.len() - done
                    ),
                    error: std::io::Error::from_raw_os_error(e.errno().unwrap_or(libc::EIO)),
                })
            }
        }
    }
    Ok(())
}
