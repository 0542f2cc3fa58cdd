//! eventfd.

use crate::{OsResult, Result};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::OwnedFd;

/// eventfd(2) with count 0 (add the count with a write of 8 bytes).
pub fn eventfd(flags: i32) -> Result<OwnedFd> {
    let e = EventFd::from_value_and_flags(0, EfdFlags::from_bits_retain(flags)).op("eventfd")?;
    Ok(e.into())
}
