//! Restartable sequences: a thread's rseq registration
//! (PTRACE_GET_RSEQ_CONFIGURATION, by hand: nix lacks it).

use crate::ptrace::ptrace_raw;
use crate::{Pid, Result};

const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

/// rseq registration of a thread: (address, length, signature, flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub address: u64,
    pub length: u32,
    pub signature: u32,
    pub flags: u32,
}

/// The rseq registration of a stopped, traced thread (address 0: none).
pub fn get_rseq(tid: Pid) -> Result<RseqConfig> {
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        ptr: u64,
        size: u32,
        sig: u32,
        flags: u32,
        pad: u32,
    }
    let mut c = Conf::default();
    let p = &mut c as *mut Conf as usize;
    // SAFETY: the request writes at most `addr` bytes (the size of Conf,
    // which has the layout of struct ptrace_rseq_configuration) at `data`,
    // a live local.
    unsafe {
        ptrace_raw(
            "PTRACE_GET_RSEQ_CONFIGURATION",
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<Conf>(),
            p,
        )
    }?;
    Ok(RseqConfig {
        address: c.ptr,
        length: c.size,
        signature: c.sig,
        flags: c.flags,
    })
}
