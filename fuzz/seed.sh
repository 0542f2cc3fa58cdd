#!/usr/bin/env bash
# Write seed corpora for the fuzz targets from the crate's sample images and
# the golden images.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/reader corpus/metadata
for f in ../tests/golden/*.ckpt; do
    [[ -e $f ]] && cp "$f" "corpus/reader/seed-$(basename "$f")"
done
CKPT_FUZZ_SEED_DIR=$(pwd)/corpus cargo test --manifest-path ../crates/image/Cargo.toml \
    --test fuzz_mutations write_seeds -- --ignored
ls corpus/*
