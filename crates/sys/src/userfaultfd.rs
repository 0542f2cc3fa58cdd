//! userfaultfd (by hand: nix has no userfaultfd): the ABI of
//! linux/userfaultfd.h, and [`Uffd`], a userfaultfd with its ioctls.
//!
//! Every ioctl acts on the address space of the process that *created* the
//! userfaultfd, whoever calls it: ckpt makes one inside the target (an
//! injected `userfaultfd()`), takes a duplicate with `pidfd_getfd`, and
//! registers, protects, copies and reads faults from here.
//!
//! The struct sizes below are the ones the ioctl numbers encode
//! (`_IOC(dir, 0xAA, nr, size)`); the `const` assertions pin them.

use crate::{last_os, Error, Pid, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// userfaultfd(2) flag: only faults from user mode go to the userfaultfd;
/// a kernel access of a registered, unresolved page fails (EFAULT).
pub const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_API: u64 = 0xAA;

/// Features (uffdio_api.features).
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;

/// ioctl numbers.
pub const UFFDIO_API: u64 = 0xC018_AA3F;
pub const UFFDIO_REGISTER: u64 = 0xC020_AA00;
pub const UFFDIO_UNREGISTER: u64 = 0x8010_AA01;
pub const UFFDIO_WAKE: u64 = 0x8010_AA02;
pub const UFFDIO_COPY: u64 = 0xC028_AA03;
pub const UFFDIO_ZEROPAGE: u64 = 0xC020_AA04;
pub const UFFDIO_MOVE: u64 = 0xC028_AA05;
pub const UFFDIO_WRITEPROTECT: u64 = 0xC018_AA06;

/// Register modes.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
pub const UFFDIO_REGISTER_MODE_WP: u64 = 2;

/// UFFDIO_COPY_MODE_DONTWAKE: do not wake threads waiting on the range.
pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1;
pub const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 2;

/// Message kinds (uffd_msg.event).
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_FORK: u8 = 0x13;
pub const UFFD_EVENT_REMAP: u8 = 0x14;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
pub const UFFD_EVENT_UNMAP: u8 = 0x16;
/// Page fault flags (`msg.arg[0]` of a PAGEFAULT).
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1;
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 2;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// struct uffd_msg: the event, then a 24-byte union, as three u64:
/// PAGEFAULT `[flags, address, ptid]`, FORK `[ufd, -, -]`, REMAP
/// `[from, to, len]`, REMOVE / UNMAP `[start, end, -]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UffdMsg {
    pub event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    pub arg: [u64; 3],
}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<UffdioApi>() == 24);
    assert!(size_of::<UffdioRange>() == 16);
    assert!(size_of::<UffdioRegister>() == 32);
    assert!(size_of::<UffdioCopy>() == 40);
    assert!(size_of::<UffdioZeropage>() == 32);
    assert!(size_of::<UffdioWriteprotect>() == 24);
    assert!(size_of::<UffdMsg>() == 32);
};

/// ioctl `req` on `fd` with the struct `arg`.
///
/// # Safety
///
/// `T` must be the struct (size and layout) request `req` reads and
/// writes; any pointer inside it must be valid for what the request does
/// with it for the duration of the call.
unsafe fn ioctl<T>(fd: RawFd, req: u64, arg: &mut T, op: &'static str, pid: Pid) -> Result<()> {
    // SAFETY: `arg` is a live, exclusive `T`, which the caller guarantees
    // is what `req` expects.
    let r = unsafe { libc::ioctl(fd, req as libc::c_ulong, arg as *mut T) };
    if r < 0 {
        return Err(last_os(op, pid));
    }
    Ok(())
}

/// A userfaultfd: ours, or a duplicate of one made in process `pid` (the
/// process whose memory it acts on; 0: this one). Close-on-exec.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    pid: Pid,
}

impl Uffd {
    /// Take ownership of a userfaultfd of process `pid`'s memory.
    pub fn from_fd(fd: OwnedFd, pid: Pid) -> Uffd {
        Uffd { fd, pid }
    }

    /// userfaultfd(2) in this process (`flags`: O_CLOEXEC, O_NONBLOCK,
    /// [`UFFD_USER_MODE_ONLY`]).
    pub fn new_local(flags: u64) -> Result<Uffd> {
        // SAFETY: integer arguments only.
        let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if r < 0 {
            return Err(last_os("userfaultfd", 0));
        }
        // SAFETY: a fresh fd owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(r as i32) };
        Ok(Uffd { fd, pid: 0 })
    }

    /// The process whose memory this acts on (0: this one).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// UFFDIO_API asking for `features`: the features the kernel supports
    /// (all it knows, on success). Fails with EINVAL when one is unknown.
    pub fn api(&self, features: u64) -> Result<u64> {
        let mut a = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: uffdio_api is what UFFDIO_API takes; no pointers.
        unsafe {
            ioctl(
                self.as_raw_fd(),
                UFFDIO_API,
                &mut a,
                "ioctl(UFFDIO_API)",
                self.pid,
            )
        }?;
        Ok(a.features)
    }

    /// UFFDIO_REGISTER of `[start, start + len)` with `mode`.
    pub fn register(&self, start: u64, len: u64, mode: u64) -> Result<()> {
        let mut r = UffdioRegister {
            range: UffdioRange { start, len },
            mode,
            ioctls: 0,
        };
        // SAFETY: uffdio_register is what UFFDIO_REGISTER takes; the range
        // is an address of the target, checked by the kernel.
        unsafe {
            ioctl(
                self.as_raw_fd(),
                UFFDIO_REGISTER,
                &mut r,
                "ioctl(UFFDIO_REGISTER)",
                self.pid,
            )
        }
    }

    /// UFFDIO_UNREGISTER (threads waiting on the range are woken).
    pub fn unregister(&self, start: u64, len: u64) -> Result<()> {
        let mut r = UffdioRange { start, len };
        // SAFETY: uffdio_range is what UFFDIO_UNREGISTER takes.
        unsafe {
            ioctl(
                self.as_raw_fd(),
                UFFDIO_UNREGISTER,
                &mut r,
                "ioctl(UFFDIO_UNREGISTER)",
                self.pid,
            )
        }
    }

    /// UFFDIO_WAKE: wake the threads waiting on a fault in the range.
    pub fn wake(&self, start: u64, len: u64) -> Result<()> {
        let mut r = UffdioRange { start, len };
        // SAFETY: uffdio_range is what UFFDIO_WAKE takes.
        unsafe {
            ioctl(
                self.as_raw_fd(),
                UFFDIO_WAKE,
                &mut r,
                "ioctl(UFFDIO_WAKE)",
                self.pid,
            )
        }
    }

    /// UFFDIO_WRITEPROTECT: `protect` true write-protects the range, false
    /// lifts the protection and wakes the threads waiting on it. EAGAIN
    /// while a mapping-change event is unread; ENOENT where nothing is
    /// registered (unmapped meanwhile).
    pub fn writeprotect(&self, start: u64, len: u64, protect: bool) -> Result<()> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange { start, len },
            mode: u64::from(protect),
        };
        // SAFETY: uffdio_writeprotect is what UFFDIO_WRITEPROTECT takes.
        unsafe {
            ioctl(
                self.as_raw_fd(),
                UFFDIO_WRITEPROTECT,
                &mut w,
                "ioctl(UFFDIO_WRITEPROTECT)",
                self.pid,
            )
        }
    }

    /// UFFDIO_COPY of `src` to `dst` (page-aligned, registered for missing
    /// pages). Returns the bytes copied (the kernel may copy part of it,
    /// even on failure) and the result: EEXIST when the first page is
    /// there already, EAGAIN when mappings are changing (retry the rest).
    pub fn copy(&self, dst: u64, src: &[u8], mode: u64) -> (u64, Result<()>) {
        uffd_copy_pid(self.as_raw_fd(), self.pid, dst, src, mode)
    }

    /// UFFDIO_ZEROPAGE of `[start, start + len)`: maps zero pages; same
    /// results as [`Uffd::copy`].
    pub fn zeropage(&self, start: u64, len: u64) -> (u64, Result<()>) {
        let mut z = UffdioZeropage {
            range: UffdioRange { start, len },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: uffdio_zeropage is what UFFDIO_ZEROPAGE takes.
        let r = unsafe {
            ioctl(
                self.as_raw_fd(),
                UFFDIO_ZEROPAGE,
                &mut z,
                "ioctl(UFFDIO_ZEROPAGE)",
                self.pid,
            )
        };
        (z.zeropage.max(0) as u64, r)
    }

    /// Read the pending messages without blocking (the fd is O_NONBLOCK):
    /// how many were read into `out` (0 when none).
    pub fn read_msgs(&self, out: &mut [UffdMsg]) -> Result<usize> {
        let bytes = std::mem::size_of_val(out);
        // SAFETY: `out` is a writable buffer of `bytes` bytes; a uffd_msg
        // is plain integers (any bytes are a valid value).
        let r = unsafe { libc::read(self.as_raw_fd(), out.as_mut_ptr().cast(), bytes) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(0);
            }
            return Err(Error::Os {
                op: "read of the userfaultfd",
                tid: self.pid,
                source: e,
            });
        }
        Ok(r as usize / std::mem::size_of::<UffdMsg>())
    }

    /// Wait until a message is pending or `timeout_ms` passed: true when
    /// one is.
    pub fn poll(&self, timeout_ms: i32) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let t = PollTimeout::try_from(timeout_ms.max(0)).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, t) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(crate::os_errno(
                "poll of the userfaultfd",
                self.pid,
                e as i32,
            )),
        }
    }
}

/// Wakes a thread waiting in [`Uffd::poll_or_wake`] (an eventfd), so that
/// a handler thread can wait long for faults and still stop at once.
#[derive(Debug)]
pub struct Waker(nix::sys::eventfd::EventFd);

impl Waker {
    pub fn new() -> Result<Waker> {
        let fd = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| crate::os_errno("eventfd for a userfaultfd handler", 0, e as i32))?;
        Ok(Waker(fd))
    }

    /// Wake the waiter (now, or at its next wait: the wake stays).
    pub fn wake(&self) {
        let _ = self.0.write(1);
    }
}

impl Uffd {
    /// Wait up to `timeout_ms` for a message or for `waker`: whether the
    /// userfaultfd is readable (false on a wake or a timeout).
    pub fn poll_or_wake(&self, waker: &Waker, timeout_ms: i32) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [
            PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(waker.0.as_fd(), PollFlags::POLLIN),
        ];
        let t = PollTimeout::try_from(timeout_ms.max(0)).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, t) {
            Ok(_) => Ok(fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(crate::os_errno(
                "poll of the userfaultfd",
                self.pid,
                e as i32,
            )),
        }
    }

    /// The userfaultfd of a child announced by a UFFD_EVENT_FORK message
    /// read from a userfaultfd of ours (the kernel put it in our fd table
    /// for us); `pid` names the child's process in errors when known.
    pub fn from_fork_event(msg: &UffdMsg, pid: Pid) -> Option<Uffd> {
        if msg.event != UFFD_EVENT_FORK {
            return None;
        }
        let fd = msg.arg[0] as u32 as i32;
        if fd < 0 {
            return None;
        }
        // SAFETY: for a FORK message the kernel installed this new fd in
        // this process's table (as part of the read that returned `msg`);
        // nothing else refers to it, so we own it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Uffd { fd, pid })
    }
}

/// Wait until one of `uffds` has a message pending or `timeout_ms` passed:
/// for each, whether it has (or failed: gone).
pub fn poll_many(uffds: &[&Uffd], timeout_ms: i32) -> Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = uffds
        .iter()
        .map(|u| PollFd::new(u.fd.as_fd(), PollFlags::POLLIN))
        .collect();
    let t = PollTimeout::try_from(timeout_ms.max(0)).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(&mut fds, t) {
        Ok(_) => Ok(fds
            .iter()
            .map(|f| {
                f.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
                })
            })
            .collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![false; uffds.len()]),
        Err(e) => Err(crate::os_errno("poll of userfaultfds", 0, e as i32)),
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for Uffd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn uffd_copy_pid(fd: RawFd, pid: Pid, dst: u64, src: &[u8], mode: u64) -> (u64, Result<()>) {
    let mut c = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode,
        copy: 0,
    };
    // SAFETY: uffdio_copy is what UFFDIO_COPY takes; its source range is
    // `src`, a live slice the kernel only reads during the call; `dst` is
    // in the userfaultfd's address space, validated by the kernel.
    let r = unsafe { ioctl(fd, UFFDIO_COPY, &mut c, "ioctl(UFFDIO_COPY)", pid) };
    (c.copy.max(0) as u64, r)
}

/// ioctl(UFFDIO_COPY) on userfaultfd `fd`: copy `src` to `dst` in the
/// address space the userfaultfd belongs to (`dst` and the length
/// page-aligned, the range registered with it). Returns the bytes copied
/// (the kernel may copy part of it, even on failure) and the result of the
/// call (EAGAIN: try the rest again).
pub fn uffd_copy(fd: impl AsRawFd, dst: u64, src: &[u8], mode: u64) -> (u64, Result<()>) {
    uffd_copy_pid(fd.as_raw_fd(), 0, dst, src, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own userfaultfd: write-protect a page of ours, read the fault
    /// of a write to it from another thread, lift the protection.
    #[test]
    fn write_protect_fault_round_trip() {
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let u = match Uffd::new_local(flags) {
            Ok(u) => u,
            // Without CAP_SYS_PTRACE (or the sysctl) a user-mode-only one.
            Err(_) => Uffd::new_local(flags | UFFD_USER_MODE_ONLY).expect("userfaultfd"),
        };
        let got = u.api(0).expect("UFFDIO_API");
        assert!(got & UFFD_FEATURE_EVENT_REMAP != 0, "features {got:#x}");
        let page = crate::mm::page_size() as usize;
        let mut buf = vec![0u8; 3 * page];
        let addr = (buf.as_mut_ptr() as usize).next_multiple_of(page) as u64;
        // SAFETY: `addr` is inside `buf`, page-aligned, one page left after it.
        unsafe { std::ptr::write_volatile(addr as *mut u8, 1) };
        u.register(addr, page as u64, UFFDIO_REGISTER_MODE_WP)
            .expect("register");
        u.writeprotect(addr, page as u64, true).expect("protect");
        let a = addr as usize;
        let writer = std::thread::spawn(move || {
            // SAFETY: the page is ours and mapped for the whole test.
            unsafe { std::ptr::write_volatile(a as *mut u8, 2) };
        });
        let mut msgs = [UffdMsg::default(); 4];
        let mut n = 0;
        for _ in 0..500 {
            if u.poll(10).unwrap() {
                n = u.read_msgs(&mut msgs).unwrap();
                if n > 0 {
                    break;
                }
            }
        }
        assert_eq!(n, 1);
        assert_eq!(msgs[0].event, UFFD_EVENT_PAGEFAULT);
        assert_eq!(msgs[0].arg[1] & !(page as u64 - 1), addr);
        assert!(msgs[0].arg[0] & UFFD_PAGEFAULT_FLAG_WP != 0);
        u.writeprotect(addr, page as u64, false).expect("unprotect");
        writer.join().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { std::ptr::read_volatile(addr as *const u8) }, 2);
        u.unregister(addr, page as u64).unwrap();
        drop(buf);
    }
}

/// `len` bytes at `orig` (an address at the time tracking began) are now
/// at `cur`: how a userfaultfd reader follows mremap()s of the process
/// (UFFD_EVENT_REMAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub orig: u64,
    pub cur: u64,
    pub len: u64,
}

/// `segs` after a UFFD_EVENT_REMAP of `len` bytes from `from` to `to`: the
/// parts inside the moved range follow it, the rest stay.
pub fn remap(segs: &[Seg], from: u64, to: u64, len: u64) -> Vec<Seg> {
    let mut out = Vec::with_capacity(segs.len() + 2);
    for s in segs {
        let (a, b) = (s.cur.max(from), (s.cur + s.len).min(from + len));
        if a >= b {
            out.push(*s);
            continue;
        }
        if s.cur < a {
            out.push(Seg {
                len: a - s.cur,
                ..*s
            });
        }
        out.push(Seg {
            orig: s.orig + (a - s.cur),
            cur: to + (a - from),
            len: b - a,
        });
        if b < s.cur + s.len {
            out.push(Seg {
                orig: s.orig + (b - s.cur),
                cur: b,
                len: s.cur + s.len - b,
            });
        }
    }
    out
}

#[cfg(test)]
mod remap_tests {
    use super::*;

    #[test]
    fn the_moved_middle_follows_the_remap() {
        let s = |orig, cur, len| Seg { orig, cur, len };
        let got = remap(&[s(0x1000, 0x1000, 0x4000)], 0x2000, 0x9000, 0x1000);
        assert_eq!(
            got,
            vec![
                s(0x1000, 0x1000, 0x1000),
                s(0x2000, 0x9000, 0x1000),
                s(0x3000, 0x3000, 0x2000)
            ]
        );
        // Outside the moved range: unchanged.
        assert_eq!(remap(&got[..1], 0x8000, 0xa000, 0x1000), got[..1].to_vec());
    }
}
