//! memfd: creation and seals.

use super::borrow;
use crate::{OsResult, Result};
use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::MFdFlags;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};

/// memfd_create(2).
pub fn memfd_create(name: &CStr, flags: u32) -> Result<OwnedFd> {
    nix::sys::memfd::memfd_create(name, MFdFlags::from_bits_retain(flags)).op("memfd_create")
}

/// fcntl(F_ADD_SEALS).
pub fn add_seals(fd: impl AsRawFd, seals: u32) -> Result<()> {
    const OP: &str = "fcntl(F_ADD_SEALS)";
    let fd = borrow(OP, fd)?;
    let arg = FcntlArg::F_ADD_SEALS(SealFlag::from_bits_retain(seals as libc::c_int));
    nix::fcntl::fcntl(&*fd, arg).op(OP).map(drop)
}

/// fcntl(F_GET_SEALS) of a memfd (or any shmem file).
pub fn get_seals(fd: impl AsRawFd) -> Result<u32> {
    const OP: &str = "fcntl(F_GET_SEALS)";
    let fd = borrow(OP, fd)?;
    let r = nix::fcntl::fcntl(&*fd, FcntlArg::F_GET_SEALS).op(OP)?;
    Ok(r as u32)
}
