//! Snapshot datagrams as a client reads them: decoded, then applied to what it holds (each
//! carried player rebuilt from the state it builds on), twice in a row with a second message
//! cut from the same bytes. Whatever the bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_shared::codec;
use rewind_shared::protocol::ServerDatagram;
use rewind_shared::snapshot::{Received, WorldSnapshot};

fuzz_target!(|data: &[u8]| {
    let mut held = Received::default();
    let half = data.len() / 2;
    for part in [data, &data[..half], &data[half..]] {
        if let Ok(ServerDatagram::Snapshot(msg)) = codec::decode::<ServerDatagram>(part) {
            if held.apply(&msg).is_ok() {
                let mut world = WorldSnapshot::default();
                held.world_at(msg.tick, &mut world);
            }
        }
    }
});
