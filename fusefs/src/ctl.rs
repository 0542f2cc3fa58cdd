//! The `ctl` files: command parsing, image names and usage texts (pure).

/// A command written to `/ctl`.
#[derive(Debug, PartialEq, Eq)]
pub enum RootCmd {
    /// `checkpoint PID [NAME] [--leave-running]`
    Checkpoint {
        pid: i32,
        name: Option<String>,
        leave_running: bool,
    },
}

/// A command written to `/NAME/ctl`.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageCmd {
    /// `restore [--new-pid]`
    Restore { new_pid: bool },
    /// `compact`: rewrite the image keeping only its live generation.
    Compact,
}

pub const ROOT_USAGE: &str = "\
usage: echo 'COMMAND' > ctl
  checkpoint PID [NAME] [--leave-running]
      dump process PID into STORE/NAME.ckpt (default NAME: PID-YYYYmmdd-HHMMSS);
      it appears as NAME/. The process is killed unless --leave-running.
";

pub const IMAGE_USAGE: &str = "\
usage: echo 'COMMAND' > ctl
  restore [--new-pid]
      restore the (possibly edited) image; the process runs as a child of ckptfs.
  compact
      rewrite the image keeping only its live generation (drops what earlier
      edits left behind); crash-safe, like `ckpt compact`.
";

/// The one command of a write: the text with surrounding blank space
/// removed; more than one non-empty line is an error.
fn one_line(text: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(text).map_err(|_| "command is not UTF-8".to_string())?;
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().ok_or("empty command")?;
    if lines.next().is_some() {
        return Err("one command per write".into());
    }
    Ok(first)
}

pub fn parse_root(text: &[u8]) -> Result<RootCmd, String> {
    let line = one_line(text)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[0] {
        "checkpoint" | "dump" => {
            let mut pid = None;
            let mut name = None;
            let mut leave_running = false;
            for w in &words[1..] {
                match *w {
                    "--leave-running" => leave_running = true,
                    w if w.starts_with('-') => return Err(format!("unknown option '{w}'")),
                    w if pid.is_none() => {
                        let p: i32 = w.parse().map_err(|_| format!("bad pid '{w}'"))?;
                        if p <= 0 {
                            return Err(format!("bad pid '{w}'"));
                        }
                        pid = Some(p);
                    }
                    w if name.is_none() => {
                        check_name(w)?;
                        name = Some(w.to_string());
                    }
                    w => return Err(format!("unexpected argument '{w}'")),
                }
            }
            let pid = pid.ok_or("checkpoint needs a PID")?;
            Ok(RootCmd::Checkpoint {
                pid,
                name,
                leave_running,
            })
        }
        w => Err(format!("unknown command '{w}' (commands: checkpoint)")),
    }
}

pub fn parse_image(text: &[u8]) -> Result<ImageCmd, String> {
    let line = one_line(text)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[0] {
        "restore" => {
            let mut new_pid = false;
            for w in &words[1..] {
                match *w {
                    "--new-pid" => new_pid = true,
                    w => return Err(format!("unexpected argument '{w}' (restore [--new-pid])")),
                }
            }
            Ok(ImageCmd::Restore { new_pid })
        }
        "compact" => match words.get(1) {
            None => Ok(ImageCmd::Compact),
            Some(w) => Err(format!("unexpected argument '{w}' (compact takes none)")),
        },
        w => Err(format!(
            "unknown command '{w}' (commands: restore, compact)"
        )),
    }
}

/// Whether `name` may name an image: 1..=200 bytes of letters, digits and
/// `._-+@`, not starting with `.` or `-`, not `ctl`, and not looking like
/// a temp file of an image being written.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!("bad image name '{name}': 1 to 200 characters"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "bad image name '{name}': must not start with '.' or '-'"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-+@".contains(c))
    {
        return Err(format!(
            "bad image name '{name}': use letters, digits and ._-+@"
        ));
    }
    if name == "ctl" || name.ends_with(".ckpt") || name.contains(".ckpt.tmp.") {
        return Err(format!("bad image name '{name}': reserved"));
    }
    Ok(())
}

/// `PID-YYYYmmdd-HHMMSS` for `secs` seconds since the epoch in local time.
pub fn default_name(pid: i32, secs: i64) -> String {
    match ckpt_sys::daemon::local_time(secs) {
        Some(t) => format!(
            "{pid}-{:04}{:02}{:02}-{:02}{:02}{:02}",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        ),
        None => format!("{pid}-{secs}"),
    }
}

/// The body of the `ctl` fuzz target (fuzz/) and of the stable mutation
/// test below: the parsers never panic, and what they accept is sane.
#[doc(hidden)]
pub fn fuzz_body(data: &[u8]) {
    match parse_root(data) {
        Ok(RootCmd::Checkpoint { pid, name, .. }) => {
            assert!(pid > 0, "accepted pid {pid}");
            if let Some(n) = name {
                assert!(check_name(&n).is_ok(), "accepted name {n:?}");
                assert!(
                    !n.contains('/') && !n.starts_with('.'),
                    "accepted name {n:?}"
                );
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
    if let Err(e) = parse_image(data) {
        assert!(!e.is_empty());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if check_name(s).is_ok() {
            assert!(!s.is_empty() && s.len() <= 200 && !s.contains('/') && s != "." && s != "..");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_commands() {
        assert_eq!(
            parse_root(b"checkpoint 123\n"),
            Ok(RootCmd::Checkpoint {
                pid: 123,
                name: None,
                leave_running: false
            })
        );
        assert_eq!(
            parse_root(b"  checkpoint 5 web-1 --leave-running"),
            Ok(RootCmd::Checkpoint {
                pid: 5,
                name: Some("web-1".into()),
                leave_running: true
            })
        );
        assert_eq!(
            parse_root(b"checkpoint --leave-running 5"),
            Ok(RootCmd::Checkpoint {
                pid: 5,
                name: None,
                leave_running: true
            })
        );
        for bad in [
            &b""[..],
            b"\n",
            b"checkpoint",
            b"checkpoint x",
            b"checkpoint -3",
            b"checkpoint 3 a b",
            b"checkpoint 3 --now",
            b"checkpoint 3 ../etc",
            b"checkpoint 3 ctl",
            b"restore",
            b"checkpoint 1\ncheckpoint 2",
        ] {
            assert!(parse_root(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn image_commands() {
        assert_eq!(
            parse_image(b"restore\n"),
            Ok(ImageCmd::Restore { new_pid: false })
        );
        assert_eq!(
            parse_image(b"restore --new-pid"),
            Ok(ImageCmd::Restore { new_pid: true })
        );
        assert!(parse_image(b"restore --x").is_err());
        assert_eq!(parse_image(b"compact\n"), Ok(ImageCmd::Compact));
        assert!(parse_image(b"compact now").is_err());
        assert!(parse_image(b"checkpoint 1").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("123-20250101-120000").is_ok());
        assert!(check_name("a.b_c+d@e").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "ctl", "x.ckpt", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let n = default_name(42, 1_700_000_000);
        assert!(n.starts_with("42-2023111"), "{n}");
        assert_eq!(n.len(), "42-20231114-221320".len());
    }
}

/// Stable-Rust stand-in for the `ctl` fuzz target (see edit.rs's).
#[cfg(test)]
mod mutation {
    use super::fuzz_body;
    use crate::edit::mutation_support::{budget, mutate, Rng};

    const DICT: &[&[u8]] = &[
        b" ",
        b"\n",
        b"\t",
        b"checkpoint",
        b"dump",
        b"restore",
        b"compact",
        b"--leave-running",
        b"--new-pid",
        b"--",
        b"-",
        b"0",
        b"-1",
        b"2147483647",
        b"2147483648",
        b"+5",
        b"ctl",
        b".ckpt",
        b".ckpt.tmp.",
        b"..",
        b"/",
        b".",
        b"a",
        b"\xc3\xa9",
        b"\xff",
        b"\x00",
        b"@",
        b"+",
    ];

    #[test]
    fn ctl_parsers_under_mutation() {
        let seeds: &[&[u8]] = &[
            b"checkpoint 123\n",
            b"checkpoint 5 web-1 --leave-running",
            b"dump --leave-running 5 x.y",
            b"restore\n",
            b"restore --new-pid",
            b"123-20250101-120000",
        ];
        let mut rng = Rng(0xc7c7_0000_1111_2222);
        let t = std::time::Instant::now();
        let mut n = 0u64;
        while t.elapsed() < budget() {
            let seed = seeds[rng.below(seeds.len())];
            fuzz_body(&mutate(&mut rng, seed, DICT));
            n += 1;
        }
        eprintln!(
            "ctl_parsers_under_mutation: {n} inputs in {:?}",
            t.elapsed()
        );
    }
}
