//! What every training job writes at the end: the generator, the loss chart and the manifest,
//! then the work folder swapped into place; and the sample grids it writes on the way.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use rebalance_core::contract::gan::{GanInfo, GanMetrics, LossRow};
use rebalance_core::contract::layout::file;
use rebalance_core::{chart, grid, swap_into, write_atomic, Manifest};
use rebalance_nn::models::GanConfig;
use rebalance_nn::train::run_key::RunKey;
use rebalance_nn::{device_name, io};
use tch::nn::VarStore;

use crate::plan::Plan;

/// The end of a run of any model: `generator` holds the weights `generate` loads; `steps` is (the
/// last step, the step this run started at).
pub(crate) fn finish_with(
    plan: &Plan,
    generator: &VarStore,
    rows: &[LossRow],
    steps: (u64, u64),
    train_time: f64,
    started: Instant,
) -> Result<()> {
    let (args, cfg, work) = (&plan.args, &plan.cfg, &plan.work);
    // The model: the generator used for sampling (the EMA when enabled) plus its config.
    let meta = HashMap::from([("config".to_string(), serde_json::to_string(cfg)?)]);
    write_atomic(
        &work.join(file::GENERATOR),
        &io::to_safetensors(&io::named_vars(generator, ""), meta)?,
    )?;
    write_atomic(&work.join("losses.svg"), losses_svg(rows)?.as_bytes())?;
    let (step, steps_at_start) = steps;
    let trained_steps = step - steps_at_start;
    RunKey::release(work)?;
    let mut m = Manifest::new(
        "gan-train",
        serde_json::to_value(args)?,
        &device_name(plan.device),
        args.common.seed,
    )
    .with_input_files([&plan.data])?;
    m.set_extra(&GanInfo {
        config: cfg.clone(),
        trained_classes: cfg
            .trained_classes
            .iter()
            .map(|&c| cfg.classes[c as usize].clone())
            .collect(),
    })?;
    let images = trained_steps as f64 * (args.batch * plan.n_d as i64) as f64;
    m.set_metrics(&GanMetrics {
        steps: step,
        steps_this_run: trained_steps,
        train_s: (train_time * 1000.0).round() / 1000.0,
        images_per_s: (train_time > 0.0).then(|| (images / train_time * 10.0).round() / 10.0),
        last: rows.last().cloned(),
    })?;
    m.write_into(work, started)?;
    swap_into(work, &plan.out)?;
    println!(
        "gan-train: {} trained {} steps ({} this run) in {:.1} s; samples in {}/samples, generator {}/generator.safetensors",
        cfg.model,
        step,
        trained_steps,
        started.elapsed().as_secs_f64(),
        plan.out.display(),
        plan.out.display()
    );
    Ok(())
}

pub(crate) fn losses_svg(rows: &[LossRow]) -> Result<String> {
    let series = |f: fn(&LossRow) -> f64| {
        rows.iter()
            .map(|r| (r.step as f64, f(r)))
            .collect::<Vec<_>>()
    };
    chart::lines_svg(
        "GAN losses",
        &[
            ("D loss real", series(|r| r.d_loss_real)),
            ("D loss fake", series(|r| r.d_loss_fake)),
            ("G loss", series(|r| r.g_loss)),
        ],
        "step",
        "loss",
    )
}

/// Write a sample grid as PNG to `path`; the PNG's bytes.
pub(crate) fn write_grid(path: &Path, rows: &[Vec<u8>], cfg: &GanConfig) -> Result<Vec<u8>> {
    let per = (cfg.channels * cfg.height * cfg.width) as usize;
    let cells: Vec<Vec<&[u8]>> = rows.iter().map(|r| r.chunks(per).collect()).collect();
    let png = grid::grid_png(
        &cells,
        cfg.channels as usize,
        cfg.height as usize,
        cfg.width as usize,
        grid::default_scale(cfg.height as usize),
    )?;
    write_atomic(path, &png)?;
    Ok(png)
}
