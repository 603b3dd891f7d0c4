#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vision_trainer::fuzzing::pickle(data);
});
