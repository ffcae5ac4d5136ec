//! Control-stream frames: the hello and client frames the server reads, the server frames a
//! client reads. Whatever the bytes, each decode returns a value or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_shared::codec;
use rewind_shared::protocol::{valid_name, ClientControl, Hello, ServerControl};

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = codec::decode::<Hello>(data) {
        // What the server checks next.
        let _ = valid_name(&hello.name);
    }
    let _ = codec::decode::<ClientControl>(data);
    let _ = codec::decode::<ServerControl>(data);
});
