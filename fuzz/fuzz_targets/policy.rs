#![no_main]
// See gatehouse::fuzzing::policy for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::fuzzing::policy(data));
