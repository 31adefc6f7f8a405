//! Used from the `build.rs` of every crate that links libtorch through `tch`.
//!
//! Two problems are solved here:
//! - **Run-time lookup.** torch-sys tells the linker where libtorch is, but the finished
//!   binary does not remember it. We add the libtorch `lib` folder as a run path, so
//!   `cargo run -p <stage>` works without `LD_LIBRARY_PATH` (which still wins when set,
//!   because modern linkers emit `DT_RUNPATH`).
//! - **CUDA lost at link time.** Nothing references a symbol of `libtorch_cuda.so` directly,
//!   so `--as-needed` drops it, and `tch::Cuda::is_available()` then says false on a GPU
//!   machine. We force it in with `--no-as-needed` when the library exists.
//!
//! The libtorch folder is `$LIBTORCH`, set by `.cargo/config.toml` to the project venv's
//! torch unless the user set it to their own libtorch 2.11.

use std::path::PathBuf;

/// Emit the link arguments for every target of the calling package (bins, tests, benches).
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!(
            "cargo:warning=LIBTORCH is not set; run scripts/setup (it creates .venv with torch)"
        );
        return;
    };
    let lib = root.join("lib");
    // Resolve symlinks (.venv/libtorch -> site-packages/torch) so the run path is stable.
    let lib = lib.canonicalize().unwrap_or(lib);
    if !lib.join("libtorch_cpu.so").exists() && !lib.join("libtorch.so").exists() {
        println!(
            "cargo:warning=no libtorch found in {} (LIBTORCH={}); run scripts/setup",
            lib.display(),
            root.display()
        );
        return;
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
