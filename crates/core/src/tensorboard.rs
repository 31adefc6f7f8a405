//! TensorBoard event files: scalars and images, readable by `tensorboard --logdir`.
//!
//! An event file is a sequence of records, each `u64` length (little-endian), the masked
//! CRC32C of those 8 bytes, the data, and the masked CRC32C of the data. Each record's data is
//! an `Event` protobuf (tensorflow/core/util/event.proto); only the fields written here are
//! declared, with their field numbers from the upstream `.proto` files. The maintained Rust
//! TensorBoard writers known to the project are unmaintained (tensorboard-rs: 2022, protobuf 2,
//! image 0.23), so the format is written here on `prost` and `crc32c`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prost::Message;

use crate::contract::classify::CurveRow;
use crate::contract::gan::{CycleRow, LossRow};

#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

#[derive(Clone, PartialEq, Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(oneof = "Kind", tags = "2, 4")]
    value: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
}

#[derive(Clone, PartialEq, Message)]
struct Image {
    #[prost(int32, tag = "1")]
    height: i32,
    #[prost(int32, tag = "2")]
    width: i32,
    /// 1 grey, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    encoded_image_string: Vec<u8>,
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// A metrics row as TensorBoard plots it: `(tag, value)` scalars at the row's step. The loops
/// log their rows with [`SummaryWriter::row`]; each row type names its tags once, here.
pub trait Scalars {
    /// The x axis: the row's step (or epoch).
    fn step(&self) -> i64;
    /// The plotted values, in the order they are written.
    fn scalars(&self) -> Vec<(&'static str, f64)>;
}

/// A GAN's losses: D's on real and on fake images, and G's.
fn gan_losses(r: &LossRow) -> [(&'static str, f64); 3] {
    [
        ("loss/d_real", r.d_loss_real),
        ("loss/d_fake", r.d_loss_fake),
        ("loss/g", r.g_loss),
    ]
}

/// How often D called real images real and fake ones fake.
fn d_accuracy(r: &LossRow) -> [(&'static str, f64); 2] {
    [
        ("d_accuracy/real", r.d_acc_real),
        ("d_accuracy/fake", r.d_acc_fake),
    ]
}

/// gan-train's losses.csv row.
impl Scalars for LossRow {
    fn step(&self) -> i64 {
        self.step as i64
    }
    fn scalars(&self) -> Vec<(&'static str, f64)> {
        let mut v = gan_losses(self).to_vec();
        v.push(("loss/gradient_penalty", self.gp));
        v.extend(d_accuracy(self));
        v.push(("images_per_s", self.images_per_s));
        v
    }
}

/// A cyclegan's log step: its losses.csv and cycle.csv rows (without the throughput).
impl Scalars for (&LossRow, &CycleRow) {
    fn step(&self) -> i64 {
        self.0.step as i64
    }
    fn scalars(&self) -> Vec<(&'static str, f64)> {
        let (r, c) = self;
        let mut v = gan_losses(r).to_vec();
        v.extend([
            ("loss/cycle_a", c.cycle_a),
            ("loss/cycle_b", c.cycle_b),
            ("loss/identity_a", c.identity_a),
            ("loss/identity_b", c.identity_b),
        ]);
        v.extend(d_accuracy(r));
        v
    }
}

/// classify's curves.csv row, at its epoch.
impl Scalars for CurveRow {
    fn step(&self) -> i64 {
        self.epoch as i64
    }
    fn scalars(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("train/loss", self.train_loss),
            ("train/accuracy", self.train_accuracy),
            ("val/loss", self.val_loss),
            ("val/accuracy", self.val_accuracy),
            ("val/macro_f1", self.val_macro_f1),
        ]
    }
}

/// Writes one event file in a folder (`<dir>/events.out.tfevents.<secs>.<host>.<pid>`). Each
/// write is flushed, so a killed run keeps what it logged; a resumed run adds a new file beside
/// the old one, which TensorBoard reads as one run.
pub struct SummaryWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl SummaryWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now.as_secs(),
            std::process::id()
        ));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = Self {
            out: BufWriter::new(file),
            path,
        };
        w.event(0, What::FileVersion("brain.Event:2".into()))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn event(&mut self, step: i64, what: What) -> Result<()> {
        let wall_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let data = Event {
            wall_time,
            step,
            what: Some(what),
        }
        .encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        (|| -> std::io::Result<()> {
            self.out.write_all(&len)?;
            self.out.write_all(&masked_crc(&len).to_le_bytes())?;
            self.out.write_all(&data)?;
            self.out.write_all(&masked_crc(&data).to_le_bytes())?;
            self.out.flush()
        })()
        .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Scalars at one step, as `(tag, value)`.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| Value {
                tag: tag.to_string(),
                value: Some(Kind::SimpleValue(*v as f32)),
            })
            .collect();
        self.event(step, What::Summary(Summary { value }))
    }

    /// A metrics row's scalars at its step.
    pub fn row(&mut self, row: &impl Scalars) -> Result<()> {
        self.scalars(row.step(), &row.scalars())
    }

    /// A PNG image at one step; its size and channels are read from the PNG.
    pub fn png(&mut self, step: i64, tag: &str, png: &[u8]) -> Result<()> {
        let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .with_context(|| format!("{tag}: not a PNG"))?;
        let value = vec![Value {
            tag: tag.to_string(),
            value: Some(Kind::Image(Image {
                height: img.height() as i32,
                width: img.width() as i32,
                colorspace: i32::from(img.color().channel_count()),
                encoded_image_string: png.to_vec(),
            })),
        }];
        self.event(step, What::Summary(Summary { value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_with_masked_crc32c() {
        // The masked CRC of the empty string, as TensorFlow's crc32c::Mask computes it.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SummaryWriter::create(tmp.path()).unwrap();
        w.scalars(3, &[("loss", 0.5)]).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        // Walk the records: every length and CRC checks out, and there are two events.
        let (mut at, mut n) = (0, 0);
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dcrc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc(data));
            let e = Event::decode(data).unwrap();
            if n == 1 {
                assert_eq!(e.step, 3);
                let Some(What::Summary(s)) = e.what else {
                    panic!("{e:?}")
                };
                assert_eq!(s.value[0].tag, "loss");
                assert_eq!(s.value[0].value, Some(Kind::SimpleValue(0.5)));
            }
            at += 16 + len;
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn a_cyclegan_row_plots_its_losses_then_its_cycles_then_d_accuracy() {
        let loss = LossRow {
            step: 7,
            d_loss_real: 1.0,
            d_loss_fake: 2.0,
            g_loss: 3.0,
            d_acc_real: 0.5,
            d_acc_fake: 0.25,
            gp: 0.0,
            images_per_s: 9.0,
        };
        let cycle = CycleRow {
            step: 7,
            cycle_a: 4.0,
            ..CycleRow::default()
        };
        let row = (&loss, &cycle);
        let tags: Vec<&str> = row.scalars().iter().map(|(t, _)| *t).collect();
        assert_eq!(row.step(), 7);
        assert_eq!(
            tags,
            [
                "loss/d_real",
                "loss/d_fake",
                "loss/g",
                "loss/cycle_a",
                "loss/cycle_b",
                "loss/identity_a",
                "loss/identity_b",
                "d_accuracy/real",
                "d_accuracy/fake"
            ]
        );
        assert_eq!(loss.scalars().len(), 7);
        assert_eq!(loss.scalars()[3], ("loss/gradient_penalty", 0.0));
    }
}
