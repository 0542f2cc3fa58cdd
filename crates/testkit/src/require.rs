//! One skip policy for tests that need a privilege or a tool.
//!
//! A check ([`root`], [`tool`], [`python_modules`], [`path`],
//! [`capability`]) says what is missing and how to get it. What happens
//! then is decided here, once:
//!
//! - under `CI=true` (or `CKPT_TEST_STRICT=1`, which `scripts/test` sets),
//!   a missing privilege or tool **fails** the test;
//! - elsewhere [`require!`](crate::require!) skips the test with a loud
//!   message on stderr (written past the test harness's capture, so it
//!   shows even for a passing test), and [`need`] still fails it (for
//!   helpers that cannot return early).
//!
//! A test never passes silently for want of something.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// What a test needs and does not have, with how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A check: `Ok` when the test can run.
pub type Check = Result<(), Missing>;

fn truthy(var: &str) -> bool {
    std::env::var(var)
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
        .unwrap_or(false)
}

/// Whether a missing privilege or tool is a failure (CI, or the whole
/// suite through scripts/test) rather than a reason to skip.
pub fn strict() -> bool {
    truthy("CI") || truthy("CKPT_TEST_STRICT")
}

fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string()
}

/// Apply the policy to `check`: true when the test can go on; false (after
/// a loud message) when it is to be skipped; a panic under `CI=true`.
#[track_caller]
pub fn available(check: Check) -> bool {
    let Err(m) = check else { return true };
    let name = test_name();
    if strict() {
        panic!("{name}: {m} (a missing privilege or tool fails the test under CI=true / CKPT_TEST_STRICT=1)");
    }
    // Straight to the process's stderr: libtest captures only print!/eprint!.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {name}: {m}\n*** (under CI=true this test fails instead)\n"
    );
    false
}

/// Fail the test (whatever the policy) when `check` fails: for helpers that
/// cannot return early, and for what every test of a binary needs.
#[track_caller]
pub fn need(check: Check) {
    if let Err(m) = check {
        panic!("{}: {m}", test_name());
    }
}

/// Skip (outside CI, loudly) or fail (under CI) the calling test unless
/// every check passes: `require!(require::root(), require::tool("gdb", "apt-get install gdb"));`
#[macro_export]
macro_rules! require {
    ($($check:expr),+ $(,)?) => {
        $( if !$crate::require::available($check) { return; } )+
    };
}

/// Running as root (euid 0).
pub fn root() -> Check {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Missing(
            "needs root (ptrace of other processes, clone3 with set_tid, mounts): run the tests as root".into(),
        ))
    }
}

/// `name` is an executable on PATH; `install` says how to get it.
pub fn tool(name: &str, install: &str) -> Check {
    if find_on_path(name).is_some() {
        Ok(())
    } else {
        Err(Missing(format!(
            "the `{name}` tool is not on PATH ({install})"
        )))
    }
}

/// Where `name` is on PATH, if it is.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// python3 can import each of `modules` (dotted names are fine).
pub fn python_modules(modules: &[&str], install: &str) -> Check {
    tool("python3", "apt-get install python3")?;
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| {
            !Command::new("python3")
                .args(["-c", &format!("import {m}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Missing(format!(
            "python3 cannot import {} ({install})",
            missing.join(", ")
        )))
    }
}

/// `p` exists (a device node, a kernel interface); `what` says why it is needed.
pub fn path(p: &str, what: &str) -> Check {
    if Path::new(p).exists() {
        Ok(())
    } else {
        Err(Missing(format!("{p} is missing: {what}")))
    }
}

/// The capability numbered `bit` (see capabilities(7)) is in our effective
/// set; `name` is its name, such as "CAP_SYS_RESOURCE".
pub fn capability(bit: u32, name: &str) -> Check {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Missing(format!("cannot read /proc/self/status: {e}")))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| Missing("no CapEff line in /proc/self/status".into()))?;
    if eff >> bit & 1 == 1 {
        Ok(())
    } else {
        Err(Missing(format!(
            "needs {name}, which this process does not have"
        )))
    }
}

/// At least `n` free huge pages of 2 MiB (hugetlb: /proc/meminfo
/// HugePages_Free, the default huge page size being 2 MiB).
pub fn huge_pages(n: u64) -> Check {
    let info = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Missing(format!("cannot read /proc/meminfo: {e}")))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    let (free, size) = (field("HugePages_Free:"), field("Hugepagesize:"));
    if size == Some(2048) && free.is_some_and(|f| f >= n) {
        Ok(())
    } else {
        Err(Missing(format!(
            "needs {n} free 2 MiB huge pages (HugePages_Free {free:?}, Hugepagesize {size:?} kB): sysctl vm.nr_hugepages=20"
        )))
    }
}

/// The CPU has `flag` (as /proc/cpuinfo names it: "avx", "avx512f", ...).
pub fn cpu_flag(flag: &str) -> Check {
    let info = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| Missing(format!("cannot read /proc/cpuinfo: {e}")))?;
    let has = info
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|w| w == flag));
    if has {
        Ok(())
    } else {
        Err(Missing(format!("the CPU has no {flag}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_what_is_missing() {
        assert!(tool("sh", "").is_ok());
        let e = tool("no-such-tool-ckpt", "apt-get install nothing").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the `no-such-tool-ckpt` tool is not on PATH (apt-get install nothing)"
        );
        assert!(path("/proc/self", "").is_ok());
        assert!(cpu_flag("fpu").is_ok());
        assert!(cpu_flag("no-such-flag").is_err());
        assert!(path("/no/such/path", "why").unwrap_err().0.contains("why"));
    }

    #[test]
    fn need_fails_even_outside_ci() {
        let r = std::panic::catch_unwind(|| need(Err(Missing("gone".into()))));
        assert!(r.is_err());
    }
}
