#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quantweb::fuzzing::gguf_header(data));
