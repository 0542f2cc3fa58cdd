//! The fuzz targets' bodies over a deterministic corpus of mutations of
//! valid images, on stable Rust (cargo-fuzz needs nightly: see fuzz/).

mod common;

use ckpt_image::fuzzing::*;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    7,
    8,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    u64::MAX,
    1 << 63,
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if b.is_empty() {
            b.push(0);
        }
        match rng.below(7) {
            0 => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => {
                // an interesting value at an aligned offset (a capnp word or field)
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let w = [1usize, 2, 4, 8][rng.below(4)];
                let i = rng.below(b.len() / w + 1) * w;
                for k in 0..w {
                    if let Some(x) = b.get_mut(i + k) {
                        *x = (v >> (8 * k)) as u8;
                    }
                }
            }
            3 => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
            4 => {
                let i = rng.below(b.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(i..i, bytes);
            }
            5 => {
                let i = rng.below(b.len());
                let n = (1 + rng.below(16)).min(b.len() - i);
                b.drain(i..i + n);
            }
            _ => {
                // copy a chunk over another place
                let n = 1 + rng.below(32);
                let from = rng.below(b.len());
                let to = rng.below(b.len());
                let chunk: Vec<u8> = b[from..(from + n).min(b.len())].to_vec();
                for (k, c) in chunk.into_iter().enumerate() {
                    if let Some(x) = b.get_mut(to + k) {
                        *x = c;
                    }
                }
            }
        }
    }
    b
}

fn budget() -> Duration {
    let secs = std::env::var("CKPT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

#[test]
fn reader_body_survives_mutations() {
    let seeds = [
        sample_image(),
        common::small_bytes(),
        common::rich_bytes(ckpt_image::Compression::Fast),
    ];
    for s in &seeds {
        assert!(reader_body(s), "seed opens");
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let t = Instant::now();
    let (mut n, mut opened) = (0u64, 0u64);
    while t.elapsed() < budget() || n < 200 {
        let seed = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, seed);
        opened += u64::from(reader_body(&m));
        n += 1;
    }
    eprintln!("reader: {n} mutations, {opened} opened");
}

#[test]
fn metadata_body_survives_mutations() {
    let (_, meta) = split_metadata(&sample_image()).unwrap();
    assert!(metadata_body(&meta), "seed opens");
    let (_, rich_meta) =
        split_metadata(&common::rich_bytes(ckpt_image::Compression::Fast)).unwrap();
    let seeds = [meta, rich_meta];
    let mut rng = Rng(0xfeed_beef_0bad_cafe);
    let t = Instant::now();
    let (mut n, mut opened) = (0u64, 0u64);
    while t.elapsed() < budget() || n < 200 {
        let seed = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, seed);
        opened += u64::from(metadata_body(&m));
        n += 1;
    }
    eprintln!("metadata: {n} mutations, {opened} opened");
    assert!(opened > 0, "some mutations of the metadata still open");
}

/// Writes the seeds of the cargo-fuzz corpora (fuzz/seed.sh).
#[test]
#[ignore]
fn write_seeds() {
    let dir =
        std::path::PathBuf::from(std::env::var("CKPT_FUZZ_SEED_DIR").expect("CKPT_FUZZ_SEED_DIR"));
    let sample = sample_image();
    let small = common::small_bytes();
    let rich = common::rich_bytes(ckpt_image::Compression::Fast);
    std::fs::create_dir_all(dir.join("reader")).unwrap();
    std::fs::create_dir_all(dir.join("metadata")).unwrap();
    for (name, b) in [("sample", &sample), ("small", &small), ("rich", &rich)] {
        std::fs::write(dir.join("reader").join(format!("seed-{name}")), b).unwrap();
    }
    std::fs::write(
        dir.join("metadata/seed-sample"),
        split_metadata(&sample).unwrap().1,
    )
    .unwrap();
    std::fs::write(
        dir.join("metadata/seed-rich"),
        split_metadata(&rich).unwrap().1,
    )
    .unwrap();
}
