#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quantweb::fuzzing::byte_ranges(data));
