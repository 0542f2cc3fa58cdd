//! A process whose stdin and stdout are pipes to its parent (here, the
//! test): after `ckpt dump` and `ckpt restore --detach` it goes on using
//! the very same pipes, and `ckpt restore --detach` itself returns at once
//! (the restored process does not hold its stdout).

use crate::util::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Lines read from `r` on a thread; EOF (no writer between the dump and
/// the restore) is not the end.
fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
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
    rx
}

fn next_line(rx: &Receiver<String>, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        match rx.recv_timeout(TIMEOUT.saturating_sub(t.elapsed())) {
            Ok(l) => {
                seen.push(l.clone());
                if pred(&l) {
                    return l;
                }
            }
            Err(_) => panic!("timed out waiting for a line; got:\n{}", seen.join("\n")),
        }
    }
}

fn tick(l: &str) -> Option<i64> {
    l.strip_prefix("tick=").and_then(|v| v.parse().ok())
}

#[test]
fn pipes_to_the_parent_survive_and_detach_returns() {
    ckpt_sys::sys::set_child_subreaper().unwrap();
    let dir = TempDir::new("pipes");
    let bin = dir.join("echo");
    let st = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&bin)
        .arg(repo().join("crates/restore/tests/pipes_echo.c"))
        .status()
        .expect("run cc");
    assert!(st.success());
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    next_line(&rx, &mut seen, |l| l.starts_with("READY"));
    next_line(&rx, &mut seen, |l| tick(l) == Some(3));
    stdin.write_all(b"one\n").unwrap();

    let image = dir.join("img.ckpt");
    ckpt_ok(&["dump", &pid.to_string(), "-o", image.to_str().unwrap()]);
    assert!(!child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(50));
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
    let last = seen.iter().filter_map(|l| tick(l)).max().unwrap();

    // Command::output() reads ckpt's stdout and stderr to EOF: it returns
    // only if the restored process holds neither.
    let (tx, done) = channel();
    let img = image.to_str().unwrap().to_string();
    let t = Instant::now();
    std::thread::spawn(move || {
        let o = ckpt()
            .args(["restore", "--detach", &img])
            .stdin(Stdio::null())
            .output()
            .expect("run ckpt");
        let _ = tx.send(o);
    });
    let o = done
        .recv_timeout(TIMEOUT)
        .expect("`ckpt restore --detach` did not return: the restored process holds its output");
    let took = t.elapsed();
    assert!(
        o.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rpid: i32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(rpid, pid);
    let mut r = Proc::adopt(rpid, &dir.join("none"));
    assert!(took < Duration::from_secs(5), "restore took {took:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("pipe"), "{err}");

    // Output continues on the original pipe, and stdin is the original one
    // with its unread line still in it (exactly once).
    let l = next_line(&rx, &mut seen, |l| tick(l).is_some());
    assert_eq!(tick(&l), Some(last + 1), "{}", seen.join("\n"));
    ckpt_sys::sys::kill(pid, 10).unwrap();
    let from = seen.len();
    next_line(&rx, &mut seen, |l| l == "drained");
    let got: Vec<&String> = seen[from..]
        .iter()
        .filter(|l| l.starts_with("got="))
        .collect();
    assert_eq!(got, ["got=one"], "{}", seen.join("\n"));
    stdin.write_all(b"two\n").unwrap();
    ckpt_sys::sys::kill(pid, 10).unwrap();
    let from = seen.len();
    next_line(&rx, &mut seen, |l| l == "drained");
    let got: Vec<&String> = seen[from..]
        .iter()
        .filter(|l| l.starts_with("got="))
        .collect();
    assert_eq!(got, ["got=two"], "{}", seen.join("\n"));
    r.kill();
}
