// A wasm kernel declares the most memory it may use (ABI v1 allows at most 256 MiB); the
// linker's default is no maximum, which the runtime refuses.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!(
            "cargo:rustc-link-arg-cdylib=--max-memory={}",
            64 * 1024 * 1024
        );
    }
}
