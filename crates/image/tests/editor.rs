mod common;

use ckpt_image::*;
use common::*;
use std::path::Path;

fn write_file(path: &Path) {
    std::fs::write(path, rich_bytes(Compression::Fast)).unwrap();
}

fn mem(path: &Path, pid: i32, addr: u64, len: usize) -> Result<Vec<u8>> {
    let r = ImageReader::open(path)?;
    let mut b = vec![0u8; len];
    r.read_memory(pid, addr, &mut b)?;
    Ok(b)
}

#[test]
fn write_memory_commit_reopen() {
    let dir = TempDir::new("edit");
    let path = dir.join("e.ckpt");
    write_file(&path);
    let before = std::fs::read(&path).unwrap();
    let mut expected = anon_contents();

    let mut ed = ImageEditor::open(&path).unwrap();
    // unaligned, crossing pages, runs, a zero run and frames
    let patch: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
    let at = 2 * PS as usize + 123;
    ed.write_memory(100, ANON + at as u64, &patch).unwrap();
    expected[at..at + patch.len()].copy_from_slice(&patch);
    // a single byte
    ed.write_memory(100, ANON + 15 * PS + 4095, &[0x5a])
        .unwrap();
    expected[16 * PS as usize - 1] = 0x5a;
    // zeroing a whole page becomes a zero run
    ed.write_memory(100, ANON + 12 * PS, &vec![0u8; PS as usize])
        .unwrap();
    expected[12 * PS as usize..13 * PS as usize].fill(0);
    // the editor sees its own writes before commit
    let mut b = vec![0u8; expected.len()];
    ed.read_memory(100, ANON, &mut b).unwrap();
    assert_eq!(b, expected);
    // readers still see the old state (the tail is uncommitted)
    assert_eq!(
        mem(&path, 100, ANON, expected.len()).unwrap(),
        anon_contents()
    );
    // registers and notes through image_mut
    if let Registers::X8664(r) = &mut ed.image_mut().processes[0].threads[0].regs {
        r.rip = 0xdead;
    }
    ed.image_mut().notes.push(Note {
        key: "edited".into(),
        value: "yes".into(),
    });
    ed.commit().unwrap();
    assert_eq!(ed.image().generation, 1);
    drop(ed);

    let r = ImageReader::open(&path).unwrap();
    assert_eq!(r.image().generation, 1);
    assert_eq!(r.image().notes.last().unwrap().key, "edited");
    let Registers::X8664(regs) = &r.image().processes[0].threads[0].regs else {
        panic!()
    };
    assert_eq!(regs.rip, 0xdead);
    let mut b = vec![0u8; expected.len()];
    r.read_memory(100, ANON, &mut b).unwrap();
    assert_eq!(b, expected);
    let p = r.image().process(100).unwrap();
    assert!(p
        .memory
        .iter()
        .any(|m| m.start == ANON + 12 * PS && m.kind == RunKind::Zero));
    // the old bytes are untouched: the file only grew
    let after = std::fs::read(&path).unwrap();
    assert_eq!(&after[..before.len()], &before[..]);

    // heap page without a run (zero) and the file mapping page that was saved
    let mut ed = ImageEditor::open(&path).unwrap();
    ed.write_memory(100, HEAP + PS + 10, b"hello").unwrap();
    ed.write_memory(100, FILEMAP + PS + 1, b"cow").unwrap();
    // partial write of a file-backed page with no saved contents is refused
    assert!(matches!(
        ed.write_memory(100, FILEMAP + 8, b"x"),
        Err(Error::NotSaved { .. })
    ));
    // but a whole page is fine
    ed.write_memory(100, FILEMAP + 3 * PS, &vec![7u8; PS as usize])
        .unwrap();
    assert!(matches!(
        ed.write_memory(100, 0x1000, b"x"),
        Err(Error::Unmapped { .. })
    ));
    // across the end of the anon vma into the unmapped gap
    assert!(matches!(
        ed.write_memory(100, ANON + 16 * PS - 2, b"xyz"),
        Err(Error::Unmapped { addr, .. }) if addr == ANON + 16 * PS
    ));
    ed.commit().unwrap();
    drop(ed);
    let heap = mem(&path, 100, HEAP + PS, PS as usize).unwrap();
    assert_eq!(&heap[10..15], b"hello");
    assert!(heap[..10].iter().chain(&heap[15..]).all(|&x| x == 0));
    let f = mem(&path, 100, FILEMAP + PS, PS as usize).unwrap();
    let mut want = pattern(5, PS as usize);
    want[1..4].copy_from_slice(b"cow");
    assert_eq!(f, want);
    assert_eq!(
        mem(&path, 100, FILEMAP + 3 * PS, 16).unwrap(),
        vec![7u8; 16]
    );
    assert_eq!(mem(&path, 100, ANON, expected.len()).unwrap(), expected);
    assert_eq!(ImageReader::open(&path).unwrap().image().generation, 2);
}

#[test]
fn torn_append_reopens_to_the_old_state() {
    let dir = TempDir::new("torn");
    let path = dir.join("t.ckpt");
    // the small image keeps the tail (and so the number of cuts) small
    std::fs::write(&path, small_bytes()).unwrap();
    let old = std::fs::read(&path).unwrap();
    let old_mem = mem(&path, 7, 0x1000 + 5, 9).unwrap();
    let mut ed = ImageEditor::open(&path).unwrap();
    ed.write_memory(7, 0x1000 + 5, b"new bytes").unwrap();
    ed.image_mut().notes.push(Note {
        key: "k".into(),
        value: "v".into(),
    });
    ed.commit().unwrap();
    drop(ed);
    let new = std::fs::read(&path).unwrap();
    assert!(new.len() > old.len());
    let old_meta = ImageReader::new(&old[..])
        .unwrap()
        .metadata_bytes()
        .to_vec();
    let new_meta = ImageReader::new(&new[..])
        .unwrap()
        .metadata_bytes()
        .to_vec();
    assert_ne!(old_meta, new_meta);

    // Every cut inside the appended tail reads as the old state; a cut at the
    // very end is the new state.
    for cut in old.len()..=new.len() {
        let r = ImageReader::new(&new[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        if cut == new.len() {
            assert_eq!(r.metadata_bytes(), &new_meta[..]);
        } else {
            assert!(r.metadata_bytes() == &old_meta[..], "cut at {cut}");
            let mut b = [0u8; 9];
            r.read_memory(7, 0x1000 + 5, &mut b).unwrap();
            assert_eq!(&b[..], &old_mem[..]);
        }
    }
    // An editor opened on a torn file truncates the tail and appends cleanly.
    for cut in [old.len() + 1, old.len() + 100, new.len() - 1] {
        std::fs::write(&path, &new[..cut]).unwrap();
        let mut ed = ImageEditor::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            old.len() as u64,
            "truncated to the commit"
        );
        ed.write_memory(7, 0x1000 + 5, b"again").unwrap();
        ed.commit().unwrap();
        drop(ed);
        let got = mem(&path, 7, 0x1000 + 5, 5).unwrap();
        assert_eq!(got, b"again");
        let r = ImageReader::open(&path).unwrap();
        assert_eq!(r.committed_len(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(r.image().generation, 1);
    }
}

#[test]
fn dropping_an_editor_without_commit_changes_nothing_visible() {
    let dir = TempDir::new("nocommit");
    let path = dir.join("n.ckpt");
    write_file(&path);
    let mut ed = ImageEditor::open(&path).unwrap();
    ed.write_memory(100, ANON, b"uncommitted").unwrap();
    drop(ed);
    assert_eq!(mem(&path, 100, ANON, 11).unwrap(), &anon_contents()[..11]);
    // a later editor starts from the committed state
    let ed = ImageEditor::open(&path).unwrap();
    let mut b = [0u8; 11];
    ed.read_memory(100, ANON, &mut b).unwrap();
    assert_eq!(&b[..], &anon_contents()[..11]);
}

#[test]
fn commit_refuses_an_invalid_model() {
    let dir = TempDir::new("invalid");
    let path = dir.join("i.ckpt");
    write_file(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut ed = ImageEditor::open(&path).unwrap();
    ed.image_mut().processes[0].fds.push(Fd {
        fd: 99,
        cloexec: false,
        file: 4242,
    });
    let e = ed.commit().unwrap_err();
    assert!(e.to_string().contains("unknown open file id 4242"), "{e}");
    assert_eq!(ed.image().generation, 0);
    drop(ed);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
}
