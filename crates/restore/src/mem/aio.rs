//! AIO rings (io_setup): a new context is made in the process with the
//! number of events that gives a ring of the saved size, its kernel-side
//! tail brought to the saved one by requests that complete at once (one
//! byte written to /dev/null each, the ring's head moved along so that it
//! never fills), its head set to the saved one, and its ring moved to the
//! saved address (the context's id is its ring's address). The saved
//! events are written over it with the other pages, past the header, which
//! stays the new context's own.

use super::vmas::MapStep;
use crate::error::{Error, Result};
use crate::remote::Remote;
use ckpt_image::AioRing;

/// The kernel's ring header (struct aio_ring), left alone by page writes.
pub(crate) const HEADER_LEN: u64 = 32;
/// Where the head is in the header.
const HEAD_AT: u64 = 8;
/// IOCB_CMD_PWRITE.
const IOCB_CMD_PWRITE: u16 = 1;
/// Requests submitted at most per io_submit.
const CHUNK: u64 = 512;

use super::layout::{MREMAP_FIXED, MREMAP_MAYMOVE};

/// The io_setup() argument that gives a ring of `nr` events: the kernel
/// doubles what it is asked (after raising it to 4 per possible CPU) and
/// adds 2, then rounds the ring up to whole pages.
pub(crate) fn nr_events_for(nr: u32) -> u32 {
    (nr.saturating_sub(2) / 2).max(1)
}

/// Make the ring of step `s` (see the module's doc); `scratch` is free
/// memory of the process (4 KiB are used).
pub(crate) fn make_ring(main: &mut Remote, s: &MapStep, ring: AioRing, scratch: u64) -> Result<()> {
    main.write(scratch, &0u64.to_ne_bytes())?;
    let want = nr_events_for(ring.nr);
    main.call(
        &format!("io_setup({want}) for {}", s.what),
        libc::SYS_io_setup,
        &[u64::from(want), scratch],
    )?;
    let ctx = u64::from_ne_bytes(main.read(scratch, 8)?.try_into().expect("8 bytes"));
    let made = fill(main, s, ring, ctx, scratch);
    if made.is_err() {
        let _ = main.raw("io_destroy", libc::SYS_io_destroy, &[ctx]);
    }
    made
}

/// The new context `ctx`: checked, its tail and head moved, its ring moved.
fn fill(main: &mut Remote, s: &MapStep, ring: AioRing, ctx: u64, scratch: u64) -> Result<()> {
    let header = main.read(ctx, HEADER_LEN as usize)?;
    let nr = u32::from_ne_bytes(header[4..8].try_into().expect("4 bytes"));
    if nr != ring.nr {
        return Err(Error::Stub {
            pid: main.tid,
            what: format!(
                "{}: the kernel made an AIO ring of {nr} events here (io_setup({})), the saved one had {}",
                s.what,
                nr_events_for(ring.nr),
                ring.nr
            ),
        });
    }
    if ring.head != 0 || ring.tail != 0 {
        advance(main, s, ring, ctx, scratch)?;
    }
    let at = main.call(
        &format!("mremap of the new AIO ring to {}", s.what),
        libc::SYS_mremap,
        &[ctx, s.len, s.len, MREMAP_MAYMOVE | MREMAP_FIXED, s.start],
    )?;
    if at != s.start {
        return Err(Error::Stub {
            pid: main.tid,
            what: format!("{}: the AIO ring was moved to {at:#x}", s.what),
        });
    }
    Ok(())
}

/// Bring the kernel's tail of `ctx` to the saved one (once round the ring
/// when the saved tail is behind the head, so that the kernel counts the
/// events as the saved context did), then set the saved head.
fn advance(main: &mut Remote, s: &MapStep, ring: AioRing, ctx: u64, scratch: u64) -> Result<()> {
    let fd = main.open(
        &format!("open of /dev/null to move the tail of {}", s.what),
        scratch + 64,
        b"/dev/null",
        libc::O_WRONLY | libc::O_CLOEXEC,
    )?;
    let done = submit_all(main, s, ring, (ctx, fd), scratch);
    let _ = main.raw("close", libc::SYS_close, &[fd]);
    done
}

/// The requests of [`advance`] on /dev/null at `fd`.
fn submit_all(
    main: &mut Remote,
    s: &MapStep,
    ring: AioRing,
    (ctx, fd): (u64, u64),
    scratch: u64,
) -> Result<()> {
    let (iocb, buf, ptrs) = (scratch, scratch + 128, scratch + 256);
    main.write(iocb, &pwrite_iocb(fd, buf))?;
    let count = u64::from(if ring.tail < ring.head {
        ring.nr + ring.tail
    } else {
        ring.tail
    });
    let most = count.min(u64::from(ring.nr) - 1).clamp(1, CHUNK);
    let table: Vec<u8> = (0..most).flat_map(|_| iocb.to_ne_bytes()).collect();
    main.write(ptrs, &table)?;
    let mut submitted = 0u64;
    while submitted < count {
        let n = (count - submitted).min(most);
        let r = main.call(
            &format!("io_submit of {n} writes to /dev/null for {}", s.what),
            libc::SYS_io_submit,
            &[ctx, n, ptrs],
        )?;
        if r == 0 {
            return Err(Error::Stub {
                pid: main.tid,
                what: format!("{}: io_submit took no request", s.what),
            });
        }
        submitted += r;
        // The events taken (the kernel reads the head from the ring).
        let head = submitted.min(u64::from(ring.head)) as u32;
        main.write(ctx + HEAD_AT, &head.to_ne_bytes())?;
    }
    Ok(())
}

/// A struct iocb: write one byte from `buf` to `fd`.
fn pwrite_iocb(fd: u64, buf: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[16..18].copy_from_slice(&IOCB_CMD_PWRITE.to_ne_bytes());
    b[20..24].copy_from_slice(&(fd as u32).to_ne_bytes());
    b[24..32].copy_from_slice(&buf.to_ne_bytes());
    b[32..40].copy_from_slice(&1u64.to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_setup_argument_gives_the_ring_back() {
        // What the kernel does with io_setup(n) on a machine of `cpus`
        // possible CPUs, 4 KiB pages: the ring's event slots.
        let ring = |n: u32, cpus: u32| {
            let events = n.max(cpus * 4) * 2 + 2;
            let bytes = 32 + u64::from(events) * 32;
            ((bytes.div_ceil(4096) * 4096 - 32) / 32) as u32
        };
        for n in [1, 64, 100, 1000, 5000] {
            let nr = ring(n, 2);
            assert_eq!(ring(nr_events_for(nr), 2), nr, "io_setup({n})");
        }
    }
}
