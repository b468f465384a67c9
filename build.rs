//! Link layout of the release binary (`make build`): CNI_MULTI_SYMBOL_ORDER names a file of
//! the functions plugin runs execute (link/hot-functions.txt, scripts/hot-functions/), which
//! lld places first and together. A plugin process maps the binary's pages through the
//! kernel's 64 KiB fault-around, so scattered hot code makes every run map most of the text
//! (peak RSS); packed, it maps a few hundred KiB. Names the build no longer has are ignored.
//! CNI_MULTI_LINK_MAP asks for lld's link map (where each function landed): the binary is
//! stripped, and scripts/hot-functions/run.py maps traced addresses to names with it.

fn main() {
    println!("cargo:rerun-if-env-changed=CNI_MULTI_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CNI_MULTI_LINK_MAP");
    if let Some(path) = std::env::var_os("CNI_MULTI_LINK_MAP") {
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={}", path.to_string_lossy());
    }
    if let Some(path) = std::env::var_os("CNI_MULTI_SYMBOL_ORDER") {
        let path = path.to_string_lossy();
        println!("cargo:rerun-if-changed={path}");
        // Only the executable's link: the library and its symbols stay as they were.
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={path}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
