//! The generated Cap'n Proto code (src/ckpt_capnp.rs) is checked in so that
//! building never needs the `capnp` tool. These tests regenerate it.

use ckpt_testkit::require;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_dir() -> PathBuf {
    crate_dir().join("../../schema")
}

/// Generate ckpt_capnp.rs into `out_dir`; returns the path of the file.
fn generate(out_dir: &Path) -> PathBuf {
    capnpc::CompilerCommand::new()
        .src_prefix(schema_dir())
        .file(schema_dir().join("ckpt.capnp"))
        .output_path(out_dir)
        .run()
        .expect("capnp compile schema/ckpt.capnp");
    out_dir.join("ckpt_capnp.rs")
}

#[test]
fn generated_code_is_fresh() {
    ckpt_testkit::require!(require::tool("capnp", "apt-get install capnproto"));
    let dir = ckpt_testkit::TempDir::new("codegen");
    // The header names the capnp tool's version, which may differ between
    // machines without changing the code.
    let strip = |s: String| -> String {
        s.lines()
            .filter(|l| !l.starts_with("// capnp binary version"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let fresh = strip(std::fs::read_to_string(generate(dir.path())).unwrap());
    let checked_in = strip(std::fs::read_to_string(crate_dir().join("src/ckpt_capnp.rs")).unwrap());
    assert!(
        fresh == checked_in,
        "crates/image/src/ckpt_capnp.rs is stale: regenerate it with \
         `cargo test -p ckpt-image --test codegen -- --ignored regenerate`"
    );
}

/// Rewrites src/ckpt_capnp.rs from schema/ckpt.capnp.
#[test]
#[ignore]
fn regenerate() {
    let dir = ckpt_testkit::TempDir::new("regen");
    let fresh = std::fs::read(generate(dir.path())).unwrap();
    std::fs::write(crate_dir().join("src/ckpt_capnp.rs"), fresh).unwrap();
}
