//! What a pull decides from a manifest's or an index's bytes: an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::pull::check_manifest;
use skiff_runtime::image::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = ImageRef::parse("reg.example/fuzz:v1") {
        let _ = check_manifest(&image, data);
    }
});
