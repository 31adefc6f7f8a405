//! Tiny synthetic image sets for the stages' tests: class `c` of `k` is a bright horizontal bar
//! at its own row on a dark background, with a little deterministic noise.

use std::path::Path;

use anyhow::Result;

use crate::ImageSet;

/// One bar image of class `c` (variant `i` shifts the noise and the bar's thickness).
pub fn bar_image(c: usize, i: usize, side: usize, k: usize) -> Vec<u8> {
    let mut px = vec![0u8; side * side];
    let row = (side / (k + 1)) * (c + 1);
    for x in 0..side {
        px[row * side + x] = 255;
        if i % 2 == 1 && row + 1 < side {
            px[(row + 1) * side + x] = 200;
        }
        let noise = (i * 131 + x * 17 + c * 7) % (side * side);
        px[noise] = px[noise].max(50);
    }
    px
}

/// A set with `counts[c]` bar images of class c; `offset` varies the images between splits.
pub fn bar_set(counts: &[usize], side: usize, offset: usize) -> ImageSet {
    let k = counts.len();
    let classes = (0..k).map(|c| format!("class{c}")).collect();
    let mut set = ImageSet::empty(classes, 1, side, side);
    for (c, &n) in counts.iter().enumerate() {
        for i in 0..n {
            set.push(&bar_image(c, i + offset, side, k), c as i64);
        }
    }
    set
}

/// Write `train/val/test.safetensors` into `dir` (what ingest writes, without the reports).
pub fn bar_splits(dir: &Path, train: &[usize], val: usize, test: usize, side: usize) -> Result<()> {
    let k = train.len();
    bar_set(train, side, 0).write(&dir.join("train.safetensors"))?;
    bar_set(&vec![val; k], side, 1000).write(&dir.join("val.safetensors"))?;
    bar_set(&vec![test; k], side, 2000).write(&dir.join("test.safetensors"))?;
    Ok(())
}
