#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvmfs_graphdriver::fuzzing::tar_unpack(data));
