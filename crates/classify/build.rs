fn main() {
    rebalance_build::link_libtorch();
}
