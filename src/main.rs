//! The multicall door: the file name of argv[0] picks the plugin (libcni runs
//! `/opt/cni/bin/bridge`); under its own name the binary is a tool for people.

use std::path::Path;

fn main() {
    cni_multi::plugins::install_panic_hook();
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = if name == cni_multi::linux::tuntap::HELPER {
        // tap's device creation under an SELinux exec label (linux::tuntap::create_in_child).
        cni_multi::linux::tuntap::helper_main()
    } else if name.starts_with("cni-multi") {
        cni_multi::cli::main()
    } else {
        match cni_multi::plugins::lookup(&name) {
            Some(plugin) => cni_multi::plugins::run_as_plugin(plugin),
            None => cni_multi::plugins::unknown_name(&name),
        }
    };
    std::process::exit(code);
}
