#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cni_multi::fuzzing::dhcp_rpc(data));
