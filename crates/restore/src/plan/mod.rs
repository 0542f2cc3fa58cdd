//! The pure part of a restore: from the image, decide everything that can
//! be decided before touching the system. Unit-tested without processes.

pub mod fds;
pub mod memory;
pub mod regs;
