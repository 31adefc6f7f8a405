//! End-to-end tests of the `ingest` binary on small fixtures: every input format, every kind
//! of bad input, caps and stratification, atomic output, and Python interop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{ImageFormat, Rgb, RgbImage};
use ndarray_npy::WriteNpyExt;
use rebalance_core::ImageSet;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(p: &str) -> PathBuf {
    repo().join("data/fixtures").join(p)
}

fn ingest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("ingest runs")
}

/// Run ingest into `out`, asserting success; returns the manifest.
fn ok(source: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![source.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = ingest(&args);
    assert!(
        o.status.success(),
        "ingest {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    manifest(out)
}

/// Run ingest expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = ingest(args);
    assert!(!o.status.success(), "ingest {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn set(out: &Path, split: &str) -> ImageSet {
    ImageSet::read(&out.join(format!("{split}.safetensors"))).unwrap()
}

fn counts(m: &Value, split: &str) -> Vec<u64> {
    let classes = m["classes"].as_array().unwrap();
    classes
        .iter()
        .map(|c| m["counts"][split][c.as_str().unwrap()].as_u64().unwrap())
        .collect()
}

fn skipped(m: &Value) -> Vec<(String, String)> {
    m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["file"].as_str().unwrap().to_string(),
                p["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn save(img: &RgbImage, path: &Path, fmt: ImageFormat) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, fmt).unwrap();
}

/// A solid image whose red channel encodes `value`.
fn solid(w: u32, h: u32, value: u8) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([value, 10, 200]))
}

#[test]
fn image_folder_with_every_extension_and_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("flowers");
    for i in 0..6u8 {
        save(
            &solid(12, 10, i),
            &root.join(format!("cat/{i}.png")),
            ImageFormat::Png,
        );
        save(
            &solid(12, 10, 100 + i),
            &root.join(format!("dog/{i}.bmp")),
            ImageFormat::Bmp,
        );
    }
    save(
        &solid(12, 10, 50),
        &root.join("dog/x.jpg"),
        ImageFormat::Jpeg,
    );
    save(
        &solid(12, 10, 51),
        &root.join("dog/y.jpeg"),
        ImageFormat::Jpeg,
    );
    save(
        &solid(12, 10, 52),
        &root.join("dog/z.ppm"),
        ImageFormat::Pnm,
    );
    fs::write(root.join("cat/empty.png"), b"").unwrap();
    fs::write(root.join("cat/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    fs::write(
        root.join("cat/notes.txt"),
        b"ignored: not an image extension",
    )
    .unwrap();
    fs::create_dir_all(root.join("zebra")).unwrap();

    let out = tmp.path().join("out");
    let m = ok(&root, &out, &["--split", "0.5,0.25,0.25", "--size", "8x16"]);
    assert_eq!(m["classes"], serde_json::json!(["cat", "dog"]));
    let total: u64 = ["train", "val", "test"]
        .iter()
        .map(|s| counts(&m, s).iter().sum::<u64>())
        .sum();
    assert_eq!(total, 6 + 9, "all decodable images are kept");
    // Stratified: each class is in every split.
    for s in ["train", "val", "test"] {
        assert!(
            counts(&m, s).iter().all(|&n| n > 0),
            "{s}: {:?}",
            counts(&m, s)
        );
    }
    let sk = skipped(&m);
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("cat/empty.png") && r.contains("empty file (0 bytes)")),
        "{sk:?}"
    );
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("cat/broken.png") && r.contains("cannot decode")),
        "{sk:?}"
    );
    assert!(
        sk.iter()
            .any(|(f, r)| f.contains("`zebra`") && r.contains("empty class")),
        "{sk:?}"
    );
    assert_eq!(sk.len(), 3);
    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("skipped: 3") && summary.contains("empty.png: empty file"),
        "{summary}"
    );

    let train = set(&out, "train");
    assert_eq!((train.channels, train.height, train.width), (3, 8, 16));
    // The red plane of a cat image is one of 0..6, of a dog image >= 50.
    for i in 0..train.len() {
        let red = train.image(i)[0];
        assert_eq!(
            train.labels[i] == 0,
            red < 6,
            "image {i}: red {red}, label {}",
            train.labels[i]
        );
    }

    // --strict makes the first problem fatal and names the file.
    let err = fails(&[
        root.to_str().unwrap(),
        "--out",
        tmp.path().join("strict").to_str().unwrap(),
        "--strict",
        "--size",
        "8",
    ]);
    assert!(
        err.contains("--strict") && err.contains("broken.png"),
        "{err}"
    );
    assert!(!tmp.path().join("strict").exists());
}

#[test]
fn mixed_sizes_and_modes_follow_the_most_common_size_and_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("d");
    // Class a: three 8x8 colour images and one 12x9 one; class b: three 8x8 grey ones.
    for i in 0..3u8 {
        save(
            &RgbImage::from_pixel(8, 8, Rgb([200, 10 * i, 0])),
            &root.join(format!("a/{i}.png")),
            ImageFormat::Png,
        );
        let grey = image::GrayImage::from_pixel(8, 8, image::Luma([40 + i]));
        fs::create_dir_all(root.join("b")).unwrap();
        grey.save(root.join(format!("b/{i}.png"))).unwrap();
    }
    save(&solid(12, 9, 1), &root.join("a/wide.png"), ImageFormat::Png);
    let out = tmp.path().join("o");
    let m = ok(&root, &out, &[]);
    assert_eq!(
        m["image_shape"],
        serde_json::json!({"channels": 3, "height": 8, "width": 8})
    );
    let notes = m["notes"].to_string();
    assert!(
        notes.contains(
            "images come in 2 sizes (HxW: 8x8 (6), 9x12 (1)): all were resized to 8x8, the most common"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("4 of 7 images are in colour and the rest grey: all were made RGB"),
        "{notes}"
    );
    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(summary.contains("resized to 8x8"), "{summary}");
    // --size and --channels still decide when given.
    let m = ok(
        &root,
        &tmp.path().join("o2"),
        &["--size", "6x5", "--channels", "1"],
    );
    assert_eq!(
        m["image_shape"],
        serde_json::json!({"channels": 1, "height": 6, "width": 5})
    );
    assert!(
        !m["notes"].to_string().contains("resized to"),
        "{}",
        m["notes"]
    );
}

#[test]
fn labels_csv_with_suffix_and_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("train");
    for i in 0..8u8 {
        save(
            &solid(6, 6, i * 10),
            &imgs.join(format!("img{i}.jpeg")),
            ImageFormat::Jpeg,
        );
    }
    fs::write(imgs.join("zero.jpeg"), b"").unwrap();
    let csv = tmp.path().join("trainLabels.csv");
    let mut rows = String::from("image,level\n");
    for i in 0..8 {
        rows += &format!("img{i},{}\n", i % 2);
    }
    rows += "zero,1\n";
    rows += "missing,0\n";
    rows += "img3\n"; // too few fields
    rows += "img4,7\n"; // not in the class list
    fs::write(&csv, rows).unwrap();
    let names = tmp.path().join("names.txt");
    fs::write(&names, "healthy\nmild\n").unwrap();
    let out = tmp.path().join("out");
    let m = ok(
        &imgs,
        &out,
        &[
            "--csv",
            csv.to_str().unwrap(),
            "--id-col",
            "image",
            "--label-col",
            "level",
            "--suffix",
            ".jpeg",
            "--class-names",
            names.to_str().unwrap(),
            "--split",
            "0.5,0.25,0.25",
        ],
    );
    assert_eq!(m["format"], "csv");
    assert_eq!(m["classes"], serde_json::json!(["healthy", "mild"]));
    let sk = skipped(&m);
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("zero.jpeg") && r.contains("0 bytes")),
        "{sk:?}"
    );
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("missing.jpeg") && r.contains("no such file")),
        "{sk:?}"
    );
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("trainLabels.csv:12") && r.contains("fields")),
        "{sk:?}"
    );
    assert!(
        sk.iter().any(|(f, r)| f.ends_with("img4.jpeg")
            && r.contains("label `7` is not one of the 2 classes")),
        "{sk:?}"
    );
    let total: u64 = ["train", "val", "test"]
        .iter()
        .map(|s| counts(&m, s).iter().sum::<u64>())
        .sum();
    assert_eq!(total, 8);
    // The CSV is recorded as an input with its hash.
    assert!(m["inputs"].as_array().unwrap().iter().any(|i| i["path"]
        .as_str()
        .unwrap()
        .ends_with("trainLabels.csv")
        && i["sha256"].as_str().unwrap().len() == 64));

    // A wrong column name is fatal and lists the columns.
    let err = fails(&[
        imgs.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--label-col",
        "grade",
        "--out",
        tmp.path().join("o2").to_str().unwrap(),
    ]);
    assert!(
        err.contains("no column `grade`") && err.contains("image, level"),
        "{err}"
    );
}

#[test]
fn fer2013_csv_uses_its_own_split() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("fer2013.csv");
    let px = |v: u8| vec![v.to_string(); 16].join(" ");
    let mut s = String::from("emotion,pixels,Usage\n");
    for i in 0..7u8 {
        s += &format!("{i},{},Training\n", px(i));
        s += &format!("{i},{},Training\n", px(i + 100));
        s += &format!("{i},{},PublicTest\n", px(i));
        s += &format!("{i},{},PrivateTest\n", px(i));
    }
    s += "3,1 2 3,Training\n"; // not a square
    s += "9,".to_string().as_str();
    s += &format!("{},Training\n", px(1)); // label 9 is not an emotion
    s += &format!("x,{},Training\n", px(1)); // label not a number
    s += &format!("2,{},Nowhere\n", px(1)); // unknown usage
    fs::write(&csv, s).unwrap();
    let out = tmp.path().join("out");
    let m = ok(&csv, &out, &[]);
    assert_eq!(m["format"], "fer2013");
    assert_eq!(m["classes"][3], "happy");
    assert_eq!(counts(&m, "train"), vec![2; 7]);
    assert_eq!(counts(&m, "val"), vec![1; 7]);
    assert_eq!(counts(&m, "test"), vec![1; 7]);
    let sk = skipped(&m);
    assert_eq!(sk.len(), 4, "{sk:?}");
    assert!(
        sk[0].0.ends_with("fer2013.csv:30") && sk[0].1.contains("3 pixels do not make a square"),
        "{sk:?}"
    );
    assert!(
        sk.iter()
            .any(|(_, r)| r.contains("label 9 is not one of the 7 classes")),
        "{sk:?}"
    );
    assert!(
        sk.iter().any(|(_, r)| r.contains("`x` is not an integer")),
        "{sk:?}"
    );
    assert!(
        sk.iter().any(|(_, r)| r.contains("Usage `Nowhere`")),
        "{sk:?}"
    );
    let train = set(&out, "train");
    assert_eq!((train.channels, train.height, train.width), (1, 4, 4));
}

#[test]
fn idx_gz_and_raw_with_caps_and_stratification() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let src = fixture("mnist-300");
    let m = ok(
        &src,
        &out,
        &[
            "--test-per-class",
            "8",
            "--val-per-class",
            "4",
            "--max-per-class",
            "15",
            "--keep",
            "2=3,5=3",
        ],
    );
    assert_eq!(m["format"], "idx");
    assert_eq!(counts(&m, "test"), vec![8; 10]);
    assert_eq!(counts(&m, "val"), vec![4; 10]);
    assert_eq!(
        counts(&m, "train"),
        vec![15, 15, 3, 15, 15, 3, 15, 15, 15, 15]
    );
    assert_eq!(m["rare_classes"], serde_json::json!(["2", "5"]));
    assert_eq!(m["metrics"]["imbalance_ratio"], 5.0);
    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("│ 2     ┆     3 ┆   4 ┆    8 ┆ rare │"),
        "{summary}"
    );

    // No image is in two splits: compare pixel contents across splits.
    let sets: Vec<ImageSet> = ["train", "val", "test"]
        .iter()
        .map(|s| set(&out, s))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for s in &sets {
        for i in 0..s.len() {
            assert!(seen.insert(s.image(i).to_vec()), "an image appears twice");
        }
    }
    // Same seed, same output; the manifest records the inputs by hash.
    let again = tmp.path().join("again");
    ok(
        &src,
        &again,
        &[
            "--test-per-class",
            "8",
            "--val-per-class",
            "4",
            "--max-per-class",
            "15",
            "--keep",
            "2=3,5=3",
        ],
    );
    for s in ["train", "val", "test"] {
        assert_eq!(set(&out, s), set(&again, s));
    }
    assert_eq!(m["inputs"].as_array().unwrap().len(), 2);

    // Raw (not gzipped) IDX gives the same images.
    let raw = tmp.path().join("raw");
    fs::create_dir_all(&raw).unwrap();
    for name in ["mnist-images-idx3-ubyte", "mnist-labels-idx1-ubyte"] {
        let gz = fs::read(src.join(format!("{name}.gz"))).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut bytes).unwrap();
        fs::write(raw.join(name), bytes).unwrap();
    }
    let raw_out = tmp.path().join("raw_out");
    ok(
        &raw,
        &raw_out,
        &[
            "--test-per-class",
            "8",
            "--val-per-class",
            "4",
            "--max-per-class",
            "15",
            "--keep",
            "2=3,5=3",
        ],
    );
    assert_eq!(set(&out, "train"), set(&raw_out, "train"));

    // Class subset, and an unknown class in --keep / --classes is named.
    let sub = tmp.path().join("sub");
    let m = ok(&src, &sub, &["--classes", "3,7"]);
    assert_eq!(m["classes"], serde_json::json!(["3", "7"]));
    let err = fails(&[
        src.to_str().unwrap(),
        "--keep",
        "11=2",
        "--out",
        sub.to_str().unwrap(),
    ]);
    assert!(err.contains("no class `11`"), "{err}");
    let err = fails(&[
        src.to_str().unwrap(),
        "--classes",
        "cat",
        "--out",
        sub.to_str().unwrap(),
    ]);
    assert!(err.contains("no class `cat`"), "{err}");
}

#[test]
fn idx_header_count_mismatch_and_truncation_are_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    fs::create_dir_all(&dir).unwrap();
    // 3 images of 2x2, but the labels file says 4.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend([7u8; 12]);
    fs::write(dir.join("x-images-idx3-ubyte"), &images).unwrap();
    fs::write(
        dir.join("x-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4],
    )
    .unwrap();
    let err = fails(&[
        dir.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert!(
        err.contains("holds 3 images") && err.contains("holds 4 labels"),
        "{err}"
    );
    // Header says 3 images but the data is short.
    fs::write(dir.join("x-images-idx3-ubyte"), &images[..20]).unwrap();
    let err = fails(&[
        dir.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert!(
        err.contains("x-images-idx3-ubyte")
            && err.contains("3×2×2 = 12 bytes")
            && err.contains("holds 4"),
        "{err}"
    );
    // Not an IDX file at all.
    fs::write(dir.join("x-images-idx3-ubyte"), b"hello world, not idx").unwrap();
    let err = fails(&[
        dir.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert!(err.contains("bad magic"), "{err}");
}

fn gtsrb_fixture(root: &Path) {
    for class in 0..2u8 {
        let dir = root.join(format!("Final_Training/Images/{:05}", class));
        let mut csv = String::from("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n");
        for i in 0..5u8 {
            // A 20x20 image: a 10x10 square of the class colour at (5,5), grey border.
            let mut img = RgbImage::from_pixel(20, 20, Rgb([128, 128, 128]));
            for y in 5..15 {
                for x in 5..15 {
                    img.put_pixel(x, y, Rgb([200 * class, 50 + i, 10]));
                }
            }
            let name = format!("{:05}_{:05}.ppm", class, i);
            save(&img, &dir.join(&name), ImageFormat::Pnm);
            csv += &format!("{name};20;20;5;5;15;15;{class}\n");
        }
        fs::write(dir.join(format!("GT-{:05}.csv", class)), csv).unwrap();
    }
    let test = root.join("Final_Test/Images");
    let mut csv = String::from("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n");
    for i in 0..4u8 {
        let class = i % 2;
        let name = format!("{:05}.ppm", i);
        save(
            &RgbImage::from_pixel(20, 20, Rgb([200 * class, 0, 0])),
            &test.join(&name),
            ImageFormat::Pnm,
        );
        csv += &format!("{name};20;20;5;5;15;15;{class}\n");
    }
    csv += "00009.ppm;20;20;5;5;15;15;1\n"; // listed but missing
    csv += "00010.ppm;20;20;5;5;15\n"; // ClassId missing
    fs::write(test.join("GT-final_test.csv"), csv).unwrap();
}

#[test]
fn gtsrb_layout_with_roi_crop_and_test_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("GTSRB");
    gtsrb_fixture(&root);
    let out = tmp.path().join("out");
    let m = ok(
        &root,
        &out,
        &["--roi-crop", "--size", "10", "--val-per-class", "1"],
    );
    assert_eq!(m["format"], "gtsrb");
    assert_eq!(counts(&m, "train"), vec![4, 4]);
    assert_eq!(counts(&m, "val"), vec![1, 1]);
    assert_eq!(
        counts(&m, "test"),
        vec![2, 2],
        "the source's test folder is the test split"
    );
    let sk = skipped(&m);
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("00009.ppm") && r.contains("cannot read")),
        "{sk:?}"
    );
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("GT-final_test.csv:7") && r.contains("no ClassId")),
        "{sk:?}"
    );
    // With the ROI crop no grey border is left: every pixel is the class colour.
    let train = set(&out, "train");
    for i in 0..train.len() {
        let red = &train.image(i)[..100];
        let want = if train.labels[i] == 1 { 200 } else { 0 };
        assert!(
            red.iter().all(|&v| v == want),
            "image {i} has border pixels"
        );
    }
    // Default size for GTSRB is 32x32.
    let m = ok(&root, &tmp.path().join("out32"), &[]);
    assert_eq!(
        m["image_shape"],
        serde_json::json!({"channels": 3, "height": 32, "width": 32})
    );
}

#[test]
fn pickles_at_protocols_2_4_5_are_read_and_code_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let m = ok(&fixture("pickle"), &out, &[]);
    assert_eq!(m["format"], "pickle");
    assert_eq!(counts(&m, "train"), vec![4, 4, 4]);
    assert_eq!(counts(&m, "val"), vec![2, 2, 2]);
    assert_eq!(counts(&m, "test"), vec![2, 2, 2]);
    // Pixel rule of the fixture: image i of class c is (c * 40 + i) everywhere.
    let train = set(&out, "train");
    assert_eq!((train.channels, train.height, train.width), (3, 8, 8));
    for i in 0..train.len() {
        let c = train.labels[i] as u8;
        let v = train.image(i)[0];
        assert!(
            v >= c * 40 && v < c * 40 + 4,
            "image {i}: value {v}, class {c}"
        );
        assert!(train.image(i).iter().all(|&p| p == v));
    }
    let _ = fs::remove_file("/tmp/rebalance-pwned");
    let err = fails(&[
        fixture("evil.p").to_str().unwrap(),
        "--out",
        tmp.path().join("evil").to_str().unwrap(),
    ]);
    assert!(
        err.contains("evil.p")
            && err.contains("posix.system")
            && err.contains("never runs pickle code"),
        "{err}"
    );
    assert!(!Path::new("/tmp/rebalance-pwned").exists());
}

#[test]
fn npz_and_npy_arrays() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let m = ok(&fixture("npy/keras.npz"), &out, &["--val-per-class", "1"]);
    assert_eq!(m["format"], "npy");
    assert_eq!(counts(&m, "train"), vec![4, 4]);
    assert_eq!(counts(&m, "val"), vec![1, 1]);
    assert_eq!(counts(&m, "test"), vec![3, 3]);
    // Float arrays in [0, 1], channel-first, in a folder of .npy files.
    let out2 = tmp.path().join("out2");
    let m = ok(&fixture("npy/float"), &out2, &["--split", "1,0,0"]);
    assert_eq!(counts(&m, "train"), vec![3, 3]);
    let train = set(&out2, "train");
    assert_eq!((train.channels, train.height, train.width), (1, 8, 8));
    let mut values: Vec<u8> = (0..train.len()).map(|i| train.image(i)[0]).collect();
    values.sort();
    assert_eq!(
        values,
        vec![0, 1, 2, 40, 41, 42],
        "float/255 round-trips to the bytes"
    );
}

#[test]
fn missing_path_and_atomic_output() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&[
        "/no/such/place",
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert!(
        err.contains("/no/such/place: no such file or folder"),
        "{err}"
    );

    // A good run, then a failing run into the same folder: the old output is untouched.
    let out = tmp.path().join("dataset");
    ok(&fixture("mnist-300"), &out, &[]);
    let before: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let bad = tmp.path().join("bad");
    fs::create_dir_all(bad.join("a")).unwrap();
    fs::write(bad.join("a/1.png"), b"").unwrap();
    save(&solid(4, 4, 1), &bad.join("a/2.png"), ImageFormat::Png);
    let err = fails(&[
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--strict",
    ]);
    assert!(err.contains("1.png: empty file"), "{err}");
    for (p, b) in &before {
        assert_eq!(&fs::read(p).unwrap(), b, "{} changed", p.display());
    }
    assert_eq!(fs::read_dir(&out).unwrap().count(), before.len());
    // No staging folder is left next to the output.
    let stray: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // `.lock`: the artifacts folder's lock, which a stage run on its own shares.
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn outputs_follow_the_contract_and_load_in_python() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let m = ok(&fixture("mnist-300"), &out, &["--keep", "4=2"]);
    assert_eq!(m["stage"], "ingest");
    assert_eq!(m["contract_version"], rebalance_core::CONTRACT_VERSION);
    for key in [
        "params",
        "inputs",
        "outputs",
        "metrics",
        "device",
        "seed",
        "wall_time_s",
        "counts",
        "skipped",
    ] {
        assert!(m.get(key).is_some(), "manifest lacks {key}");
    }
    let outputs: Vec<&str> = m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        outputs,
        vec![
            "class_counts.svg",
            "samples.png",
            "summary.txt",
            "test.safetensors",
            "train.safetensors",
            "val.safetensors"
        ]
    );
    for o in m["outputs"].as_array().unwrap() {
        let p = out.join(o["path"].as_str().unwrap());
        assert_eq!(
            rebalance_core::hash::sha256_file(&p).unwrap(),
            o["sha256"].as_str().unwrap()
        );
    }
    let png = image::open(out.join("samples.png")).unwrap();
    assert!(png.height() > 10 * 28, "one row per class");

    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/setup first: {} is missing",
        python.display()
    );
    let script = r#"
import json, sys
from safetensors import safe_open
from safetensors.torch import load_file
path, counts = sys.argv[1], json.loads(sys.argv[2])
t = load_file(path)
assert t["images"].dtype.__str__() == "torch.uint8", t["images"].dtype
assert t["labels"].dtype.__str__() == "torch.int64", t["labels"].dtype
n = t["labels"].shape[0]
assert tuple(t["images"].shape) == (n, 1, 28, 28), t["images"].shape
with safe_open(path, "pt") as f:
    classes = json.loads(f.metadata()["classes"])
assert classes == [str(d) for d in range(10)], classes
import torch
got = torch.bincount(t["labels"], minlength=10).tolist()
want = [counts[c] for c in classes]
assert got == want, (got, want)
print("ok", n)
"#;
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(out.join("train.safetensors"))
        .arg(m["counts"]["train"].to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let n: u64 = counts(&m, "train").iter().sum();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("ok {n}"));
}

/// `pipeline.toml` must not drift from the clap defaults, and may only name real flags.
#[test]
fn pipeline_toml_matches_clap_defaults() {
    use clap::CommandFactory;
    let d = rebalance_testkit::fixtures::assert_pipeline_toml_matches(
        "ingest",
        &[],
        &ingest::Args::command(),
    );
    assert_eq!(d.entries, ["ingest"]);
    assert!(
        d.checked.len() >= 3,
        "seed, rare_below and artifacts have clap defaults; checked {:?}",
        d.checked
    );
}

/// Run ingest on hostile input: it must exit with status 1 (an error, not a panic's 101 or a
/// signal from an abort) and name what it refused; returns stderr.
fn refused(args: &[&str], expect: &[&str]) -> String {
    let o = ingest(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "ingest {args:?}: {:?}\n{err}",
        o.status
    );
    for e in expect {
        assert!(err.contains(e), "ingest {args:?}: no `{e}` in:\n{err}");
    }
    err
}

#[test]
fn crafted_headers_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let hostile = |f: &str| fixture("hostile").join(f);
    // Issue 13's case: an npz whose x.npy declares 10^15 bytes and holds 100.
    let bomb = hostile("shape-bomb.npz");
    refused(
        &[bomb.to_str().unwrap(), "--out", out],
        &[
            "shape-bomb.npz:x.npy",
            "field `shape`",
            "(1000000000000000 bytes) of data",
            "more than the",
            "this process can have",
            "Refused before reading it",
        ],
    );
    // A header-length field of 4 GiB in a folder of .npy files.
    let npy = tmp.path().join("npy");
    fs::create_dir_all(&npy).unwrap();
    fs::copy(hostile("header-len.npy"), npy.join("x.npy")).unwrap();
    fs::copy(fixture("npy/float/y.npy"), npy.join("y.npy")).unwrap();
    refused(
        &[npy.to_str().unwrap(), "--out", out],
        &["x.npy", "field `header_len`", "4294967295"],
    );
    // IDX dimensions whose product overflows.
    let idx = tmp.path().join("idx");
    fs::create_dir_all(&idx).unwrap();
    fs::copy(
        hostile("overflow-images-idx3-ubyte"),
        idx.join("train-images-idx3-ubyte"),
    )
    .unwrap();
    fs::write(
        idx.join("train-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 1, 0],
    )
    .unwrap();
    refused(
        &[idx.to_str().unwrap(), "--out", out],
        &[
            "train-images-idx3-ubyte",
            "4294967295×4294967295×4294967295",
            "overflow",
        ],
    );
    // A PNG declaring 100000 x 100000 pixels: a per-file problem, skipped and listed; fatal
    // with --strict. The decoder's limits refuse it before allocating 30 GB.
    let folder = tmp.path().join("folder");
    for (class, v) in [("a", 10u8), ("b", 200)] {
        for i in 0..3 {
            save(
                &solid(4, 4, v + i),
                &folder.join(class).join(format!("{i}.png")),
                ImageFormat::Png,
            );
        }
    }
    fs::copy(hostile("huge.png"), folder.join("a/huge.png")).unwrap();
    let m = ok(&folder, &tmp.path().join("f"), &[]);
    // A folder of classes has no split of its own: test and val are made, and it says so.
    assert_eq!(m["carved_splits"], serde_json::json!(["test", "val"]));
    assert!(
        m["notes"].to_string().contains(
            "the source has no split of its own: stratified test (10%) and validation (10%) splits were made"
        ),
        "{}",
        m["notes"]
    );
    let skipped = skipped(&m);
    let huge = skipped
        .iter()
        .find(|(f, _)| f.ends_with("huge.png"))
        .unwrap_or_else(|| panic!("huge.png not listed in {skipped:?}"));
    assert!(huge.1.contains("cannot decode"), "{huge:?}");
    refused(
        &[folder.to_str().unwrap(), "--out", out, "--strict"],
        &["huge.png", "cannot decode"],
    );
    // An integer label that would make 10^12 classes.
    let labels = tmp.path().join("labels");
    fs::create_dir_all(&labels).unwrap();
    ndarray::Array3::<u8>::from_elem((4, 3, 3), 7)
        .write_npy(fs::File::create(labels.join("x.npy")).unwrap())
        .unwrap();
    let mut y = ndarray::Array1::<i64>::zeros(4);
    y[1] = 1_000_000_000_000;
    y.write_npy(fs::File::create(labels.join("y.npy")).unwrap())
        .unwrap();
    refused(
        &[labels.to_str().unwrap(), "--out", out],
        &["x.npy[1]", "label 1000000000000", "at most 100000"],
    );
    assert!(!Path::new(out).exists(), "a refused input wrote output");
}

#[test]
fn a_training_only_source_gets_a_carved_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("GTSRB");
    gtsrb_fixture(&root);
    // GTSRB as most people download it: Final_Training only.
    fs::remove_dir_all(root.join("Final_Test")).unwrap();
    let out = tmp.path().join("out");
    let o = ingest(&[
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--size",
        "10",
        "--test-per-class",
        "1",
        "--val-per-class",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = manifest(&out);
    assert_eq!(counts(&m, "test"), vec![1, 1]);
    assert_eq!(counts(&m, "val"), vec![1, 1]);
    assert_eq!(counts(&m, "train"), vec![3, 3]);
    assert_eq!(m["carved_splits"], serde_json::json!(["test", "val"]));
    let note = "the source has no test split of its own: a stratified test split was carved \
                from its training images (1 per class)";
    assert!(
        m["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str() == Some(note)),
        "{}",
        m["notes"]
    );
    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(summary.contains(note), "{summary}");
    // No split from the test folder is mixed into the carved one: the sets are disjoint and
    // hold every image once.
    let (tr, va, te) = (set(&out, "train"), set(&out, "val"), set(&out, "test"));
    assert_eq!(tr.len() + va.len() + te.len(), 10);
    // The default fraction when no count is given: 10% (rounded) of each class's 5 images.
    let m = ok(&root, &tmp.path().join("frac"), &["--size", "10"]);
    assert_eq!(counts(&m, "test"), vec![1, 1]);
    // A source with its own test split carves nothing.
    gtsrb_fixture(&root);
    let m = ok(&root, &tmp.path().join("own"), &["--size", "10"]);
    assert_eq!(m["carved_splits"], serde_json::json!(["val"]));
}

#[test]
fn a_class_left_without_training_images_is_named() {
    // IDX pair of training images (classes 0, 1) and a test pair that also has class 2.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    fs::create_dir_all(&dir).unwrap();
    let write = |prefix: &str, labels: &[u8]| {
        let n = labels.len() as u8;
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, n, 0, 0, 0, 2, 0, 0, 0, 2];
        images.extend(labels.iter().flat_map(|&l| [l * 50; 4]));
        fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let mut lab = vec![0, 0, 8, 1, 0, 0, 0, n];
        lab.extend_from_slice(labels);
        fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    };
    write("train", &[0, 0, 0, 1, 1, 1, 0, 1]);
    write("t10k", &[0, 1, 2, 2]);
    let out = tmp.path().join("out");
    let o = ingest(&[
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--val-per-class",
        "1",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warning = "class `2` has no training image (none of its 2 images is left in train)";
    assert!(err.contains(warning), "{err}");
    let m = manifest(&out);
    assert_eq!(counts(&m, "train"), vec![3, 3, 0]);
    assert!(m["notes"].to_string().contains(warning), "{}", m["notes"]);
}

/// Every file of a folder with its bytes, sorted by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_disk_fails_with_the_path_and_keeps_the_previous_output() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let src = fixture("mnist-300");
    ok(&src, &out, &[]);
    let before = snapshot(&out);
    // A 20 KiB file-size limit stands in for a full disk: the first split is larger.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingest"));
    cmd.args([
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ])
    .args(["--seed", "7"]);
    // SAFETY: setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 20 * 1024,
                rlim_max: 20 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "an error, not SIGXFSZ: {err}");
    assert!(
        err.contains("train.safetensors") && err.contains("File too large"),
        "{err}"
    );
    let after = snapshot(&out);
    assert!(before == after, "the previous output changed");
    let left: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert_eq!(left, ["out"], "no staging folder is left behind");
}

/// A `.npy` file whose header declares `shape` (u8) and whose data is `data` bytes long.
fn npy_declaring(path: &Path, shape: &[u64], data: usize) {
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({dims},), }}");
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend(std::iter::repeat_n(0u8, data));
    fs::write(path, bytes).unwrap();
}

/// Issue 24: an array larger than this process may have is refused before it is read, with
/// the sizes and the limit that says so; "may have" is the smallest of available memory, the
/// cgroup limit and `ulimit -v`.
#[test]
fn a_declared_array_beyond_the_memory_limit_is_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("npy");
    fs::create_dir_all(&dir).unwrap();
    // 1,000,000 32x32 grey images: 1 GiB declared, 100 bytes present.
    npy_declaring(&dir.join("x.npy"), &[1_000_000, 32, 32], 100);
    npy_declaring(&dir.join("y.npy"), &[1_000_000], 100);
    let out = tmp.path().join("out");
    let cmd = format!(
        "ulimit -v 2000000 && exec {} {} --out {} --quiet",
        env!("CARGO_BIN_EXE_ingest"),
        dir.display(),
        out.display()
    );
    let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("x.npy: declares field `shape` [1000000, 32, 32] of '|u1' = 976.6 MiB (1024000000 bytes) of data")
            && err.contains("the address-space limit (ulimit -v)"),
        "{err}"
    );
    // Without the limit it fits, and the file is then refused for holding too little.
    refused(
        &[dir.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &["x.npy", "needs 1024000000 bytes of data; the file has 100"],
    );
    assert!(!out.exists());
}

/// Issue 24: a labels CSV (or a symlink) cannot pull files from outside the image folder into
/// the artifacts, unless `--allow-outside` says so.
#[test]
fn paths_outside_the_image_folder_are_skipped_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("images");
    let outside = tmp.path().join("private");
    for i in 0..6u8 {
        save(
            &solid(6, 6, i * 20),
            &imgs.join(format!("img{i}.png")),
            ImageFormat::Png,
        );
    }
    save(
        &solid(6, 6, 255),
        &outside.join("photo.png"),
        ImageFormat::Png,
    );
    std::os::unix::fs::symlink(outside.join("photo.png"), imgs.join("link.png")).unwrap();
    let mut rows = String::from("image,label\n");
    for i in 0..6 {
        rows += &format!("img{i}.png,{}\n", i % 2);
    }
    rows += "../private/photo.png,0\n";
    rows += &format!("{},1\n", outside.join("photo.png").display());
    rows += "link.png,1\n";
    let csv = tmp.path().join("labels.csv");
    fs::write(&csv, rows).unwrap();
    let args = ["--csv", csv.to_str().unwrap(), "--id-col", "image"];
    let m = ok(&imgs, &tmp.path().join("o"), &args);
    let total: u64 = ["train", "val", "test"]
        .iter()
        .flat_map(|s| counts(&m, s))
        .sum();
    assert_eq!(total, 6, "only the six images inside the folder");
    let sk = skipped(&m);
    let out_of = sk
        .iter()
        .filter(|(_, r)| r.contains("leaves the image folder") && r.contains("--allow-outside"))
        .count();
    assert_eq!(out_of, 3, "{sk:?}");
    assert!(
        sk.iter()
            .any(|(f, r)| f.ends_with("link.png") && r.contains("photo.png")),
        "{sk:?}"
    );
    // A class folder with a symlink out of it, the same.
    let folder = tmp.path().join("folder");
    for (c, v) in [("a", 10u8), ("b", 90)] {
        for i in 0..3u8 {
            save(
                &solid(6, 6, v + i),
                &folder.join(format!("{c}/{i}.png")),
                ImageFormat::Png,
            );
        }
    }
    std::os::unix::fs::symlink(outside.join("photo.png"), folder.join("a/leak.png")).unwrap();
    let m = ok(&folder, &tmp.path().join("f"), &[]);
    assert!(skipped(&m)
        .iter()
        .any(|(f, r)| f.ends_with("leak.png") && r.contains("leaves the image folder")));
    // Asked for, they are read.
    let mut allowed = args.to_vec();
    allowed.push("--allow-outside");
    let m = ok(&imgs, &tmp.path().join("o2"), &allowed);
    let total: u64 = ["train", "val", "test"]
        .iter()
        .flat_map(|s| counts(&m, s))
        .sum();
    assert_eq!(total, 9);
}

#[test]
fn a_single_class_is_refused_with_its_count() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("d");
    for i in 0..5u8 {
        save(
            &solid(6, 6, i),
            &root.join(format!("only/{i}.png")),
            ImageFormat::Png,
        );
    }
    refused(
        &[
            root.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ],
        &["only one class (`only`, 5 images)", "at least two"],
    );
}

/// `--keep none`, `--max-per-class 0` and `--test-per-class 0` are the same as not giving
/// them (the pipeline passes every flag); `--roi-crop` never takes the next argument.
#[test]
fn no_caps_spelled_out_are_no_caps_and_roi_crop_takes_no_positional() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("mnist-300");
    let plain = ok(&src, &tmp.path().join("a"), &[]);
    let spelled = ok(
        &src,
        &tmp.path().join("b"),
        &[
            "--keep",
            "none",
            "--max-per-class",
            "0",
            "--test-per-class",
            "0",
            "--val-per-class",
            "0",
        ],
    );
    for split in ["train", "val", "test"] {
        assert_eq!(counts(&plain, split), counts(&spelled, split), "{split}");
    }
    let empty = ok(&src, &tmp.path().join("c"), &["--keep", ""]);
    assert_eq!(counts(&plain, "train"), counts(&empty, "train"));
    let root = tmp.path().join("GTSRB");
    gtsrb_fixture(&root);
    let out = tmp.path().join("roi");
    let o = ingest(&[
        "--roi-crop",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(manifest(&out)["params"]["roi_crop"], true);
    let o = ingest(&[
        "--roi-crop=false",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(manifest(&out)["params"]["roi_crop"], false);
}
