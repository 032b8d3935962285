#![no_main]
// See gatehouse::fuzzing::jwt for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::fuzzing::jwt(data));
