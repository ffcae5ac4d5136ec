//! A recording file: its frames one by one, then the whole file as the reader parses it, and
//! when it parses, a replay and verification of it and its viewer page. Whatever the bytes, an
//! error or a result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_record::format::{decode_frame, PREAMBLE};
use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut at = PREAMBLE.min(data.len());
    while let Ok((_, len)) = decode_frame(&data[at..]) {
        at += len;
    }
    let Ok(rec) = Recording::parse(Path::new("fuzz.rwd"), data) else {
        return;
    };
    // Bounded work per input: a short recording is replayed in full.
    if rec.ticks.len() <= 256 {
        if let Ok(replayer) = Replayer::new(&rec) {
            let _ = replayer.verify();
        }
        // The viewer page: a forward replay explaining every shot, whatever the file says.
        let _ = rewind_record::viewer::page(&rec, "fuzz", None);
    }
});
