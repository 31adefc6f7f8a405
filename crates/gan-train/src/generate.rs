//! `gan-train generate`: N images per chosen class from a trained generator, as an image set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use rebalance_core::cli::StageCommand;
use rebalance_core::contract::class_index;
use rebalance_core::contract::dataset::rare_classes_of;
use rebalance_core::contract::gan::{GenerateInfo, GenerateMetrics, PerClassGans};
use rebalance_core::contract::layout::{file, Layout, DATASET, GAN, GENERATED};
use rebalance_core::contract::read_json;
use rebalance_core::{CommonArgs, ImageSet, Manifest, StagedDir};
use rebalance_nn::{device_name, io, resolve_device};
use serde::Serialize;
use tch::{nn::VarStore, Kind, Tensor};

use crate::output::write_grid;
use crate::plan::checkpoint_config;
use rebalance_nn::models::cyclegan::ResnetGenerator;
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
    /// Classes to generate (names) [default: the classes the GAN was trained on; for dagan, the
    /// rare classes of --data].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// dagan only: the real images it varies [default: <artifacts>/dataset/train.safetensors].
    #[arg(long)]
    pub data: Option<PathBuf>,
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

/// The network that makes the images: a GAN's generator, or a cyclegan's A→B translator.
enum Net {
    Gan(Generator),
    Translate(Box<ResnetGenerator>),
}

/// A trained generator and the classes to draw, checked before sampling.
struct Plan {
    device: tch::Device,
    weights: PathBuf,
    cfg: GanConfig,
    g: Net,
    _vs: VarStore,
    wanted: Vec<i64>,
    out: PathBuf,
    /// dagan: the set whose images it varies, and its path.
    sources: Option<(ImageSet, PathBuf)>,
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
        let (weights, checkpoint) = if from.is_dir() {
            (from.join(file::GENERATOR), false)
        } else {
            (from.clone(), true)
        };
        if !weights.exists() {
            bail!("{}: no trained generator; run `cargo run --release -p gan-train` first, or pass --from", weights.display());
        }
        let (tensors, meta) = io::read_safetensors(&weights, device)?;
        let cfg: GanConfig = checkpoint_config(&meta, &weights)?;
        let vs = VarStore::new(device);
        let (g, prefix) = if cfg.model.translates() {
            // A checkpoint keeps both generators under `g.`; only A→B is used.
            let g =
                ResnetGenerator::new(vs.root() / "g_ab", cfg.channels, cfg.height, cfg.g_width)?;
            (
                Net::Translate(Box::new(g)),
                if checkpoint { "g." } else { "" },
            )
        } else {
            (
                Net::Gan(Generator::new(vs.root(), &cfg)?),
                if checkpoint { "ema." } else { "" },
            )
        };
        io::load_vars(&vs, prefix, &tensors, &weights)?;
        let sources = if cfg.model.image_conditioned() || cfg.model.translates() {
            let data = args
                .data
                .clone()
                .unwrap_or_else(|| layout.file(DATASET, file::TRAIN));
            Some((read_sources(&data, &cfg)?, data))
        } else {
            None
        };
        let wanted = match &sources {
            Some(_) if cfg.model.translates() => translated_class(args, &cfg)?,
            Some((set, data)) => dagan_classes(args, &cfg, set, data)?,
            None => wanted_classes(args, &cfg)?,
        };
        Ok(Self {
            device,
            weights,
            cfg,
            g,
            _vs: vs,
            wanted,
            out,
            sources,
        })
    }
}

/// The real images dagan varies and cyclegan translates: the set at `data`, which must have
/// the generator's classes and image shape.
fn read_sources(data: &Path, cfg: &GanConfig) -> Result<ImageSet> {
    if !data.exists() {
        bail!(
            "{}: {} works on real images, and this set is missing; pass --data <image set>",
            data.display(),
            cfg.model
        );
    }
    let set = ImageSet::read(data)?;
    if set.classes != cfg.classes
        || (set.channels as i64, set.height as i64, set.width as i64)
            != (cfg.channels, cfg.height, cfg.width)
    {
        bail!(
            "{}: its classes or image shape differ from the {}'s ({})",
            data.display(),
            cfg.model,
            cfg.describe()
        );
    }
    Ok(set)
}

/// cyclegan makes images of one class, B (its `--to`), from the training images of A.
fn translated_class(args: &GenerateArgs, cfg: &GanConfig) -> Result<Vec<i64>> {
    let (from, to) = (cfg.trained_classes[0], cfg.trained_classes[1]);
    let b = &cfg.classes[to as usize];
    if args.classes.iter().any(|c| c != b) {
        bail!(
            "--classes {}: this cyclegan translates class {} into class {b} only",
            args.classes.join(","),
            cfg.classes[from as usize]
        );
    }
    Ok(vec![to])
}

/// The classes dagan varies: `--classes`, else the rare classes of the source set, else those
/// it was not trained on; each needs at least one real image.
fn dagan_classes(
    args: &GenerateArgs,
    cfg: &GanConfig,
    set: &ImageSet,
    data: &Path,
) -> Result<Vec<i64>> {
    let counts = set.counts();
    let wanted: Vec<i64> = if args.classes.is_empty() {
        let dir = data.parent().unwrap_or(Path::new("."));
        let rare = rare_classes_of(dir, &set.classes, &counts);
        let mut v: Vec<i64> = rare
            .iter()
            .map(|c| class_index(&set.classes, c).map(|i| i as i64))
            .collect::<Result<_>>()?;
        if v.is_empty() {
            v = (0..counts.len() as i64)
                .filter(|c| !cfg.trained_classes.contains(c))
                .collect();
        }
        v
    } else {
        args.classes
            .iter()
            .map(|c| class_index(&cfg.classes, c).map(|i| i as i64))
            .collect::<Result<_>>()?
    };
    if wanted.is_empty() {
        bail!("dagan: no class to vary; name them with --classes");
    }
    for &c in &wanted {
        if counts[c as usize] == 0 {
            bail!(
                "{}: class `{}` has no image for dagan to vary",
                data.display(),
                cfg.classes[c as usize]
            );
        }
    }
    Ok(wanted)
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

impl StageCommand for GenerateArgs {
    const NAME: &'static str = "generate";
    const ABOUT: &'static str =
        "Generate images per class from a trained generator into an image set";
    fn label(&self) -> (&'static str, bool) {
        ("gan-train generate", self.common.quiet)
    }
    fn run(&self) -> Result<()> {
        run(self)
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let from = args
        .from
        .clone()
        .unwrap_or_else(|| Layout::new(&args.common.artifacts).dir(GAN));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Layout::new(&args.common.artifacts).dir(GENERATED));
    let _lock = rebalance_core::stage_lock::StageLock::share("gan-train generate", &out)?;
    if from.join(file::PER_CLASS).is_file() {
        return run_per_class(args, &from, started);
    }
    let plan = Plan::resolve(args)?;
    let (set, grid_rows, counts) = sample(args, &plan);
    let mut inputs = vec![plan.weights.clone()];
    if let Some((_, data)) = &plan.sources {
        inputs.push(data.clone());
    }
    let out = Outputs {
        set: &set,
        grid_rows: &grid_rows,
        counts,
        cfg: &plan.cfg,
        device: plan.device,
        inputs: &inputs,
    };
    out.write(args, &plan.out, started)?;
    if plan.cfg.model.translates() {
        let (a, b) = (plan.cfg.trained_classes[0], plan.cfg.trained_classes[1]);
        println!(
            "generate: {} images of class {} translated from class {} in {}",
            set.len(),
            plan.cfg.classes[b as usize],
            plan.cfg.classes[a as usize],
            plan.out.display()
        );
    } else {
        println!(
            "generate: {} images ({} per class for {} classes) in {}",
            set.len(),
            args.per_class,
            plan.wanted.len(),
            plan.out.display()
        );
    }
    Ok(())
}

/// A `--per-class-gans` output: each wanted class from its own generator, in one image set.
fn run_per_class(args: &GenerateArgs, from: &Path, started: Instant) -> Result<()> {
    let gans: PerClassGans = read_json(&from.join(file::PER_CLASS))?;
    let wanted = if args.classes.is_empty() {
        gans.classes.clone()
    } else {
        for c in &args.classes {
            if !gans.classes.contains(c) {
                bail!(
                    "class `{c}` has no GAN of its own in {} (it has: {})",
                    from.display(),
                    gans.classes.join(", ")
                );
            }
        }
        args.classes.clone()
    };
    let mut merged: Option<(ImageSet, GanConfig, tch::Device, PathBuf)> = None;
    let (mut grid_rows, mut counts, mut inputs) = (Vec::new(), BTreeMap::new(), Vec::new());
    for c in &wanted {
        let sub = GenerateArgs {
            from: Some(from.join(crate::per_class::CLASSES).join(c)),
            classes: Vec::new(),
            ..args.clone()
        };
        let plan = Plan::resolve(&sub)?;
        let (set, rows, n) = sample(&sub, &plan);
        grid_rows.extend(rows);
        counts.extend(n);
        inputs.push(plan.weights.clone());
        match &mut merged {
            None => merged = Some((set, plan.cfg, plan.device, plan.out)),
            Some((all, cfg, ..)) => {
                if set.classes != all.classes || set.image_len() != all.image_len() {
                    bail!(
                        "{}: its classes or image shape differ from the other classes' GANs ({})",
                        plan.weights.display(),
                        cfg.describe()
                    );
                }
                for i in 0..set.len() {
                    all.push(set.image(i), set.labels[i]);
                }
            }
        }
    }
    let (set, cfg, device, out_dir) =
        merged.ok_or_else(|| anyhow!("{}: no classes", from.display()))?;
    let out = Outputs {
        set: &set,
        grid_rows: &grid_rows,
        counts,
        cfg: &cfg,
        device,
        inputs: &inputs,
    };
    out.write(args, &out_dir, started)?;
    println!(
        "generate: {} images ({} per class for {} classes, each from its own dcgan) in {}",
        set.len(),
        args.per_class,
        wanted.len(),
        out_dir.display()
    );
    Ok(())
}

/// What `generate` writes: the image set, the grid, the manifest.
struct Outputs<'a> {
    set: &'a ImageSet,
    grid_rows: &'a [Vec<u8>],
    counts: BTreeMap<String, usize>,
    cfg: &'a GanConfig,
    device: tch::Device,
    /// The generators' weights and, for dagan and cyclegan, the real images.
    inputs: &'a [PathBuf],
}

impl Outputs<'_> {
    fn write(self, args: &GenerateArgs, out: &Path, started: Instant) -> Result<()> {
        let staged = StagedDir::new(out)?;
        self.set.write(&staged.path().join(file::GENERATED))?;
        write_grid(&staged.path().join("grid.png"), self.grid_rows, self.cfg)?;
        if args.png {
            write_pngs(self.set, staged.path())?;
        }
        let mut m = Manifest::new(
            "generate",
            serde_json::to_value(args)?,
            &device_name(self.device),
            args.common.seed,
        )
        .with_input_files(self.inputs)?;
        m.set_extra(&GenerateInfo {
            counts: self.counts,
            model: self.cfg.model,
        })?;
        m.set_metrics(&GenerateMetrics {
            n_images: self.set.len(),
        })?;
        m.commit(staged, started).map(drop)
    }
}

/// `--per-class` images of each wanted class (fewer for a cyclegan whose source class has
/// fewer images), the first 10 of each for the grid, and the count per class.
fn sample(args: &GenerateArgs, plan: &Plan) -> (ImageSet, Vec<Vec<u8>>, BTreeMap<String, usize>) {
    let cfg = &plan.cfg;
    let mut counts = BTreeMap::new();
    rebalance_nn::seed_everything(args.common.seed);
    let mut set = ImageSet::empty(
        cfg.classes.clone(),
        cfg.channels as usize,
        cfg.height as usize,
        cfg.width as usize,
    );
    let mut grid_rows = Vec::new();
    // dagan: the source set on the device once, in [-1, 1].
    let sources = plan.sources.as_ref().map(|(s, _)| {
        let (imgs, _) = rebalance_nn::imageset_tensors(s, plan.device);
        (s, rebalance_nn::to_unit_range(&imgs))
    });
    for &c in &plan.wanted {
        let mut done = 0;
        let mut first = Vec::new();
        // dagan: the class's real images, each varied in turn; cyclegan: class A's, each
        // translated once (a translation is deterministic, so at most one per image).
        let source_class = if cfg.model.translates() {
            cfg.trained_classes[0]
        } else {
            c
        };
        let src = sources
            .as_ref()
            .map(|(s, all)| class_images(s, all, source_class, plan.device));
        let want = match &src {
            Some(x) if cfg.model.translates() => {
                let have = x.size()[0];
                if have < args.per_class {
                    tracing::info!(
                        "cyclegan: class {} has {have} training images, so {have} translations (not --per-class {})",
                        cfg.classes[source_class as usize],
                        args.per_class
                    );
                }
                args.per_class.min(have)
            }
            _ => args.per_class,
        };
        counts.insert(cfg.classes[c as usize].clone(), want as usize);
        while done < want {
            let n = args.batch.min(want - done);
            let z = Tensor::randn([n, cfg.z_dim], (Kind::Float, plan.device));
            let imgs = tch::no_grad(|| match (&plan.g, &src) {
                (Net::Translate(g), Some(x)) => g.forward(&x.narrow(0, done, n)),
                (Net::Gan(g), Some(x)) => {
                    let m = x.size()[0];
                    let ix = Tensor::arange_start(done, done + n, (Kind::Int64, plan.device))
                        .remainder(m);
                    g.forward_image(&x.index_select(0, &ix), &z, false)
                }
                (Net::Gan(g), None) => {
                    let y = Tensor::full([n], c, (Kind::Int64, plan.device));
                    g.forward_t(&z, &y, false)
                }
                (Net::Translate(_), None) => unreachable!("a cyclegan plan always has sources"),
            });
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
    (set, grid_rows, counts)
}

/// The rows of `all` (the images of `set` as a tensor) whose label is `c`.
fn class_images(set: &ImageSet, all: &Tensor, c: i64, device: tch::Device) -> Tensor {
    let ix: Vec<i64> = (0..set.len() as i64)
        .filter(|&i| set.labels[i as usize] == c)
        .collect();
    all.index_select(0, &Tensor::from_slice(&ix).to_device(device))
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
