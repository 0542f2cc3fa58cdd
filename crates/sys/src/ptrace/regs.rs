//! General registers (PTRACE_GETREGS / PTRACE_SETREGS, on nix).

use crate::{nix_pid, OsResult, Pid, Result};
use libc::user_regs_struct;

/// The 27 general registers of `struct user_regs_struct`, in its order
/// (r15, r14, ..., rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs).
pub type Regs = [u64; 27];

/// Register indices into [`Regs`].
pub mod reg {
    pub const R15: usize = 0;
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const RSP: usize = 19;
    pub const FS_BASE: usize = 21;
}

fn to_array(r: &user_regs_struct) -> Regs {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

fn from_array(a: &Regs) -> user_regs_struct {
    let [r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs] =
        *a;
    user_regs_struct {
        r15,
        r14,
        r13,
        r12,
        rbp,
        rbx,
        r11,
        r10,
        r9,
        r8,
        rax,
        rcx,
        rdx,
        rsi,
        rdi,
        orig_rax,
        rip,
        cs,
        eflags,
        rsp,
        ss,
        fs_base,
        gs_base,
        ds,
        es,
        fs,
        gs,
    }
}

/// General registers.
pub fn get_regs(tid: Pid) -> Result<Regs> {
    let r = nix::sys::ptrace::getregs(nix_pid(tid)).op_tid("PTRACE_GETREGS", tid)?;
    Ok(to_array(&r))
}

/// Set general registers.
pub fn set_regs(tid: Pid, r: &Regs) -> Result<()> {
    nix::sys::ptrace::setregs(nix_pid(tid), from_array(r)).op_tid("PTRACE_SETREGS", tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_order_is_user_regs_struct_order() {
        let a: Regs = std::array::from_fn(|i| i as u64 + 1);
        let r = from_array(&a);
        assert_eq!((r.r15, r.r10, r.rax, r.orig_rax), (1, 8, 11, 16));
        assert_eq!((r.rip, r.rsp, r.fs_base, r.gs), (17, 20, 22, 27));
        assert_eq!(to_array(&r), a);
        assert_eq!(a[reg::RIP], r.rip);
        assert_eq!(a[reg::ORIG_RAX], r.orig_rax);
        assert_eq!(a[reg::R8], r.r8);
        assert_eq!(a[reg::FS_BASE], r.fs_base);
    }
}
