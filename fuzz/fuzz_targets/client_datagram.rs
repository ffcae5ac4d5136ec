//! A client's input datagram as the server reads it: decoded, then handed to a match (which
//! validates, buffers and applies it) and ticked. Whatever the bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_match::{Match, MatchConfig};
use rewind_shared::codec;
use rewind_shared::hitbox::Hitboxes;
use rewind_shared::map::{default_assets_dir, Map};
use rewind_shared::protocol::{ClientDatagram, MAX_DATAGRAM};
use std::sync::{Arc, OnceLock};

fn assets() -> &'static (Arc<Map>, Hitboxes) {
    static ASSETS: OnceLock<(Arc<Map>, Hitboxes)> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let dir = default_assets_dir();
        let map = Map::load_named(&dir, "arena").expect("the arena map");
        (Arc::new(map), Hitboxes::load(&dir).expect("hitboxes"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(ClientDatagram::Inputs(batch)) = codec::decode::<ClientDatagram>(data) else {
        return;
    };
    let (map, hitboxes) = assets();
    let mut m = Match::new(MatchConfig::default(), map.clone(), *hitboxes);
    let id = m.join("fuzz", MAX_DATAGRAM).expect("a player joins");
    for _ in 0..3 {
        let _ = m.receive(id, &batch);
        m.tick();
        while m.poll_datagram().is_some() || m.poll_control().is_some() {}
        while m.poll_event().is_some() || m.poll_record().is_some() {}
    }
});
