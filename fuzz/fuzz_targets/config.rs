#![no_main]
// See gatehouse::fuzzing::config for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::fuzzing::config(data));
