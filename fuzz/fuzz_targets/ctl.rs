//! A command written to a ckptfs ctl file, and image names
//! (ckptfs::ctl::fuzz_body).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ckptfs::ctl::fuzz_body(data);
});
