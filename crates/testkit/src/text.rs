//! Reading the output of test programs.

/// The last 30 lines of `s`, for failure messages.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The numbers following `key` (such as `"count="`) in every line that has
/// a word starting with it.
pub fn values(out: &str, key: &str) -> Vec<i64> {
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// The value of `key=` in a line of words; panics naming the line when
/// there is none.
pub fn field(line: &str, key: &str) -> String {
    let k = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&k))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_string()
}

/// `field` read as hexadecimal (with or without 0x).
pub fn hex_field(line: &str, key: &str) -> u64 {
    let v = field(line, key);
    u64::from_str_radix(v.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{key}={v} in {line:?}: {e}"))
}

/// Each value is the one before it plus `step`, or 0 where adding `step`
/// reaches `wrap` (when given): a counter or an offset that went on
/// without a gap, a repeat or a restart.
#[track_caller]
pub fn assert_steps(seq: &[i64], step: i64, wrap: Option<i64>, what: &str) {
    for (i, w) in seq.windows(2).enumerate() {
        let mut next = w[0] + step;
        if wrap.is_some_and(|m| next >= m) {
            next = 0;
        }
        assert_eq!(
            w[1],
            next,
            "{what}: value {} is {} after {}, expected {next}; all: {seq:?}",
            i + 1,
            w[1],
            w[0]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fields_and_steps() {
        let out = "READY pid=7\ncount=1 x=0x1f\nnoise\ncount=2\n";
        assert_eq!(values(out, "count="), [1, 2]);
        assert_eq!(field("a=1 b=two", "b"), "two");
        assert_eq!(hex_field("count=1 x=0x1f", "x"), 31);
        assert_steps(&[1, 2, 3], 1, None, "t");
        assert_steps(&[32, 48, 0, 16], 16, Some(64), "t");
        let bad = std::panic::catch_unwind(|| assert_steps(&[16, 0], 16, Some(64), "offsets"));
        assert!(bad.is_err(), "a restart from 0 is not a step");
        assert_eq!(tail(&"x\n".repeat(40)).lines().count(), 30);
    }
}
