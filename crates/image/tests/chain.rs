//! Incremental images: pages added in any order or replaced, `parent`
//! runs, chains of parents found and checked, reads through the chain,
//! and flatten.

mod common;
use ckpt_image::chain::{flatten, ResolvedRun};
use ckpt_image::*;
use common::{pattern, TempDir, PS};

const BASE: u64 = 0x10_0000;
const PAGES: u64 = 64;

fn opts() -> WriteOptions {
    WriteOptions {
        compression: Compression::Fast,
        page_size: PS as u32,
        // Small frames: pages of one image spread over several frames.
        frame_size: 8 * PS as usize,
    }
}

/// The model of pid 7 with one anonymous area of PAGES pages and a file
/// mapping of 2 pages (never saved).
fn model(id: u8, parent: Option<(u8, &str)>) -> Image {
    Image {
        tool_version: "chain test".into(),
        created_ns: i64::from(id) * 1_000,
        host: HostInfo {
            page_size: PS as u32,
            ..Default::default()
        },
        processes: vec![Process {
            pid: 7,
            vmas: vec![
                Vma {
                    start: BASE,
                    end: BASE + PAGES * PS,
                    prot: 3,
                    ..Default::default()
                },
                Vma {
                    start: BASE + PAGES * PS,
                    end: BASE + (PAGES + 2) * PS,
                    prot: 1,
                    backing: VmaBacking::File(FileMapping {
                        file: FileIdentity {
                            path: b"/nonexistent/lib.so".to_vec(),
                            ..Default::default()
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            threads: vec![Thread {
                tid: 7,
                ..Default::default()
            }],
            ..Default::default()
        }],
        root_pid: 7,
        image_id: vec![id; 16],
        parent: match parent {
            Some((pid_, path)) => ParentRef {
                image_id: vec![pid_; 16],
                path: path.as_bytes().to_vec(),
                created_ns: i64::from(pid_) * 1_000,
            },
            None => ParentRef::default(),
        },
        ..Default::default()
    }
}

/// The memory of the area after `gen` generations of writes: generation g
/// rewrote pages g, g + 7, g + 14, ... (and page 3 became zero in 2).
fn memory(gen: u8) -> Vec<u8> {
    let mut m = pattern(1, (PAGES * PS) as usize);
    for g in 1..=gen {
        for p in (g as u64..PAGES).step_by(7) {
            let at = (p * PS) as usize;
            m[at..at + PS as usize]
                .copy_from_slice(&pattern(100 + u64::from(g) * 64 + p, PS as usize));
        }
        if g == 2 {
            m[(3 * PS) as usize..(4 * PS) as usize].fill(0);
        }
    }
    m
}

fn changed_in(gen: u8) -> Vec<u64> {
    let mut v: Vec<u64> = (gen as u64..PAGES).step_by(7).collect();
    if gen == 2 {
        v.push(3);
    }
    v.sort();
    v
}

/// A full image of generation 0, written with pages out of order.
fn write_base(path: &std::path::Path) {
    let m = memory(0);
    let mut w = ImageWriter::new(std::fs::File::create(path).unwrap(), opts()).unwrap();
    // Back half first, then the front half: any order is fine.
    let half = (PAGES / 2 * PS) as usize;
    w.add_pages(7, BASE + half as u64, &m[half..]).unwrap();
    w.add_pages(7, BASE, &m[..half]).unwrap();
    w.finish(model(1, None)).unwrap();
}

/// Generation `gen` as an incremental image of generation `gen - 1`
/// (image id gen + 1, parent gen).
fn write_incremental(path: &std::path::Path, gen: u8, parent_path: &str) {
    let m = memory(gen);
    let mut w = ImageWriter::new(std::fs::File::create(path).unwrap(), opts()).unwrap();
    let changed = changed_in(gen);
    let mut at = 0u64;
    for &p in &changed {
        if p > at {
            w.add_parent_run(7, BASE + at * PS, p - at).unwrap();
        }
        // A page written again after it was first copied: the later copy wins.
        w.add_pages(7, BASE + p * PS, &vec![0xEE; PS as usize])
            .unwrap();
        let off = (p * PS) as usize;
        w.replace_pages(7, BASE + p * PS, &m[off..off + PS as usize])
            .unwrap();
        at = p + 1;
    }
    if at < PAGES {
        w.add_parent_run(7, BASE + at * PS, PAGES - at).unwrap();
    }
    w.finish(model(gen + 1, Some((gen, parent_path)))).unwrap();
}

fn read_all<R: ReadAt>(r: &ImageReader<R>) -> Vec<u8> {
    let mut b = vec![0u8; (PAGES * PS) as usize];
    r.read_memory(7, BASE, &mut b).unwrap();
    b
}

#[test]
fn a_chain_of_three_reads_like_the_last_generation() {
    let d = TempDir::new("chain");
    write_base(&d.join("g0.ckpt"));
    write_incremental(&d.join("g1.ckpt"), 1, "g0.ckpt");
    // The path the child names is absolute here, relative above.
    let g1 = d.join("g1.ckpt");
    write_incremental(&d.join("g2.ckpt"), 2, g1.to_str().unwrap());

    let r = ImageReader::open(&d.join("g2.ckpt")).unwrap();
    assert!(r.chain_error().is_none(), "{:?}", r.chain_error());
    assert_eq!(r.ancestors().len(), 2);
    assert!(read_all(&r) == memory(2), "chain reads the last generation");
    // Pages without a run in a file mapping stay not saved, through the chain.
    let mut b = [0u8; 16];
    assert!(matches!(
        r.read_memory(7, BASE + PAGES * PS, &mut b),
        Err(Error::NotSaved { .. })
    ));
    // Resolved runs: no parent runs left, each at the level holding it.
    let runs: Vec<ResolvedRun> = r.resolved_memory(7).unwrap();
    assert!(runs.iter().all(|x| x.run.kind != RunKind::Parent));
    let level_of = |page: u64| {
        runs.iter()
            .find(|x| {
                let s = x.run.start;
                s <= BASE + page * PS && BASE + page * PS < s + u64::from(x.run.pages) * PS
            })
            .map(|x| (x.level, x.run.kind))
    };
    assert_eq!(level_of(2), Some((0, RunKind::Data)));
    assert_eq!(level_of(3), Some((0, RunKind::Zero)));
    assert_eq!(level_of(1), Some((1, RunKind::Data)));
    assert_eq!(level_of(0), Some((2, RunKind::Data)));
    // for_each_run gives the same bytes.
    let mut via_runs = vec![0u8; (PAGES * PS) as usize];
    r.for_each_run(7, |run, data| {
        let at = (run.start - BASE) as usize;
        let n = run.pages as usize * PS as usize;
        match data {
            Some(d) => via_runs[at..at + n].copy_from_slice(d),
            None => via_runs[at..at + n].fill(0),
        }
        Ok(())
    })
    .unwrap();
    assert!(via_runs == memory(2));
    let text = summary::render_reader(&r);
    assert!(text.contains("chain: 3 images found (complete)"), "{text}");
    assert!(text.contains("in the parent image"), "{text}");

    // Flatten: one image, no parent, same id, same memory.
    let flat_path = d.join("flat.ckpt");
    flatten(&r, std::fs::File::create(&flat_path).unwrap()).unwrap();
    let f = ImageReader::open(&flat_path).unwrap();
    assert!(f.image().parent.image_id.is_empty());
    assert_eq!(f.image().image_id, vec![3u8; 16]);
    assert!(f.ancestors().is_empty());
    assert!(read_all(&f) == memory(2));
    assert!(f.image().processes[0]
        .memory
        .iter()
        .all(|m| m.kind != RunKind::Parent));
}

#[test]
fn a_chain_moved_together_is_found_and_a_wrong_parent_is_refused() {
    let d = TempDir::new("chain-moved");
    let elsewhere = TempDir::new("chain-orig");
    write_base(&d.join("base.ckpt"));
    // The child names the parent where it was before the move.
    let old = elsewhere.join("base.ckpt");
    write_incremental(&d.join("inc.ckpt"), 1, old.to_str().unwrap());
    let r = ImageReader::open(&d.join("inc.ckpt")).unwrap();
    assert!(r.chain_error().is_none(), "{:?}", r.chain_error());
    assert!(read_all(&r) == memory(1));

    // Another dump in the parent's place: found, but not the named image.
    std::fs::rename(d.join("base.ckpt"), d.join("keep.ckpt")).unwrap();
    let mut w =
        ImageWriter::new(std::fs::File::create(d.join("base.ckpt")).unwrap(), opts()).unwrap();
    w.add_pages(7, BASE, &memory(0)).unwrap();
    w.finish(model(9, None)).unwrap();
    let r = ImageReader::open(&d.join("inc.ckpt")).unwrap();
    let e = r.chain_error().expect("wrong parent").to_string();
    assert!(e.contains("not the parent"), "{e}");
    // The image itself still opens: its own pages read, the parent's fail.
    let mut page = vec![0u8; PS as usize];
    r.read_memory(7, BASE + PS, &mut page).unwrap();
    assert!(page == memory(1)[PS as usize..2 * PS as usize]);
    let err = r.read_memory(7, BASE, &mut page).unwrap_err();
    assert!(matches!(err, Error::Chain(_)), "{err}");
    assert!(err.to_string().contains("parent"), "{err}");
    assert!(flatten(&r, Vec::new()).is_err());

    // Missing altogether.
    std::fs::remove_file(d.join("base.ckpt")).unwrap();
    let r = ImageReader::open(&d.join("inc.ckpt")).unwrap();
    assert!(r.chain_error().unwrap().contains("not found"));
    assert!(r.resolved_memory(7).is_err());

    // Given explicitly: checked by id.
    let inc = std::fs::read(d.join("inc.ckpt")).unwrap();
    let keep: Box<dyn ReadAt + Send + Sync> = Box::new(std::fs::read(d.join("keep.ckpt")).unwrap());
    let r = ImageReader::new(inc.clone())
        .unwrap()
        .with_parent(ImageReader::new(keep).unwrap())
        .unwrap();
    assert!(read_all(&r) == memory(1));
    let inc2: Box<dyn ReadAt + Send + Sync> = Box::new(inc.clone());
    assert!(ImageReader::new(inc)
        .unwrap()
        .with_parent(ImageReader::new(inc2).unwrap())
        .is_err());
}

#[test]
fn pages_added_twice_are_refused_and_parent_runs_need_a_parent() {
    let mut w = ImageWriter::new(Vec::new(), opts()).unwrap();
    w.add_pages(7, BASE, &vec![1u8; 2 * PS as usize]).unwrap();
    w.add_pages(7, BASE + PS, &vec![2u8; PS as usize]).unwrap();
    let e = w.finish(model(1, None)).unwrap_err();
    assert!(e.to_string().contains("added twice"), "{e}");

    let mut w = ImageWriter::new(Vec::new(), opts()).unwrap();
    w.add_parent_run(7, BASE, 4).unwrap();
    let e = w.finish(model(1, None)).unwrap_err();
    assert!(e.to_string().contains("has no parent"), "{e}");

    // replace_pages over a parent run: the later data wins.
    let mut w = ImageWriter::new(Vec::new(), opts()).unwrap();
    w.add_parent_run(7, BASE, 8).unwrap();
    w.replace_pages(7, BASE + 2 * PS, &vec![5u8; PS as usize])
        .unwrap();
    let bytes = w.finish(model(2, Some((1, "x")))).unwrap();
    let r = ImageReader::new(bytes).unwrap();
    let kinds: Vec<(u64, u32, RunKind)> = r.image().processes[0]
        .memory
        .iter()
        .map(|m| ((m.start - BASE) / PS, m.pages, m.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, 2, RunKind::Parent),
            (2, 1, RunKind::Data),
            (3, 5, RunKind::Parent)
        ]
    );
}
