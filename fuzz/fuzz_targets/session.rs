#![no_main]
// See gatehouse::fuzzing::session for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::fuzzing::session(data));
