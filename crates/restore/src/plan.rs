//! The pure part of a restore: from the image, decide everything that can
//! be decided before touching the system. Unit-tested without processes.
//! The planning lives with what it plans (`fds/<kind>.rs`, `mem/`,
//! `process/`); this module gathers its public face.

/// The stub's fd table (crate `fds` module).
pub mod fds {
    pub use crate::fds::{
        plan_fds, strip_deleted, FdEnv, FdOp, FdPlan, FindPipes, LateFd, LateOp, NodeMeta,
        PipeHolder, PipeQuery, SETFL_MASK,
    };
}

/// The address space: layout, mappings, page writes, huge-page fills
/// (crate `mem` module).
pub mod memory {
    pub use crate::mem::hugefill::{plan_huge_fills, HugeFill, ThpMode, HUGE};
    pub use crate::mem::layout::{
        pair_vdso, parse_maps, plan_layout, special_name, FreeSpace, Layout, MapsEntry, Move,
        TASK_SIZE,
    };
    pub use crate::mem::{plan_memory, run_range, Backing, MapStep, MemPlan, PageWrite};
}

/// Registers and timers of a restored thread (crate `process` module).
pub mod regs {
    pub use crate::process::signals::first_handler;
    pub use crate::process::thread::{
        fit_xsave, idx, restart_fixup, ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS,
        ERESTART_RESTARTBLOCK,
    };
    pub use crate::process::timers::itimer_setting;
}
