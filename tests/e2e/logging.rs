//! `ckpt -v`: a dump and a restore log their steps on stderr, each with
//! its duration; without `-v` they log none.

use crate::util::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A `key=value` word whose value is a duration as tracing prints one
/// ("1.23ms", "850µs", "2.1s", "120ns").
fn is_duration(word: &str) -> bool {
    let Some((_, v)) = word.split_once('=') else {
        return false;
    };
    ["ns", "µs", "us", "ms", "s"].iter().any(|unit| {
        v.strip_suffix(unit)
            .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
    })
}

/// The log lines that carry a duration.
fn timed(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.split_whitespace().any(is_duration))
        .collect()
}

fn has_word(line: &str, w: &str) -> bool {
    line.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|x| x == w)
}

/// `err` shows the span `top` with a duration, and at least `min_steps` of
/// `steps` (or, with no names given, `min_steps` other lines) with theirs.
fn assert_steps_logged(err: &str, top: &str, steps: &[&str], min_steps: usize) {
    let t = timed(err);
    assert!(
        t.iter().any(|l| has_word(l, top)),
        "no `{top}` with a duration in the log:\n{err}"
    );
    if steps.is_empty() {
        assert!(
            t.len() > min_steps,
            "`ckpt -v` logged {} lines with a duration, fewer than {top} and {min_steps} steps:\n{err}",
            t.len()
        );
        return;
    }
    let seen: Vec<&str> = steps
        .iter()
        .copied()
        .filter(|s| t.iter().any(|l| has_word(l, s)))
        .collect();
    assert!(
        seen.len() >= min_steps,
        "of the steps {steps:?} of {top}, only {seen:?} are logged with a duration:\n{err}"
    );
}

#[test]
fn verbose_dump_and_restore_log_their_steps_with_durations() {
    let dir = TempDir::new("verbose");
    let mut p = Proc::spawn(&dir, fixture("counter"), &["0", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(3);
    let image = dir.join("img.ckpt");
    let pid = p.pid.to_string();

    // Without -v: no step is logged.
    let o = ckpt_timeout(
        &[
            "dump",
            &pid,
            "-o",
            image.to_str().unwrap(),
            "--leave-running",
        ],
        LIMIT,
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    let err = stderr_of(&o);
    assert!(timed(&err).is_empty() && !err.contains(" INFO "), "{err}");

    let o = ckpt_timeout(&["-v", "dump", &pid, "-o", image.to_str().unwrap()], LIMIT);
    assert!(o.status.success(), "{}", stderr_of(&o));
    p.reap();
    let err = stderr_of(&o);
    assert_steps_logged(
        &err,
        "dump",
        &["freeze", "memory", "fds", "write", "fsync"],
        3,
    );

    // -v after the subcommand works too.
    let o = ckpt_timeout(
        &["restore", "-v", "--detach", image.to_str().unwrap()],
        LIMIT,
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    let r = Proc::adopt(stdout_of(&o).trim().parse().unwrap(), &p.out);
    assert_eq!(r.pid, p.pid);
    r.wait_more_lines(3);
    assert_steps_logged(&stderr_of(&o), "restore", &[], 2);
}

#[test]
fn durations_are_recognized() {
    for w in [
        "time.busy=1.23ms",
        "elapsed=850µs",
        "elapsed=2.1s",
        "t=120ns",
    ] {
        assert!(is_duration(w), "{w}");
    }
    for w in ["pid=12", "ms", "elapsed=ms", "x=1.2 ms"] {
        assert!(!is_duration(w), "{w}");
    }
}
