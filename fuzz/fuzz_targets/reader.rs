//! A whole image file: ImageReader::new, then JSON, summary, memory of every
//! VMA, runs, blobs and frames (ckpt_image::fuzzing::reader_body).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ckpt_image::fuzzing::reader_body(data);
});
