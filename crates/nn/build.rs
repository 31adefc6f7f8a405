fn main() {
    rebalance_build::link_libtorch();
    // The small C++ shim for ATen ops tch does not expose fully (csrc/ops.cpp).
    println!("cargo:rerun-if-changed=csrc/ops.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = std::path::PathBuf::from(
        std::env::var("LIBTORCH").expect("LIBTORCH is set by .cargo/config.toml"),
    );
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
        ))
        .file("csrc/ops.cpp")
        .compile("rebalance_ops");
}
