//! Image reference parsing on arbitrary strings: a reference or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::image::reference::ImageRef;

fuzz_target!(|s: &str| {
    if let Ok(r) = ImageRef::parse(s) {
        let _ = (r.name(), r.tag_or_digest(), r.tagged_name(), r.registry());
    }
});
