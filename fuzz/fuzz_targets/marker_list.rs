#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvmfs_testkit::fuzzing::marker_list(data));
