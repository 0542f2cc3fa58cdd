//! Pipes whose other end is outside the image: a restored process goes on
//! using the very pipes its parent still holds.

mod common;
use ckpt_restore::RestoreOptions;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The test program (see the file): ticks on stdout, echoes stdin on SIGUSR1.
fn echo_bin(dir: &TempDir) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipes_echo.c");
    compile(dir, "echo", &std::fs::read_to_string(src).unwrap())
}

/// Lines read from `r` on a thread. End of file is not the end: between a
/// dump and the restore the pipe has no writer, so reads see EOF for a
/// while; the thread keeps reading.
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

/// The next line that satisfies `pred` (others are appended to `seen`).
fn next_line(rx: &Receiver<String>, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let left = TIMEOUT.saturating_sub(t.elapsed());
        match rx.recv_timeout(left) {
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

fn pipe_ino(pid: i32, fd: i32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
        .unwrap()
        .ino()
}

#[test]
fn stdin_and_stdout_pipes_of_the_parent_are_reconnected() {
    let dir = TempDir::new("pipes");
    let bin = echo_bin(&dir);
    let mut child = Command::new(&bin)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let (in_ino, out_ino) = (pipe_ino(pid, 0), pipe_ino(pid, 1));
    let mut seen = Vec::new();
    next_line(&rx, &mut seen, |l| l.starts_with("READY"));
    next_line(&rx, &mut seen, |l| tick(l) == Some(3));
    // Left in the pipe at the dump: saved in the image, but still in the
    // live pipe afterwards, so it must be read exactly once.
    stdin.write_all(b"one\ntwo\n").unwrap();

    let image = dir.join("img.ckpt");
    ckpt_capture::dump(pid, &image, ckpt_capture::DumpOptions::default())
        .unwrap_or_else(|e| panic!("dump of pid {pid} failed: {e}"));
    child.wait().unwrap();
    // Everything it printed before the dump is readable.
    std::thread::sleep(Duration::from_millis(50));
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
    let last = seen.iter().filter_map(|l| tick(l)).max().unwrap();

    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let report = ckpt_restore::check(&reader, &RestoreOptions::default());
    assert!(report.is_ok(), "{report}");
    assert!(
        !report.warnings.iter().any(|w| w.contains("pipe")),
        "{report}"
    );
    let r = ckpt_restore::restore(&reader, &RestoreOptions::default())
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert_eq!(r.pid, pid);
    let mut q = Proc {
        pid,
        out: dir.join("none"),
        reaped: false,
    };
    // The same pipes, not ours and not new ones.
    assert_eq!(pipe_ino(pid, 0), in_ino);
    assert_eq!(pipe_ino(pid, 1), out_ino);
    let l = next_line(&rx, &mut seen, |l| tick(l).is_some());
    assert_eq!(tick(&l), Some(last + 1), "{}", seen.join("\n"));

    ckpt_sys::sys::kill(pid, libc::SIGUSR1).unwrap();
    let from = seen.len();
    next_line(&rx, &mut seen, |l| l == "drained");
    let got: Vec<&String> = seen[from..]
        .iter()
        .filter(|l| l.starts_with("got="))
        .collect();
    assert_eq!(got, ["got=one", "got=two"], "{}", seen.join("\n"));
    // And the parent can go on writing to it.
    stdin.write_all(b"three\n").unwrap();
    ckpt_sys::sys::kill(pid, libc::SIGUSR1).unwrap();
    let from = seen.len();
    next_line(&rx, &mut seen, |l| l == "drained");
    let got: Vec<&String> = seen[from..]
        .iter()
        .filter(|l| l.starts_with("got="))
        .collect();
    assert_eq!(got, ["got=three"], "{}", seen.join("\n"));
    let before = seen.iter().filter_map(|l| tick(l)).max().unwrap();
    next_line(&rx, &mut seen, |l| tick(l) == Some(before + 3));
    q.kill();
}

#[test]
fn external_pipe_without_a_holder_falls_back() {
    let dir = TempDir::new("pipes-gone");
    let bin = echo_bin(&dir);
    let mut child = Command::new(&bin)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("READY"), "{line}");
    let image = dir.join("img.ckpt");
    ckpt_capture::dump(pid, &image, ckpt_capture::DumpOptions::default())
        .unwrap_or_else(|e| panic!("dump of pid {pid} failed: {e}"));
    child.wait().unwrap();
    let ino = {
        // Nobody holds the pipe any more once we drop our end.
        drop(out);
        let reader = ckpt_image::ImageReader::open(&image).unwrap();
        let p = &reader.image().processes[0];
        let f = p.fds.iter().find(|f| f.fd == 1).unwrap();
        match &reader.image().file(f.file).unwrap().kind {
            ckpt_image::FileKind::Pipe(p) => p.id,
            k => panic!("fd 1 is {k:?}"),
        }
    };
    let reader = ckpt_image::ImageReader::open(&image).unwrap();
    let r = ckpt_restore::restore(&reader, &RestoreOptions::default())
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let mut q = Proc {
        pid: r.pid,
        out: dir.join("none"),
        reaped: false,
    };
    // fd 1 is the restorer's own fd 1 (the fallback), not the dead pipe.
    let ours = std::fs::metadata("/proc/self/fd/1").unwrap().ino();
    assert_eq!(pipe_ino(r.pid, 1), ours);
    assert_ne!(pipe_ino(r.pid, 1), ino);
    q.kill();
}
