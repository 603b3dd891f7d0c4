#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstvision::fuzzing::contract(data);
});
