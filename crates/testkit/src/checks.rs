//! What the output of a fixture of tests/fixtures must show after a
//! restore, where more than one test checks the same fixture.

use crate::proc::Proc;
use crate::text::{assert_steps, tail};

/// The output of `fileoffset FILE` (FILE `file_len` bytes long) whose
/// first `before` lines came before a dump: each fd went on from its saved
/// offset. The 16-byte reads of FILE step by 16 (back to 0 at the end of
/// the file) and the lines read from the deleted file go on in order, with
/// reads on both sides of the restore; a restore that reopened a file at
/// offset 0 shows as a step back.
#[track_caller]
pub fn assert_fileoffset_continues(out: &str, before: usize, file_len: i64) {
    let offset = |l: &str| l.strip_prefix("offset=")?.split(' ').next()?.parse().ok();
    let deleted = |l: &str| {
        l.strip_prefix("deleted_data=deleted-line-")?
            .split('-')
            .next()?
            .parse()
            .ok()
    };
    for (what, get, step, wrap) in [
        (
            "file offset",
            &offset as &dyn Fn(&str) -> Option<i64>,
            16,
            file_len,
        ),
        ("line of the deleted file", &deleted, 1, 8),
    ] {
        let seq =
            |lines: &mut dyn Iterator<Item = &str>| -> Vec<i64> { lines.filter_map(get).collect() };
        let (pre, post) = (
            seq(&mut out.lines().take(before)),
            seq(&mut out.lines().skip(before)),
        );
        assert!(
            !pre.is_empty() && !post.is_empty(),
            "{what}: no reads before ({pre:?}) or after ({post:?}) the restore:\n{}",
            tail(out)
        );
        let all: Vec<i64> = pre.iter().chain(&post).copied().collect();
        assert_steps(
            &all,
            step,
            Some(wrap),
            &format!("{what} across the restore (after line {before})"),
        );
    }
}

/// A restored `state.py` / `state.pl` (whose first `before` lines came
/// before the dump) kept its heap: its tick counter `n=` goes on by one
/// across the restore, and after it the interpreter re-checked its whole
/// dict against the running checksum ("verified n=N", within 20 ticks).
#[track_caller]
pub fn assert_interpreter_state_kept(p: &Proc, before: usize, what: &str) {
    p.wait_line_after(before, |l| l.starts_with("verified n="));
    let out = p.output();
    let ticks: Vec<i64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("n=")?.split(' ').next()?.parse().ok())
        .collect();
    assert_steps(
        &ticks,
        1,
        None,
        &format!("{what}: ticks across the restore"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "READY pid=1 fd=3 offset=16 deleted_fd=4\nfirst=line0000|line0\n\
        offset=16 next=x\ndeleted_data=deleted-line-0-of-pid-1\n\
        offset=32 next=x\ndeleted_data=deleted-line-1-of-pid-1\n";

    #[test]
    fn offsets_must_go_on() {
        assert_fileoffset_continues(GOOD, 4, 2000);
        let lost = GOOD.replace("offset=32", "offset=0");
        assert!(std::panic::catch_unwind(|| assert_fileoffset_continues(&lost, 4, 2000)).is_err());
        let lost = GOOD.replace("line-1-", "line-0-");
        assert!(std::panic::catch_unwind(|| assert_fileoffset_continues(&lost, 4, 2000)).is_err());
        // Nothing read after the restore proves nothing.
        assert!(std::panic::catch_unwind(|| assert_fileoffset_continues(GOOD, 6, 2000)).is_err());
    }
}
