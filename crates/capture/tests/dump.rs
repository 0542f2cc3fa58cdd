//! dump() / dump_to() end to end: real processes, images read back with ImageReader.

mod common;

use ckpt_capture::{dump, dump_to, DumpOptions};
use ckpt_image::{FileKind, ImageReader};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const PROG_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
volatile long counter = 0;
volatile long magic = 0;
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    long mb = argc > 1 ? atol(argv[1]) : 0;
    magic = 0x5eed00000000L + getpid();
    char *big = NULL;
    if (mb) {
        big = malloc(mb << 20);
        for (long i = 0; i < (mb << 20); i += 4096) { big[i] = (char)(i >> 12); big[i + 1] = 1; }
    }
    char *shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    strcpy(shared + 4096, "shared anon page");
    char *guard = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    strcpy(guard, "now PROT_NONE");
    mprotect(guard, 4096, PROT_NONE);
    int p[2];
    pipe(p);
    write(p[1], "buffered", 8);
    printf("READY magic=%p counter=%p big=%p shared=%p guard=%p\n", (void *)&magic, (void *)&counter, big, shared, guard);
    long last = 0;
    for (;;) {
        counter++;
        if (counter != last + 1) { printf("ERROR jump\n"); exit(1); }
        last = counter;
        printf("count=%ld\n", counter);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}
"#;

fn read_u64(r: &ImageReader, pid: i32, addr: u64) -> u64 {
    let mut b = [0u8; 8];
    r.read_memory(pid, addr, &mut b).unwrap();
    u64::from_ne_bytes(b)
}

#[test]
fn dump_leave_running_then_read_back() {
    let dir = TempDir::new("dump");
    let bin = compile_c("prog", PROG_C);
    let p = Proc::start(&mut Command::new(&bin));
    let ready = p.wait_for("READY");
    p.wait_for("count=");
    let out = dir.path().join("img.ckpt");
    let stats = dump(
        p.pid,
        &out,
        DumpOptions {
            leave_running: true,
            ..Default::default()
        },
    )
    .expect("dump");
    eprintln!("tiny dump: {stats:?}");
    assert!(stats.freeze <= stats.total);
    assert_eq!(stats.threads, 1);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), stats.image_bytes);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let r = ImageReader::open(&out).expect("read image");
    let img = r.image();
    assert_eq!(img.root_pid, p.pid);
    assert!(img.freeze_ns > 0);
    let pid = p.pid;
    assert_eq!(
        read_u64(&r, pid, hex_field(&ready, "magic")),
        0x5eed_0000_0000 + pid as u64
    );
    let counter = read_u64(&r, pid, hex_field(&ready, "counter"));
    assert!(counter > 0);
    let mut b = [0u8; 16];
    r.read_memory(pid, hex_field(&ready, "shared") + 4096, &mut b)
        .unwrap();
    assert_eq!(&b, b"shared anon page");
    let mut b = [0u8; 13];
    r.read_memory(pid, hex_field(&ready, "guard"), &mut b)
        .unwrap();
    assert_eq!(&b, b"now PROT_NONE");
    let pipe = img
        .files
        .iter()
        .find_map(|f| match &f.kind {
            FileKind::Pipe(p) if !p.data.is_empty() => Some(p.data.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(pipe, b"buffered");

    // Still counting, without a gap.
    let mut last: u64 = field(&p.wait_for("count="), "count").parse().unwrap();
    while last < counter + 20 {
        let c: u64 = field(&p.wait_for("count="), "count").parse().unwrap();
        assert_eq!(c, last + 1);
        last = c;
    }
}

#[test]
fn dump_kills_by_default_and_dump_to_streams() {
    let bin = compile_c("prog", PROG_C);
    let mut p = Proc::start(&mut Command::new(&bin));
    p.wait_for("READY");
    let (buf, stats) = dump_to(p.pid, Vec::new(), DumpOptions::default()).expect("dump_to");
    assert_eq!(buf.len() as u64, stats.image_bytes);
    let st = p.try_wait().expect("killed and not reaped");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    let r = ImageReader::new(buf).expect("read streamed image");
    assert_eq!(r.image().processes[0].pid, p.pid);
}

#[test]
fn dump_into_missing_directory_fails_cleanly() {
    let p = Proc::start(Command::new("python3").args([
        "-c",
        "import time\ni=0\nwhile True:\n  i+=1\n  print('tick=%d' % i, flush=True)\n  time.sleep(0.005)\n",
    ]));
    p.wait_for("tick=");
    let out = std::path::Path::new("/nonexistent-ckpt-dir/sub/img.ckpt");
    let e = dump(p.pid, out, DumpOptions::default()).expect_err("must fail");
    assert!(e.to_string().contains("nonexistent-ckpt-dir"), "{e}");
    assert!(!out.exists());
    p.wait_for("tick=");
    p.wait_for("tick=");
    assert!(p.alive());
    let st = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap();
    assert!(st.contains("TracerPid:\t0"));
}

#[test]
fn failed_dump_leaves_no_file_and_process_running() {
    let dir = TempDir::new("fail");
    let p = Proc::start(Command::new("python3").args([
        "-c",
        // An io_uring instance (io_uring_setup): it cannot be saved.
        "import ctypes,time\nparams=(ctypes.c_ubyte*120)()\nassert ctypes.CDLL(None).syscall(425, 4, ctypes.byref(params)) >= 0\ni=0\nwhile True:\n  i+=1\n  print('tick=%d' % i, flush=True)\n  time.sleep(0.005)\n",
    ]));
    p.wait_for("tick=");
    let out = dir.path().join("img.ckpt");
    let e = dump(p.pid, &out, DumpOptions::default()).expect_err("io_uring refused");
    assert!(e.to_string().contains("io_uring"), "{e}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file, not even a temp file"
    );
    let a: u64 = field(&p.wait_for("tick="), "tick").parse().unwrap();
    let b: u64 = field(&p.wait_for("tick="), "tick").parse().unwrap();
    assert_eq!(b, a + 1);
}

/// 1 GiB of private memory: prints the dump time. Run with --ignored --nocapture.
#[test]
#[ignore]
fn big_dump_timing() {
    let dir = TempDir::new("big");
    let bin = compile_c("prog", PROG_C);
    let mb = std::env::var("CKPT_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024u64);
    let p = Proc::start(Command::new(&bin).arg(mb.to_string()));
    p.wait_for("READY");
    let out = dir.path().join("big.ckpt");
    for compression in [ckpt_image::Compression::None, ckpt_image::Compression::Fast] {
        let t = Instant::now();
        let stats = dump(
            p.pid,
            &out,
            DumpOptions {
                leave_running: true,
                compression,
                ..Default::default()
            },
        )
        .expect("dump");
        eprintln!(
            "{mb} MiB, {compression:?}: total {:?}, frozen {:?}, pages {} MiB, image {} MiB, wall {:?}",
            stats.total,
            stats.freeze,
            stats.pages_bytes >> 20,
            stats.image_bytes >> 20,
            t.elapsed()
        );
        let mut sink = NullSink::default();
        let t = Instant::now();
        let cap = ckpt_capture::capture(p.pid, &mut DumpOptions::default(), &mut sink).unwrap();
        let d = t.elapsed();
        cap.release().unwrap();
        eprintln!(
            "  capture into a null sink: {d:?} ({} MiB)",
            sink.bytes >> 20
        );
        std::fs::remove_file(&out).unwrap();
    }
    p.wait_for("count=");
    let _ = Duration::ZERO;
}

/// Keeps the message and fields of every event of this thread.
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0 += &format!("{}={v:?} ", f.name());
            }
        }
        let mut fields = Fields(format!("{} ", e.metadata().level()));
        e.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn dump_logs_each_step_with_its_duration() {
    let dir = TempDir::new("logs");
    let bin = ckpt_testkit::compile_c_in(&dir, "prog", PROG_C);
    let p = Proc::spawn(&dir, &bin, &[]);
    p.wait_for("READY");
    let events = Events::default();
    let out = dir.path().join("img");
    let opts = DumpOptions {
        leave_running: true,
        ..Default::default()
    };
    tracing::subscriber::with_default(events.clone(), || dump(p.pid, &out, opts)).unwrap();
    let log = events.0.lock().unwrap().clone();
    for step in [
        "freeze",
        "memory",
        "fds",
        "write",
        "released",
        "fsync",
        "dump done",
    ] {
        let line = log
            .iter()
            .find(|l| l.starts_with("INFO message=") && l.contains(&format!("message={step} ")))
            .unwrap_or_else(|| panic!("no {step:?} step in {log:#?}"));
        assert!(
            line.contains("elapsed=") || line.contains("frozen="),
            "{line}"
        );
    }
    let memory = log.iter().find(|l| l.contains("message=memory ")).unwrap();
    assert!(memory.contains("bytes="), "{memory}");
    assert!(p.alive());
}
