#![no_main]
// See gatehouse::fuzzing::cookies for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::fuzzing::cookies(data));
