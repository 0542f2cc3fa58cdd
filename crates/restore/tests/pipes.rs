//! Pipes whose other end is outside the image: a restored process goes on
//! using the very pipes its parent still holds.

mod common;
use ckpt_restore::RestoreOptions;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    let bin = fixture("pipes_echo");
    let mut child = Command::new(&bin)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let mut feed = LineFeed::new(child.stdout.take().unwrap());
    let (in_ino, out_ino) = (pipe_ino(pid, 0), pipe_ino(pid, 1));
    feed.next_matching(|l| l.starts_with("READY"));
    feed.next_matching(|l| tick(l) == Some(3));
    // Left in the pipe at the dump: saved in the image, but still in the
    // live pipe afterwards, so it must be read exactly once.
    stdin.write_all(b"one\ntwo\n").unwrap();

    let image = dir.join("img.ckpt");
    ckpt_capture::dump(pid, &image, ckpt_capture::DumpOptions::default())
        .unwrap_or_else(|e| panic!("dump of pid {pid} failed: {e}"));
    child.wait().unwrap();
    // Everything it printed before the dump is readable.
    feed.drain(Duration::from_millis(50));
    let last = feed.seen.iter().filter_map(|l| tick(l)).max().unwrap();

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
    let mut q = Proc::adopt(pid, &dir.join("none"));
    // The same pipes, not ours and not new ones.
    assert_eq!(pipe_ino(pid, 0), in_ino);
    assert_eq!(pipe_ino(pid, 1), out_ino);
    let l = feed.next_matching(|l| tick(l).is_some());
    assert_eq!(tick(&l), Some(last + 1), "{}", feed.seen.join("\n"));

    let got = scenarios::echoed(&mut feed, pid);
    assert_eq!(got, ["one", "two"], "{}", feed.seen.join("\n"));
    // And the parent can go on writing to it.
    stdin.write_all(b"three\n").unwrap();
    let got = scenarios::echoed(&mut feed, pid);
    assert_eq!(got, ["three"], "{}", feed.seen.join("\n"));
    let before = feed.seen.iter().filter_map(|l| tick(l)).max().unwrap();
    feed.next_matching(|l| tick(l) == Some(before + 3));
    q.kill();
}

#[test]
fn external_pipe_without_a_holder_falls_back() {
    let dir = TempDir::new("pipes-gone");
    let bin = fixture("pipes_echo");
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
    let mut q = Proc::adopt(r.pid, &dir.join("none"));
    // fd 1 is the restorer's own fd 1 (the fallback), not the dead pipe.
    let ours = std::fs::metadata("/proc/self/fd/1").unwrap().ino();
    assert_eq!(pipe_ino(r.pid, 1), ours);
    assert_ne!(pipe_ino(r.pid, 1), ino);
    q.kill();
}
