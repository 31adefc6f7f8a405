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
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rebalance_testkit::ingest_inputs::{targets, Target};

/// Run ingest (or the image-set reader) on the target's input; only panics and memory count.
fn run_once(t: &Target, out: &Path) -> Result<(), String> {
    rebalance_testkit::ingest_inputs::run_once(t, out, |argv| {
        let args = ingest::Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        ingest::run(&args).map(|_| ()).map_err(|e| format!("{e:#}"))
    })
}

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
