//! The stage binaries that use libtorch must keep `libtorch_cuda.so` linked (the linker's
//! `--as-needed` drops it otherwise, and CUDA is then silently unavailable on GPU machines),
//! and must find libtorch at run time with no environment variables.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gan-train");

#[test]
fn binary_links_libtorch_cuda() {
    let lib = std::env::var("LIBTORCH").expect("LIBTORCH is set by .cargo/config.toml");
    // No silent skip: the libtorch scripts/setup installs (torch 2.11.0, CUDA 13 build) has
    // libtorch_cuda.so; without it the GPU path cannot work, and that is a failure.
    assert!(
        std::path::Path::new(&lib)
            .join("lib/libtorch_cuda.so")
            .exists(),
        "{lib}/lib/libtorch_cuda.so is missing: this libtorch is a CPU-only build, but \
         scripts/setup installs torch 2.11.0's CUDA 13 build, which has it; run scripts/setup"
    );
    let out = Command::new("ldd").arg(BIN).output().expect("ldd runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("libtorch_cuda.so"), "ldd {BIN}:\n{text}");
    assert!(!text.contains("not found"), "unresolved libraries:\n{text}");
}

#[test]
fn binary_calls_libtorch_without_library_path() {
    // Resolving `cuda:99` asks libtorch how many CUDA devices it sees: libtorch is loaded and
    // called with no LD_LIBRARY_PATH set. It runs in a folder of its own: the stage takes the
    // lock of its default artifacts folder there.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--device", "cuda:99"])
        .current_dir(dir.path())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("gan-train runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--device cuda:99 was asked for, but libtorch sees"),
        "{err}"
    );
    // A bad device is refused by the shared flag parser.
    let out = Command::new(BIN)
        .args(["--device", "tpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`tpu` is not a device"),
        "{err}"
    );
}
