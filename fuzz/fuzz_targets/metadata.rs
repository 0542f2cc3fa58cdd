//! A metadata message inside a valid container (CRCs computed for it), so
//! that the fuzzer reaches the Cap'n Proto decoding and the validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ckpt_image::fuzzing::metadata_body(data);
});
