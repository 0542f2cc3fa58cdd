//! Golden images in tests/golden/: v1 images that every later version must
//! keep reading exactly. `generate_golden` (ignored) wrote them once; they
//! are never regenerated.

mod common;

use ckpt_image::*;
use common::*;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn json_text(r: &ImageReader) -> String {
    let v = json::metadata_to_json(r.metadata_bytes()).unwrap();
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

/// minimal: one process, raw (uncompressed) frames, a zero run, a page
/// without a run: the easiest image to read from another language.
fn minimal() -> Vec<u8> {
    let mut w = ImageWriter::new(
        Vec::new(),
        WriteOptions {
            compression: Compression::None,
            page_size: 4096,
            frame_size: 1 << 20,
        },
    )
    .unwrap();
    let mut pages = vec![0u8; 3 * PS as usize];
    for (i, b) in pages[..PS as usize].iter_mut().enumerate() {
        *b = (i % 256) as u8;
    }
    pages[2 * PS as usize..2 * PS as usize + 12].copy_from_slice(b"hello, ckpt\n");
    w.add_pages(42, 0x400000, &pages).unwrap();
    let img = Image {
        tool_version: "ckpt golden".into(),
        created_ns: 1_700_000_000_000_000_000,
        host: HostInfo {
            hostname: "golden".into(),
            kernel_release: "6.1.0".into(),
            arch: Arch::X8664,
            page_size: 4096,
            ..Default::default()
        },
        processes: vec![Process {
            pid: 42,
            ppid: 1,
            pgid: 42,
            sid: 42,
            state: "S".into(),
            comm: b"minimal".to_vec(),
            cmdline: vec![b"/bin/minimal".to_vec()],
            cwd: b"/".to_vec(),
            root: b"/".to_vec(),
            vmas: vec![Vma {
                start: 0x400000,
                end: 0x404000,
                prot: PROT_READ | PROT_WRITE,
                ..Default::default()
            }],
            threads: vec![Thread {
                tid: 42,
                comm: b"minimal".to_vec(),
                regs: Registers::X8664(X8664Regs {
                    rip: 0x400010,
                    rsp: 0x403ff0,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            exit_signal: 17,
            ..Default::default()
        }],
        root_pid: 42,
        ..Default::default()
    };
    w.finish(img).unwrap()
}

fn check_memory(name: &str, r: &ImageReader) {
    match name {
        "minimal" => {
            let mut b = vec![0u8; 4 * PS as usize];
            r.read_memory(42, 0x400000, &mut b).unwrap();
            assert!(b[..PS as usize]
                .iter()
                .enumerate()
                .all(|(i, &x)| x == (i % 256) as u8));
            assert!(b[PS as usize..2 * PS as usize].iter().all(|&x| x == 0));
            assert_eq!(&b[2 * PS as usize..2 * PS as usize + 12], b"hello, ckpt\n");
            assert!(b[3 * PS as usize..].iter().all(|&x| x == 0));
        }
        "rich" | "rich-edited" => {
            let mut b = vec![0u8; 16 * PS as usize];
            r.read_memory(100, ANON, &mut b).unwrap();
            let mut want = anon_contents();
            if name == "rich-edited" {
                want[100..105].copy_from_slice(b"EDIT!");
            }
            assert_eq!(b, want);
            let img = r.image();
            let FileKind::Regular(reg) = &img.files[1].kind else {
                panic!()
            };
            assert_eq!(r.read_blob(&reg.contents).unwrap(), deleted_contents());
            let FileKind::MemFd(m) = &img.files[13].kind else {
                panic!()
            };
            assert_eq!(r.read_blob(&m.contents).unwrap(), memfd_contents());
        }
        _ => {}
    }
}

#[test]
fn golden_images_read_exactly() {
    let dir = golden_dir();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("ckpt") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let r = ImageReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let want = std::fs::read_to_string(path.with_extension("json")).unwrap();
        let want: serde_json::Value = serde_json::from_str(&want).unwrap();
        let got: serde_json::Value = serde_json::from_str(&json_text(&r)).unwrap();
        if let Err(at) = same_or_added_defaults(&want, &got, "") {
            panic!(
                "{}: metadata_to_json differs from {name}.json at {at}",
                path.display()
            );
        }
        assert_eq!(r.format_version(), (1, 0));
        check_memory(&name, &r);
        let _ = summary::render(r.image());
        n += 1;
    }
    assert!(n >= 3, "expected the golden images in {}", dir.display());
}

/// `got` reads exactly as `want`, except for fields added to the schema
/// since the golden image was written: those appear with their default
/// (zero, false, empty) values. Err names the first difference.
fn same_or_added_defaults(
    want: &serde_json::Value,
    got: &serde_json::Value,
    at: &str,
) -> std::result::Result<(), String> {
    use serde_json::Value as V;
    match (want, got) {
        (V::Object(w), V::Object(g)) => {
            for (k, wv) in w {
                let gv = g.get(k).ok_or_else(|| format!("{at}.{k} (missing)"))?;
                same_or_added_defaults(wv, gv, &format!("{at}.{k}"))?;
            }
            for (k, gv) in g {
                if !w.contains_key(k) && !is_default(gv) {
                    return Err(format!(
                        "{at}.{k} (new field with a non-default value {gv})"
                    ));
                }
            }
            Ok(())
        }
        (V::Array(w), V::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                same_or_added_defaults(wv, gv, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ if want == got => Ok(()),
        _ => Err(format!("{at}: {want} != {got}")),
    }
}

/// A field's value when it was never set: what an older image reads as.
fn is_default(v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match v {
        V::Null => true,
        V::Bool(b) => !b,
        V::Number(n) => n.as_f64() == Some(0.0) || n.as_i64() == Some(-1),
        V::String(s) => {
            s.is_empty() || s == "flock" || s == "read" || s == "none" || s == "unknown"
        }
        V::Array(a) => a.is_empty(),
        V::Object(o) => o.values().all(is_default),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(format!("{name}.ckpt"));
    std::fs::write(&path, bytes).unwrap();
    let r = ImageReader::open(&path).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), json_text(&r)).unwrap();
}

/// Writes tests/golden/{minimal,rich,rich-edited}.{ckpt,json}. Run once;
/// committed images are never regenerated.
#[test]
#[ignore]
fn generate_golden() {
    let dir = golden_dir();
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "minimal", &minimal());
    let rich = rich_bytes(Compression::Fast);
    write(&dir, "rich", &rich);
    // rich-edited: one committed edit (generation 1) appended to rich.
    let tmp = TempDir::new("golden");
    let p = tmp.join("e.ckpt");
    std::fs::write(&p, &rich).unwrap();
    let mut ed = ImageEditor::open(&p).unwrap();
    ed.write_memory(100, ANON + 100, b"EDIT!").unwrap();
    ed.image_mut().notes.push(Note {
        key: "edited-by".into(),
        value: "golden".into(),
    });
    ed.commit().unwrap();
    drop(ed);
    write(&dir, "rich-edited", &std::fs::read(&p).unwrap());
}
