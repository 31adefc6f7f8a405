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
}
