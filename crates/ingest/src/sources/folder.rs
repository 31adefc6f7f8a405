//! `root/<class>/*.{png,jpg,jpeg,bmp,ppm,pgm}`: one sub-folder per class.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{is_image_file, sort_class_names, Item, LabelRef, Loaded, Payload};

pub fn load(root: &Path) -> Result<Loaded> {
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                classes.push(name);
            }
        }
    }
    if classes.is_empty() {
        bail!(
            "{}: no class folders; an image folder holds one sub-folder per class \
             (root/<class>/*.png)",
            root.display()
        );
    }
    sort_class_names(&mut classes);
    let mut items = Vec::new();
    for class in &classes {
        let dir = root.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|path| Item {
            origin: path.display().to_string(),
            label: LabelRef::Name(class.clone()),
            split: None,
            payload: Payload::File { path, roi: None },
        }));
    }
    Ok(Loaded {
        items,
        classes: Some(classes),
        ..Default::default()
    })
}
