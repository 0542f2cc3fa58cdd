//! Throughput of the writer and reader (ignored; run with
//! `cargo test --release -p ckpt-image --test bench -- --ignored --nocapture`).

use ckpt_image::*;
use std::time::Instant;

/// `mib` MiB of "typical" memory: a third zero pages, a third text-like
/// (compressible), a third random.
fn memory(mib: usize) -> Vec<u8> {
    let mut v = vec![0u8; mib << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for (i, page) in v.chunks_mut(4096).enumerate() {
        match i % 3 {
            0 => {}
            1 => {
                for (j, b) in page.iter_mut().enumerate() {
                    *b = b"the quick brown fox jumps over the lazy dog "[(j + i) % 44];
                }
                page[i % 4000] = i as u8;
            }
            _ => {
                for b in page.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
        }
    }
    v
}

#[test]
#[ignore]
fn writer_throughput() {
    let mem = memory(256);
    for c in [Compression::None, Compression::Fast] {
        let t = Instant::now();
        let mut w = ImageWriter::new(
            std::io::sink(),
            WriteOptions {
                compression: c,
                ..Default::default()
            },
        )
        .unwrap();
        for (i, chunk) in mem.chunks(8 << 20).enumerate() {
            w.add_pages(1, 0x1000_0000 + (i as u64) * (8 << 20), chunk)
                .unwrap();
        }
        let (bin, bout) = (w.bytes_in(), w.bytes_out());
        let img = Image {
            processes: vec![Process {
                pid: 1,
                vmas: vec![Vma {
                    start: 0x1000_0000,
                    end: 0x1000_0000 + mem.len() as u64,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        w.finish(img).unwrap();
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "{c:?}: {} MiB in {:.3} s = {:.0} MiB/s, {} MiB out",
            bin >> 20,
            s,
            (bin >> 20) as f64 / s,
            bout >> 20
        );
    }
    let t = Instant::now();
    let z = (0..(256usize << 20) / 4096)
        .filter(|i| ckpt_image::is_zero_page(&mem[i * 4096..(i + 1) * 4096]))
        .count();
    eprintln!(
        "zero check: {z} zero pages, {:.0} MiB/s",
        256.0 / t.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore]
fn zstd_levels() {
    let mem = match std::env::var("CKPT_BENCH_FILE") {
        Ok(f) => std::fs::read(f).unwrap(),
        Err(_) => memory(64),
    };
    let mib = mem.len() as f64 / (1 << 20) as f64;
    for level in [-1, 1, -5, -3, -1, 1, 3] {
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        let t = Instant::now();
        let mut out = 0usize;
        let mut buf = Vec::with_capacity(1 << 20);
        for chunk in mem.chunks(1 << 20) {
            buf.clear();
            out += c.compress_to_buffer(chunk, &mut buf).unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "level {level}: {:.0} MiB/s, ratio {:.3}",
            mib / s,
            out as f64 / mem.len() as f64
        );
    }
}
