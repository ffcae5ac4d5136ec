//! Fair play over real QUIC with the link conditioner: honest bots on `fair` and `average`
//! links keep their view times and agree with the server; backtracking cheaters gain next to
//! nothing (docs/lag-compensation.md, "Checking the claim"). The two tests run one after the
//! other: each loads the machine's two cores with a server and a dozen bots, and a starved
//! tick loop is a jittery link of its own.

use client_sim::{BotReport, Report};
use rewind_tests::{assert_every_shot_answered, bots, start_server};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Judged shots and disagreements of the honest bots matching `pick`.
fn agreement(report: &Report, pick: impl Fn(&BotReport) -> bool) -> (u64, u64, Vec<String>) {
    let honest = report
        .per_bot
        .iter()
        .filter(|b| b.cheat.is_none() && pick(b));
    let (mut judged, mut agreed, mut described) = (0, 0, Vec::new());
    for b in honest {
        judged += b.shots.judged;
        agreed += b.shots.agreed;
        described.extend(b.shots.disagreements.iter().cloned());
    }
    (judged, judged - agreed, described)
}

/// The target is an agreement of at least 0.999; the margin for a noisy machine is one shot.
fn assert_agreement(label: &str, judged: u64, disagreed: u64, described: &[String]) {
    assert!(
        disagreed <= judged / 1000 + 1,
        "{label}: {disagreed} of {judged} judged shots disagree: {described:?}"
    );
}

/// Honest rejections for a view-time reason (a shooter already dead on the server is not one:
/// it was killed while the news travelled).
fn view_time_rejections(report: &Report) -> u64 {
    report
        .per_bot
        .iter()
        .filter(|b| b.cheat.is_none())
        .flat_map(|b| &b.shots.rejected_by_reason)
        .filter(|(reason, _)| **reason != "shooter_dead")
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_bots_on_fair_and_average_links_keep_their_claims_and_agree_with_the_server() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = start_server(|_| {}).await;
    let mut cfg = bots(&server, 12, 20.0);
    cfg.link_mix = Some(
        client_sim::Mix::parse("fair:1,average:1", |s| {
            client_sim::LinkConditions::preset(s).ok_or_else(|| s.to_string())
        })
        .unwrap(),
    );
    let report = client_sim::run(cfg).await.unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 12, "{:?}", report.errors);
    for (label, latency_ms) in [("fair", 50), ("average", 100)] {
        let on = |b: &BotReport| {
            b.conditions
                .is_some_and(|c| c.latency.as_millis() == latency_ms)
        };
        let (judged, disagreed, described) = agreement(&report, on);
        assert!(judged >= 100, "{label}: {judged} judged shots");
        assert_agreement(label, judged, disagreed, &described);
    }
    assert_eq!(view_time_rejections(&report), 0, "{report:?}");
    // No honest claim was moved for its band or a jump, and every shot fired got a verdict.
    assert_eq!((stats.game.shots_band, stats.game.shots_jumped), (0, 0));
    assert_every_shot_answered(&report, &stats);
    assert_eq!(stats.game.inputs_overflow, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtracking_150_ms_buys_at_most_five_percent_extra_hits_on_loopback_and_fair() {
    let _serial = ONE_AT_A_TIME.lock().await;
    for link in [None, Some("fair")] {
        let server = start_server(|_| {}).await;
        let mut cfg = bots(&server, 10, 20.0);
        cfg.behaviours = client_sim::Mix::one(client_sim::Behaviour::Strafe);
        cfg.link = link.and_then(client_sim::LinkConditions::preset);
        cfg.cheat = Some("backtrack:150".parse().unwrap());
        cfg.cheaters = 0.5;
        let report = client_sim::run(cfg).await.unwrap();
        let stats = server.shutdown().await;
        let label = link.unwrap_or("loopback");
        assert_eq!(report.bots_connected, 10, "{label}: {:?}", report.errors);
        let c = report.cheaters.as_ref().expect("cheaters reported");
        assert_eq!(c.bots, 5);
        assert!(c.judged >= 100, "{label}: {c:?}");
        eprintln!("{label}: {c:?}");
        // The target: extra hits at most 5% of the cheaters' shots.
        let share = c.extra_hit_share.expect("cheaters fired");
        assert!(share <= 0.05, "{label}: {c:?}");
        // Every lie lay beyond its band, so nearly every cheating shot was judged at the
        // server's estimate (the last few may still have been on their way when bots stopped).
        assert!(stats.game.shots_band >= c.judged * 9 / 10, "{label}: {c:?}");
        assert_eq!(
            c.rejected_by_reason.get("untrusted"),
            None,
            "{label}: {c:?}"
        );
        // The honest half keeps its claims and its agreement.
        assert_eq!(view_time_rejections(&report), 0, "{label}: {report:?}");
        let (judged, disagreed, described) = agreement(&report, |_| true);
        assert_agreement(label, judged, disagreed, &described);
    }
}
