//! Helpers of the restore tests that are about ckpt-restore: dump a test
//! program with ckpt-capture and restore it. What any test needs (temp
//! dirs, processes and their waits, the fixtures, the skip policy) is in
//! ckpt-testkit, re-exported here.
#![allow(dead_code)]

use ckpt_image::ImageReader;
use ckpt_restore::{RestoreOptions, Restored};
pub use ckpt_testkit::*;
use std::path::{Path, PathBuf};

/// The restored process, writing to `out`.
pub fn restored(r: &Restored, out: &Path) -> Proc {
    Proc::adopt(r.pid, out)
}

/// Dump `p` into `dir/img.ckpt`, killing it, and reap it.
pub fn dump_kill(p: &mut Proc, dir: &TempDir) -> PathBuf {
    let image = dir.join("img.ckpt");
    scenarios::DumpRestore::dump(&Library, p, &image);
    image
}

pub fn restore(image: &Path, opts: &RestoreOptions) -> ckpt_restore::Result<Restored> {
    let reader = ImageReader::open(image).expect("open image");
    ckpt_restore::restore(&reader, opts)
}

/// The pids of the processes that run `bin`.
pub fn runs_binary(bin: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            if exe == bin {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Dump with ckpt-capture and restore with ckpt-restore (default
/// options), for testkit's scenarios.
pub struct Library;

impl scenarios::DumpRestore for Library {
    fn dump(&self, p: &mut Proc, image: &Path) {
        need(require::root());
        ckpt_capture::dump(p.pid, image, ckpt_capture::DumpOptions::default())
            .unwrap_or_else(|e| panic!("dump of pid {} failed: {e}", p.pid));
        p.reap();
    }
    fn restore(&self, image: &Path, p: &Proc) -> Proc {
        let r =
            restore(image, &RestoreOptions::default()).unwrap_or_else(|e| panic!("restore: {e}"));
        restored(&r, &p.out)
    }
}

/// `scenarios::roundtrip` through the libraries.
pub fn roundtrip(
    dir: &TempDir,
    bin: impl AsRef<Path>,
    args: &[&str],
    warmup: usize,
) -> (Proc, usize) {
    scenarios::roundtrip(&Library, dir, bin, args, warmup)
}
