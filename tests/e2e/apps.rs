//! Real programs made of several processes, dumped and restored whole:
//! nginx (a master and its workers), redis in the middle of a BGSAVE (a
//! forked child writing the dump), `make -j2` mid-build, postgres.
//! scripts/install-deps installs them; a missing one fails its test.

use crate::util::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The program `name` on PATH (or in /usr/sbin); a test without it fails.
fn program(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/lib/postgresql/15/bin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed (scripts/install-deps installs it)");
}

/// A TCP port free on 127.0.0.1 now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `root` and its descendants, parents first.
fn tree_of(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in rd.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    kids.split_whitespace()
                        .filter_map(|w| w.parse::<i32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// Kills a tree (and reaps what comes to us) when dropped.
struct Tree(Vec<i32>);

impl Drop for Tree {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = ckpt_sys::proc::kill(p, libc::SIGKILL);
        }
        for &p in &self.0 {
            let t = Instant::now();
            while Path::new(&format!("/proc/{p}")).exists() && t.elapsed() < TIMEOUT {
                ckpt_sys::proc::wait::try_reap(p);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Dump the tree of `p` (killing it), wait until all of it is gone, and
/// restore it: the root back at its pid. The restored tree is returned.
fn dump_and_restore(p: &mut Proc, image: &Path) -> Tree {
    let before = tree_of(p.pid);
    dump_kill(p, image);
    // Every process of the image (also those born after `before` was
    // read): the killed ones come to us (a subreaper) and are reaped here,
    // so that their pids are free for the restore.
    let saved: Vec<i32> = ckpt_image::ImageReader::open(image)
        .expect("the image")
        .image()
        .processes
        .iter()
        .map(|q| q.pid)
        .collect();
    for &q in before.iter().chain(&saved) {
        if q != p.pid {
            wait_gone(q);
        }
    }
    wait_gone(p.pid);
    let q = restore_detached(image, &p.out, p.pid);
    std::mem::forget(q);
    Tree(tree_of(p.pid))
}

/// Until `f` is true, at most `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `path` from 127.0.0.1:`port`: the body, None when it fails.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let (head, body) = r.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[test]
fn nginx_master_and_workers_serve_a_file() {
    let _ = fixture("counter"); // we are a subreaper: restored roots come to us
    let nginx = program("nginx");
    let dir = TempDir::new("nginx");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("index.html"), "hello from a restored nginx\n").unwrap();
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; master_process on; worker_processes 2;\n\
             error_log {d}/logs/error.log; pid {d}/logs/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {d}; }} }}\n"
        ),
    )
    .unwrap();
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.join("nginx.conf")),
    );
    wait_for("nginx to serve", TIMEOUT, || {
        http_get(port, "/index.html").is_some()
    });
    wait_for("its 2 workers", TIMEOUT, || tree_of(p.pid).len() == 3);
    let image = dir.join("nginx.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    assert_eq!(tree.0.len(), 3, "the master and its 2 workers");
    for _ in 0..20 {
        let body = http_get(port, "/index.html").expect("GET after the restore");
        assert_eq!(body, "hello from a restored nginx\n");
    }
    // A graceful stop goes through the master's channels to its workers.
    ckpt_sys::proc::kill(p.pid, libc::SIGQUIT).unwrap();
    for &q in &tree.0 {
        wait_gone(q);
    }
}

/// redis-cli against the test's server.
fn redis(port: u16, args: &[&str]) -> String {
    let o = Command::new(program("redis-cli"))
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn redis_caught_in_the_middle_of_a_bgsave() {
    let _ = fixture("counter");
    let server = program("redis-server");
    let dir = TempDir::new("redis");
    let port = free_port();
    // A save a second after a change, each key taking 2 ms to write: the
    // forked child is at it for about 4 s. (Started by the server, not by
    // a client: a client's connection would be in the child too.)
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new(&server)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "1 1", "--appendonly", "no"])
            .args(["--rdb-key-save-delay", "2000", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path()),
    );
    wait_for("redis to answer", TIMEOUT, || {
        redis(port, &["ping"]).trim() == "PONG"
    });
    let mut load = Command::new(program("redis-cli"))
        .args(["-p", &port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut cmds = String::new();
    for i in 0..2000 {
        cmds.push_str(&format!("SET key:{i} value-{i}\r\n"));
    }
    load.stdin
        .take()
        .unwrap()
        .write_all(cmds.as_bytes())
        .unwrap();
    assert!(load.wait().unwrap().success());
    wait_for("the BGSAVE child", Duration::from_secs(20), || {
        tree_of(p.pid).len() == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    let image = dir.join("redis.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    assert_eq!(tree.0.len(), 2, "the server and its saving child");
    assert!(redis(port, &["info", "persistence"]).contains("rdb_bgsave_in_progress:1"));
    // The child finishes the save, the server learns it (its wait()).
    wait_for("the BGSAVE to end", Duration::from_secs(60), || {
        let info = redis(port, &["info", "persistence"]);
        info.contains("rdb_bgsave_in_progress:0")
    });
    let info = redis(port, &["info", "persistence"]);
    assert!(info.contains("rdb_last_bgsave_status:ok"), "{info}");
    assert!(dir.join("dump.rdb").exists());
    assert_eq!(redis(port, &["dbsize"]).trim(), "2000");
    assert_eq!(redis(port, &["get", "key:1999"]).trim(), "value-1999");
    drop(tree);
}

#[test]
fn make_j2_finishes_the_build_after_a_restore() {
    let _ = fixture("counter");
    let dir = TempDir::new("make");
    let _ = program("make");
    let mut sum = 0;
    for i in 1..=6 {
        std::fs::write(
            dir.join(format!("f{i}.c")),
            format!("int f{i}(void) {{ return {i}; }}\n"),
        )
        .unwrap();
        sum += i;
    }
    std::fs::write(
        dir.join("main.c"),
        "#include <stdio.h>\nint f1(void), f2(void), f3(void), f4(void), f5(void), f6(void);\n\
         int main(void) { printf(\"sum=%d\\n\", f1() + f2() + f3() + f4() + f5() + f6()); return 0; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "OBJS = main.o f1.o f2.o f3.o f4.o f5.o f6.o\n\
         prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\
         %.o: %.c\n\t$(CC) -c $< -o $@ && sleep 0.3\n",
    )
    .unwrap();
    let mut p = Proc::spawn_cmd(&dir, Command::new("make").arg("-j2"));
    // Mid-build: two jobs running.
    wait_for("two jobs", TIMEOUT, || tree_of(p.pid).len() >= 3);
    let image = dir.join("make.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    let status = ckpt_sys::proc::wait::wait_child_exit(p.pid).expect("make is ours to wait for");
    assert_eq!(
        status,
        ckpt_sys::proc::wait::ExitKind::Exited(0),
        "{}",
        p.output()
    );
    let out = Command::new(dir.join("prog")).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sum={sum}")
    );
    drop(tree);
}

/// postgres: initdb in a temp dir, start it, write rows, dump the
/// postmaster's tree, kill it, restore, read the rows back and insert
/// more (its System V shared memory interlock segment comes back with its
/// id).
#[test]
fn postgres_rows_survive_and_more_go_in() {
    let _ = fixture("counter");
    let initdb = program("initdb");
    let postgres = program("postgres");
    let psql = program("psql");
    let dir = TempDir::new("postgres");
    Command::new("chown")
        .arg("postgres")
        .arg(dir.path())
        .status()
        .unwrap();
    let data = dir.join("data");
    let as_pg = |prog: &Path| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(prog);
        ckpt_sys::proc::close_fds_before_exec(&mut c, 3);
        c
    };
    let st = as_pg(&initdb)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let port = free_port().to_string();
    let mut p = Proc::spawn_cmd(
        &dir,
        as_pg(&postgres)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &port, "-c", "listen_addresses="]),
    );
    let sql = |q: &str| {
        Command::new(&psql)
            .arg("-h")
            .arg(dir.path())
            .args(["-p", &port, "-U", "postgres", "-tAc", q])
            .output()
            .unwrap()
    };
    wait_for("postgres", Duration::from_secs(30), || {
        sql("select 1").status.success()
    });
    assert!(
        sql("create table t(x int); insert into t select generate_series(1, 100)")
            .status
            .success()
    );
    let image = dir.join("pg.ckpt");
    let tree = dump_and_restore(&mut p, &image);
    let n = sql("select count(*) from t");
    assert_eq!(String::from_utf8_lossy(&n.stdout).trim(), "100");
    assert!(sql("insert into t values (101)").status.success());
    let n = sql("select count(*) from t");
    assert_eq!(String::from_utf8_lossy(&n.stdout).trim(), "101");
    // A fast shutdown, which removes the interlock segment: killed, the
    // postmaster would leave it behind, naming a pid the kernel gives to
    // another test's process later.
    ckpt_sys::proc::kill(p.pid, libc::SIGINT).unwrap();
    wait_for("postgres to shut down", Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
            .map_or(true, |s| s.contains(") Z "))
    });
    drop(tree);
}

/// A JVM (HotSpot, G1, its ~20 threads: compiler, GC, signal dispatcher)
/// whose worker threads fill a shared map and keep a checksum, and whose
/// main thread checks the map against the checksum every round: dumped
/// twice with --leave-running, then killed and restored, it goes on with
/// the same state, and its threads still work together.
const JAVA_COUNT: &str = r#"
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;

public class Count {
    public static void main(String[] a) throws Exception {
        ConcurrentHashMap<Integer, Long> m = new ConcurrentHashMap<>();
        AtomicLong total = new AtomicLong();
        ExecutorService pool = Executors.newFixedThreadPool(4);
        System.out.println("READY");
        for (long round = 1; ; round++) {
            final long r = round;
            CountDownLatch done = new CountDownLatch(4);
            for (int w = 0; w < 4; w++) {
                final int id = w;
                pool.submit(() -> {
                    for (int i = 0; i < 20000; i++) {
                        int k = id * 20000 + i;
                        m.merge(k, 1L, Long::sum);
                        total.incrementAndGet();
                        byte[] garbage = new byte[64];
                        garbage[0] = (byte) i;
                    }
                    done.countDown();
                });
            }
            done.await();
            long sum = 0;
            for (long v : m.values()) sum += v;
            if (sum != total.get() || sum != r * 80000L) {
                System.out.println("ERROR round " + r + ": map " + sum + ", counter " + total.get());
                System.exit(1);
            }
            System.out.println("round=" + r + " sum=" + sum);
            Thread.sleep(20);
        }
    }
}
"#;

#[test]
fn jvm_threads_and_heap_go_on_after_a_restore() {
    let java = program("java");
    let javac = program("javac");
    let dir = TempDir::new("jvm");
    std::fs::write(dir.join("Count.java"), JAVA_COUNT).unwrap();
    let st = Command::new(javac)
        .arg("-d")
        .arg(dir.path())
        .arg(dir.join("Count.java"))
        .status()
        .unwrap();
    assert!(st.success(), "javac failed");
    let mut cmd = Command::new(java);
    // A small heap keeps the image small; no perf-data file in /tmp (it
    // would be a shared mapping of a file that changes after the dump).
    cmd.args(["-Xmx128m", "-XX:-UsePerfData", "-cp"])
        .arg(dir.path())
        .arg("Count");
    let mut p = Proc::spawn_cmd(&dir, &mut cmd);
    p.wait_for("READY");
    let round = |p: &Proc| -> u64 {
        let start = p.line_count();
        let l = p.wait_line_after(start, |l| l.starts_with("round="));
        l["round=".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    round(&p);
    for i in 0..2 {
        dump_leave_running(p.pid, &dir.join(format!("lr{i}.ckpt")));
        round(&p);
    }
    let image = dir.join("jvm.ckpt");
    let before = round(&p);
    let tree = dump_and_restore(&mut p, &image);
    let a = round(&p);
    let b = round(&p);
    assert!(a > before && b > a, "rounds {before} -> {a} -> {b}");
    drop(tree);
}
