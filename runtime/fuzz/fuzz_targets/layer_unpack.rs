//! The layer unpacker on arbitrary tar bytes: done or an error, never a panic, and nothing
//! written outside the layer directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::unpack::{unpack_layer, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("tempdir");
    let dest = outer.path().join("layer");
    std::fs::create_dir(&dest).expect("layer dir");
    let limits = UnpackLimits {
        bytes: 1 << 24,
        entries: 10_000,
    };
    let _ = unpack_layer(&mut tar::Archive::new(data), &dest, limits);
    let names: Vec<_> = std::fs::read_dir(outer.path())
        .expect("outer")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["layer"], "written outside the layer");
});
