//! Sockets: listening TCP sockets are re-made (bound and listening again)
//! at restore; other sockets are refused by name at dump.

use crate::util::*;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// A Python fixture script of tests/fixtures, started with `args`.
fn python_fixture(dir: &TempDir, script: &str, args: &[&str]) -> Proc {
    need(require::tool("python3", "apt-get install python3"));
    let path = fixture(script);
    let mut all = vec![path.to_str().unwrap()];
    all.extend_from_slice(args);
    Proc::spawn(dir, "python3", &all)
}

fn ask(addr: &str) -> String {
    let mut last = None;
    // The restored server may take a moment to be scheduled; connecting
    // works at once (the kernel accepts into the backlog).
    for _ in 0..50 {
        match TcpStream::connect(addr) {
            Ok(mut c) => {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut s = String::new();
                c.read_to_string(&mut s).unwrap();
                return s;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("connect {addr}: {last:?}");
}

#[test]
fn listening_tcp_sockets_listen_again() {
    let dir = TempDir::new("tcp-listen");
    let mut p = python_fixture(&dir, "server.py", &[]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let port4 = values(&ready, "port4=")[0];
    let port6 = values(&ready, "port6=")[0];
    let a4 = format!("127.0.0.1:{port4}");
    let a6 = format!("[::1]:{port6}");
    assert_eq!(ask(&a4), "hello 1\n");
    assert_eq!(ask(&a6), "hello 2\n");
    let image = dir.join("srv.ckpt");
    dump_kill(&mut p, &image);
    let show = ckpt_ok(&["show", image.to_str().unwrap()]);
    assert!(show.contains(&port4.to_string()), "{show}");
    // Restored twice in turn: both times the same ports, the counter goes on.
    for round in 0..2 {
        let mut r = restore_detached(&image, &p.out, p.pid);
        assert_eq!(ask(&a4), "hello 3\n", "round {round}");
        assert_eq!(ask(&a6), "hello 4\n", "round {round}");
        r.kill();
    }
}

#[test]
fn restore_reports_a_port_in_use() {
    let dir = TempDir::new("tcp-busy");
    let p = python_fixture(&dir, "server.py", &[]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("srv.ckpt");
    // Left running: it still holds its ports.
    dump_leave_running(p.pid, &image);
    let o = ckpt_run(&["restore", "--new-pid", "--detach", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "restore while the ports are taken");
    assert!(
        err.contains("Address already in use") || err.contains("EADDRINUSE"),
        "{err}"
    );
    assert!(p.alive());
}

#[test]
fn connected_sockets_are_refused_by_name() {
    let dir = TempDir::new("tcp-conn");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('READY',flush=True)\ntime.sleep(600)\n"
    );
    let p = Proc::spawn(&dir, "python3", &["-c", &script]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("c.ckpt");
    let o = ckpt_run(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "dump of a connected socket");
    assert!(
        err.contains("TCP socket") && err.contains("established"),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(p.alive());
    assert!(!image.exists());
}

#[test]
fn unix_socketpairs_and_asyncio_survive() {
    let dir = TempDir::new("unix-pair");
    let mut p = python_fixture(&dir, "unixsock.py", &[]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_more_lines(3);
    let image = dir.join("u.ckpt");
    dump_kill(&mut p, &image);
    let before = p.line_count();
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(before + 2);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l.starts_with("accepted="));
    let out = r.output();
    assert!(out.contains("got=queued-before-dump"), "{}", tail(&out));
    assert!(out.contains("back=pong"), "{}", tail(&out));
    assert!(out.contains("accepted=via-listener"), "{}", tail(&out));
    assert_eq!(
        out.matches("READY").count(),
        1,
        "started over: {}",
        tail(&out)
    );
}

fn ask_unix(path: &std::path::Path) -> String {
    let mut c = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn unix_listener_on_a_path_listens_again() {
    let dir = TempDir::new("unix-path");
    let sock = dir.join("srv.sock");
    let mut p = python_fixture(&dir, "unixserver.py", &[sock.to_str().unwrap()]);
    p.wait_line(|l| l.starts_with("READY"));
    assert_eq!(ask_unix(&sock), "hi 1\n");
    let image = dir.join("u.ckpt");

    // While the server runs, a second copy must not take its socket away.
    dump_leave_running(p.pid, &image);
    let o = ckpt_run(&["restore", "--new-pid", "--detach", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "restore while the socket is in use");
    assert!(err.contains("Address already in use"), "{err}");
    assert_eq!(ask_unix(&sock), "hi 2\n");

    // Dumped and killed: the socket file stays behind, stale; the restore
    // replaces it and listens again.
    dump_kill(&mut p, &image);
    assert!(sock.exists());
    let mut r = restore_detached(&image, &p.out, p.pid);
    assert_eq!(ask_unix(&sock), "hi 3\n");
    r.kill();
}
