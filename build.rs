//! Link layout of the release binary (`make build`): CNI_MULTI_SYMBOL_ORDER names a file of
//! the functions plugin runs execute (link/hot-functions.txt, scripts/hot-functions/), which
//! lld places first and together. A plugin process maps the binary's pages through the
//! kernel's 64 KiB fault-around, so scattered hot code makes every run map most of the text
//! (peak RSS); packed, it maps a few hundred KiB. Names the build no longer has are ignored.
//! CNI_MULTI_LINK_MAP asks for lld's link map (where each function landed): the binary is
//! stripped, and scripts/hot-functions/run.py maps traced addresses to names with it.
//!
//! The musl targets link with rust-lld itself (the Makefile sets the target's linker, which
//! cargo hands us as RUSTC_LINKER), so the options go to it as they are; through a C compiler
//! driver (the gnu target's cc, which runs lld) they need -Wl,.
//!
//! It also gives `cni-multi version` what it prints: the version (CNI_MULTI_VERSION, set by
//! make release; else Cargo.toml's), the commit (CNI_MULTI_GIT_COMMIT, set by make; "unknown"
//! without it), the target, its libc, and the locked versions of the crates
//! that talk to the kernel and parse the configs.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=CNI_MULTI_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CNI_MULTI_LINK_MAP");
    println!("cargo:rerun-if-env-changed=CNI_MULTI_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=CNI_MULTI_VERSION");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_default();
    let direct_lld = Path::new(&linker)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("lld"));
    let link_arg = |arg: String| {
        let arg = if direct_lld { arg } else { format!("-Wl,{arg}") };
        // Only the executable's link: the library and its symbols stay as they were.
        println!("cargo:rustc-link-arg-bins={arg}");
    };
    // Set but empty (make build without an order file for the target) is unset.
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("CNI_MULTI_LINK_MAP") {
        link_arg(format!("-Map={}", path.to_string_lossy()));
    }
    if let Some(path) = var("CNI_MULTI_SYMBOL_ORDER") {
        let path = path.to_string_lossy();
        println!("cargo:rerun-if-changed={path}");
        link_arg(format!("--symbol-ordering-file={path}"));
        link_arg("--no-warn-symbol-ordering".into());
    }

    let version = std::env::var("CNI_MULTI_VERSION").unwrap_or_default();
    let version = if version.is_empty() {
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    } else {
        version
    };
    println!("cargo:rustc-env=CNI_MULTI_VERSION={version}");
    let commit = std::env::var("CNI_MULTI_GIT_COMMIT").unwrap_or_default();
    let commit = if commit.is_empty() { "unknown".into() } else { commit };
    println!("cargo:rustc-env=CNI_MULTI_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=CNI_MULTI_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let libc = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    println!(
        "cargo:rustc-env=CNI_MULTI_LIBC={}",
        if libc.is_empty() { "none" } else { &libc }
    );
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let crates: Vec<String> = ["neli", "nix", "serde_json"]
        .iter()
        .map(|name| format!("{name} {}", locked_version(&lock, name).unwrap_or("?")))
        .collect();
    println!("cargo:rustc-env=CNI_MULTI_CRATES={}", crates.join(", "));
}

/// The version Cargo.lock records for `name` (the first, should two be locked).
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return v.strip_suffix('"');
        }
    }
    None
}
