//! Sockets: listening TCP sockets listen again; unix sockets (pairs,
//! listeners, queued messages with fds and credentials); UDP with queued
//! datagrams; raw sockets (`ping`); netlink (`ip monitor`). Live TCP
//! connections: connections.rs.

use crate::util::*;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// A Python fixture script of tests/fixtures, started with `args`.
pub(crate) fn python_fixture(dir: &TempDir, script: &str, args: &[&str]) -> Proc {
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
fn unbound_tcp_sockets_keep_their_options() {
    let dir = TempDir::new("tcp-unbound");
    let mut p = python_fixture(&dir, "unbound.py", &[]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("unbound.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    let before = r.line_count();
    ckpt_sys::proc::kill(r.pid, libc::SIGUSR1).unwrap();
    let opts = r.wait_line_after(before, |l| l.starts_with("OPTS"));
    assert_eq!(opts, "OPTS keepalive=1 nodelay=1 name=0");
    let listen = r.wait_line_after(before, |l| l.starts_with("LISTEN"));
    let port = values(&listen, "port=")[0];
    assert!(port > 0, "{listen}");
}

/// Options a bind needed and the process turned off since: IP_FREEBIND
/// (addresses of no interface, zdtm sk-freebind-false) and SO_REUSEPORT
/// (two listeners on one port, zdtm socket-tcp-reuseport). The restore
/// binds with them and leaves the saved values.
#[test]
fn binds_that_needed_options_turned_off_since() {
    let dir = TempDir::new("bindopts");
    let mut p = python_fixture(&dir, "bindopts.py", &[]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let port = values(&ready, "port=")[0];
    let image = dir.join("bindopts.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    let before = r.line_count();
    ckpt_sys::proc::kill(r.pid, libc::SIGUSR1).unwrap();
    let opts = r.wait_line_after(before, |l| l.starts_with("OPTS"));
    assert_eq!(
        opts,
        "OPTS freebind=0,0 udp4=192.0.2.7 udp6=2001:db8::7 reuseport=0,1"
    );
    r.wait_line_after(before, |l| l.starts_with("ACCEPTED"));
    assert!(port > 0);
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

#[test]
fn udp_sockets_keep_their_queued_datagrams() {
    use std::net::UdpSocket;
    let dir = TempDir::new("udp");
    let mut p = python_fixture(&dir, "udpserver.py", &[]);
    let ready = p.wait_line(|l| l.starts_with("READY"));
    let (p4, p6, pl) = (
        values(&ready, "port4=")[0],
        values(&ready, "port6=")[0],
        values(&ready, "portlite=")[0],
    );
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let u6 = UdpSocket::bind("[::1]:0").unwrap();
    let sizes = [0usize, 10, 30000, 1, 500];
    for (i, n) in sizes.iter().enumerate() {
        let d: Vec<u8> = (0..*n).map(|k| ((i + k) % 256) as u8).collect();
        u.send_to(&d, format!("127.0.0.1:{p4}")).unwrap();
    }
    for i in 0..3 {
        u6.send_to(format!("six {i}").as_bytes(), format!("[::1]:{p6}"))
            .unwrap();
    }
    // To the dual-stack socket over IPv4: a v4-mapped source.
    u.send_to(b"mapped", format!("127.0.0.1:{p6}")).unwrap();
    // UDP-Lite, from a raw-free sender: a UDP-Lite socket of ours.
    let lite = ckpt_sys::fds::socket::socket(libc::AF_INET, libc::SOCK_DGRAM, 136).unwrap();
    let to = ckpt_sys::fds::socket::sockaddr_inet(&format!("127.0.0.1:{pl}").parse().unwrap());
    use std::os::fd::AsRawFd;
    ckpt_sys::fds::socket::send_to(lite.as_raw_fd(), b"lite!", &to).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let image = dir.join("udp.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l.starts_with("DONE"));
    let out = r.output();
    assert!(
        out.contains("options broadcast=1 ttl=5 tos=16 nonblock=1 owner=1 async=1"),
        "{}",
        tail(&out)
    );
    let got: Vec<&str> = out.lines().filter(|l| l.starts_with("got ")).collect();
    let port = u.local_addr().unwrap().port();
    let port6 = u6.local_addr().unwrap().port();
    for (i, n) in sizes.iter().enumerate() {
        let sum: usize = (0..*n).map(|k| (i + k) % 256).sum::<usize>() % 65536;
        let want = format!("got sock=s4 n={i} from=127.0.0.1:{port} len={n} sum={sum}");
        assert_eq!(got.get(i).copied(), Some(want.as_str()), "{}", tail(&out));
    }
    // Then what the connected socket sent after the restore.
    assert!(
        got[5].starts_with("got sock=s4 n=5") && got[5].contains("len=14"),
        "{}",
        tail(&out)
    );
    for i in 0..3 {
        assert!(
            out.contains(&format!("got sock=s6 n={i} from=::1:{port6} len=5")),
            "{}",
            tail(&out)
        );
    }
    assert!(
        out.contains(&format!(
            "got sock=s6 n=3 from=::ffff:127.0.0.1:{port} len=6"
        )),
        "{}",
        tail(&out)
    );
    assert!(out.contains("got sock=lite n=0"), "{}", tail(&out));
}

#[test]
fn unix_messages_keep_their_fds_credentials_and_senders() {
    let dir = TempDir::new("unixmsgs");
    let mut p = python_fixture(&dir, "unixmsgs.py", &[]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("um.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l.starts_with("ALL OK"));
    let out = r.output();
    for what in ["seqpacket ok", "dgram ok", "stream ok"] {
        assert!(out.contains(what), "{}", tail(&out));
    }
}

#[test]
fn ping_keeps_pinging() {
    ckpt_testkit::require!(require::tool("ping", "apt-get install iputils-ping"));
    let dir = TempDir::new("ping");
    let mut p = Proc::spawn(
        &dir,
        std::path::Path::new("ping"),
        &["-i", "0.05", "127.0.0.1"],
    );
    p.wait_line(|l| l.contains("icmp_seq=5 "));
    let image = dir.join("ping.ckpt");
    dump_kill(&mut p, &image);
    let seq_before = *values(&p.output().replace("icmp_seq=", " icmp_seq="), "icmp_seq=")
        .last()
        .unwrap();
    let r = restore_detached(&image, &p.out, p.pid);
    let want = seq_before + 10;
    r.wait_line(|l| l.contains(&format!("icmp_seq={want} ")));
    let out = r.output().replace("icmp_seq=", " icmp_seq=");
    let seqs = values(&out, "icmp_seq=");
    // Replies go on where they were: at most one lost at the dump.
    let lost = (seqs[0]..=want).filter(|s| !seqs.contains(s)).count();
    assert!(lost <= 1, "{lost} replies lost: {}", tail(&out));
    assert_eq!(out.matches("PING ").count(), 1, "started over");
}

#[test]
fn ip_monitor_keeps_listening() {
    ckpt_testkit::require!(require::tool("ip", "apt-get install iproute2"));
    let dir = TempDir::new("ipmon");
    let mut p = Proc::spawn(&dir, std::path::Path::new("ip"), &["monitor", "address"]);
    // Give it a moment to join its groups.
    std::thread::sleep(Duration::from_millis(300));
    let image = dir.join("ipmon.ckpt");
    dump_kill(&mut p, &image);
    let show = ckpt_ok(&["show", image.to_str().unwrap()]);
    assert!(show.contains("netlink-socket"), "{show}");
    let r = restore_detached(&image, &p.out, p.pid);
    // An event after the restore reaches it (a loopback address of this
    // test's own, added and removed).
    let addr = format!("127.0.{}.{}/32", std::process::id() % 250 + 1, 77);
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["addr", "add", &addr, "dev", "lo"]);
    ip(&["addr", "del", &addr, "dev", "lo"]);
    let bare = addr.trim_end_matches("/32").to_string();
    r.wait_line(|l| l.contains("Deleted") && l.contains(&bare));
}

#[test]
fn unix_peers_outside_the_dump_need_an_option() {
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    let dir = TempDir::new("unix-ext");
    let path = dir.join("outside.sock");
    let l = UnixListener::bind(&path).unwrap();
    let script = format!(
        "import os,socket,time\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\nprint('READY',flush=True)\nwhile not os.path.exists('go'): time.sleep(0.02)\ntry:\n    s.sendall(b'after')\nexcept OSError as e:\n    print('send errno', e.errno, flush=True)\nprint('read', s.recv(100), flush=True)\ntime.sleep(600)\n",
        path.to_str().unwrap()
    );
    // Each process in a directory of its own (its own output file).
    let spawn = |d: &TempDir| {
        let p = Proc::spawn(d, std::path::Path::new("python3"), &["-c", &script]);
        p.wait_line(|l| l.starts_with("READY"));
        p
    };
    // Refused without the option, naming the peer.
    let mut p = spawn(&dir);
    let (mut first, _) = l.accept().unwrap();
    let image = dir.join("ext.ckpt");
    let o = ckpt_run(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "dump of a unix socket connected outside");
    assert!(
        err.contains("--unix-external") && err.contains("outside the dump"),
        "{err}"
    );
    assert!(p.alive());
    // close: the restored socket's peer has gone.
    first.write_all(b"before").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    ckpt_ok(&[
        "dump",
        &p.pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "--unix-external=close",
    ]);
    p.reap();
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    // It reads what was queued, then end of file.
    r.wait_line(|l| l.starts_with("read b'before'"));
    drop(r);
    // reconnect: a new connection to the same name.
    let dir2 = TempDir::new("unix-ext2");
    let mut p = spawn(&dir2);
    let (_second, _) = l.accept().unwrap();
    let image2 = dir2.join("ext2.ckpt");
    ckpt_ok(&[
        "dump",
        &p.pid.to_string(),
        "-o",
        image2.to_str().unwrap(),
        "--unix-external=reconnect",
    ]);
    p.reap();
    let r = restore_detached(&image2, &p.out, p.pid);
    let (mut third, _) = l.accept().unwrap();
    std::fs::write(dir2.join("go"), b"").unwrap();
    let mut b = [0u8; 5];
    use std::io::Read;
    third.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"after");
    third.write_all(b"hi").unwrap();
    r.wait_line(|l| l.starts_with("read b'hi'"));
}

#[test]
fn packet_sockets_keep_receiving() {
    let dir = TempDir::new("packet");
    // A packet socket bound to lo for UDP to one port; prints what it
    // reads once "go" exists.
    let script = r#"
import os, socket, struct, time
ETH_P_IP = 0x0800
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
s.bind(("lo", ETH_P_IP))
print("READY", flush=True)
while not os.path.exists("go"):
    time.sleep(0.02)
s.settimeout(10)
while True:
    data = s.recv(65536)
    if b"packet-probe" in data:
        print("seen probe", flush=True)
        break
time.sleep(600)
"#;
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("pkt.ckpt");
    dump_kill(&mut p, &image);
    let show = ckpt_ok(&["show", image.to_str().unwrap()]);
    assert!(show.contains("packet-socket"), "{show}");
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    probe_until_seen(&r, b"packet-probe", "seen probe");
}

/// Send `probe` in UDP datagrams on lo (to the discard port) every 50 ms
/// until the output of `r` says `seen`; at most 10 s.
fn probe_until_seen(r: &Proc, probe: &[u8], seen: &str) {
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = std::time::Instant::now();
    while !r.output().contains(seen) {
        u.send_to(probe, "127.0.0.1:9").unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no {seen:?} after 10 s of probes: {}",
            tail(&r.output())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A packet socket's receive ring mapped into the process (zdtm
/// packet_sock_mmap): the mapping comes back at its address, on the
/// restored socket's new ring, which takes packets again; what is left
/// of the rings after a partial munmap is refused by name.
#[test]
fn packet_ring_mappings_come_back_and_parts_are_refused() {
    let dir = TempDir::new("packet-ring");
    // All of lo's traffic into a ring of 8 frames of 2 KiB (TPACKET_V1);
    // each frame the kernel hands over (tp_status & TP_STATUS_USER) is
    // counted, looked at and given back.
    let ring = r#"
import ctypes, mmap, os, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("lo", 3))
# PACKET_RX_RING (5): tp_block_size, tp_block_nr, tp_frame_size, tp_frame_nr
s.setsockopt(263, 5, struct.pack("IIII", 4096, 4, 2048, 8))
if sys.argv[1:] == ["closed"]:
    # Python's mmap keeps a dup of the fd: a mapping of libc's, and no fd.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, 4096 * 4, 3, 1, s.fileno(), 0)
    s.close()
    print(f"READY addr={addr:x}", flush=True)
    time.sleep(600)
m = mmap.mmap(s.fileno(), 4096 * 4)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
frames = 8
if sys.argv[1:] == ["part"]:
    frames = 6
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    assert libc.munmap(addr + 3 * 4096, 4096) == 0
print(f"READY addr={addr:x}", flush=True)
seen = 0
while True:
    for i in range(frames):
        off = i * 2048
        if struct.unpack_from("Q", m, off)[0] & 1:
            if b"ring-probe" in m[off:off + 2048]:
                seen += 1
                print(f"probe in ring {seen}", flush=True)
            struct.pack_into("Q", m, off, 0)
    time.sleep(0.01)
"#;
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", ring]);
    p.wait_line(|l| l.starts_with("READY"));
    let maps = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let ring_line = |pid: i32| {
        maps(pid)
            .lines()
            .find(|l| l.contains("socket:["))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
    };
    let before = ring_line(p.pid).expect("the ring is mapped");
    let image = dir.join("ring.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    assert_eq!(ring_line(p.pid).as_deref(), Some(before.as_str()));
    probe_until_seen(&r, b"ring-probe", "probe in ring");

    // What is left of the rings after a munmap, and the rings of a socket
    // whose fd was closed: refused by name, the process left running.
    for (arg, needles) in [
        ("part", ["a part of a packet socket's rings", "(socket:["]),
        ("closed", ["no fd of the process holds", "(socket:["]),
    ] {
        let d = TempDir::new(&format!("packet-ring-{arg}"));
        let p = Proc::spawn(&d, std::path::Path::new("python3"), &["-c", ring, arg]);
        p.wait_line(|l| l.starts_with("READY"));
        let image = d.join("ring.ckpt");
        let o = ckpt_run(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
        let err = assert_clean_failure(&o, arg);
        assert!(needles.iter().all(|n| err.contains(n)), "{err}");
        assert!(!image.exists());
        assert!(p.alive());
    }
}

/// Python: three unix datagram receivers bound in turn at `name`, each
/// with a client connected by the name, the name unlinked after each
/// (`pairs`: the (receiver, client) sockets).
const THREE_BOUND_IN_TURN: &str = r#"
pairs = []
for i in range(3):
    r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    r.bind(name)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    c.connect(name)
    os.unlink(name)
    pairs.append((r, c))
"#;

/// Datagram receivers bound in turn to one long name, each unlinked
/// before the next bind, each with a client connected to it (zdtm
/// sk-unix01 in a deep directory): every client still reaches its own
/// receiver, not the one bound at the name last. The restore binds them
/// in turn too, moving each file aside meanwhile; a name near the 107
/// bytes of a socket address must not make it connect by the plain name.
#[test]
fn clients_of_receivers_rebound_at_one_long_name_reach_their_own() {
    let dir = TempDir::new("longname");
    let deep = dir.join("d".repeat(40)).join("e".repeat(20));
    std::fs::create_dir_all(&deep).unwrap();
    let script = format!(
        "{}{THREE_BOUND_IN_TURN}{}",
        r#"
import os, socket, sys, time
name = os.path.join(sys.argv[1], "sk-dt")
"#,
        r#"
print(f"READY len={len(name)}", flush=True)
while not os.path.exists(os.path.join(sys.argv[1], "..", "go")):
    time.sleep(0.02)
for i, (r, c) in enumerate(pairs):
    c.send(b"to %d" % i)
for i, (r, c) in enumerate(pairs):
    r.settimeout(5)
    print("receiver", i, "got", r.recv(100).decode(), flush=True)
time.sleep(600)
"#
    );
    let mut p = Proc::spawn(
        &dir,
        std::path::Path::new("python3"),
        &["-c", &script, deep.to_str().unwrap()],
    );
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("long.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(deep.join("..").join("go"), b"").unwrap();
    r.wait_line(|l| l.starts_with("receiver 2 "));
    let out = r.output();
    for i in 0..3 {
        assert!(
            out.contains(&format!("receiver {i} got to {i}")),
            "{}",
            tail(&out)
        );
    }
    let left: Vec<_> = std::fs::read_dir(&deep).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn unlinked_socket_names_and_fifos_come_back_unlinked() {
    // A connection accepted from a listener closed since, its file
    // unlinked; a FIFO unlinked while open; a datagram socket whose file
    // was unlinked and replaced by a FIFO; bytes waiting in the three.
    let dir = TempDir::new("unlinked");
    let mut p = python_fixture(&dir, "unlinked.py", &[]);
    p.wait_line(|l| l.starts_with("READY"));
    p.wait_line(|l| l.starts_with("tick=3 "));
    let path = dir.join("gone.sock");
    let image = dir.join("u.ckpt");
    dump_kill(&mut p, &image);
    let before = p.line_count();
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(5);
    let out = r.output();
    assert!(!out.contains("ERROR"), "{}", tail(&out));
    let name = path.to_str().unwrap();
    let taken = dir.join("taken.sock");
    let after: Vec<&str> = out.lines().skip(before).collect();
    assert!(
        after
            .iter()
            .filter(|l| l.starts_with("tick="))
            .all(|l| l.ends_with(&format!(
                " sock={name} peer={name} dgram={}",
                taken.display()
            ))),
        "names changed:\n{}",
        tail(&out)
    );
    assert_consecutive_ticks(&out);
    assert!(!path.exists(), "the socket file is back");
    assert!(!dir.join("gone.fifo").exists(), "the FIFO is back");
    use std::os::unix::fs::FileTypeExt;
    let ft = std::fs::symlink_metadata(&taken).unwrap().file_type();
    assert!(
        ft.is_fifo(),
        "the FIFO in the datagram socket's place is gone"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ck"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// tick=N lines go on one by one (nothing lost or repeated).
fn assert_consecutive_ticks(out: &str) {
    let v = values(out, "tick=");
    for w in v.windows(2) {
        assert_eq!(w[1], w[0] + 1, "tick jumped:\n{}", tail(out));
    }
}

/// zdtm's sk-unix01: datagram sockets bound in turn to one name in a
/// directory that was deleted since, each with a client connected to it:
/// the directory is made again for the binds and goes again; each client
/// still reaches its own receiver.
#[test]
fn sockets_deleted_with_their_directory_come_back() {
    let dir = TempDir::new("unlinked-dir");
    let script = format!(
        "{}{THREE_BOUND_IN_TURN}{}",
        r#"
import os, socket, sys, time
os.mkdir("sub")
name = os.path.abspath("sub/s.sock")
"#,
        r#"
os.rmdir("sub")
print("READY", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
got = []
for i, (r, c) in enumerate(pairs):
    c.send(b"m%d" % i)
    got.append(r.recv(10).decode())
print("got=%s sub=%s" % (",".join(got), os.path.exists("sub")), flush=True)
time.sleep(600)
"#
    );
    need(require::tool("python3", "apt-get install python3"));
    let mut p = Proc::spawn(&dir, "python3", &["-c", &script]);
    p.wait_line(|l| l == "READY");
    let image = dir.join("x.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    assert!(!dir.join("sub").exists(), "the directory is back");
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "got=m0,m1,m2 sub=False");
}

/// An epoll instance in flight (passed in a queued unix message, its fd
/// closed) that watches an fd the process still holds (zdtm scm05): it
/// comes back in the message, with its watch.
#[test]
fn an_epoll_in_flight_keeps_its_watch() {
    need(require::tool("python3", "apt-get install python3"));
    let dir = TempDir::new("epoll-inflight");
    let script = r#"
import os, select, socket, sys, time
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
ep = select.epoll()
ep.register(b.fileno(), select.EPOLLIN)
socket.send_fds(a, [b"x"], [ep.fileno()])
ep.close()
a.send(b"data")
print("READY", flush=True)
while not os.path.exists(sys.argv[1] + "/go"):
    time.sleep(0.01)
_, fds, _, _ = socket.recv_fds(b, 1, 1)
got = select.epoll.fromfd(fds[0]).poll(0)
print("events=%s" % [(fd == b.fileno(), ev) for fd, ev in got], flush=True)
time.sleep(600)
"#;
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, std::path::Path::new("python3"), &["-c", script, &d]);
    p.wait_for("READY");
    let image = dir.join("epoll.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    std::fs::write(dir.join("go"), b"").unwrap();
    r.wait_line(|l| l == "events=[(True, 1)]");
}
