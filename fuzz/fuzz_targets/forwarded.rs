#![no_main]
// See gatehouse::fuzzing::forwarded for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse::fuzzing::forwarded(data));
