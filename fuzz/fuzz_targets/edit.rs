//! Text written to an editable ckptfs file (regs, task regs, signals, fds,
//! cwd, and a read-only one): the first byte picks the file
//! (ckptfs::edit::fuzzing::edit_body).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ckptfs::edit::fuzzing::edit_body(data);
});
