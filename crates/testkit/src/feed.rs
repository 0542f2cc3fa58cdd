//! Lines of a pipe, for tests whose program writes to a pipe of ours.

use crate::proc::TIMEOUT;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The lines of a pipe, read on a thread. End of file is not the end:
/// between a dump and a restore the pipe may have no writer for a while,
/// and the restored process writes to it again.
pub struct LineFeed {
    rx: Receiver<String>,
    /// Every line received so far, in order.
    pub seen: Vec<String>,
}

impl LineFeed {
    pub fn new(r: impl Read + Send + 'static) -> LineFeed {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                    Ok(_) => {
                        if tx.send(line.trim_end().to_string()).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        LineFeed {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line that satisfies `pred` (every line received is kept in
    /// `seen`); fails at once on an `ERROR` line, and after [`TIMEOUT`].
    pub fn next_matching(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            match self.rx.recv_timeout(TIMEOUT.saturating_sub(t.elapsed())) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    assert!(
                        !l.starts_with("ERROR"),
                        "the program reported {l}; got:\n{}",
                        self.seen.join("\n")
                    );
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "timed out after {TIMEOUT:?} waiting for a line; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The lines received from now up to the first that satisfies `pred`,
    /// that one included (see [`LineFeed::next_matching`]).
    pub fn until(&mut self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let from = self.seen.len();
        self.next_matching(pred);
        self.seen[from..].to_vec()
    }

    /// Take into `seen` the lines that have arrived, waiting `settle` first.
    pub fn drain(&mut self, settle: Duration) {
        std::thread::sleep(settle);
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_order_and_across_eof() {
        let mut f = LineFeed::new(&b"a\nb\nc\n"[..]);
        assert_eq!(f.until(|l| l == "b"), ["a", "b"]);
        f.drain(Duration::from_millis(20));
        assert_eq!(f.seen, ["a", "b", "c"]);
    }
}
