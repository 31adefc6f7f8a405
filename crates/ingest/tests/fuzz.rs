//! Mutation fuzzing of every reader ingest has: IDX (raw and gzip), npz, npy, the pickle VM,
//! FER2013 CSV, labels CSV, GTSRB CSV, each image decoder, and the safetensors image sets all
//! stages read. Each case takes a small valid input, applies a few byte mutations chosen by
//! proptest (bit flips, boundary bytes, large 32-bit words, digit runs made huge, cuts,
//! inserts, duplicates) and runs the whole of `ingest::run` on it.
//!
//! It asserts what issue 13 asks: no input panics or aborts the process (an abort would end
//! this test binary), and no case allocates more than [`PEAK_LIMIT`] at once, measured by a
//! counting global allocator. The RNG seed is fixed, so CI runs the same cases every time;
//! `FUZZ_CASES=N` runs N cases per reader instead of the default, and `FUZZ_SEED=S` another
//! sequence. A failure is shrunk by proptest to the fewest mutations that still fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use image::{ImageFormat, Rgb, RgbImage};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Bytes live at once through the system allocator, and the most seen since the last reset.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most bytes one case may hold at once above what was live before it. The inputs are a few
/// KiB; a reader that trusts a header's sizes would ask for gigabytes.
const PEAK_LIMIT: usize = 64 << 20;

/// One byte-level mutation; positions are taken modulo the input's length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    /// Overwrite four bytes with a boundary word, little- or big-endian.
    Word(usize, u32, bool),
    /// Replace the run of ASCII digits at or after the position by a long number.
    HugeNumber(usize, &'static str),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        Just(0u8),
        Just(1),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        any::<u8>()
    ];
    let word = prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(i32::MAX as u32),
        Just(0x8000_0000),
        Just(0x0100_0000),
        Just(0xffff),
        any::<u32>()
    ];
    let number = prop_oneof![
        Just("0"),
        Just("-1"),
        Just("4294967297"),
        Just("99999999999999999999"),
        Just("1e308"),
        Just("nan"),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), byte).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        (any::<usize>(), word, any::<bool>()).prop_map(|(p, w, be)| Mutation::Word(p, w, be)),
        (any::<usize>(), number).prop_map(|(p, n)| Mutation::HugeNumber(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Insert(_, v) = m {
            bytes.extend_from_slice(v);
        }
        return;
    }
    let at = |p: usize, len: usize| p % len;
    match m {
        Mutation::FlipBit(p, b) => {
            let i = at(*p, bytes.len());
            bytes[i] ^= 1 << b;
        }
        Mutation::SetByte(p, b) => {
            let i = at(*p, bytes.len());
            bytes[i] = *b;
        }
        Mutation::Word(p, w, be) => {
            let i = at(*p, bytes.len());
            let w = if *be {
                w.to_be_bytes()
            } else {
                w.to_le_bytes()
            };
            for (k, b) in w.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
        Mutation::HugeNumber(p, n) => {
            let i = at(*p, bytes.len());
            if let Some(start) = bytes[i..].iter().position(u8::is_ascii_digit) {
                let start = i + start;
                let end = bytes[start..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(bytes.len(), |e| start + e);
                bytes.splice(start..end, n.bytes());
            }
        }
        Mutation::Truncate(p) => {
            let i = at(*p, bytes.len());
            bytes.truncate(i);
        }
        Mutation::Insert(p, v) => {
            let i = at(*p, bytes.len() + 1);
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Delete(p, n) => {
            let i = at(*p, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Duplicate(p, n) => {
            let i = at(*p, bytes.len());
            let end = (i + n).min(bytes.len());
            let chunk = bytes[i..end].to_vec();
            bytes.splice(end..end, chunk);
        }
    }
}

/// A reader under test: a folder holding a valid input, the one file in it that gets
/// mutated, and the ingest arguments (after the source) that read it.
struct Target {
    name: &'static str,
    source: PathBuf,
    file: PathBuf,
    args: Vec<String>,
    /// Images sets are read by the stages, not ingest: read the mutated file as one.
    image_set: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn save(img: &RgbImage, path: &Path, fmt: ImageFormat) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, fmt).unwrap();
}

fn pattern(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 20) as u8 ^ seed, (y * 30) as u8, seed.wrapping_mul(7)])
    })
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Build every target's valid input under `root`.
fn targets(root: &Path) -> Vec<Target> {
    let mut out = Vec::new();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // IDX: 6 images of 4x4 in 2 classes, raw and gzipped.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 4, 0, 0, 0, 4];
    images.extend((0..96).map(|i| (i * 7) as u8));
    let labels = [0u8, 0, 8, 1, 0, 0, 0, 6, 0, 1, 0, 1, 0, 1];
    for (name, wrap) in [("idx", false), ("idx-gz", true)] {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let (img, lab) = if wrap {
            (gz(&images), gz(&labels))
        } else {
            (images.clone(), labels.to_vec())
        };
        let suffix = if wrap { ".gz" } else { "" };
        let file = dir.join(format!("train-images-idx3-ubyte{suffix}"));
        fs::write(&file, img).unwrap();
        fs::write(dir.join(format!("train-labels-idx1-ubyte{suffix}")), lab).unwrap();
        out.push(Target {
            name,
            source: dir,
            file,
            args: vec![],
            image_set: false,
        });
    }
    // The labels file of an IDX pair.
    out.push(Target {
        name: "idx-labels",
        source: root.join("idx"),
        file: root.join("idx/train-labels-idx1-ubyte"),
        args: vec![],
        image_set: false,
    });
    // npz and a folder of npy, from the committed fixtures.
    let npz = root.join("npz/keras.npz");
    fs::create_dir_all(npz.parent().unwrap()).unwrap();
    fs::copy(repo().join("data/fixtures/npy/keras.npz"), &npz).unwrap();
    out.push(Target {
        name: "npz",
        source: npz.clone(),
        file: npz,
        args: vec![],
        image_set: false,
    });
    let npy = root.join("npy");
    fs::create_dir_all(&npy).unwrap();
    for f in ["x.npy", "y.npy"] {
        fs::copy(repo().join("data/fixtures/npy/float").join(f), npy.join(f)).unwrap();
    }
    out.push(Target {
        name: "npy",
        source: npy.clone(),
        file: npy.join("x.npy"),
        args: vec![],
        image_set: false,
    });
    // Pickles: the train pickle of the committed three.
    let pk = root.join("pickle");
    fs::create_dir_all(&pk).unwrap();
    for f in ["train.p", "valid.p", "test.p"] {
        fs::copy(repo().join("data/fixtures/pickle").join(f), pk.join(f)).unwrap();
    }
    out.push(Target {
        name: "pickle",
        source: pk.clone(),
        file: pk.join("train.p"),
        args: vec![],
        image_set: false,
    });
    // FER2013 CSV: 3x3 grey images as pixel strings.
    let fer = root.join("fer/fer2013.csv");
    fs::create_dir_all(fer.parent().unwrap()).unwrap();
    let mut s = String::from("emotion,pixels,Usage\n");
    for i in 0..8u8 {
        let px: Vec<String> = (0..9).map(|k| (i * 20 + k).to_string()).collect();
        let usage = ["Training", "Training", "PublicTest", "PrivateTest"][i as usize % 4];
        s += &format!("{},{},{usage}\n", i % 2, px.join(" "));
    }
    fs::write(&fer, s).unwrap();
    out.push(Target {
        name: "fer2013",
        source: fer.clone(),
        file: fer,
        args: vec![],
        image_set: false,
    });
    // A labels CSV with PNG, JPEG, BMP and PNM images; the CSV and each image get mutated.
    let csv_dir = root.join("csv");
    let mut rows = String::from("image,label\n");
    let kinds = [
        ("png", ImageFormat::Png),
        ("jpg", ImageFormat::Jpeg),
        ("bmp", ImageFormat::Bmp),
        ("ppm", ImageFormat::Pnm),
    ];
    for i in 0..8u8 {
        let (ext, fmt) = kinds[i as usize % 4];
        save(
            &pattern(6, 5, i),
            &csv_dir.join(format!("img/{i}.{ext}")),
            fmt,
        );
        rows += &format!("{i}.{ext},{}\n", i % 2);
    }
    fs::write(csv_dir.join("labels.csv"), rows).unwrap();
    let csv_args = strings(&[
        "--format",
        "csv",
        "--csv",
        csv_dir.join("labels.csv").to_str().unwrap(),
    ]);
    out.push(Target {
        name: "labels-csv",
        source: csv_dir.join("img"),
        file: csv_dir.join("labels.csv"),
        args: csv_args.clone(),
        image_set: false,
    });
    for (i, (ext, _)) in kinds.iter().enumerate() {
        out.push(Target {
            name: ["png", "jpeg", "bmp", "pnm"][i],
            source: csv_dir.join("img"),
            file: csv_dir.join(format!("img/{i}.{ext}")),
            args: csv_args.clone(),
            image_set: false,
        });
    }
    // GTSRB: two classes with ROI columns; the CSV of class 0 gets mutated.
    let gt = root.join("gtsrb");
    for class in 0..2u8 {
        let dir = gt.join(format!("Final_Training/Images/{class:05}"));
        let mut csv = String::from("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n");
        for i in 0..3u8 {
            let name = format!("{class:05}_{i:05}.ppm");
            save(
                &pattern(12, 12, i + class),
                &dir.join(&name),
                ImageFormat::Pnm,
            );
            csv += &format!("{name};12;12;2;2;10;10;{class}\n");
        }
        fs::write(dir.join(format!("GT-{class:05}.csv")), csv).unwrap();
    }
    out.push(Target {
        name: "gtsrb-csv",
        source: gt.clone(),
        file: gt.join("Final_Training/Images/00000/GT-00000.csv"),
        args: strings(&["--roi-crop", "--size", "8"]),
        image_set: false,
    });
    // A safetensors image set as ingest writes it.
    let st = root.join("set/train.safetensors");
    let mut set = rebalance_core::ImageSet::empty(vec!["a".into(), "b".into()], 1, 4, 4);
    for i in 0..4u8 {
        set.push(&[i; 16], i as i64 % 2);
    }
    set.write(&st).unwrap();
    out.push(Target {
        name: "safetensors",
        source: st.clone(),
        file: st,
        args: vec![],
        image_set: true,
    });
    out
}

/// Run ingest (or the image-set reader) on the mutated input; only panics and memory count.
fn run_once(t: &Target, out: &Path) -> Result<(), String> {
    if t.image_set {
        return rebalance_core::ImageSet::read(&t.file)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
    }
    let mut argv = vec![
        "ingest".to_string(),
        t.source.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
        "--split".into(),
        "0.5,0.25,0.25".into(),
    ];
    argv.extend(t.args.iter().cloned());
    let args = ingest::Args::try_parse_from(&argv).map_err(|e| e.to_string())?;
    ingest::run(&args).map(|_| ()).map_err(|e| format!("{e:#}"))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn no_mutated_input_panics_aborts_or_allocates_without_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = env_or("FUZZ_CASES", 120) as u32;
    let seed = env_or("FUZZ_SEED", 13);
    let mut total = 0u64;
    let mut refused = 0u64;
    for t in targets(tmp.path()) {
        let original = fs::read(&t.file).unwrap();
        // The unmutated input must be accepted, or the mutations test nothing.
        run_once(&t, &tmp.path().join("out")).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        seed_bytes[8] = t.name.len() as u8;
        seed_bytes[9..9 + t.name.len().min(20)]
            .copy_from_slice(&t.name.as_bytes()[..t.name.len().min(20)]);
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(
            config,
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        let (n, errs) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
        let result = runner.run(&prop::collection::vec(mutation(), 1..6), |mutations| {
            let mut bytes = original.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            fs::write(&t.file, &bytes).unwrap();
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let outcome = run_once(&t, &tmp.path().join("out"));
            let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            n.set(n.get() + 1);
            errs.set(errs.get() + outcome.is_err() as u64);
            prop_assert!(
                grew <= PEAK_LIMIT,
                "{}: {grew} bytes live at once (limit {PEAK_LIMIT}); outcome {outcome:?}",
                t.name
            );
            Ok(())
        });
        fs::write(&t.file, &original).unwrap();
        if let Err(e) = result {
            panic!("{}: {e}", t.name);
        }
        let (n, errs) = (n.get(), errs.get());
        eprintln!(
            "{:12} {n:5} executions, {errs:5} refused with an error",
            t.name
        );
        total += n;
        refused += errs;
    }
    eprintln!("{total} executions in all, {refused} refused with an error, no panic, no abort");
    // The mutations must reach the readers' error paths, or they test nothing.
    assert!(refused > total / 10, "{refused} of {total} refused");
}
