//! A process whose stdin and stdout are pipes to its parent (here, the
//! test): after `ckpt dump` and `ckpt restore --detach` it goes on using
//! the very same pipes, and `ckpt restore --detach` itself returns at once
//! (the restored process does not hold its stdout).

use crate::util::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

fn tick(l: &str) -> Option<i64> {
    l.strip_prefix("tick=").and_then(|v| v.parse().ok())
}

#[test]
fn pipes_to_the_parent_survive_and_detach_returns() {
    let dir = TempDir::new("pipes");
    let bin = fixture("pipes_echo");
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let mut feed = LineFeed::new(child.stdout.take().unwrap());
    feed.next_matching(|l| l.starts_with("READY"));
    feed.next_matching(|l| tick(l) == Some(3));
    stdin.write_all(b"one\n").unwrap();

    let image = dir.join("img.ckpt");
    ckpt_ok(&["dump", &pid.to_string(), "-o", image.to_str().unwrap()]);
    assert!(!child.wait().unwrap().success());
    feed.drain(Duration::from_millis(50));
    let last = feed.seen.iter().filter_map(|l| tick(l)).max().unwrap();

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
    let l = feed.next_matching(|l| tick(l).is_some());
    assert_eq!(tick(&l), Some(last + 1), "{}", feed.seen.join("\n"));
    let got = scenarios::echoed(&mut feed, pid);
    assert_eq!(got, ["one"], "{}", feed.seen.join("\n"));
    stdin.write_all(b"two\n").unwrap();
    let got = scenarios::echoed(&mut feed, pid);
    assert_eq!(got, ["two"], "{}", feed.seen.join("\n"));
    r.kill();
}

/// Pipe ends whose other end no process held at the dump (the writer gone,
/// the reader gone) come back so, without a warning: the reader at fd 0
/// gets the buffered bytes and then end of file (not the restorer's stdin,
/// as for a pipe to a live process outside the image), the writer EPIPE.
#[test]
fn pipe_ends_whose_other_end_was_closed_stay_so_without_a_warning() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("pipe-peer-closed");
    let script = r#"
import os, signal, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
r, w = os.pipe(); os.write(w, b"left"); os.close(w); os.dup2(r, 0); os.close(r)
r2, w2 = os.pipe(); os.close(r2)
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
print("read", os.read(0, 100), os.read(0, 100), flush=True)
try:
    os.write(w2, b"x")
    print("wrote", flush=True)
except BrokenPipeError:
    print("EPIPE", flush=True)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("image.ckpt");
    dump_kill(&mut p, &image);
    let out = ckpt_run(&["restore", "--detach", image.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {err}");
    let r = Proc::adopt(p.pid, &p.out);
    assert!(!err.contains("warning"), "the restore warned: {err}");
    std::fs::write(dir.join("go"), b"").unwrap();
    assert_eq!(r.wait_for("read"), "read b'left' b''");
    let last = r.wait_line(|l| l == "EPIPE" || l == "wrote");
    assert_eq!(last, "EPIPE", "{}", r.output());
}

/// A FIFO opened by path, its write end first, grown to 1 MiB and holding
/// 300 KB at the dump, comes back with its capacity and every byte in
/// order, whichever end the restore opens first.
#[test]
fn a_grown_fifo_keeps_its_capacity_and_its_data() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("fifo-grown");
    let script = r#"
import fcntl, os, sys, time
path = sys.argv[1] + "/f"
os.mkfifo(path)
r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
w = os.open(path, os.O_WRONLY)
fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
os.dup2(w, 5); os.dup2(r, 6); os.close(w); os.close(r)
data = bytes(i % 251 for i in range(300000))
assert os.write(5, data) == len(data)
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
size = fcntl.fcntl(5, 1032)  # F_GETPIPE_SZ
got = b""
while len(got) < len(data):
    got += os.read(6, 1 << 20)
print("size", size, "same", got == data, flush=True)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("image.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    assert_eq!(
        r.wait_for("size"),
        "size 1048576 same True",
        "{}",
        r.output()
    );
}
