//! Dead space and compaction.

mod common;

use ckpt_image::compact::{compact, usage};
use ckpt_image::*;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every saved byte a reader can see: anonymous memory of 100, the
/// heap, the stack, pid 200's shared memory, and the two blobs.
fn contents(path: &Path) -> Vec<Vec<u8>> {
    let r = ImageReader::open(path).unwrap();
    let mut out = Vec::new();
    for (pid, addr, len) in [
        (100, ANON, 16 * PS),
        (100, HEAP, 4 * PS),
        (100, STACK, PS),
        (200, ANON, 8 * PS),
        (100, FILEMAP + PS, PS),
    ] {
        let mut b = vec![0u8; len as usize];
        r.read_memory(pid, addr, &mut b).unwrap();
        out.push(b);
    }
    for f in &r.image().files {
        match &f.kind {
            FileKind::Regular(x) if x.has_contents => out.push(r.read_blob(&x.contents).unwrap()),
            FileKind::MemFd(m) => out.push(r.read_blob(&m.contents).unwrap()),
            _ => {}
        }
    }
    out
}

#[test]
fn compaction_keeps_the_live_generation_only() {
    let dir = TempDir::new("compact");
    let path = dir.join("c.ckpt");
    std::fs::write(&path, rich_bytes(Compression::Fast)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let u0 = usage(&ImageReader::open(&path).unwrap()).unwrap();
    assert_eq!(u0.dead(), 0, "a fresh image has no dead space: {u0:?}");
    // 30 edits, each a generation with new frames and a new metadata record.
    for i in 0..30u32 {
        let mut ed = ImageEditor::open(&path).unwrap();
        ed.write_memory(100, ANON + u64::from(i % 16) * PS + 7, &i.to_le_bytes())
            .unwrap();
        ed.commit().unwrap();
    }
    let before = contents(&path);
    let r = ImageReader::open(&path).unwrap();
    let u = usage(&r).unwrap();
    let meta_before = r.image().clone();
    drop(r);
    assert!(u.dead() > 0 && u.frames_live < u.frames, "{u:?}");
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(u.file_len, len);

    let c = compact(&path).unwrap();
    assert_eq!(c.before, len);
    // The live part, less the dropped frames' entries in the metadata.
    assert!(c.after <= u.live && c.after > u.live - 2048, "{c:?} {u:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), c.after);
    assert_eq!(c.generation, 30);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640,
        "the mode is kept"
    );
    let r = ImageReader::open(&path).unwrap();
    let u2 = usage(&r).unwrap();
    assert_eq!(u2.dead(), 0, "{u2:?}");
    assert_eq!(u2.frames, u2.frames_live);
    assert_eq!(r.image().generation, 30);
    assert_eq!(
        r.image().processes,
        meta_before
            .processes
            .iter()
            .map(|p| {
                // only frame numbers and offsets may differ
                let mut p = p.clone();
                for (m, n) in p
                    .memory
                    .iter_mut()
                    .zip(&r.image().process(p.pid).unwrap().memory)
                {
                    m.frame = n.frame;
                }
                p
            })
            .collect::<Vec<_>>()
    );
    drop(r);
    assert_eq!(contents(&path), before, "every byte reads the same");
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // It edits on.
    let mut ed = ImageEditor::open(&path).unwrap();
    ed.write_memory(100, ANON, b"after").unwrap();
    ed.commit().unwrap();
    assert_eq!(ed.image().generation, 31);
}

#[test]
fn a_torn_tail_is_dead_space_and_compaction_drops_it() {
    let dir = TempDir::new("compact-torn");
    let path = dir.join("t.ckpt");
    let mut bytes = rich_bytes(Compression::Zstd);
    let good = bytes.len() as u64;
    bytes.extend_from_slice(&[0xab; 1000]);
    std::fs::write(&path, &bytes).unwrap();
    let u = usage(&ImageReader::open(&path).unwrap()).unwrap();
    assert_eq!(u.dead(), 1000);
    let before = contents(&path);
    let c = compact(&path).unwrap();
    assert_eq!(c.after, good);
    assert_eq!(contents(&path), before);
}

#[test]
fn show_reports_dead_space_and_the_greater_minor() {
    let dir = TempDir::new("compact-show");
    let path = dir.join("s.ckpt");
    std::fs::write(&path, rich_bytes(Compression::Fast)).unwrap();
    let mut ed = ImageEditor::open(&path).unwrap();
    ed.write_memory(100, ANON, &[1; 5000]).unwrap();
    ed.commit().unwrap();
    drop(ed);
    let r = ImageReader::open(&path).unwrap();
    let facts = summary::file_facts(&r).unwrap();
    let text = summary::render_file(r.image(), &facts);
    let first: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(
        first[0],
        format!("ckpt image, format 1.{FORMAT_MINOR}, generation 1"),
        "{text}"
    );
    assert!(
        first[1].starts_with("  file:      ") && first[1].contains("dead space"),
        "{text}"
    );
    let mut img = r.image().clone();
    img.format_minor = 7;
    assert_eq!(summary::reported_version(&img, (1, 1)), (1, 7));
    assert_eq!(summary::reported_version(r.image(), (1, 3)), (1, 3));
}
