//! The Python example of spec/format.md runs and prints what the spec says.

use ckpt_testkit::require;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn spec_python_example_reads_the_golden_image() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    ckpt_testkit::require!(require::python_modules(
        &["capnp", "zstandard"],
        "pip install pycapnp zstandard, or scripts/install-deps"
    ));
    let spec = std::fs::read_to_string(root.join("spec/format.md")).unwrap();
    let start = spec.find("```python\n").expect("python block") + "```python\n".len();
    let code = &spec[start..start + spec[start..].find("```").unwrap()];
    let dir = ckpt_testkit::TempDir::new("spec-example");
    let script = dir.join("read.py");
    std::fs::write(&script, code).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg("tests/golden/minimal.ckpt")
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "format 1.0, generation 0, pid 42, 1 frames\n000102030405060708090a0b0c0d0e0f\n"
    );
}
