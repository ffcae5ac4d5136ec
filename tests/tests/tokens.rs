//! Connect tokens and reconnects over real QUIC on 127.0.0.1: a token that is missing, forged,
//! expired or for another match is refused before a seat is spent; a player whose connection
//! drops and who comes back with its token within the grace is the same player (id, place,
//! health); a player who closes its connection, or stays away too long, leaves the world.

use rewind_record::reader::Recording;
use rewind_record::{review, Membership};
use rewind_shared::protocol::{
    ClientDatagram, CloseCode, Hello, InputBatch, InputCmd, PlayerId, ServerControl, ViewTime,
    Welcome,
};
use rewind_shared::Tick;
use rewind_tests::*;
use rewind_transport::token::{unix_now, Claims, TokenKey};
use rewind_transport::TransportSettings;
use std::time::Duration;

/// A hello carrying `token`.
fn hello_with(server: &rewind_server::Server, name: &str, token: String) -> Hello {
    Hello {
        token,
        ..hello(server, name)
    }
}

/// Reads control messages until the welcome.
async fn welcome(client: &mut RawClient) -> Welcome {
    loop {
        match client.next_control().await {
            Some(ServerControl::Welcome(w)) => return w,
            Some(_) => continue,
            None => panic!("the connection ended before a welcome"),
        }
    }
}

/// The player id the welcome gives.
async fn welcomed(client: &mut RawClient) -> PlayerId {
    welcome(client).await.player_id
}

/// Sends `n` inputs walking forward at 64 Hz, from sequence number `first`.
async fn walk(client: &RawClient, first: u32, n: u32) {
    for seq in first..first + n {
        let cmd = InputCmd {
            seq,
            tick: Tick(seq),
            view: ViewTime {
                tick: Tick(seq.saturating_sub(2)),
                frac: 0,
            },
            move_fwd: 127,
            ..InputCmd::default()
        };
        client.send_message(&ClientDatagram::Inputs(InputBatch {
            ack: None,
            inputs: vec![cmd],
        }));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_expired_and_other_match_tokens_are_refused_before_a_seat_is_spent() {
    // One seat, one match: any token that got a seat would keep the valid player out.
    let server = start_server(|c| {
        c.match_size = 1;
        c.match_id = Some(7);
    })
    .await;
    let key = server.token_key().unwrap().clone();
    let forger = TokenKey::generate().unwrap();
    let expired = Claims {
        player: 2,
        match_id: 7,
        expires: unix_now() - 30,
    };
    let cases = [
        ("missing", String::new(), "the connect token is missing"),
        (
            "forged",
            forger.mint(&Claims::new(1, 7, Duration::from_secs(60))),
            "the connect token's signature does not match (forged, altered, or another key)",
        ),
        ("expired", key.mint(&expired), "the connect token expired"),
        (
            "other-match",
            key.mint(&Claims::new(3, 8, Duration::from_secs(60))),
            "the connect token is for match 8; this server hosts match 7",
        ),
        (
            "any-match",
            key.mint(&Claims::new(4, 0, Duration::from_secs(60))),
            "the connect token lets the server pick a match; this server hosts match 7 only",
        ),
    ];
    for (name, token, why) in cases {
        let client = raw_hello(&server, &hello_with(&server, name, token)).await;
        let (code, reason) = client.close_reason().await;
        assert_eq!(code, Some(CloseCode::Refused), "{name}");
        assert!(reason.starts_with(why), "{name}: {reason}");
    }
    let stats = server.stats();
    assert_eq!(stats.tokens_refused, 5);
    assert_eq!(
        (stats.matches_opened, stats.players),
        (0, 0),
        "no refused token opened a match or took a seat"
    );
    // The one seat is still free for a valid token.
    let good = key.mint(&Claims::new(5, 7, Duration::from_secs(60)));
    let mut player = raw_hello(&server, &hello_with(&server, "valid", good)).await;
    welcomed(&mut player).await;
    let report = server.shutdown().await;
    assert_eq!(report.matches.len(), 1);
    assert_eq!(report.matches[0].game.joins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_player_who_returns_within_the_grace_is_the_same_player() {
    let dir = temp_dir("reconnect");
    let server = start_server(|c| {
        c.record_dir = Some(dir.clone());
        // The drop is noticed after a second of silence.
        c.keep_alive_ms = 200;
        c.idle_timeout_ms = 1000;
        c.reconnect_grace_ms = 10_000;
    })
    .await;
    let token = token(&server, 77, 0);
    // Another player, so that the match does not end when the first one is away.
    let mut other = raw_hello(&server, &hello(&server, "witness")).await;
    welcomed(&mut other).await;

    let link = CutLink::to(server.local_addr()).await;
    let settings = TransportSettings::default();
    let mut first = raw_hello_at(
        &server,
        link.addr,
        &hello_with(&server, "ana", token.clone()),
        &settings,
    )
    .await;
    let id = welcomed(&mut first).await;
    walk(&first, 1, 40).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The network goes: the server notices the silence and keeps the player's place.
    link.cut();
    assert!(
        eventually(Duration::from_secs(5), || server.stats().dropped_players
            == 1)
        .await,
        "the server noticed the drop"
    );
    assert_eq!(
        server.stats().players,
        2,
        "the dropped player is still in the match"
    );

    // It comes back on a new connection with its token: the same player.
    let mut second = raw_hello(&server, &hello_with(&server, "ana", token.clone())).await;
    assert_eq!(welcomed(&mut second).await, id);
    // Its roster names it (and the witness), like any newcomer's.
    let Some(ServerControl::Roster { players }) = second.next_control().await else {
        panic!("a roster after the welcome");
    };
    assert!(players.iter().any(|p| p.id == id && p.name == "ana"));
    walk(&second, 1, 20).await;

    // A third connection with the same token takes over: the second is told why.
    let mut third = raw_hello(&server, &hello_with(&server, "ana", token)).await;
    assert_eq!(welcomed(&mut third).await, id);
    assert_eq!(
        second.close_reason().await,
        (
            Some(CloseCode::Replaced),
            "the same player connected again".into()
        )
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = server.shutdown().await;
    assert_eq!(report.server.reconnects, 2);
    let m = &report.matches[0];
    assert_eq!((m.game.joins, m.game.rejoins, m.game.leaves), (2, 2, 2));

    // The recording: ana kept her place and health across the drop, and never left.
    let rec = Recording::open(m.recording.as_ref().unwrap()).unwrap();
    let rejoined: Vec<Tick> = rec
        .ticks
        .iter()
        .filter(|t| t.membership.contains(&Membership::Rejoin { id }))
        .map(|t| t.tick)
        .collect();
    assert_eq!(rejoined.len(), 2);
    let left_before_the_end = rec
        .ticks
        .iter()
        .filter(|t| t.tick.0 < rejoined[1].0)
        .any(|t| t.membership.contains(&Membership::Leave { id }));
    assert!(!left_before_the_end, "ana never left while she was away");
    let at = |tick: Tick| {
        let w = review::world_at(&rec, tick).unwrap();
        w.players.into_iter().find(|p| p.id == id.0).unwrap()
    };
    let joined_at = rec
        .ticks
        .iter()
        .find(|t| {
            t.membership
                .iter()
                .any(|m| matches!(m, Membership::Join { id: j, .. } if j == &id))
        })
        .unwrap()
        .tick;
    let (spawned, before, after) = (at(joined_at), at(Tick(rejoined[0].0 - 1)), at(rejoined[0]));
    assert_ne!(before.pos, spawned.pos, "ana walked before the drop");
    assert_eq!(
        (after.pos, after.health, after.dead),
        (before.pos, before.health, before.dead),
        "ana came back where she was, as she was"
    );
    // Replaying the file reproduces every tick, the rejoins included.
    rewind_record::replay::Replayer::new(&rec)
        .unwrap()
        .verify()
        .unwrap()
        .unwrap();
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_closes_or_stays_away_too_long_leaves_and_comes_back_as_a_newcomer() {
    let server = start_server(|c| {
        c.keep_alive_ms = 200;
        c.idle_timeout_ms = 1000;
        c.reconnect_grace_ms = 300;
    })
    .await;
    let mut witness = raw_hello(&server, &hello(&server, "witness")).await;
    welcomed(&mut witness).await;

    // Closed by the client: it leaves the world at once.
    let bo = token(&server, 5, 0);
    let mut a = raw_hello(&server, &hello_with(&server, "bo", bo.clone())).await;
    let first = welcomed(&mut a).await;
    a.conn.close(0u32.into(), b"bye");
    assert!(
        eventually(Duration::from_millis(500), || server.stats().players == 1).await,
        "a closed connection's player leaves within a few ticks"
    );
    assert_eq!(server.stats().dropped_players, 0);
    let mut b = raw_hello(&server, &hello_with(&server, "bo", bo.clone())).await;
    let second = welcomed(&mut b).await;
    assert_ne!(
        second, first,
        "after leaving, the same token joins as a new player"
    );

    // Dropped, and away longer than the grace: it leaves, and comes back as a new player.
    let link = CutLink::to(server.local_addr()).await;
    let other = token(&server, 6, 0);
    let mut c = raw_hello_at(
        &server,
        link.addr,
        &hello_with(&server, "cy", other.clone()),
        &TransportSettings::default(),
    )
    .await;
    let third = welcomed(&mut c).await;
    link.cut();
    assert!(
        eventually(Duration::from_secs(5), || server.stats().dropped_players
            == 1)
        .await,
        "the drop is noticed"
    );
    assert!(
        eventually(Duration::from_secs(2), || server.stats().players == 2).await,
        "after the grace the dropped player leaves"
    );
    let mut d = raw_hello(&server, &hello_with(&server, "cy", other)).await;
    assert_ne!(welcomed(&mut d).await, third);
    let report = server.shutdown().await;
    assert_eq!(report.server.reconnects, 0);
    drop((witness, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_match_joins_that_match_and_an_ended_match_refuses_its_tokens() {
    let server = start_server(|c| c.max_matches = 4).await;
    let in_match = |player, m| hello_with(&server, "p", token(&server, player, m));
    // Tokens for match 5 go to one match, tokens for match 6 to another.
    let mut a = raw_hello(&server, &in_match(1, 5)).await;
    let mut b = raw_hello(&server, &in_match(2, 6)).await;
    let mut c = raw_hello(&server, &in_match(3, 5)).await;
    let ids = [
        welcome(&mut a).await.match_id,
        welcome(&mut b).await.match_id,
        welcome(&mut c).await.match_id,
    ];
    assert_eq!(ids[0], ids[2], "both tokens for match 5 are in one match");
    assert_ne!(ids[0], ids[1], "match 6 is another");
    // Match 6's only player leaves: the match ends, and its tokens are refused from then on.
    b.conn.close(0u32.into(), b"bye");
    assert!(
        eventually(Duration::from_secs(2), || server.stats().matches_ended == 1).await,
        "match 6 ended"
    );
    let late = raw_hello(&server, &in_match(4, 6)).await;
    assert_eq!(
        late.close_reason().await,
        (Some(CloseCode::MatchOver), "match 6 is over".into())
    );
    drop((a, c));
    server.shutdown().await;
}
