//! Configuration parsing: any text as a config file. Nothing panics, and an
//! error message never repeats an inline secret. Entries that read outside
//! state (`env:`, `file:`) are left out to keep runs hermetic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sessiongate::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("env:") || text.contains("file:") {
        return;
    }
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let _ = config.describe();
            let _ = config.warnings();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
