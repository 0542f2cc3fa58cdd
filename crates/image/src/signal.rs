//! Signal names (Linux, kernel numbering): the one table that `ckpt show`,
//! ckptfs's `signals` file and its edit parser share.

/// Names of the standard signals 1..=31 (x86_64 numbering).
const STANDARD: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The name of signal `signo`: SIGHUP .. SIGSYS for 1..=31, then, in the
/// kernel's numbering, SIGRTMIN (32), SIGRTMIN+1 .. SIGRTMIN+31, SIGRTMAX
/// (64). Other numbers give `SIG<n>`. (glibc's SIGRTMIN is the kernel's 34.)
pub fn name(signo: i32) -> String {
    match signo {
        1..=31 => STANDARD[(signo - 1) as usize].to_string(),
        32 => "SIGRTMIN".into(),
        64 => "SIGRTMAX".into(),
        33..=63 => format!("SIGRTMIN+{}", signo - 32),
        _ => format!("SIG{signo}"),
    }
}

/// Parse a signal: a name as [`name`] prints it, with or without the SIG
/// prefix, in any case, or a number 1..=64.
pub fn parse(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    (1..=64).find(|&n| name(n) == full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in 1..=64 {
            assert_eq!(parse(&name(n)), Some(n));
        }
        assert_eq!(name(10), "SIGUSR1");
        assert_eq!(name(33), "SIGRTMIN+1");
        assert_eq!(name(65), "SIG65");
        assert_eq!(parse("usr1"), Some(10));
        assert_eq!(parse("10"), Some(10));
        assert_eq!(parse("SIGFOO"), None);
        assert_eq!(parse("65"), None);
    }
}
