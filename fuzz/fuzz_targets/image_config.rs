#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cvmfs_testkit::fuzzing::image_config(data));
