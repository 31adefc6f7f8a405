//! PNG grids of images: one row per class (samples, GAN progress, accepted/rejected).

use anyhow::{Context, Result};
use image::{ImageBuffer, Rgb};

/// Lay out `rows` of channel-first u8 images (each `c`×`h`×`w`, c = 1 or 3) as one PNG.
/// Empty cells stay background-coloured, so short rows are visible as such.
/// Small images are scaled up by `scale` (nearest neighbour) so they can be seen.
pub fn grid_png(
    rows: &[Vec<&[u8]>],
    c: usize,
    h: usize,
    w: usize,
    scale: usize,
) -> Result<Vec<u8>> {
    anyhow::ensure!(
        c == 1 || c == 3,
        "grid images must have 1 or 3 channels, got {c}"
    );
    let scale = scale.max(1);
    let pad = 2;
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let n_rows = rows.len().max(1);
    let cw = w * scale + pad;
    let ch = h * scale + pad;
    let width = (cols * cw + pad) as u32;
    let height = (n_rows * ch + pad) as u32;
    let mut canvas = ImageBuffer::from_pixel(width, height, Rgb([40u8, 40, 48]));
    let plane = h * w;
    for (r, row) in rows.iter().enumerate() {
        for (k, img) in row.iter().enumerate() {
            anyhow::ensure!(
                img.len() == c * plane,
                "grid image has {} bytes, expected {}",
                img.len(),
                c * plane
            );
            for y in 0..h * scale {
                for x in 0..w * scale {
                    let i = (y / scale) * w + x / scale;
                    let px = if c == 1 {
                        [img[i]; 3]
                    } else {
                        [img[i], img[plane + i], img[2 * plane + i]]
                    };
                    canvas.put_pixel(
                        (pad + k * cw + x) as u32,
                        (pad + r * ch + y) as u32,
                        Rgb(px),
                    );
                }
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    canvas
        .write_to(&mut out, image::ImageFormat::Png)
        .context("encoding grid PNG")?;
    Ok(out.into_inner())
}

/// A scale that makes images of side `side` about 56 px in a grid.
pub fn default_scale(side: usize) -> usize {
    (56 / side.max(1)).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_expected_size_and_pixels() {
        let a = vec![255u8; 4];
        let b = vec![0u8; 4];
        let png = grid_png(&[vec![&a, &b], vec![&b]], 1, 2, 2, 2).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        // 2 columns of 4 px + 2 pad each + 2 outer pad.
        assert_eq!(img.dimensions(), (2 * 6 + 2, 2 * 6 + 2));
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(8, 2).0, [0, 0, 0]);
        // Empty cell in row 2, column 2 keeps the background.
        assert_eq!(img.get_pixel(8, 8).0, [40, 40, 48]);
    }
}
