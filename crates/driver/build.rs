// Give the shared library a SONAME so it can be installed and versioned like any
// system library (libcvmfs_graphdriver.so.0); the static library needs nothing.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcvmfs_graphdriver.so.0");
    }
}
