//! `gan-train generate`: N images per chosen class from a trained generator, as an image set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use rebalance_core::contract::class_index;
use rebalance_core::contract::gan::{GenerateInfo, GenerateMetrics};
use rebalance_core::contract::layout::{file, Layout, GAN, GENERATED};
use rebalance_core::{CommonArgs, ImageSet, Manifest, StagedDir};
use rebalance_nn::{device_name, io, resolve_device};
use serde::Serialize;
use tch::{nn::VarStore, Kind, Tensor};

use crate::train::{checkpoint_config, write_grid};
use rebalance_nn::models::{GanConfig, Generator};

#[derive(Debug, Clone, Args, Serialize)]
pub struct GenerateArgs {
    /// A gan-train output folder (its generator.safetensors) or a checkpoint file
    /// [default: <artifacts>/gan].
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Images per class.
    #[arg(long, default_value_t = 100)]
    pub per_class: i64,
    /// Classes to generate (names) [default: the classes the GAN was trained on].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Output folder [default: <artifacts>/generated].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write one PNG file per image (png/<class>/<i>.png).
    #[arg(long)]
    pub png: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch: i64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A trained generator and the classes to draw, checked before sampling.
struct Plan {
    device: tch::Device,
    weights: PathBuf,
    cfg: GanConfig,
    g: Generator,
    _vs: VarStore,
    wanted: Vec<i64>,
    out: PathBuf,
}

impl Plan {
    fn resolve(args: &GenerateArgs) -> Result<Self> {
        if args.per_class < 1 {
            bail!("--per-class must be at least 1");
        }
        if args.batch < 1 {
            bail!("--batch must be at least 1");
        }
        let device = resolve_device(args.common.device)?;
        let layout = Layout::new(&args.common.artifacts);
        let from = args.from.clone().unwrap_or_else(|| layout.dir(GAN));
        let out = args.out.clone().unwrap_or_else(|| layout.dir(GENERATED));
        let (weights, prefix) = if from.is_dir() {
            (from.join(file::GENERATOR), "")
        } else {
            (from.clone(), "ema.")
        };
        if !weights.exists() {
            bail!("{}: no trained generator; run `cargo run --release -p gan-train` first, or pass --from", weights.display());
        }
        let (tensors, meta) = io::read_safetensors(&weights, device)?;
        let cfg: GanConfig = checkpoint_config(&meta, &weights)?;
        let vs = VarStore::new(device);
        let g = Generator::new(vs.root(), &cfg)?;
        io::load_vars(&vs, prefix, &tensors, &weights)?;
        let wanted = wanted_classes(args, &cfg)?;
        Ok(Self {
            device,
            weights,
            cfg,
            g,
            _vs: vs,
            wanted,
            out,
        })
    }
}

/// The classes to draw: `--classes`, or those the GAN was trained on; each must be one of them.
fn wanted_classes(args: &GenerateArgs, cfg: &GanConfig) -> Result<Vec<i64>> {
    let wanted: Vec<i64> = if args.classes.is_empty() {
        cfg.trained_classes.clone()
    } else {
        args.classes
            .iter()
            .map(|c| class_index(&cfg.classes, c).map(|i| i as i64))
            .collect::<Result<_>>()?
    };
    for c in &wanted {
        if !cfg.trained_classes.contains(c) {
            bail!(
                "class `{}` was not among the classes this GAN was trained on",
                cfg.classes[*c as usize]
            );
        }
    }
    if !cfg.model.conditional() && cfg.trained_classes.len() > 1 {
        bail!(
            "this dcgan was trained on {} classes pooled, so its images have no class; train one dcgan per class \
             (--class) or use --model cgan",
            cfg.trained_classes.len()
        );
    }
    Ok(wanted)
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let plan = Plan::resolve(args)?;
    let (set, grid_rows) = sample(args, &plan);
    let staged = StagedDir::new(&plan.out)?;
    set.write(&staged.path().join(file::GENERATED))?;
    write_grid(&staged.path().join("grid.png"), &grid_rows, &plan.cfg)?;
    if args.png {
        write_pngs(&set, staged.path())?;
    }
    let mut m = Manifest::new(
        "generate",
        serde_json::to_value(args)?,
        &device_name(plan.device),
        args.common.seed,
    );
    m.inputs.push(rebalance_core::FileRecord::of_file(
        &plan.weights,
        &plan.weights.display().to_string(),
    )?);
    m.record_outputs(staged.path())?;
    m.set_extra(&GenerateInfo {
        counts: plan
            .wanted
            .iter()
            .map(|&c| {
                (
                    plan.cfg.classes[c as usize].clone(),
                    args.per_class as usize,
                )
            })
            .collect(),
        model: plan.cfg.model,
    })?;
    m.set_metrics(&GenerateMetrics {
        n_images: set.len(),
    })?;
    m.finish(staged.path(), started)?;
    staged.commit()?;
    println!(
        "generate: {} images ({} per class for {} classes) in {}",
        set.len(),
        args.per_class,
        plan.wanted.len(),
        plan.out.display()
    );
    Ok(())
}

/// `--per-class` images of each wanted class, and the first 10 of each for the grid.
fn sample(args: &GenerateArgs, plan: &Plan) -> (ImageSet, Vec<Vec<u8>>) {
    let cfg = &plan.cfg;
    rebalance_nn::seed_everything(args.common.seed);
    let mut set = ImageSet::empty(
        cfg.classes.clone(),
        cfg.channels as usize,
        cfg.height as usize,
        cfg.width as usize,
    );
    let mut grid_rows = Vec::new();
    for &c in &plan.wanted {
        let mut done = 0;
        let mut first = Vec::new();
        while done < args.per_class {
            let n = args.batch.min(args.per_class - done);
            let z = Tensor::randn([n, cfg.z_dim], (Kind::Float, plan.device));
            let y = Tensor::full([n], c, (Kind::Int64, plan.device));
            let imgs = tch::no_grad(|| plan.g.forward_t(&z, &y, false));
            let pix = rebalance_nn::to_u8_pixels(&imgs);
            for img in pix.chunks(set.image_len()) {
                set.push(img, c);
            }
            if first.is_empty() {
                first = pix[..set.image_len() * (n.min(10) as usize)].to_vec();
            }
            done += n;
        }
        grid_rows.push(first);
    }
    (set, grid_rows)
}

/// `--png`: one file per image, `png/<class>/<i>.png`.
fn write_pngs(set: &ImageSet, dir: &Path) -> Result<()> {
    let (h, w) = (set.height as u32, set.width as u32);
    for i in 0..set.len() {
        let class = &set.classes[set.labels[i] as usize];
        let path = dir.join(format!("png/{class}/{i:06}.png"));
        let px = set.image(i);
        let img = if set.channels == 1 {
            image::DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w, h, px.to_vec()).expect("size"),
            )
        } else {
            let plane = (h * w) as usize;
            let hwc: Vec<u8> = (0..plane)
                .flat_map(|p| [px[p], px[plane + p], px[2 * plane + p]])
                .collect();
            image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, hwc).expect("size"))
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png)?;
        rebalance_core::write_atomic(&path, buf.get_ref())?;
    }
    Ok(())
}
