//! One line for an error and its causes.

use std::error::Error;

/// `outer: inner: innermost`, each message said once: a cause whose text
/// the line already holds is left out, comparing without the
/// ` (os error N)` that `std::io::Error` appends (so an I/O error is not
/// printed as `Invalid argument: Invalid argument (os error 22)`).
pub fn chain<'a>(errors: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut out = String::new();
    for e in errors {
        let s = e.to_string();
        let bare = strip_os_error(&s);
        if bare.is_empty() || out.contains(bare) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(bare);
    }
    out
}

/// [`chain`] of `e` and its [`Error::source`]s.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    chain(std::iter::successors(Some(e), |&e| e.source()))
}

/// `text` without a trailing ` (os error N)`.
fn strip_os_error(text: &str) -> &str {
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{context}: {source}")]
    struct Ctx {
        context: String,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("restore failed")]
    struct Outer(#[source] Ctx);

    #[test]
    fn each_message_once() {
        let io = std::io::Error::from_raw_os_error(22);
        let e = Outer(Ctx {
            context: "opening /x".into(),
            source: io,
        });
        assert_eq!(
            error_chain(&e),
            "restore failed: opening /x: Invalid argument"
        );
        let io = std::io::Error::from_raw_os_error(2);
        assert_eq!(error_chain(&io), "No such file or directory");
        let e = std::io::Error::other("plain");
        assert_eq!(error_chain(&e), "plain");
    }
}
