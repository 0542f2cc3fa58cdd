//! Security: images are private, a dump by a user holds nothing that user
//! could not read, a restore never gives more privilege than the restoring
//! user has, paths in images are not trusted, ckptfs keeps other users out.
//! See spec/security.md.

use crate::util::*;
use ckpt_image::ImageEditor;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A change to an image's model.
type Edit = Box<dyn Fn(&mut ckpt_image::Image)>;

/// The target fixture run as nobody; its output file is nobody's too (a
/// process of nobody's could have opened it).
fn nobody_target(dir: &TempDir, dumpable: bool) -> Proc {
    let p = Proc::spawn_cmd(
        dir,
        as_nobody(&target_fixture()).args(["1", "10", "0", if dumpable { "1" } else { "0" }]),
    );
    chown_nobody(&p.out);
    // (The output file is shared by the processes of a TempDir.)
    let ready = format!("READY pid={} uid=65534", p.pid);
    p.wait_line(|l| l.starts_with(&ready));
    assert_eq!(
        status_field(p.pid, "Uid").as_deref(),
        Some("65534\t65534\t65534\t65534")
    );
    p
}

/// A directory nobody can write into.
fn nobody_dir(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    chown_nobody(&d);
    d
}

/// `ckpt ARGS` as nobody.
fn ckpt_as_nobody(args: &[&str]) -> std::process::Output {
    run_timeout(
        as_nobody(Path::new(env!("CARGO_BIN_EXE_ckpt"))).args(args),
        LIMIT,
    )
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn images_are_created_private() {
    let dir = TempDir::new("private");
    let p = Proc::spawn(&dir, target_fixture(), &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    // With umask 000 the image is still 0600.
    let image = dir.join("img.ckpt");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec '{}' dump {} -o '{}' --leave-running -q",
            env!("CARGO_BIN_EXE_ckpt"),
            p.pid,
            image.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(mode_of(&image), 0o600);
    // Replacing a world-readable file gives a private one.
    let old = dir.join("old.ckpt");
    std::fs::write(&old, b"x").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
    ckpt_ok(&[
        "dump",
        &p.pid.to_string(),
        "-o",
        old.to_str().unwrap(),
        "--leave-running",
        "-q",
    ]);
    assert_eq!(mode_of(&old), 0o600);
    // A user's own dump is that user's, 0600.
    let q = nobody_target(&dir, true);
    let out = nobody_dir(&dir, "nobody-out");
    let mine = out.join("mine.ckpt");
    let o = ckpt_as_nobody(&[
        "dump",
        &q.pid.to_string(),
        "-o",
        mine.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(
        o.status.success(),
        "nobody dumping its own process: {}",
        stderr_of(&o)
    );
    assert_eq!(mode_of(&mine), 0o600);
    assert_eq!(std::fs::metadata(&mine).unwrap().uid(), 65534);
    q.wait_more_lines(2);
}

#[test]
fn unprivileged_dump_of_another_users_process_fails() {
    let dir = TempDir::new("otheruser");
    let p = Proc::spawn(&dir, target_fixture(), &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let out = nobody_dir(&dir, "out");
    let image = out.join("x.ckpt");
    let o = ckpt_as_nobody(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "nobody dumping root's process");
    assert!(err.contains(&p.pid.to_string()), "{err}");
    assert!(
        err.contains("belongs to uid 0") || err.contains("Operation not permitted"),
        "the reason is not given: {err}"
    );
    assert!(
        files_starting(&out, "").is_empty(),
        "files left: {:?}",
        files_starting(&out, "")
    );
    assert_free(p.pid, "after the refused dump");
    p.wait_more_lines(3);
}

#[test]
fn unprivileged_dump_of_a_non_dumpable_process_is_refused() {
    let dir = TempDir::new("nondumpable");
    let p = nobody_target(&dir, false);
    let out = nobody_dir(&dir, "out");
    let image = out.join("x.ckpt");
    let o = ckpt_as_nobody(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "nobody dumping its non-dumpable process");
    assert!(err.contains("not dumpable"), "{err}");
    assert!(files_starting(&out, "").is_empty());
    assert_free(p.pid, "after the refused dump");
    p.wait_more_lines(2);
    // Root (CAP_SYS_PTRACE) may.
    let image = dir.join("root.ckpt");
    ckpt_ok(&[
        "dump",
        &p.pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "--leave-running",
        "-q",
    ]);
    p.wait_more_lines(2);
}

#[test]
fn unprivileged_dump_of_a_setuid_process_is_refused() {
    let dir = TempDir::new("setuid");
    let suid = dir.join("suid-target");
    std::fs::copy(target_fixture(), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let p = Proc::spawn_cmd(&dir, as_nobody(&suid).args(["1", "10"]));
    p.wait_line(|l| l.starts_with("READY"));
    let uid = status_field(p.pid, "Uid").unwrap();
    assert!(
        uid.starts_with("65534\t0\t0"),
        "the setuid bit did not apply (nosuid mount?): Uid {uid}"
    );
    let out = nobody_dir(&dir, "out");
    let image = out.join("x.ckpt");
    let o = ckpt_as_nobody(&["dump", &p.pid.to_string(), "-o", image.to_str().unwrap()]);
    let err = assert_clean_failure(&o, "nobody dumping a setuid process it started");
    assert!(err.contains(&p.pid.to_string()), "{err}");
    assert!(files_starting(&out, "").is_empty());
    assert_free(p.pid, "after the refused dump");
    p.wait_more_lines(2);
}

const CRED_FIELDS: [&str; 9] = [
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
];

#[test]
fn restore_by_root_keeps_unprivileged_credentials() {
    let dir = TempDir::new("keepcreds");
    let mut p = nobody_target(&dir, true);
    let before: Vec<Option<String>> = CRED_FIELDS.iter().map(|k| status_field(p.pid, k)).collect();
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(3);
    for (k, b) in CRED_FIELDS.iter().zip(&before) {
        assert_eq!(&status_field(r.pid, k), b, "{k} differs after the restore");
    }
    let out = r.output();
    let last = out.lines().rfind(|l| l.starts_with("READY")).unwrap();
    assert!(last.contains("uid=65534"), "{last}");
}

/// A root process that lowered its capabilities (bounding set without
/// CAP_CHOWN, an inheritable and ambient CAP_NET_BIND_SERVICE) comes back
/// with exactly those, not with its restorer's full set.
#[test]
fn restore_by_root_keeps_lowered_capabilities() {
    let dir = TempDir::new("keepcaps");
    let mut p = Proc::spawn_cmd(
        &dir,
        Command::new("setpriv")
            .args([
                "--bounding-set=-chown,-sys_module",
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
                "--",
            ])
            .arg(target_fixture())
            .args(["0", "20"]),
    );
    p.wait_line(|l| l.starts_with("READY"));
    let caps = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];
    let before: Vec<Option<String>> = caps.iter().map(|k| status_field(p.pid, k)).collect();
    assert_ne!(before[3], status_field(std::process::id() as i32, "CapBnd"));
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    let r = restore_detached(&image, &p.out, p.pid);
    r.wait_more_lines(3);
    for (k, b) in caps.iter().zip(&before) {
        assert_eq!(&status_field(r.pid, k), b, "{k} differs after the restore");
    }
}

/// A copy of `image` with its model edited, owned by `uid`, mode 0600.
fn edited_copy(image: &Path, to: &Path, uid: u32, f: impl FnOnce(&mut ckpt_image::Image)) {
    std::fs::copy(image, to).unwrap();
    let mut ed = ImageEditor::open(to).unwrap();
    f(ed.image_mut());
    ed.commit().unwrap();
    drop(ed);
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
    let st = Command::new("chown")
        .arg(format!("{uid}:{uid}"))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn check_refused(o: &std::process::Output, what: &str, needle: &str) {
    let err = assert_clean_failure(o, what);
    assert!(
        err.contains(needle),
        "{what}: the error does not say '{needle}':\n{err}"
    );
}

#[test]
fn images_asking_for_more_than_the_restorer_has_are_refused() {
    let dir = TempDir::new("moreprivs");
    // An image of root's process, checked by nobody.
    let p = Proc::spawn(&dir, target_fixture(), &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let root_img = dir.join("root.ckpt");
    ckpt_ok(&[
        "dump",
        &p.pid.to_string(),
        "-o",
        root_img.to_str().unwrap(),
        "--leave-running",
        "-q",
    ]);
    let copy = dir.join("root-copy.ckpt");
    edited_copy(&root_img, &copy, 65534, |_| {});
    check_refused(
        &ckpt_as_nobody(&["restore", "--check", copy.to_str().unwrap()]),
        "root's image",
        "cannot switch",
    );

    // Images of nobody's own process, edited to ask for more.
    let q = nobody_target(&dir, true);
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&[
        "dump",
        &q.pid.to_string(),
        "-o",
        own.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "capabilities",
            "capabilities cap_chown",
            Box::new(|i| {
                let c = &mut i.processes[0].creds;
                c.cap_permitted = 0x1ff_ffff_ffff;
                c.cap_effective = 0x1ff_ffff_ffff;
            }),
        ),
        (
            "ambient capability",
            "cap_sys_admin",
            Box::new(|i| i.processes[0].creds.cap_ambient = 1 << 21),
        ),
        (
            "groups",
            "cannot switch",
            Box::new(|i| i.processes[0].creds.groups = vec![0]),
        ),
        (
            "uid",
            "cannot switch",
            Box::new(|i| i.processes[0].creds.euid = 0),
        ),
        (
            "rlimit",
            "RLIMIT_NOFILE",
            Box::new(|i| {
                for l in &mut i.processes[0].rlimits {
                    if l.resource == libc::RLIMIT_NOFILE {
                        l.hard = 1 << 30;
                        l.soft = 1 << 30;
                    }
                }
            }),
        ),
    ];
    for (name, needle, f) in cases {
        let img = out.join(format!("{name}.ckpt"));
        edited_copy(&own, &img, 65534, f);
        check_refused(
            &ckpt_as_nobody(&["restore", "--check", img.to_str().unwrap()]),
            name,
            needle,
        );
    }
    q.wait_more_lines(2);
}

#[test]
fn crafted_paths_are_checked_with_the_saved_users_rights() {
    let dir = TempDir::new("paths");
    let mut q = nobody_target(&dir, true);
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    // nobody dumps its own process (and kills it): an image nobody wrote.
    let o = ckpt_as_nobody(&["dump", &q.pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    // As it is, root may restore it.
    let o = ckpt_timeout(&["restore", "--check", own.to_str().unwrap()], LIMIT);
    assert!(
        o.status.success(),
        "the unmodified image is refused: {}",
        stderr_of(&o)
    );

    let link = out.join("link");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    // A file nobody may write, reached through root's /proc/PID/root (only
    // root may follow that link: CAP_SYS_PTRACE, kept by a mere fsuid switch).
    let writable = out.join("writable");
    std::fs::write(&writable, b"").unwrap();
    chown_nobody(&writable);
    let through_proc = format!("/proc/{}/root{}", std::process::id(), writable.display());
    let shadow_mtime = std::fs::metadata("/etc/shadow").unwrap().mtime();
    let set_fd1 = |path: Vec<u8>| {
        move |i: &mut ckpt_image::Image| {
            let file = i.processes[0].fds.iter().find(|f| f.fd == 1).unwrap().file;
            let f = i.files.iter_mut().find(|f| f.id == file).unwrap();
            f.path = path.clone();
            if let ckpt_image::FileKind::Regular(r) = &mut f.kind {
                r.file.path = path.clone();
            }
        }
    };
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "fd-shadow",
            "/etc/shadow: uid 65534 gid 65534 may not write it",
            Box::new(set_fd1(b"/etc/shadow".to_vec())),
        ),
        (
            "fd-symlink",
            "may not write it (Permission denied)",
            Box::new(set_fd1(link.to_str().unwrap().as_bytes().to_vec())),
        ),
        (
            "fd-proc-root",
            "may not write it (Permission denied)",
            Box::new(set_fd1(through_proc.into_bytes())),
        ),
        (
            "exe-shadow",
            "may not read and execute it",
            Box::new(|i| i.processes[0].exe.path = b"/etc/shadow".to_vec()),
        ),
        (
            "cwd-root",
            "/root: uid 65534 gid 65534 may not enter it",
            Box::new(|i| i.processes[0].cwd = b"/root".to_vec()),
        ),
    ];
    for (name, needle, f) in cases {
        let img = out.join(format!("{name}.ckpt"));
        edited_copy(&own, &img, 65534, f);
        check_refused(
            &ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT),
            name,
            needle,
        );
        check_refused(
            &ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT),
            name,
            needle,
        );
        wait_gone(q.pid);
    }
    assert_eq!(
        std::fs::metadata("/etc/shadow").unwrap().mtime(),
        shadow_mtime
    );
    // An image of root's own (0600, written by root) is vouched for by root.
    let img = dir.join("root-owned.ckpt");
    edited_copy(&own, &img, 0, set_fd1(b"/etc/shadow".to_vec()));
    let o = ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT);
    assert!(
        o.status.success(),
        "root's own image is refused: {}",
        stderr_of(&o)
    );
}

#[test]
fn saved_creating_flags_are_not_applied() {
    let dir = TempDir::new("oflags");
    let mut p = Proc::spawn(&dir, target_fixture(), &["1", "10"]);
    p.wait_line(|l| l.starts_with("READY"));
    let image = dir.join("img.ckpt");
    dump_kill(&mut p, &image);
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious\n").unwrap();
    let absent = dir.join("absent.txt");
    for (name, path) in [("victim", &victim), ("absent", &absent)] {
        let img = dir.join(format!("{name}.ckpt"));
        let path = path.to_str().unwrap().as_bytes().to_vec();
        edited_copy(&image, &img, 0, move |i| {
            let file = i.processes[0].fds.iter().find(|f| f.fd == 1).unwrap().file;
            let f = i.files.iter_mut().find(|f| f.id == file).unwrap();
            f.path = path.clone();
            f.flags = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL) as u32;
            if let ckpt_image::FileKind::Regular(r) = &mut f.kind {
                r.file.path = path;
            }
        });
        let o = ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT);
        if o.status.success() {
            let mut r = Proc::adopt(p.pid, &victim);
            std::thread::sleep(Duration::from_millis(100));
            r.kill();
        } else {
            assert_clean_failure(&o, name);
        }
        wait_gone(p.pid);
    }
    // Not truncated (the restored process appends to it), not created.
    let v = std::fs::read_to_string(&victim).unwrap();
    assert!(v.starts_with("precious\n"), "the file was truncated: {v:?}");
    assert!(!absent.exists(), "restore created {}", absent.display());
}

#[test]
fn ckptfs_keeps_other_users_out() {
    require!(
        require::path("/dev/fuse", "the ckptfs tests mount FUSE filesystems"),
        require::tool("runuser", "apt-get install util-linux")
    );
    let dir = TempDir::new("fsusers");
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = ckpt()
        .args(["mount", "--store"])
        .arg(&store)
        .arg(&mnt)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
    {
        assert!(t.elapsed() < LIMIT, "ckptfs did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Root (the owner) gets in; nobody does not.
    assert!(std::fs::read_dir(&mnt).is_ok());
    let results: Vec<(String, std::process::Output)> = [
        vec!["ls", mnt.to_str().unwrap()],
        vec!["cat", &format!("{}/ctl", mnt.display())],
    ]
    .into_iter()
    .map(|a| {
        let o = run_timeout(
            Command::new("runuser")
                .args(["-u", "nobody", "--"])
                .args(&a),
            LIMIT,
        );
        (a.join(" "), o)
    })
    .collect();
    let _ = signal(child.id() as i32, libc::SIGTERM);
    let _ = child.wait();
    let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    for (what, o) in results {
        assert!(!o.status.success(), "nobody could run {what}");
        let err = stderr_of(&o);
        assert!(err.contains("Permission denied"), "{what}: {err}");
    }
}

/// The file checks of an untrusted image run before the restore opens the
/// files: a path swapped in between (here: a file of nobody's replaced by
/// a symlink to a root-only file, over and over) must not end up open in
/// nobody's restored process. The restore opens the files with nobody's
/// fs ids, so the kernel refuses the secret at the open itself.
#[test]
fn restore_opens_files_with_the_saved_users_rights() {
    let dir = TempDir::new("toctou");
    let mut q = nobody_target(&dir, true);
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&["dump", &q.pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    // A root-only file, and a file of nobody's that the image's fd 1 names.
    let secret = dir.join("secret");
    std::fs::write(&secret, b"root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let target = out.join("log");
    std::fs::write(&target, b"").unwrap();
    chown_nobody(&target);
    let img = out.join("racy.ckpt");
    let tpath = target.to_str().unwrap().as_bytes().to_vec();
    edited_copy(&own, &img, 65534, move |i| {
        let file = i.processes[0].fds.iter().find(|f| f.fd == 1).unwrap().file;
        let f = i.files.iter_mut().find(|f| f.id == file).unwrap();
        f.path = tpath.clone();
        if let ckpt_image::FileKind::Regular(r) = &mut f.kind {
            r.file.path = tpath.clone();
        }
    });
    // The swapper: nobody's file, then a symlink to the secret, and back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let (t2, sec2) = (target.clone(), secret.clone());
    let swapper = std::thread::spawn(move || {
        let tmp_link = t2.with_extension("link");
        let tmp_file = t2.with_extension("file");
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_file(&tmp_link);
            let _ = std::os::unix::fs::symlink(&sec2, &tmp_link);
            let _ = std::fs::rename(&tmp_link, &t2);
            std::thread::sleep(Duration::from_micros(300));
            let _ = std::fs::write(&tmp_file, b"");
            let _ = std::os::unix::fs::chown(&tmp_file, Some(65534), Some(65534));
            let _ = std::fs::rename(&tmp_file, &t2);
            std::thread::sleep(Duration::from_micros(300));
        }
    });
    let mut leaked = None;
    let t = std::time::Instant::now();
    let (mut tries, mut ok) = (0, 0);
    while t.elapsed() < Duration::from_secs(20) && leaked.is_none() {
        tries += 1;
        let o = ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT);
        if o.status.success() {
            ok += 1;
            let fd1 = std::fs::read_link(format!("/proc/{}/fd/1", q.pid)).ok();
            let mut r = Proc::adopt(q.pid, &q.out);
            r.kill();
            if fd1.as_deref() == Some(secret.as_path()) {
                leaked = fd1;
            }
        }
        wait_gone(q.pid);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!("{ok} of {tries} racing restores succeeded");
    assert!(
        leaked.is_none(),
        "nobody's restored process got {} (root only) open as its fd 1",
        secret.display()
    );
}

/// Another user's image that is not the restorer's own (nobody's, written
/// by nobody) restored by root: its files, mapped files, executable and
/// working directory are opened with nobody's fs ids, and the process runs
/// on as nobody, as dumpable as it was (nobody can dump it again).
#[test]
fn another_users_image_is_restored_with_that_users_rights() {
    let dir = TempDir::new("asuser");
    let mut q = nobody_target(&dir, true);
    let before: Vec<Option<String>> = CRED_FIELDS.iter().map(|k| status_field(q.pid, k)).collect();
    let fds_before = fds_of(q.pid);
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&["dump", &q.pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    assert_eq!(std::fs::metadata(&own).unwrap().uid(), 65534);
    let mut r = restore_detached(&own, &q.out, q.pid);
    r.wait_more_lines(3);
    for (k, b) in CRED_FIELDS.iter().zip(&before) {
        assert_eq!(&status_field(r.pid, k), b, "{k} differs after the restore");
    }
    // Nothing of the restorer's is left open in it (the stub's readiness
    // pipe was, when it was seized before closing it).
    assert_eq!(
        fds_of(r.pid),
        fds_before,
        "open fds differ after the restore"
    );
    let again = out.join("again.ckpt");
    let o = ckpt_as_nobody(&[
        "dump",
        &r.pid.to_string(),
        "-o",
        again.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(
        o.status.success(),
        "nobody cannot dump its restored process: {}",
        stderr_of(&o)
    );
    r.wait_more_lines(2);
    r.kill();
}

/// The open fd numbers of `pid`, sorted.
fn fds_of(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// Root restoring an image owned by nobody (nobody dumped its own
/// process): the process may hold only what nobody could. Every field
/// that asks for more is refused, by name; as it is, the image passes.
#[test]
fn root_restores_only_what_the_images_owner_could_hold() {
    let dir = TempDir::new("owner");
    let mut q = nobody_target(&dir, true);
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&["dump", &q.pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    let o = ckpt_timeout(&["restore", "--check", own.to_str().unwrap()], LIMIT);
    assert!(
        o.status.success(),
        "the unmodified image: {}",
        stderr_of(&o)
    );
    // An executable only root may run, and a set-user-ID copy of one.
    let private_exe = dir.join("private-exe");
    std::fs::copy(target_fixture(), &private_exe).unwrap();
    std::fs::set_permissions(&private_exe, std::fs::Permissions::from_mode(0o700)).unwrap();
    let setuid_exe = dir.join("setuid-exe");
    std::fs::copy(target_fixture(), &setuid_exe).unwrap();
    std::fs::set_permissions(&setuid_exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let exe_at = |p: std::path::PathBuf| {
        move |i: &mut ckpt_image::Image| {
            i.processes[0].exe.path = p.to_str().unwrap().as_bytes().to_vec();
        }
    };
    let creds = |f: fn(&mut ckpt_image::Credentials)| -> Edit {
        Box::new(move |i: &mut ckpt_image::Image| f(&mut i.processes[0].creds))
    };
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "uid 0",
            "the process: its uid 0 is not uid 65534",
            creds(|c| {
                (c.ruid, c.euid, c.suid, c.fsuid) = (0, 0, 0, 0);
            }),
        ),
        (
            "saved uid 0",
            "its saved uid 0 is not uid 65534",
            creds(|c| c.suid = 0),
        ),
        (
            "filesystem uid",
            "its filesystem uid 0 is not uid 65534",
            creds(|c| c.fsuid = 0),
        ),
        (
            "effective gid",
            "its effective gid 0 is not one of uid 65534's",
            creds(|c| c.egid = 0),
        ),
        (
            "shadow group",
            "its supplementary group 42 is not one of uid 65534's",
            creds(|c| c.groups = vec![42]),
        ),
        (
            "capabilities",
            "it has capabilities",
            creds(|c| c.cap_effective = 1 << 21),
        ),
        (
            "ambient capability",
            "it has capabilities",
            creds(|c| c.cap_ambient = 1 << 12),
        ),
        (
            "thread credentials",
            "its effective uid 0 is not uid 65534",
            Box::new(|i| {
                let mut c = i.processes[0].creds.clone();
                c.euid = 0;
                let t = &mut i.processes[0].threads[0];
                t.creds = Some(c);
            }),
        ),
        (
            "mapping below mmap_min_addr",
            "is below vm.mmap_min_addr",
            Box::new(|i| {
                i.processes[0].vmas.insert(
                    0,
                    ckpt_image::Vma {
                        start: 0,
                        end: 0x1000,
                        prot: 3,
                        ..Default::default()
                    },
                )
            }),
        ),
        (
            "SCHED_FIFO",
            "real-time priority 10 (SCHED_FIFO) is above uid 65534's RLIMIT_RTPRIO",
            Box::new(|i| {
                let s = &mut i.processes[0].threads[0].sched;
                (s.policy, s.priority) = (1, 10);
            }),
        ),
        (
            "negative nice",
            "nice -5 is below what uid 65534's RLIMIT_NICE",
            Box::new(|i| i.processes[0].threads[0].sched.nice = -5),
        ),
        (
            "realtime IO class",
            "the I/O priority realtime 3 needs CAP_SYS_NICE or CAP_SYS_ADMIN",
            Box::new(|i| i.processes[0].threads[0].sched.ioprio = (1 << 13) | 3),
        ),
        (
            "oom_score_adj",
            "oom_score_adj -100 is below the restorer's",
            Box::new(|i| i.processes[0].oom_score_adj = -100),
        ),
        (
            "set-user-ID executable",
            "is set-user-ID or set-group-ID",
            Box::new(exe_at(setuid_exe)),
        ),
        (
            "root's executable",
            "may not read and execute it",
            Box::new(exe_at(private_exe)),
        ),
    ];
    for (name, needle, f) in cases {
        let img = out.join(format!("{}.ckpt", name.replace(' ', "-")));
        edited_copy(&own, &img, 65534, f);
        check_refused(
            &ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT),
            name,
            needle,
        );
        check_refused(
            &ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT),
            name,
            needle,
        );
        wait_gone(q.pid);
    }
    // An image others may write: nobody answers for it.
    let img = out.join("group-writable.ckpt");
    edited_copy(&own, &img, 65534, |_| {});
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o660)).unwrap();
    check_refused(
        &ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT),
        "group-writable image",
        "is writable by group or others",
    );
}

/// A unix socket that nobody's process listened on, moved by the image to
/// a directory nobody may not create files in: refused before anything
/// starts (the bind would fail with nobody's rights).
#[test]
fn a_socket_path_the_saved_user_cannot_write_is_refused() {
    let dir = TempDir::new("sockpath");
    let out = nobody_dir(&dir, "out");
    let script = dir.join("srv.py");
    std::fs::write(
        &script,
        "import os,socket,sys,time\n\
         s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n\
         print('READY', flush=True)\n\
         while True: time.sleep(0.05)\n",
    )
    .unwrap();
    let sock = out.join("s.sock");
    let mut cmd = as_nobody(Path::new("/usr/bin/python3"));
    cmd.arg("-u").arg(&script).arg(&sock);
    let mut q = Proc::spawn_cmd(&dir, &mut cmd);
    chown_nobody(&q.out);
    q.wait_line(|l| l == "READY");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&["dump", &q.pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    let img = out.join("moved.ckpt");
    edited_copy(&own, &img, 65534, |i| {
        for f in &mut i.files {
            if let ckpt_image::FileKind::UnixSocket(u) = &mut f.kind {
                u.local_path = b"/root/ckpt-e2e.sock".to_vec();
                f.path = u.local_path.clone();
            }
        }
    });
    check_refused(
        &ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT),
        "socket in /root",
        "/root: uid 65534 gid 65534 may not create files in it",
    );
}

#[test]
fn another_users_sockets_get_only_that_users_rights() {
    use ckpt_image::{Fd, FileKind, InetSocket, OpenFile, SockOpt, TcpConnection};
    let dir = TempDir::new("socketrights");
    let q = nobody_target(&dir, true);
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&[
        "dump",
        &q.pid.to_string(),
        "-o",
        own.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    // Root checks nobody's image (not root's own): each socket may get
    // only what nobody's process could have made itself.
    let sock = |s: InetSocket| {
        Box::new(move |i: &mut ckpt_image::Image| {
            let id = i.files.iter().map(|f| f.id).max().unwrap_or(0) + 1;
            i.files.push(OpenFile {
                id,
                flags: libc::O_RDWR as u32,
                path: b"socket:[1]".to_vec(),
                kind: FileKind::InetSocket(s.clone()),
                ..Default::default()
            });
            let fd = i.processes[0].fds.iter().map(|f| f.fd).max().unwrap_or(0) + 1;
            i.processes[0].fds.push(Fd {
                fd,
                cloexec: false,
                file: id,
            });
        }) as Edit
    };
    let tcp = |state: u32, port: u16| InetSocket {
        family: libc::AF_INET as u32,
        sock_type: libc::SOCK_STREAM as u32,
        protocol: libc::IPPROTO_TCP as u32,
        state,
        local_addr: vec![127, 0, 0, 1],
        local_port: port,
        ..Default::default()
    };
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "privileged port",
            "port 80 is privileged",
            sock(tcp(10, 80)),
        ),
        (
            "live connection",
            "TCP_REPAIR",
            sock(InetSocket {
                remote_addr: vec![127, 0, 0, 1],
                remote_port: 5,
                tcp: Some(TcpConnection::default()),
                ..tcp(1, 40000)
            }),
        ),
        (
            "raw socket",
            "a raw socket needs",
            sock(InetSocket {
                family: libc::AF_INET as u32,
                sock_type: libc::SOCK_RAW as u32,
                protocol: libc::IPPROTO_ICMP as u32,
                ..Default::default()
            }),
        ),
        (
            "SO_MARK",
            "SO_MARK needs",
            sock(InetSocket {
                options: vec![SockOpt {
                    level: libc::SOL_SOCKET,
                    name: libc::SO_MARK,
                    value: 7i32.to_ne_bytes().to_vec(),
                }],
                ..tcp(7, 0)
            }),
        ),
        (
            "unknown option",
            "not an option ckpt restores",
            sock(InetSocket {
                options: vec![SockOpt {
                    level: 12345,
                    name: 1,
                    value: vec![1],
                }],
                ..tcp(7, 0)
            }),
        ),
    ];
    for (name, needle, f) in cases {
        let img = out.join(format!("{name}.ckpt"));
        edited_copy(&own, &img, 65534, f);
        check_refused(
            &ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT),
            name,
            needle,
        );
    }
    q.wait_more_lines(2);
}

/// ckptfs run by root with allow_other, over images of root's that
/// nobody may write through its group (mode 0660, group nogroup): nobody's
/// `restore` through an image's ctl gives the process only what nobody
/// could hold, whoever owns the file. The image of nobody's process
/// restores (as uid 65534); a copy with a group nobody is not in (shadow,
/// 42), another gid or capabilities is refused, naming the field.
#[test]
fn ckptfs_restores_only_what_the_requester_could_hold() {
    require!(
        require::path("/dev/fuse", "the ckptfs tests mount FUSE filesystems"),
        require::tool("runuser", "apt-get install util-linux")
    );
    let dir = TempDir::new("fsrequester");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut q = nobody_target(&dir, true);
    let pid = q.pid;
    let out = nobody_dir(&dir, "out");
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&["dump", &pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let edits: [(&str, Edit); 4] = [
        ("asis", Box::new(|_| {})),
        (
            "shadow",
            Box::new(|i| i.processes[0].creds.groups = vec![42]),
        ),
        ("egid", Box::new(|i| i.processes[0].creds.egid = 42)),
        (
            "caps",
            Box::new(|i| {
                i.processes[0].creds.cap_inheritable = 1 << 21;
                i.processes[0].creds.cap_ambient = 1 << 21;
            }),
        ),
    ];
    for (name, f) in edits {
        let img = store.join(format!("{name}.ckpt"));
        edited_copy(&own, &img, 0, f);
        std::os::unix::fs::chown(&img, Some(0), Some(65534)).unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o660)).unwrap();
    }
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut fs = ckpt()
        .args(["mount", "--allow-other", "--store"])
        .arg(&store)
        .arg(&mnt)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
    {
        assert!(t.elapsed() < LIMIT, "ckptfs did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    // nobody writes the command and reads its own answer.
    let restore_as_nobody = |name: &str| {
        let ctl = mnt.join(name).join("ctl");
        let o = run_timeout(
            Command::new("runuser")
                .args(["-u", "nobody", "--", "sh", "-c"])
                .arg("exec 3<>\"$1\"; echo restore >&3; cat <&3")
                .arg("sh")
                .arg(&ctl),
            LIMIT,
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let results: Vec<(&str, &str, String)> = [
        (
            "shadow",
            "its supplementary group 42 is not one of uid 65534's",
        ),
        ("egid", "its effective gid 42 is not one of uid 65534's"),
        ("caps", "it has capabilities"),
    ]
    .into_iter()
    .map(|(name, needle)| (name, needle, restore_as_nobody(name)))
    .collect();
    let asis = restore_as_nobody("asis");
    let restored = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let uid = status_field(pid, "Uid");
    let groups = status_field(pid, "Groups");
    let _ = signal(pid, libc::SIGKILL);
    let _ = signal(fs.id() as i32, libc::SIGTERM);
    let _ = fs.wait();
    let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    wait_gone(pid);
    for (name, needle, answer) in results {
        assert!(
            answer.contains(needle) && !answer.contains("restored pid"),
            "{name}: the answer does not refuse with '{needle}':\n{answer}"
        );
    }
    assert!(
        asis.contains(&format!("restored pid {pid}")) && restored,
        "nobody's own image: {asis}"
    );
    assert_eq!(uid.as_deref(), Some("65534\t65534\t65534\t65534"));
    assert_eq!(groups.as_deref().map(str::trim), Some(""), "{groups:?}");
}

/// Root restoring nobody's image of a process tree: the rules bound every
/// process of it, not only the root. A child's extra group, saved uid 0
/// or capabilities are refused, naming the child; as it is, the image
/// passes.
#[test]
fn root_restores_only_what_the_owner_could_hold_for_every_process_of_a_tree() {
    let dir = TempDir::new("treeowner");
    let out = nobody_dir(&dir, "out");
    let script = dir.join("tree.py");
    std::fs::write(
        &script,
        "import os,sys,time\n\
         c=os.fork()\n\
         if c==0:\n\
         \x20   while True: time.sleep(0.05)\n\
         print('READY pid=%d child=%d' % (os.getpid(), c), flush=True)\n\
         while True: time.sleep(0.05)\n",
    )
    .unwrap();
    let mut cmd = as_nobody(Path::new("/usr/bin/python3"));
    cmd.arg("-u").arg(&script);
    let mut q = Proc::spawn_cmd(&dir, &mut cmd);
    chown_nobody(&q.out);
    let ready = q.wait_line(|l| l.starts_with("READY"));
    let child: i32 = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("child="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let own = out.join("own.ckpt");
    let o = ckpt_as_nobody(&["dump", &q.pid.to_string(), "-o", own.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    q.reap();
    wait_gone(child);
    let o = ckpt_timeout(&["restore", "--check", own.to_str().unwrap()], LIMIT);
    assert!(o.status.success(), "the unmodified tree: {}", stderr_of(&o));
    let child_of = move |i: &mut ckpt_image::Image| -> usize {
        i.processes.iter().position(|p| p.pid == child).unwrap()
    };
    let cases: Vec<(&str, String, Edit)> = vec![
        (
            "a child's shadow group",
            format!(
                "pid {child}: the process: its supplementary group 42 is not one of uid 65534's"
            ),
            Box::new(move |i| {
                let c = child_of(i);
                i.processes[c].creds.groups = vec![42];
            }),
        ),
        (
            "a child's saved uid 0",
            format!("pid {child}: the process: its saved uid 0 is not uid 65534"),
            Box::new(move |i| {
                let c = child_of(i);
                i.processes[c].creds.suid = 0;
            }),
        ),
        (
            "a child's capabilities",
            format!("pid {child}: the process: it has capabilities"),
            Box::new(move |i| {
                let c = child_of(i);
                i.processes[c].creds.cap_permitted = 1 << 21;
            }),
        ),
    ];
    for (name, needle, f) in cases {
        let img = out.join(format!("{}.ckpt", name.replace(' ', "-")));
        edited_copy(&own, &img, 65534, f);
        check_refused(
            &ckpt_timeout(&["restore", "--check", img.to_str().unwrap()], LIMIT),
            name,
            &needle,
        );
        check_refused(
            &ckpt_timeout(&["restore", "--detach", img.to_str().unwrap()], LIMIT),
            name,
            &needle,
        );
        wait_gone(q.pid);
        wait_gone(child);
    }
}

/// `strict DIR`: opens the FIFO DIR/f, enters seccomp strict mode (read,
/// write, exit, sigreturn only), then answers each byte read from the
/// FIFO with a line `pong C`.
const STRICT: &str = r#"
#include "fixture.h"
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    fx_init();
    char path[4096];
    snprintf(path, sizeof path, "%s/f", argv[1]);
    int fd = open(path, O_RDWR);
    if (fd < 0) fail("open: %s", strerror(errno));
    say("READY");
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)) fail("prctl: %s", strerror(errno));
    char line[8] = "pong ?\n", c;
    for (;;) {
        if (read(fd, &c, 1) != 1) syscall(SYS_exit, 3);
        line[5] = c;
        write(1, line, 7);
    }
}
"#;

#[test]
fn seccomp_strict_mode_is_restored() {
    let dir = TempDir::new("strict");
    let fifo = dir.join("f");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let bin = c_fixture("strict", STRICT);
    let d = dir.path().to_str().unwrap().to_string();
    let mut p = Proc::spawn(&dir, &bin, &[&d]);
    p.wait_for("READY");
    let ping = |p: &Proc, b: u8| {
        let start = p.line_count();
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut f, &[b]).unwrap();
        let want = format!("pong {}", b as char);
        p.wait_line_after(start, |l| l == want);
    };
    ping(&p, b'a');
    let img = dir.join("img.ckpt");
    dump_kill(&mut p, &img);
    let r = restore_detached(&img, &p.out, p.pid);
    let status = std::fs::read_to_string(format!("/proc/{}/status", r.pid)).unwrap();
    assert!(
        status.lines().any(|l| l == "Seccomp:\t1"),
        "the restored process is not in strict mode:\n{status}"
    );
    ping(&r, b'b');
}

/// A SysV segment of root's, 0600, left by a process that exited (a killed
/// postmaster leaves its interlock segment so), whose pid the kernel later
/// gave to nobody's process: the segment is not that process's, so a dump
/// as nobody neither fails on it nor saves it (nor does root's dump).
#[test]
fn a_segment_naming_a_recycled_pid_is_not_the_dumped_process() {
    need(require::tool("ipcmk", "apt-get install util-linux"));
    let dir = TempDir::new("sysvreuse");
    // The segment is made by a process at a pid near the top of the pid
    // range, which nobody's process then takes (ns_last_pid): far from
    // the pids other tests just freed and restore at (setting the next
    // pid back among them would hand theirs to other processes).
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let at_pid = |pid: i32, cmd: &mut dyn FnMut() -> (i32, Box<dyn std::any::Any>)| {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let (got, keep) = cmd();
        (got == pid).then_some(keep)
    };
    struct Remove(i32);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("ipcrm")
                .args(["-m", &self.0.to_string()])
                .status();
        }
    }
    let mut made = None;
    for k in 0..50 {
        let pid = pid_max - 2000 + 13 * k;
        let mut mk = || {
            let c = Command::new("ipcmk")
                .args(["-M", "4096", "-p", "0600"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let got = c.id() as i32;
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let id: i32 = text
                .trim()
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("ipcmk said {text:?}"));
            (got, Box::new(Remove(id)) as Box<dyn std::any::Any>)
        };
        if let Some(seg) = at_pid(pid, &mut mk) {
            made = Some((pid, seg));
            break;
        }
    }
    let (maker, _segment) = made.expect("could not run ipcmk at a chosen pid");
    let id = {
        let shm = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
        shm.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(4) == Some(&maker.to_string().as_str())).then(|| f[1].parse::<i32>().ok())?
            })
            .next()
            .expect("the segment ipcmk made")
    };
    // Later than the segment's last change by more than the grain of
    // the clocks compared (seconds, and a start time that can lag by one).
    std::thread::sleep(Duration::from_millis(3500));
    // Each try in a directory of its own: the processes of a TempDir share
    // one output file, and a try that misses the pid can give its pid to
    // the next (whose READY line must not be taken for the old one's).
    let mut tries = 0;
    let (_try_dir, q) = loop {
        tries += 1;
        assert!(
            tries <= 50,
            "could not start nobody's process at pid {maker}"
        );
        let d = TempDir::new(&format!("sysvreuse-{tries}"));
        let mut spawn = || {
            let q = nobody_target(&d, true);
            (q.pid, Box::new(q) as Box<dyn std::any::Any>)
        };
        if let Some(q) = at_pid(maker, &mut spawn) {
            break (d, q.downcast::<Proc>().unwrap());
        }
    };
    let out = nobody_dir(&dir, "out");
    let image = out.join("own.ckpt");
    let o = ckpt_as_nobody(&[
        "dump",
        &q.pid.to_string(),
        "-o",
        image.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let rooted = dir.join("root.ckpt");
    ckpt_ok(&[
        "dump",
        &q.pid.to_string(),
        "-o",
        rooted.to_str().unwrap(),
        "--leave-running",
        "-q",
    ]);
    for img in [&image, &rooted] {
        let r = ckpt_image::ImageReader::open(img).unwrap();
        assert!(
            r.image().sysv_shm.iter().all(|s| s.perm.id != id),
            "{}: saved the segment of a process that exited",
            img.display()
        );
    }
}
