//! Live TCP connections across a dump and restore (`--tcp-established`):
//! an HTTP server whose client stays connected while a large response is
//! in flight, connections whose both ends the process holds (queued data
//! both ways, IPv4, IPv6, v4-mapped, half-closed states), a listener's
//! accept queue, `--tcp-close`, and the lock cleaned up after a killed
//! dump. Needs root and nft (package nftables): without them these tests
//! are skipped loudly, or fail under CI=true.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) use crate::sockets::python_fixture;

/// The nft tool: live connections are locked with it.
fn nft() -> ckpt_testkit::require::Check {
    require::tool("nft", "apt-get install nftables")
}

/// `ckpt dump PID -o IMAGE ARGS...` (the process is killed), timed.
pub fn dump_with(p: &mut Proc, image: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let pid = p.pid.to_string();
    let mut all = vec!["dump", &pid, "-o", image.to_str().unwrap()];
    all.extend_from_slice(args);
    ckpt_ok(&all);
    let d = t.elapsed();
    p.reap();
    d
}

/// No connection lock of ckpt left in the firewall.
fn lock_tables() -> Vec<String> {
    let o = Command::new("nft")
        .args(["list", "tables", "inet"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("ckpt_lock_"))
        .map(str::to_string)
        .collect()
}

fn pattern(start: usize, n: usize) -> Vec<u8> {
    (start..start + n)
        .map(|i| ((i * 7 + i / 65521) % 251) as u8)
        .collect()
}

/// An HTTP/1.1 response's headers (up to the blank line) and its
/// Content-Length.
fn read_head(c: &mut TcpStream) -> (String, usize) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).expect("reading response headers");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    (head, len)
}

fn get(c: &mut TcpStream, path: &str) -> Vec<u8> {
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (_, len) = read_head(c);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    body
}

#[test]
fn http_client_keeps_its_connection_with_a_large_response_in_flight() {
    ckpt_testkit::require!(require::root(), nft());
    let dir = TempDir::new("http");
    let mut p = python_fixture(&dir, "httpserver.py", &[]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let port = values(&ready, "port=")[0];
    let addr = format!("127.0.0.1:{port}");
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(get(&mut c, "/n"), b"n=1\n");
    // 16 MiB, of which we read 512 KiB: the rest is in flight (the
    // server's send queue, our receive queue) or not written yet.
    let size = 16 << 20;
    write!(c, "GET /big?size={size} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (_, len) = read_head(&mut c);
    assert_eq!(len, size);
    let mut body = vec![0u8; 512 << 10];
    c.read_exact(&mut body).unwrap();
    p.wait_line(|l| l.starts_with("big start"));
    std::thread::sleep(Duration::from_millis(300));
    let image = dir.join("http.ckpt");
    let dumped = dump_with(&mut p, &image, &["--tcp-established"]);
    assert_eq!(
        lock_count_for(&image),
        1,
        "the lock stays until the restore"
    );
    // Downtime: the connection is frozen, nothing lost.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut r = restore_detached(&image, &p.out, p.pid);
    let restored = t.elapsed();
    let mut rest = vec![0u8; size - body.len()];
    c.read_exact(&mut rest)
        .expect("reading the rest of the response");
    body.extend_from_slice(&rest);
    assert!(
        body == pattern(0, size),
        "the 16 MiB response is not intact"
    );
    // The same connection goes on, and so does the server's state.
    assert_eq!(get(&mut c, "/n"), b"n=2\n");
    let mut c2 = TcpStream::connect(&addr).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(get(&mut c2, "/n"), b"n=3\n");
    assert_eq!(lock_count_for(&image), 0, "the restore removed the lock");
    eprintln!("http: dump {dumped:?}, restore {restored:?}");
    r.kill();
}

/// The lock tables of the image (by its lock tag).
fn lock_count_for(image: &Path) -> usize {
    let show = ckpt_ok(&["show", "--json", image.to_str().unwrap()]);
    let tags: Vec<String> = show
        .split("\"lockTag\":")
        .skip(1)
        .filter_map(|s| s.split('"').nth(1).map(str::to_string))
        .filter(|t| !t.is_empty())
        .collect();
    let tables = lock_tables();
    let mut n = 0;
    let mut seen = std::collections::BTreeSet::new();
    for t in tags {
        if seen.insert(t.clone()) && tables.iter().any(|l| l.contains(&format!("ckpt_lock_{t}"))) {
            n += 1;
        }
    }
    n
}

#[test]
fn connections_with_both_ends_and_queued_data_both_ways() {
    ckpt_testkit::require!(require::root(), nft());
    let dir = TempDir::new("tcppair");
    let mut p = python_fixture(&dir, "tcppair.py", &[]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("pair.ckpt");
    let dumped = dump_with(&mut p, &image, &["--tcp-established"]);
    let show = ckpt_ok(&["show", image.to_str().unwrap()]);
    assert!(show.contains("inet-socket"), "{show}");
    let t = Instant::now();
    let r = restore_detached(&image, &p.out, p.pid);
    let restored = t.elapsed();
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l.starts_with("ALL OK"));
    let out = r.output();
    for name in ["v4", "v6", "mapped"] {
        assert!(out.contains(&format!("pair={name} ok")), "{}", tail(&out));
    }
    assert!(out.contains("halfclosed ok"), "{}", tail(&out));
    assert!(out.contains("options ok"), "{}", tail(&out));
    eprintln!("tcp pairs: dump {dumped:?}, restore {restored:?}");
}

#[test]
fn live_connections_are_refused_without_an_option() {
    let dir = TempDir::new("tcp-refused");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('READY',flush=True)\ntime.sleep(600)\n"
    );
    let p = Proc::spawn(&dir, Path::new("python3"), &["-c", &script]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("c.ckpt");
    let o = ckpt_run(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "dump of a live connection");
    assert!(
        err.contains("--tcp-established") && err.contains("--tcp-close"),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(p.alive());
    assert!(!image.exists());
}

#[test]
fn a_listeners_accept_queue_is_put_back() {
    ckpt_testkit::require!(require::root(), nft());
    let dir = TempDir::new("accept-queue");
    // A server that accepts only once "go" exists; three clients wait in
    // its accept queue, two having sent a request, one having closed.
    let script = r#"
import os, socket, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(8)
print("READY port=%d" % l.getsockname()[1], flush=True)
while not os.path.exists("go"):
    time.sleep(0.02)
for i in range(3):
    c, _ = l.accept()
    data = b""
    c.settimeout(5)
    while not data.endswith(b"\n") and len(data) < 100:
        chunk = c.recv(100)
        if not chunk:
            break
        data += chunk
    c.sendall(b"echo " + data)
    print("accepted %s" % data.decode().strip(), flush=True)
    c.close()
print("DONE", flush=True)
time.sleep(600)
"#;
    let mut p = Proc::spawn(&dir, Path::new("python3"), &["-c", script]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let port = values(&ready, "port=")[0];
    let addr = format!("127.0.0.1:{port}");
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        writeln!(c, "request {i}").unwrap();
        if i == 2 {
            c.shutdown(std::net::Shutdown::Write).unwrap();
        }
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(100));
    let image = dir.join("aq.ckpt");
    dump_with(&mut p, &image, &["--tcp-established"]);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, format!("echo request {i}\n"), "client {i}");
    }
    r.wait_line(|l| l.starts_with("DONE"));
    let out = r.output();
    assert_eq!(out.matches("accepted request").count(), 3, "{}", tail(&out));
}

#[test]
fn tcp_close_restores_connections_aborted() {
    ckpt_testkit::require!(require::root(), nft());
    let dir = TempDir::new("tcp-close");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import os,socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('READY',flush=True)\nwhile not os.path.exists('go'): time.sleep(0.02)\ntry:\n    s.send(b'x'); print('sent', s.recv(10), flush=True)\nexcept OSError as e:\n    print('aborted errno=%d' % e.errno, flush=True)\ntime.sleep(600)\n"
    );
    let mut p = Proc::spawn(&dir, Path::new("python3"), &["-c", &script]);
    p.wait_line(|l| l.starts_with("READY"));
    let (mut peer, _) = listener.accept().unwrap();
    let image = dir.join("close.ckpt");
    dump_with(&mut p, &image, &["--tcp-close"]);
    assert_eq!(lock_count_for(&image), 0, "--tcp-close locks nothing");
    // The peer saw the dumped process die: end of file.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(peer.read(&mut b), Ok(0) | Err(_)));
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    let line = r.wait_line(|l| l.starts_with("aborted") || l.starts_with("sent"));
    assert!(line.starts_with("aborted"), "{line}");
}

#[test]
fn a_killed_dump_leaves_no_lock_and_the_connection_works() {
    ckpt_testkit::require!(require::root(), nft());
    let dir = TempDir::new("tcp-killed-dump");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('READY',flush=True)\nn=0\nwhile True:\n    d=s.recv(100)\n    if not d: break\n    s.sendall(d)\n    n+=1\n    print('echoed=%d' % n, flush=True)\n"
    );
    let p = Proc::spawn(&dir, Path::new("python3"), &["-c", &script]);
    p.wait_line(|l| l.starts_with("READY"));
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The caller first: the worker notices and lets everything go; then
    // the worker itself: the caller removes what it left.
    for victim in ["caller", "worker"] {
        let image = dir.join(format!("k-{victim}.ckpt"));
        let mut child = ckpt()
            .args([
                "dump",
                &p.pid.to_string(),
                "-o",
                image.to_str().unwrap(),
                "--tcp-established",
            ])
            .env("CKPT_TEST_DELAY_MS", "400")
            .spawn()
            .unwrap();
        // Wait for this dump's lock (its tag starts with the worker's pid
        // in hex): the dump is under way.
        let worker = worker_of(child.id() as i32);
        let mine = format!("ckpt_lock_{worker:x}_");
        let t = Instant::now();
        while !lock_tables().iter().any(|l| l.contains(&mine)) {
            assert!(t.elapsed() < Duration::from_secs(10), "no lock appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        let target = if victim == "caller" {
            child.id() as i32
        } else {
            worker
        };
        ckpt_sys::proc::kill(target, libc::SIGKILL).unwrap();
        let _ = child.wait();
        let t = Instant::now();
        while lock_tables().iter().any(|l| l.contains(&mine)) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{victim} killed: the lock stayed: {:?}",
                lock_tables()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!image.exists());
        if victim == "worker" {
            // A killed worker (the tracer) lets the kernel detach the
            // process; that it survives is the freeze's business, not
            // the lock's: only the lock is checked here.
            continue;
        }
        assert_free(p.pid, victim);
        // The connection works both ways.
        peer.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping", "{victim}");
    }
}

/// The dump worker forked by `ckpt dump` (pid `caller`).
fn worker_of(caller: i32) -> i32 {
    let t = Instant::now();
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{caller}/task/{caller}/children"))
            .unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next().and_then(|k| k.parse().ok()) {
            return k;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no worker");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_connection_in_syn_sent_completes_after_the_restore() {
    ckpt_testkit::require!(require::root(), nft());
    let dir = TempDir::new("syn-sent");
    // A listener whose accept queue is full drops new SYNs: a client
    // connecting to it stays in SYN-SENT, retrying.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    ckpt_sys::fds::socket::listen(fd, 0).unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    let script = format!(
        "import os,socket,time,errno\ns=socket.socket()\ns.setblocking(False)\nr=s.connect_ex(('127.0.0.1',{}))\nprint('READY', r, flush=True)\ns.setblocking(True)\ns.settimeout(30)\nwhile not os.path.exists('go'): time.sleep(0.02)\ns.sendall(b'hello from syn-sent')\nprint('sent', flush=True)\nprint('got', s.recv(100).decode(), flush=True)\ntime.sleep(600)\n",
        addr.port()
    );
    let mut p = Proc::spawn(&dir, Path::new("python3"), &["-c", &script]);
    p.wait_line(|l| l.starts_with("READY"));
    std::thread::sleep(Duration::from_millis(200));
    let image = dir.join("syn.ckpt");
    dump_with(&mut p, &image, &["--tcp-established"]);
    let show = ckpt_ok(&["show", image.to_str().unwrap()]);
    assert!(show.contains("SYN sent"), "{show}");
    // Room in the accept queue: the restored SYN's first retransmission
    // (a second after the restore) gets in.
    let (_filled, _) = listener.accept().unwrap();
    drop(filler);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    let t = Instant::now();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 19];
    conn.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello from syn-sent");
    eprintln!("syn-sent: connected {:?} after the restore", t.elapsed());
    conn.write_all(b"welcome").unwrap();
    r.wait_line(|l| l.starts_with("got welcome"));
}

/// The start of the connection tests' Python scripts: a TCP connection
/// over loopback, `c` its client end and `s` the accepted one (the
/// listener closed), SIGPIPE ignored.
const LOOPBACK_PAIR: &str = r#"
import errno, os, signal, socket, struct, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname())
s, _ = l.accept()
l.close()
"#;

/// `python3 -c SCRIPT DIR` once it says READY, dumped (killed) and
/// restored; then told to go on (the file DIR/go, which the script waits
/// for: what it checks happens after the restore).
fn restored_then_go(dir: &TempDir, script: &str) -> Proc {
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(dir, Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("image.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r
}

/// A connection both sides shut before the dump (zdtm socket-tcp-close2):
/// its sockets are closed, their ports given back (sock_diag lists them no
/// more). A plain dump saves them as closed connections: after the restore
/// reads give end of file, writes EPIPE.
#[test]
fn connections_closed_before_the_dump_stay_closed() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("tcp-closed");
    let script = format!(
        "{LOOPBACK_PAIR}{}",
        r#"
c.shutdown(socket.SHUT_WR); s.shutdown(socket.SHUT_WR)
time.sleep(0.3)
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
out = []
for x in (s, c):
    out.append(len(x.recv(1)))
    try:
        x.send(b"x"); out.append("sent")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print("closed=%s" % out, flush=True)
time.sleep(600)
"#
    );
    let r = restored_then_go(&dir, &script);
    r.wait_line(|l| l == "closed=[0, 'EPIPE', 0, 'EPIPE']");
}

/// A connection reset by its peer after the peer sent bytes the process
/// has not read yet (zdtm socket-tcp-reseted): a plain dump saves the
/// bytes; after the restore they are read first, then the reset shows
/// (ECONNRESET), and writes fail.
#[test]
fn a_reset_connection_keeps_its_unread_bytes() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("tcp-reset");
    let script = format!(
        "{LOOPBACK_PAIR}{}",
        r#"
s.sendall(b"unread bytes " * 1000)
time.sleep(0.1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
time.sleep(0.2)
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
got = b""
try:
    while True:
        b = c.recv(100000)
        if not b:
            got += b"<eof>"
            break
        got += b
except OSError as e:
    got += b"<" + errno.errorcode[e.errno].encode() + b">"
try:
    c.send(b"x"); w = "sent"
except OSError as e:
    w = errno.errorcode[e.errno]
print("read %d bytes, ok=%s, then %s, write %s" % (got.count(b"unread bytes "), got.startswith(b"unread bytes " * 1000), got[13000:].decode(), w), flush=True)
time.sleep(600)
"#
    );
    let r = restored_then_go(&dir, &script);
    r.wait_line(|l| l.starts_with("read "));
    assert!(
        r.output()
            .contains("read 1000 bytes, ok=True, then <ECONNRESET>, write EPIPE"),
        "{}",
        r.output()
    );
}
