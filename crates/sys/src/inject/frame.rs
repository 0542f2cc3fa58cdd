//! A signal frame that gives a thread its own state back if its tracer
//! vanishes while system calls are injected into it.
//!
//! The frame is what `rt_sigreturn` reads (x86_64 `struct rt_sigframe`):
//! a `struct ucontext` holding the thread's registers and signal mask,
//! whose `fpstate` points at its XSAVE area, all written on the thread's
//! own stack below the red zone. The injected calls run with the stack
//! pointer just above the frame's return slot and return to an
//! `rt_sigreturn` instruction sequence of the process (libc's signal
//! restorer): if the tracer dies at any instant, the thread finishes the
//! call it is in, executes `rt_sigreturn`, and is back where it was, with
//! its registers, mask and FPU state.
//!
//! `rt_sigreturn` forgets the restart of an interrupted system call (it
//! makes the kernel's restart block return EINTR and clears `orig_rax`),
//! so the frame holds the registers with the restart already applied: a
//! thread stopped inside an interrupted call re-executes it from the
//! start, as the kernel itself would for every restartable call.

use crate::ptrace::{reg, Regs};

/// `mov $15, %rax; syscall` and `mov $15, %eax; syscall`: rt_sigreturn, as
/// the signal restorers of glibc, musl and Go have it.
const SIGRETURN_CODES: [&[u8]; 2] = [
    &[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
    &[0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
];

/// Offset of the first `rt_sigreturn` sequence in `code`.
pub fn find_sigreturn(code: &[u8]) -> Option<usize> {
    SIGRETURN_CODES
        .iter()
        .filter_map(|pat| code.windows(pat.len()).position(|w| w == *pat))
        .min()
}

/// Bytes below the stack pointer the ABI lets a leaf function use.
const RED_ZONE: u64 = 128;
/// Room for the injected calls' arguments and results, below the frame.
pub const SCRATCH_LEN: u64 = 1024;
/// `struct rt_sigframe` up to its siginfo: the return slot (8) and the
/// `struct ucontext` (304).
const UC_OFFSET: u64 = 8;
const UC_LEN: u64 = 304;
/// And its siginfo (unused by rt_sigreturn).
const FRAME_LEN: u64 = UC_OFFSET + UC_LEN + 128;
/// `struct ucontext`: uc_flags, uc_link, uc_stack (24), uc_mcontext (256),
/// uc_sigmask.
const UC_STACK: usize = 16;
const UC_MCONTEXT: usize = 40;
const UC_SIGMASK: usize = 296;
/// uc_flags: the frame has XSAVE state; take its SS as is.
const UC_FP_XSTATE: u64 = 1;
const UC_SIGCONTEXT_SS: u64 = 2;
const UC_STRICT_RESTORE_SS: u64 = 4;
/// The XSAVE software area (`struct _fpx_sw_bytes`) in the legacy area.
const SW_BYTES: usize = 464;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// Where a frame for a thread whose stack pointer is `rsp` goes: the whole
/// region it occupies, [start, end), for an XSAVE area of `xstate_len`
/// bytes.
pub fn region(rsp: u64, xstate_len: usize) -> (u64, u64) {
    let l = Layout::new(rsp, xstate_len);
    (l.scratch, l.end)
}

/// Addresses of the parts of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Start of the scratch area (the lowest address used).
    pub scratch: u64,
    /// The return slot of `struct rt_sigframe`; the ucontext follows.
    pub frame: u64,
    /// The XSAVE area, 64-byte aligned.
    pub fpstate: u64,
    /// End of the region (the bottom of the red zone).
    pub end: u64,
}

impl Layout {
    pub fn new(rsp: u64, xstate_len: usize) -> Layout {
        let end = rsp.wrapping_sub(RED_ZONE) & !15;
        let fp_len = xstate_len as u64 + 4;
        let fpstate = end.wrapping_sub(fp_len) & !63;
        let frame = fpstate.wrapping_sub(FRAME_LEN) & !15;
        let scratch = frame.wrapping_sub(SCRATCH_LEN) & !15;
        Layout {
            scratch,
            frame,
            fpstate,
            end,
        }
    }

    /// The stack pointer for `rt_sigreturn` (just above the return slot).
    pub fn sigreturn_sp(&self) -> u64 {
        self.frame + UC_OFFSET
    }
}

/// The registers a thread goes on with after `rt_sigreturn`: `regs`, with
/// the restart of an interrupted system call applied (the call is
/// executed again).
fn restarted(regs: &Regs) -> Regs {
    let mut r = *regs;
    if (r[reg::ORIG_RAX] as i64) >= 0 {
        let rax = r[reg::RAX] as i64;
        if matches!(
            rax,
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
        ) {
            r[reg::RAX] = r[reg::ORIG_RAX];
            r[reg::RIP] = r[reg::RIP].wrapping_sub(2);
        }
    }
    r
}

/// The bytes of the region of `l` (from `l.scratch` to `l.end`): the
/// frame giving back `regs`, `mask` and `xstate`.
pub(crate) fn build(l: &Layout, regs: &Regs, mask: u64, xstate: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; (l.end - l.scratch) as usize];
    let at = |addr: u64| (addr - l.scratch) as usize;
    let put =
        |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    let uc = at(l.frame + UC_OFFSET);
    put(
        &mut b,
        uc,
        UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
    );
    // uc_stack: flags the kernel refuses (EINVAL, which rt_sigreturn
    // ignores), so that the thread's alternate stack is left alone.
    put(&mut b, uc + UC_STACK + 8, 0x7);
    let r = restarted(regs);
    let sc = uc + UC_MCONTEXT;
    // struct sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp,
    // rip, eflags, cs/gs/fs/ss, err, trapno, oldmask, cr2, fpstate.
    let order = [
        9, 8, 7, 6, 3, 2, 1, 0, // r8 r9 r10 r11 r12 r13 r14 r15
        14, 13, 4, 5, 12, 10, 11, 19, 16, 18, // rdi rsi rbp rbx rdx rax rcx rsp rip eflags
    ];
    for (i, &idx) in order.iter().enumerate() {
        put(&mut b, sc + i * 8, r[idx]);
    }
    let segs =
        (r[17] & 0xffff) | (r[26] & 0xffff) << 16 | (r[25] & 0xffff) << 32 | (r[20] & 0xffff) << 48;
    put(&mut b, sc + 18 * 8, segs);
    put(&mut b, sc + 21 * 8, mask);
    put(&mut b, sc + 23 * 8, l.fpstate);
    put(&mut b, uc + UC_SIGMASK, mask);
    let fp = at(l.fpstate);
    b[fp..fp + xstate.len()].copy_from_slice(xstate);
    // The XSAVE size the kernel expects the area to have (ptrace gives
    // the software bytes of its own), then the second magic right after.
    let magic1 = u32::from_ne_bytes(
        xstate
            .get(SW_BYTES..SW_BYTES + 4)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0; 4]),
    );
    if magic1 == FP_XSTATE_MAGIC1 {
        let size = u32::from_ne_bytes(
            xstate[SW_BYTES + 16..SW_BYTES + 20]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        if size <= xstate.len() {
            b[fp + size..fp + size + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_ne_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sigreturn_sequences() {
        let mut code = vec![0x90u8; 64];
        assert_eq!(find_sigreturn(&code), None);
        code[40..47].copy_from_slice(SIGRETURN_CODES[1]);
        assert_eq!(find_sigreturn(&code), Some(40));
        code[10..19].copy_from_slice(SIGRETURN_CODES[0]);
        assert_eq!(find_sigreturn(&code), Some(10));
    }

    #[test]
    fn layout_is_aligned_and_below_the_red_zone() {
        let l = Layout::new(0x7fff_0000_1238, 2696);
        assert_eq!(l.fpstate % 64, 0);
        assert!(l.fpstate + 2696 + 4 <= l.end);
        assert!(l.end <= 0x7fff_0000_1238 - RED_ZONE);
        assert!(l.frame + FRAME_LEN <= l.fpstate);
        assert_eq!(l.scratch + SCRATCH_LEN, l.frame);
        assert_eq!(region(0x7fff_0000_1238, 2696), (l.scratch, l.end));
    }

    #[test]
    fn frame_holds_the_restarted_registers() {
        let mut regs: Regs = [0; 27];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = 0x1000 + i as u64;
        }
        regs[reg::ORIG_RAX] = 35; // nanosleep
        regs[reg::RAX] = ERESTART_RESTARTBLOCK as u64;
        regs[reg::RIP] = 0x40_1002;
        let mut xs = vec![0u8; 1024];
        xs[SW_BYTES..SW_BYTES + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_ne_bytes());
        xs[SW_BYTES + 16..SW_BYTES + 20].copy_from_slice(&1000u32.to_ne_bytes());
        let l = Layout::new(0x7000_0000, xs.len());
        let b = build(&l, &regs, 0xabc, &xs);
        let word = |addr: u64| {
            let o = (addr - l.scratch) as usize;
            u64::from_ne_bytes(b[o..o + 8].try_into().unwrap())
        };
        let sc = l.frame + UC_OFFSET + UC_MCONTEXT as u64;
        assert_eq!(word(sc), regs[9]); // r8
        assert_eq!(word(sc + 13 * 8), 35); // rax: the call again
        assert_eq!(word(sc + 16 * 8), 0x40_1000); // rip: at the syscall instruction
        assert_eq!(word(sc + 15 * 8), regs[reg::RSP]);
        assert_eq!(word(sc + 23 * 8), l.fpstate);
        assert_eq!(word(l.frame + UC_OFFSET + UC_SIGMASK as u64), 0xabc);
        let m2 = (l.fpstate + 1000 - l.scratch) as usize;
        assert_eq!(&b[m2..m2 + 4], &FP_XSTATE_MAGIC2.to_ne_bytes());
        // Not in a system call: as is.
        regs[reg::ORIG_RAX] = u64::MAX;
        assert_eq!(restarted(&regs), regs);
    }
}
