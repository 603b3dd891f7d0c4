#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstvision::fuzzing::labels(data);
    vision_trainer::fuzzing::labels(data);
});
