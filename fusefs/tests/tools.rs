//! ckptfs with the tools people already use (issue 15): whole-file tools
//! see memory through map_files/, saved contents under fds/, editors that
//! replace files, one generation per close, compaction, errors with their
//! reasons, a missing store, and the speed of `ls -laR` and `grep -r`.
//! Real FUSE mounts of synthetic images; needs root and /dev/fuse and the
//! tools (cp, tar, rsync, grep, diff, du, hexdump, sed, vim, python3);
//! fails (never skips) without them.

mod common;

use ckpt_image::ImageReader;
use common::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NEEDLE: &[u8] = b"NEEDLE-in-the-memory-of-4242";
const DATA_FILE: &str = "10000000-10040000";
const ZERO_FILE: &str = "20000000-20004000";
const TEXT_FILE: &str = "400000-402000";
const MEMFD_FILE: &str = "50000000-50002000";
const STACK_FILE: &str = "7ffc00000000-7ffc00021000";

struct Rich {
    dir: TempDir,
    store: PathBuf,
    backing: PathBuf,
    m: Mount,
}

impl Rich {
    fn p(&self, rel: &str) -> PathBuf {
        self.m.path(&format!("syn/4242/{rel}"))
    }
    fn map(&self, name: &str) -> PathBuf {
        self.p(&format!("map_files/{name}"))
    }
    fn generation(&self) -> u32 {
        ImageReader::open(&self.store.join("syn.ckpt"))
            .unwrap()
            .image()
            .generation
    }
}

fn rich_synth(backing: &Path) -> Synth {
    Synth {
        backing: Some(backing.to_path_buf()),
        rich: true,
        marker: Some(NEEDLE),
        ..Default::default()
    }
}

fn rich(name: &str) -> Rich {
    require_root_and_fuse();
    let dir = TempDir::new(name);
    let store = dir.mkdir("store");
    let backing = dir.join("text.bin");
    write_synthetic(&store.join("syn.ckpt"), &rich_synth(&backing));
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    Rich {
        dir,
        store,
        backing,
        m,
    }
}

/// Run a tool; panics (with its output) when it cannot be run at all.
fn run(cmd: &str, args: &[&str], dir: Option<&Path>) -> Output {
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output()
        .unwrap_or_else(|e| panic!("{cmd} is needed by this test: {e}"))
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn text(p: &Path) -> String {
    String::from_utf8(std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The bytes each map file must hold.
fn expected_maps() -> Vec<(&'static str, Vec<u8>)> {
    let mut data: Vec<u8> = (0..DATA_PAGES * 4096).map(data_byte).collect();
    data[MARKER_OFFSET..MARKER_OFFSET + NEEDLE.len()].copy_from_slice(NEEDLE);
    let mut text: Vec<u8> = (0..BACKING_LEN).map(backing_byte).collect();
    text.resize(2 * 4096, 0);
    vec![
        (TEXT_FILE, text),
        (DATA_FILE, data),
        (ZERO_FILE, vec![0; 4 * 4096]),
        (MEMFD_FILE, (0..2 * 4096).map(memfd_byte).collect()),
        (STACK_FILE, vec![0; 0x21000]),
    ]
}

/// Check that `dir` (an image directory, mounted or copied) holds the
/// memory of the rich synthetic image in its map files.
fn check_maps(dir: &Path, what: &str) {
    let maps = dir.join("4242/map_files");
    let mut names: Vec<String> = std::fs::read_dir(&maps)
        .unwrap_or_else(|e| panic!("{what}: {}: {e}", maps.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<&str> = expected_maps().iter().map(|(n, _)| *n).collect();
    want.sort();
    assert_eq!(names, want, "{what}: map_files");
    for (name, bytes) in expected_maps() {
        let got = std::fs::read(maps.join(name)).unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
        assert!(
            got == bytes,
            "{what}: {name} differs ({} bytes read)",
            got.len()
        );
    }
}

#[test]
fn map_files_hold_each_mapping_with_its_size_and_holes() {
    let r = rich("maps");
    check_maps(&r.m.path("syn"), "mounted");
    // Kernel-provided mappings have no file; they are in maps.
    let maps = text(&r.p("maps"));
    assert!(maps.contains("[vvar]") && maps.contains("[vdso]"), "{maps}");
    // Sizes are the mappings'; blocks are what the image stores.
    let md = |n: &str| std::fs::metadata(r.map(n)).unwrap();
    assert_eq!(md(DATA_FILE).len(), DATA_PAGES as u64 * 4096);
    assert_eq!(md(DATA_FILE).blocks(), DATA_PAGES as u64 * 4096 / 512);
    assert_eq!(md(ZERO_FILE).blocks(), 0);
    assert_eq!(
        md(TEXT_FILE).blocks(),
        0,
        "pages left to the file are not stored"
    );
    assert_eq!(md(DATA_FILE).mode() & 0o777, 0o600);
    // SEEK_DATA / SEEK_HOLE on map files and on mem.
    use nix::unistd::{lseek, Whence};
    let z = std::fs::File::open(r.map(ZERO_FILE)).unwrap();
    assert_eq!(
        lseek(&z, 0, Whence::SeekData).unwrap_err(),
        nix::errno::Errno::ENXIO
    );
    assert_eq!(lseek(&z, 0, Whence::SeekHole).unwrap(), 0);
    drop(z);
    let f = std::fs::File::open(r.map(DATA_FILE)).unwrap();
    assert_eq!(lseek(&f, 100, Whence::SeekData).unwrap(), 100);
    assert_eq!(
        lseek(&f, 0, Whence::SeekHole).unwrap(),
        DATA_PAGES as i64 * 4096
    );
    let mem = std::fs::File::open(r.p("mem")).unwrap();
    assert_eq!(lseek(&mem, 0, Whence::SeekData).unwrap(), 0x40_0000);
    assert_eq!(lseek(&mem, 0x40_0000, Whence::SeekHole).unwrap(), 0x40_2000);
    assert_eq!(
        lseek(&mem, 0x40_2000, Whence::SeekData).unwrap(),
        DATA_ADDR as i64
    );
    assert_eq!(
        lseek(&mem, ZERO_ADDR as i64, Whence::SeekData).unwrap(),
        MEMFD_ADDR as i64,
        "zero pages are a hole"
    );
    assert_eq!(
        lseek(&mem, 0x7ffc_0000_0000, Whence::SeekData).unwrap_err(),
        nix::errno::Errno::ENXIO,
        "nothing after the stack is data (vvar, vdso are not in the image)"
    );
    // A write through a map file is a write to the mapping.
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(r.map(DATA_FILE))
        .unwrap();
    assert_eq!(w.write_at(b"MAPWRITE", 100).unwrap(), 8);
    assert_eq!(
        errno(&w.write_at(b"x", DATA_PAGES as u64 * 4096).unwrap_err()),
        libc::EFBIG,
        "map files do not grow"
    );
    drop(w);
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, DATA_ADDR + 100).unwrap();
    assert_eq!(&b, b"MAPWRITE");
    std::fs::File::open(r.map(DATA_FILE))
        .unwrap()
        .read_exact_at(&mut b, 100)
        .unwrap();
    assert_eq!(&b, b"MAPWRITE", "a new open sees the edit");
    assert_eq!(r.generation(), 1);
    drop((f, mem));
    r.m.stop();
}

#[test]
fn whole_file_tools_see_memory() {
    let r = rich("tools");
    let out = r.dir.mkdir("out");
    let syn = r.m.path("syn");
    let syn_s = syn.to_str().unwrap();
    // cp -r: a copy is enough to see the memory later.
    let o = run("cp", &["-r", syn_s, out.join("cp").to_str().unwrap()], None);
    ok(&o, "cp -r");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    check_maps(&out.join("cp"), "cp -r");
    // tar
    let tarball = out.join("syn.tar");
    ok(
        &run(
            "tar",
            &[
                "-C",
                r.m.mnt.to_str().unwrap(),
                "-cf",
                tarball.to_str().unwrap(),
                "syn",
            ],
            None,
        ),
        "tar -c",
    );
    let tdir = r.dir.mkdir("out/tar");
    ok(
        &run(
            "tar",
            &[
                "-C",
                tdir.to_str().unwrap(),
                "-xf",
                tarball.to_str().unwrap(),
            ],
            None,
        ),
        "tar -x",
    );
    check_maps(&tdir.join("syn"), "tar");
    // rsync -a
    let rdir = out.join("rsync");
    ok(
        &run(
            "rsync",
            &["-a", &format!("{syn_s}/"), rdir.to_str().unwrap()],
            None,
        ),
        "rsync -a",
    );
    check_maps(&rdir, "rsync -a");
    // grep -r finds a string that is in the process's memory.
    let o = run(
        "grep",
        &["-r", "-l", std::str::from_utf8(NEEDLE).unwrap(), syn_s],
        None,
    );
    ok(&o, "grep -r");
    let found = String::from_utf8_lossy(&o.stdout);
    assert!(found.contains(&format!("map_files/{DATA_FILE}")), "{found}");
    // du: the stored memory counts.
    let o = run("du", &["-s", "-B1", syn_s], None);
    ok(&o, "du");
    let du: u64 = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(du >= DATA_PAGES as u64 * 4096, "du says {du}");
    // hexdump -s OFFSET of a map file.
    let o = run(
        "hexdump",
        &[
            "-C",
            "-s",
            &MARKER_OFFSET.to_string(),
            "-n",
            "6",
            r.map(DATA_FILE).to_str().unwrap(),
        ],
        None,
    );
    ok(&o, "hexdump -s");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("|NEEDLE|"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    r.m.stop();
}

#[test]
fn diff_r_sees_a_memory_edit() {
    require_root_and_fuse();
    let dir = TempDir::new("diff");
    let store = dir.mkdir("store");
    let backing = dir.join("text.bin");
    write_synthetic(&store.join("a.ckpt"), &rich_synth(&backing));
    std::fs::copy(store.join("a.ckpt"), store.join("b.ckpt")).unwrap();
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let (a, b) = (m.path("a"), m.path("b"));
    let o = run(
        "diff",
        &["-r", a.to_str().unwrap(), b.to_str().unwrap()],
        None,
    );
    ok(&o, "diff -r of two copies of one image");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("b/4242/mem"))
        .unwrap();
    f.write_at(b"!", DATA_ADDR + 40000).unwrap();
    drop(f);
    let o = run(
        "diff",
        &["-r", a.to_str().unwrap(), b.to_str().unwrap()],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "diff -r must see the edit");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("map_files/{DATA_FILE}")), "{out}");
    m.stop();
}

#[test]
fn saved_contents_are_readable_under_fds() {
    let r = rich("fds");
    let mut names: Vec<String> = std::fs::read_dir(r.p("fds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["0", "1", "3", "3.data", "4", "4.data", "5", "5.data", "6", "6.data"]
    );
    let memfd: Vec<u8> = (0..2 * 4096).map(memfd_byte).collect();
    for (n, want) in [
        ("3.data", memfd.clone()),
        ("4.data", PIPE_DATA.to_vec()),
        ("5.data", SOCKET_DATA.to_vec()),
        ("6.data", deleted_contents()),
    ] {
        let p = r.p(&format!("fds/{n}"));
        assert_eq!(std::fs::read(&p).unwrap(), want, "{n}");
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            want.len() as u64,
            "{n}"
        );
    }
    let mut b = [0u8; 100];
    std::fs::File::open(r.p("fds/3.data"))
        .unwrap()
        .read_exact_at(&mut b, 5000)
        .unwrap();
    assert_eq!(&b[..], &memfd[5000..5100]);
    // cat works on them.
    let o = run("cat", &[r.p("fds/4.data").to_str().unwrap()], None);
    ok(&o, "cat");
    assert_eq!(o.stdout, PIPE_DATA);
    assert!(text(&r.p("fds/3")).contains("kind: memfd"));
    r.m.stop();
}

#[test]
fn rename_based_editors_edit_text_files() {
    let r = rich("editors");
    let dir = r.p("");
    assert_eq!(r.generation(), 0);
    // sed -i
    let o = run("sed", &["-i", "s/^rax .*/rax 0x77/", "regs"], Some(&dir));
    ok(&o, "sed -i");
    assert!(text(&r.p("regs")).contains("rax 0x0000000000000077\n"));
    assert_eq!(r.generation(), 1, "sed -i is one generation");
    let o = run(
        "sed",
        &["-i", "s/^rip .*/rip 0x401900/", "task/4243/regs"],
        Some(&dir),
    );
    ok(&o, "sed -i on task/TID/regs");
    assert!(text(&r.p("task/4243/regs")).contains("rip 0x0000000000401900\n"));
    assert_eq!(r.generation(), 2);
    // vim's write (backup by rename, then the file written)
    let o = run(
        "vim",
        &[
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-N",
            "-n",
            "-es",
            "-c",
            "%s/^SIGUSR2 .*/SIGUSR2 handler 0x1/",
            "-c",
            "wq",
            "signals",
        ],
        Some(&dir),
    );
    ok(&o, "vim");
    assert!(text(&r.p("signals")).contains("SIGUSR2      handler 0x1 "));
    assert_eq!(r.generation(), 3, "vim's write is one generation");
    // Python: write a temp file, rename it over the file.
    let py = r#"
import os, sys, tempfile
for name, new in (("cwd", "/srv/app\n"), ("fds/1", "offset: 99\n")):
    d = os.path.dirname(name) or "."
    fd, tmp = tempfile.mkstemp(dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, name)
"#;
    ok(
        &run("python3", &["-c", py], Some(&dir)),
        "python write-then-rename",
    );
    assert_eq!(text(&r.p("cwd")), "/srv/app\n");
    assert!(text(&r.p("fds/1")).contains("offset: 99\n"));
    assert_eq!(r.generation(), 5);
    // No temp file is left anywhere.
    for d in ["", "fds", "task/4243"] {
        let extra: Vec<String> = std::fs::read_dir(r.p(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| {
                n.starts_with("sed") || n.starts_with("tmp") || n.ends_with('~') || n == "4913"
            })
            .collect();
        assert!(extra.is_empty(), "{d}: {extra:?}");
    }
    // A bad edit through sed changes nothing; the reason is in errors
    // and ctl; the temp file sed leaves can be removed.
    let o = run("sed", &["-i", "s/^rax .*/rax zz/", "regs"], Some(&dir));
    assert!(!o.status.success(), "a bad sed -i edit succeeded");
    assert_eq!(r.generation(), 5);
    assert!(text(&r.m.path("syn/errors")).contains("bad number 'zz'"));
    assert!(text(&r.m.path("syn/ctl")).starts_with("last edit: error: edit of 4242/regs"));
    for e in std::fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        if n.starts_with("sed") {
            std::fs::remove_file(dir.join(&n)).unwrap();
        }
    }
    // The files of an image cannot be removed or moved.
    assert_eq!(
        errno(&std::fs::remove_file(r.p("regs")).unwrap_err()),
        libc::EPERM
    );
    assert_eq!(
        errno(&std::fs::rename(r.p("regs"), r.p("maps")).unwrap_err()),
        libc::EPERM
    );
    let edits = ImageReader::open(&r.store.join("syn.ckpt")).unwrap();
    assert_eq!(edits.image().processes[0].cwd, b"/srv/app");
    drop(edits);
    r.m.stop();
}

#[test]
fn one_generation_per_close_or_fsync() {
    let r = rich("gens");
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.p("mem"))
        .unwrap();
    for i in 0..50u64 {
        mem.write_at(&[i as u8 + 1], DATA_ADDR + 8192 + i).unwrap();
    }
    assert_eq!(r.generation(), 0, "nothing is committed before close");
    let mut b = [0u8; 50];
    mem.read_exact_at(&mut b, DATA_ADDR + 8192).unwrap();
    assert_eq!(b[49], 50, "the writer reads its own writes");
    mem.sync_all().unwrap();
    assert_eq!(r.generation(), 1, "fsync commits");
    mem.write_at(b"more", DATA_ADDR + 9000).unwrap();
    drop(mem);
    assert_eq!(r.generation(), 2, "close commits what came after the fsync");
    // The README's dd bs=1 makes one generation, not one per byte.
    let src = r.dir.join("patch.bin");
    std::fs::write(&src, b"0123456789abcdefghij").unwrap();
    let o = run(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", r.p("mem").display()),
            "bs=1",
            &format!("seek={}", DATA_ADDR + 100),
            "conv=notrunc",
        ],
        None,
    );
    ok(&o, "dd bs=1");
    assert_eq!(r.generation(), 3);
    let rd = ImageReader::open(&r.store.join("syn.ckpt")).unwrap();
    let mut b = [0u8; 20];
    rd.read_memory(PID, DATA_ADDR + 100, &mut b).unwrap();
    assert_eq!(&b, b"0123456789abcdefghij");
    let mut b = [0u8; 50];
    rd.read_memory(PID, DATA_ADDR + 8192, &mut b).unwrap();
    assert_eq!(b.to_vec(), (1..=50u8).collect::<Vec<_>>());
    drop(rd);
    assert!(text(&r.m.path("syn/ctl")).starts_with(
        "last edit: ok edit 4242/mem: 20 bytes at 0x10000064 in 20 writes (generation 3)"
    ));
    r.m.stop();
}

#[test]
fn compact_through_ctl_keeps_the_live_generation() {
    let r = rich("compact");
    for i in 0..20u64 {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(r.p("mem"))
            .unwrap();
        f.write_at(&i.to_le_bytes(), DATA_ADDR + i * 4096 + 8)
            .unwrap();
    }
    let img = r.store.join("syn.ckpt");
    let before = std::fs::metadata(&img).unwrap().len();
    assert!(text(&r.m.path("syn/info")).contains("dead space from earlier generations"));
    let data_before = std::fs::read(r.map(DATA_FILE)).unwrap();
    std::fs::write(r.m.path("syn/ctl"), "compact\n").unwrap();
    let status = text(&r.m.path("syn/ctl"));
    assert!(status.starts_with("ok compact: "), "{status}");
    let after = std::fs::metadata(&img).unwrap().len();
    assert!(after < before, "{before} -> {after}");
    assert_eq!(r.generation(), 20, "compaction keeps the generation");
    assert_eq!(std::fs::read(r.map(DATA_FILE)).unwrap(), data_before);
    assert!(text(&r.m.path("syn/info")).contains("no dead space"));
    assert_eq!(
        std::fs::metadata(&img).unwrap().mode() & 0o777,
        0o600,
        "the mode is kept"
    );
    // Edits go on after it.
    ok(
        &run("sed", &["-i", "s/^rax .*/rax 0x5/", "regs"], Some(&r.p(""))),
        "sed -i",
    );
    assert_eq!(r.generation(), 21);
    r.m.stop();
}

/// The answer to a ctl command reaches the one who asked: the file
/// descriptor that wrote it reads its own answer whatever runs meanwhile,
/// and an edit never takes the command's place in the ctl file.
#[test]
fn ctl_answers_reach_the_one_who_asked() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let r = rich("answers");
    let ctl = r.m.path("syn/ctl");
    let mut asker = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ctl)
        .unwrap();
    asker.write_all(b"compact\n").unwrap();
    // Meanwhile: an edit, and another command that fails.
    ok(
        &run("sed", &["-i", "s/^rax .*/rax 0x7/", "regs"], Some(&r.p(""))),
        "sed -i",
    );
    let e = std::fs::write(&ctl, "bogus\n").unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    // The asker reads its own answer, at its offset and from 0.
    let mut own = String::new();
    asker.read_to_string(&mut own).unwrap();
    assert!(own.starts_with("ok compact: "), "{own}");
    asker.seek(SeekFrom::Start(0)).unwrap();
    let mut again = String::new();
    asker.read_to_string(&mut again).unwrap();
    assert_eq!(own, again);
    // Anyone else sees the last command's answer first, the edit after it.
    let shared = text(&ctl);
    assert!(shared.starts_with("error: "), "{shared}");
    assert!(shared.contains("\nlast edit: ok edit "), "{shared}");
    drop(asker);
    r.m.stop();
}

#[test]
fn refused_reads_and_writes_say_why() {
    let r = rich("errors");
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.p("mem"))
        .unwrap();
    let mut b = [0u8; 16];
    assert_eq!(errno(&mem.read_at(&mut b, 0x5000).unwrap_err()), libc::EIO);
    assert_eq!(
        errno(&mem.read_at(&mut b, VVAR_ADDR).unwrap_err()),
        libc::EIO
    );
    assert_eq!(
        errno(&mem.write_at(b"x", VVAR_ADDR + 8).unwrap_err()),
        libc::EIO
    );
    drop(mem);
    let ctl = text(&r.m.path("syn/ctl"));
    assert!(
        ctl.contains("[vvar]") && ctl.contains("cannot be written"),
        "{ctl}"
    );
    // The file the text mapping maps changes: its pages cannot be read.
    std::fs::write(&r.backing, b"another file now").unwrap();
    let e = std::fs::read(r.map(TEXT_FILE)).unwrap_err();
    assert_eq!(errno(&e), libc::EIO);
    let e = std::fs::write(r.p("regs"), "bogus 1\n").unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    let errors = text(&r.m.path("syn/errors"));
    for want in [
        "read 4242/mem at 0x5000 (16 bytes): pid 4242: address 0x5000 is not mapped",
        &format!("read 4242/mem at {VVAR_ADDR:#x}"),
        "which the kernel provides at restore",
        &format!("write 4242/mem at {:#x} (1 bytes)", VVAR_ADDR + 8),
        "[vvar]",
        &format!("read 4242/map_files/{TEXT_FILE} at 0x400000"),
        "changed since the dump",
        "edit of 4242/regs: line 1: unknown register 'bogus'",
    ] {
        assert!(errors.contains(want), "errors lacks {want:?}:\n{errors}");
    }
    assert!(!errors.contains("backed by a file"), "{errors}");
    // Each line has a time.
    assert!(
        errors
            .lines()
            .all(|l| l.starts_with("20") && l.contains('T')),
        "{errors}"
    );
    // The log says the same.
    let log = r.m.log_text();
    for want in [
        "address 0x5000 is not mapped",
        "changed since the dump",
        "unknown register 'bogus'",
        "[vvar]",
    ] {
        assert!(log.contains(want), "the log lacks {want:?}:\n{log}");
    }
    r.m.stop();
}

#[test]
fn a_missing_store_is_an_error_unless_asked_to_create_it() {
    require_root_and_fuse();
    let dir = TempDir::new("nostore");
    let mnt = dir.mkdir("mnt");
    let store = dir.join("no/such/store");
    let o = Command::new(ckptfs_bin())
        .arg("--store")
        .arg(&store)
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not exist") && err.contains("-o create"),
        "{err}"
    );
    assert!(
        !store.exists() && !dir.join("no").exists(),
        "nothing was created"
    );
    assert!(!mounted(&mnt));
    // The helper form (mount(8)) says so too, before going to the background.
    let o = Command::new(ckptfs_bin())
        .arg(&store)
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    // -o create makes it (0700), and logs to a file with -o log=.
    let log = dir.join("ckptfs.log");
    let m = Mount::start(
        &store,
        &mnt,
        &["-o", &format!("create,log={}", log.display())],
    );
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
    m.stop();
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(
        l.contains("created the store") && l.contains("mounted"),
        "{l}"
    );
}

#[test]
fn ls_la_r_of_200_images_is_quick() {
    require_root_and_fuse();
    let dir = TempDir::new("ls200");
    let store = dir.mkdir("store");
    let backing = dir.join("text.bin");
    let first = store.join("img000.ckpt");
    write_synthetic(
        &first,
        &Synth {
            extra_vmas: 40,
            ..rich_synth(&backing)
        },
    );
    for i in 1..200 {
        std::fs::copy(&first, store.join(format!("img{i:03}.ckpt"))).unwrap();
    }
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let t0 = Instant::now();
    let o = run("ls", &["-laR", m.mnt.to_str().unwrap()], None);
    let took = t0.elapsed();
    ok(&o, "ls -laR");
    let out = String::from_utf8_lossy(&o.stdout);
    let lines = out.lines().count();
    assert_eq!(out.matches("/4242/map_files:").count(), 200);
    let t1 = Instant::now();
    ok(
        &run("ls", &["-laR", m.mnt.to_str().unwrap()], None),
        "ls -laR",
    );
    let again = t1.elapsed();
    eprintln!("ls -laR of 200 images ({lines} lines): {took:?}, again {again:?}");
    assert!(took < Duration::from_millis(1500), "ls -laR took {took:?}");
    m.stop();
}

/// A 1 GiB mapping of text-like data with NEEDLE once near its end.
fn write_big_image(path: &Path) {
    use ckpt_image::*;
    let size: u64 = 1 << 30;
    let f = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut w = ImageWriter::new(f, WriteOptions::default()).unwrap();
    let words: Vec<&[u8]> = b"the quick brown fox jumps over lazy dogs while ckpt saves memory pages and frames of process state"
        .split(|&c| c == b' ')
        .collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let chunk = 64 << 20;
    for c in 0..size / chunk {
        let mut buf = Vec::with_capacity(chunk as usize);
        while (buf.len() as u64) < chunk {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(words[(x % words.len() as u64) as usize]);
            buf.push(if x & 0xf0 == 0 { b'\n' } else { b' ' });
            if x & 0xff00 == 0 {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        buf.truncate(chunk as usize);
        if c == size / chunk - 1 {
            let at = buf.len() - 100_000;
            buf[at..at + NEEDLE.len()].copy_from_slice(NEEDLE);
        }
        w.add_pages(PID, DATA_ADDR + c * chunk, &buf).unwrap();
    }
    let image = Image {
        host: HostInfo {
            page_size: 4096,
            arch: Arch::X8664,
            ..Default::default()
        },
        root_pid: PID,
        processes: vec![Process {
            pid: PID,
            vmas: vec![Vma {
                start: DATA_ADDR,
                end: DATA_ADDR + size,
                prot: PROT_READ | PROT_WRITE,
                ..Default::default()
            }],
            threads: vec![Thread {
                tid: PID,
                regs: regs(0x401000),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    w.finish(image).unwrap();
}

#[test]
fn grep_r_reads_a_1_gib_image_fast() {
    require_root_and_fuse();
    let dir = TempDir::new("grep1g");
    let store = dir.mkdir("store");
    let t = Instant::now();
    write_big_image(&store.join("big.ckpt"));
    eprintln!(
        "wrote a 1 GiB image ({} MB) in {:?}",
        std::fs::metadata(store.join("big.ckpt")).unwrap().len() / 1_000_000,
        t.elapsed()
    );
    let m = Mount::start(&store, &dir.join("mnt"), &[]);
    let needle = std::str::from_utf8(NEEDLE).unwrap();
    let grep = |path: &Path| {
        let t0 = Instant::now();
        let o = run("grep", &["-r", "-l", needle, path.to_str().unwrap()], None);
        let took = t0.elapsed();
        ok(&o, "grep -r");
        assert!(!o.stdout.is_empty(), "grep -r did not find the string");
        took
    };
    let gbs = |d: Duration| (1u64 << 30) as f64 / d.as_secs_f64() / 1e9;
    // The first run decompresses every frame (LZ4 decoding, the kernel's
    // copy and grep share the machine's cores); later runs are served from
    // the page cache, kept while the image is unchanged.
    let cold = grep(&m.path("big"));
    let warm = grep(&m.path("big")).min(grep(&m.path("big")));
    // The same bytes in a plain file in the page cache: what grep itself
    // does on this machine now (the test machine is shared and loaded).
    let plain = dir.join("plain.bin");
    std::fs::copy(
        m.path(&format!("big/{PID}/map_files/10000000-50000000")),
        &plain,
    )
    .unwrap();
    let base = grep(&plain).min(grep(&plain));
    eprintln!(
        "grep -r over a mounted 1 GiB image: {:.2} GB/s the first time ({cold:?}), {:.2} GB/s again ({warm:?}); \
         grep of the same bytes in a plain cached file: {:.2} GB/s ({base:?})",
        gbs(cold),
        gbs(warm),
        gbs(base)
    );
    assert!(
        gbs(cold) >= 0.2,
        "the first grep -r read {:.2} GB/s",
        gbs(cold)
    );
    assert!(
        gbs(warm) >= 1.0 || gbs(warm) >= 0.7 * gbs(base),
        "grep -r read {:.2} GB/s (a plain file: {:.2} GB/s)",
        gbs(warm),
        gbs(base)
    );
    m.stop();
}
