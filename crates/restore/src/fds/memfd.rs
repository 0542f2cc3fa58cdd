//! memfds held by an fd: made again with their name, mode, size, contents
//! and seals. (A memfd only mapped is made by the mappings, mem/vmas.rs.)

use super::{cpath, Builder, FdOp};
use crate::stub::Child;
use ckpt_image::MemFd;
use ckpt_sys::fds::{memfd, regular};
use std::ffi::{CStr, CString};
use std::os::fd::IntoRawFd;

const F_SEAL_SEAL: u32 = 1;
const MFD_CLOEXEC: u32 = 1;
const MFD_ALLOW_SEALING: u32 = 2;
const MFD_HUGETLB: u32 = 4;
const MFD_HUGE_SHIFT: u32 = 26;

pub(super) fn plan(b: &mut Builder, g: usize, m: &MemFd) {
    let (what, flags) = (b.what(g), b.flags(g));
    if let Some(&made) = b.memfds.get(&m.id).filter(|_| m.id != 0) {
        // Another open of a memfd made already (opened again through
        // /proc): one memfd for both.
        let s = b.reopen(&what, made, flags);
        b.seek(&what, s, b.groups[g].file.position);
        b.slot_of[g] = Some(s);
        return;
    }
    let contents = if m.contents.size > 0 {
        match b.load(&m.contents) {
            Ok(c) => c,
            Err(e) => {
                b.error(format!("{what}: reading its saved contents: {e}"));
                return;
            }
        }
    } else {
        Vec::new()
    };
    let name = cpath(&m.name).unwrap_or_else(|| CString::new("ckpt").expect("no NUL"));
    let sealing = m.seals != F_SEAL_SEAL;
    let huge = if m.huge_page_size != 0 {
        MFD_HUGETLB | (m.huge_page_size.trailing_zeros() << MFD_HUGE_SHIFT)
    } else {
        0
    };
    let s = b.slot();
    b.memfds.insert(m.id, s);
    b.op(
        &what,
        FdOp::MemFd {
            slot: s,
            name,
            flags: MFD_CLOEXEC | huge | if sealing { MFD_ALLOW_SEALING } else { 0 },
            mode: m.mode & 0o7777,
            size: m.size,
            contents,
            seals: if sealing { m.seals } else { 0 },
        },
    );
    let s = b.reopen_unless_rdwr(&what, s, flags);
    b.seek(&what, s, b.groups[g].file.position);
    b.slot_of[g] = Some(s);
}

/// FdOp::MemFd: `[flags, mode, seals]` of memfd_create, fchmod, F_ADD_SEALS.
pub(super) fn make(
    c: &mut Child<'_>,
    slot: usize,
    name: &CStr,
    [flags, mode, seals]: [u32; 3],
    size: u64,
    contents: &[u8],
) -> ckpt_sys::Result<()> {
    let fd = c.new_fd(slot, memfd::memfd_create(name, flags)?.into_raw_fd())?;
    if mode != 0 {
        regular::fchmod(fd, mode)?;
    }
    regular::ftruncate(fd, size)?;
    let n = contents.len().min(size as usize);
    if flags & MFD_HUGETLB != 0 {
        // hugetlbfs has no write(2): through a mapping.
        memfd::write_hugetlb(fd, &contents[..n], 1 << (flags >> MFD_HUGE_SHIFT))?;
    } else {
        regular::pwrite_all(fd, &contents[..n], 0)?;
    }
    if seals != 0 {
        memfd::add_seals(fd, seals)?;
    }
    Ok(())
}
