//! The XSAVE area of a thread (the NT_X86_XSTATE register set, by hand:
//! nix's register sets are the fixed-size NT_PRSTATUS and NT_PRFPREG), and
//! what this CPU's XSAVE holds.

use super::ptrace_raw;
use crate::{Pid, Result};

const NT_X86_XSTATE: usize = 0x202;

/// The XSAVE area (NT_X86_XSTATE).
pub fn get_xstate(tid: Pid) -> Result<Vec<u8>> {
    // The size CPUID tells, with room to spare (so that a full buffer
    // means a cut answer: then asked again with the most there can be).
    let len = (xsave_info().1 as usize + 64).clamp(1024, MAX_XSTATE);
    let x = get_xstate_max(tid, len)?;
    if x.len() < len || len == MAX_XSTATE {
        return Ok(x);
    }
    get_xstate_max(tid, MAX_XSTATE)
}

/// The largest XSAVE area asked for.
const MAX_XSTATE: usize = 64 * 1024;

/// NT_X86_XSTATE into a buffer of `len` bytes (the answer is cut there).
fn get_xstate_max(tid: Pid, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let p = &mut iov as *mut libc::iovec as usize;
    // SAFETY: PTRACE_GETREGSET reads and updates the iovec at `data`, a
    // live local, and writes at most iov_len bytes at iov_base, which is
    // `buf`, alive and that long.
    unsafe {
        ptrace_raw(
            "PTRACE_GETREGSET(NT_X86_XSTATE)",
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE,
            p,
        )
    }?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Load an XSAVE area (NT_X86_XSTATE).
pub fn set_xstate(tid: Pid, xstate: &[u8]) -> Result<()> {
    let mut b = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    };
    let p = &mut iov as *mut libc::iovec as usize;
    // SAFETY: PTRACE_SETREGSET reads the iovec at `data`, a live local, and
    // at most iov_len bytes at iov_base, which is `b`, alive and that long.
    unsafe {
        ptrace_raw(
            "PTRACE_SETREGSET(NT_X86_XSTATE)",
            libc::PTRACE_SETREGSET,
            tid,
            NT_X86_XSTATE,
            p,
        )
    }
    .map(drop)
}

/// The size of the XSAVE area for the features enabled by the OS, and XCR0
/// itself, from CPUID leaf 0xD (x86_64): (XCR0, size).
pub fn xsave_info() -> (u64, u32) {
    // CPUID traps to the hypervisor in a virtual machine (microseconds
    // each), and the answer does not change while we run: asked once.
    static INFO: std::sync::OnceLock<(u64, u32)> = std::sync::OnceLock::new();
    *INFO.get_or_init(read_xsave_info)
}

fn read_xsave_info() -> (u64, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 0xD, sub-leaf 0: EBX = XSAVE area size for the
        // currently enabled XCR0.
        let leaf = std::arch::x86_64::__cpuid_count(0xd, 0);
        let xcr0 = xgetbv0();
        (xcr0, leaf.ebx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0, 0)
    }
}

#[cfg(target_arch = "x86_64")]
fn xgetbv0() -> u64 {
    let l1 = std::arch::x86_64::__cpuid(1);
    if l1.ecx & (1 << 27) == 0 {
        return 0;
    }
    // SAFETY: XGETBV only faults when OSXSAVE is clear, checked above;
    // it touches no memory.
    unsafe {
        let eax: u32;
        let edx: u32;
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") edx, options(nomem, nostack, preserves_flags));
        (u64::from(edx) << 32) | u64::from(eax)
    }
}
