//! Configuration files: any bytes. Parsing ends, never panics; every error
//! is located inside the file; a configuration that parses writes out as
//! TOML that parses again to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    match outpost_config::parse_bytes(data, "fuzz.toml") {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a problem");
            for e in &errors.0 {
                assert!(
                    e.line >= 1 && e.line <= lines,
                    "line {} of {lines}: {e}",
                    e.line
                );
                assert!(e.column >= 1, "column {}: {e}", e.column);
                assert_eq!(e.file, "fuzz.toml");
            }
            let _shown = errors.to_string();
        }
        Ok(config) => {
            let text = match config.to_toml() {
                Ok(t) => t,
                Err(e) => panic!("a parsed configuration does not write out: {e}"),
            };
            match outpost_config::parse(&text, "written.toml") {
                Ok(again) => assert_eq!(
                    format!("{config:?}"),
                    format!("{again:?}"),
                    "written out and read back, the configuration changed:\n{text}"
                ),
                Err(e) => panic!("a written configuration does not parse: {e}\n{text}"),
            }
        }
    }
});
