//! The SPDY frame parser on arbitrary bytes: it must return a frame, "need more" or an error,
//! never panic, hang or allocate what a length field claims. Every frame it returns must
//! encode and parse back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_runtime::streaming::spdy::{Frame, HeaderDecoder, HeaderEncoder};

fuzz_target!(|data: &[u8]| {
    let mut dec = HeaderDecoder::new();
    let mut buf = data;
    while let Ok(Some((frame, used))) = Frame::parse(buf, &mut dec) {
        let mut enc = HeaderEncoder::new();
        let Ok(bytes) = frame.encode(&mut enc) else {
            break;
        };
        let again = Frame::parse(&bytes, &mut HeaderDecoder::new());
        if !matches!(frame, Frame::Unknown { .. }) {
            assert_eq!(again.ok().flatten().map(|(f, _)| f), Some(frame));
        }
        buf = &buf[used..];
    }
});
