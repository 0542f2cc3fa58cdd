//! End-to-end tests: the real `ckpt` binary against real processes on the
//! running kernel. Needs root (ptrace of non-children, clone3 with set_tid);
//! without it these tests fail, loudly, as they should. Helpers: util.rs
//! (the ckpt binary) over ckpt-testkit (everything else).

mod util;

mod apps;
mod cgroups;
mod connections;
mod dump_restore;
mod faults;
mod hostile;
mod logging;
mod pipes;
mod scale;
mod security;
mod show;
mod sockets;
mod speed;
mod terminals;
mod tree;
mod trust;
