//! The test programs: the fixtures of tests/fixtures (built with its
//! Makefile into `FIXTURE_DIR`) and small C programs given as source.

use crate::require::{need, tool};
use crate::temp::TempDir;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .unwrap_or(here)
        .to_path_buf()
}

/// Cargo's target directory of the running test (`.../target` of
/// `.../target/release/deps/TEST-HASH`), else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then_some(())?;
            Some(deps.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Where the fixtures are built: `$FIXTURE_DIR` (scripts/test sets it),
/// else `<target>/fixtures`.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("FIXTURE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("fixtures"),
    }
}

/// The fixture `name` (a program or script of tests/fixtures). The first
/// call of a test binary runs tests/fixtures/Makefile into
/// [`fixture_dir`], which rebuilds only what changed.
pub fn fixture(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = fixture_dir();
    BUILD.call_once(|| {
        need(tool("make", "apt-get install make"));
        need(tool("gcc", "apt-get install gcc"));
        let o = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo_root().join("tests/fixtures"))
            .arg(format!("FIXTURE_DIR={}", dir.display()))
            .output()
            .expect("running make for tests/fixtures");
        assert!(
            o.status.success(),
            "building tests/fixtures into {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "fixture {name} is not in {} (is it in tests/fixtures/Makefile?)",
        dir.display()
    );
    p
}

const CFLAGS: &[&str] = &["-O1", "-g", "-pthread", "-Wall"];

/// A C program given as source, compiled with gcc (tests/fixtures/fixture.h
/// is on the include path) into `<target>/fixtures-extra/HASH/NAME`, once
/// for each different source: tests share the binary. (Its file name is
/// NAME, so NAME is the process's comm.)
pub fn compile_c(name: &str, src: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (src, CFLAGS).hash(&mut h);
    let dir = target_dir()
        .join("fixtures-extra")
        .join(format!("{:016x}", h.finish()));
    let bin = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.contains(&bin) || bin.exists() {
        built.insert(bin.clone());
        return bin;
    }
    need(tool("gcc", "apt-get install gcc"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let tag = format!("{}.{}", std::process::id(), built.len());
    let c = dir.join(format!("{name}.{tag}.c"));
    let tmp = dir.join(format!("{name}.{tag}.tmp"));
    std::fs::write(&c, src).unwrap();
    let o = Command::new("gcc")
        .args(CFLAGS)
        .arg("-o")
        .arg(&tmp)
        .arg(&c)
        .arg("-I")
        .arg(repo_root().join("tests/fixtures"))
        .output()
        .expect("running gcc");
    let _ = std::fs::remove_file(&c);
    assert!(
        o.status.success(),
        "compiling {name} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &bin).unwrap();
    built.insert(bin.clone());
    bin
}

/// [`compile_c`], copied into `dir`: a binary of the test's own, for tests
/// that look for the processes running it.
pub fn compile_c_in(dir: &TempDir, name: &str, src: &str) -> PathBuf {
    let bin = dir.join(name);
    std::fs::copy(compile_c(name, src), &bin)
        .unwrap_or_else(|e| panic!("copy {name} into {}: {e}", dir.path().display()));
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_once_per_source() {
        let a = compile_c("unit_true", "int main(void) { return 0; }\n");
        let b = compile_c("unit_true", "int main(void) { return 0; }\n");
        let c = compile_c("unit_true", "int main(void) { return 3; }\n");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(c.file_name().unwrap(), "unit_true");
        let d = TempDir::new("unit-cc");
        assert_eq!(
            compile_c_in(&d, "unit_true", "int main(void) { return 0; }\n"),
            d.join("unit_true")
        );
        assert_eq!(Command::new(&c).status().unwrap().code(), Some(3));
    }

    #[test]
    fn repo_root_has_the_fixtures() {
        assert!(repo_root().join("tests/fixtures/Makefile").exists());
    }
}
