//! The generated Cap'n Proto code (src/ckpt_capnp.rs) is checked in so that
//! building never needs the `capnp` tool. These tests regenerate it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_dir() -> PathBuf {
    crate_dir().join("../../schema")
}

fn capnp_available() -> bool {
    Command::new("capnp")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
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

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ckpt-image-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn generated_code_is_fresh() {
    if !capnp_available() {
        if std::env::var("CKPT_REQUIRE_CAPNP").as_deref() == Ok("1") {
            panic!("CKPT_REQUIRE_CAPNP=1 but the `capnp` tool is not on PATH (apt-get install capnproto)");
        }
        eprintln!("skipping generated_code_is_fresh: `capnp` is not on PATH");
        return;
    }
    let dir = temp_dir("codegen");
    // The header names the capnp tool's version, which may differ between
    // machines without changing the code.
    let strip = |s: String| -> String {
        s.lines()
            .filter(|l| !l.starts_with("// capnp binary version"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let fresh = strip(std::fs::read_to_string(generate(&dir)).unwrap());
    let checked_in = strip(std::fs::read_to_string(crate_dir().join("src/ckpt_capnp.rs")).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
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
    let dir = temp_dir("regen");
    let fresh = std::fs::read(generate(&dir)).unwrap();
    std::fs::write(crate_dir().join("src/ckpt_capnp.rs"), fresh).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
