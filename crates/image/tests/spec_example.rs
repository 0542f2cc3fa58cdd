//! The Python example of spec/format.md runs and prints what the spec says.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn spec_python_example_reads_the_golden_image() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let have = Command::new("python3")
        .args(["-c", "import capnp, zstandard"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        eprintln!("skipping: python3 with pycapnp and zstandard is not available");
        return;
    }
    let spec = std::fs::read_to_string(root.join("spec/format.md")).unwrap();
    let start = spec.find("```python\n").expect("python block") + "```python\n".len();
    let code = &spec[start..start + spec[start..].find("```").unwrap()];
    let dir = std::env::temp_dir().join(format!("ckpt-spec-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("read.py");
    std::fs::write(&script, code).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg("tests/golden/minimal.ckpt")
        .current_dir(&root)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
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
