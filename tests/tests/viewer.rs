//! The browser replay viewer in headless Chromium: a real match of bots over QUIC (two of them
//! named to break out of HTML) is recorded, its page is written, and `tests/browser/viewer.mjs`
//! drives Debian's Chromium through playwright-core over it: the page opens with no console
//! error and no network request; stepping to a tick shows every player where
//! `review world TICK --json` has them; clicking a shot in the list shows the verdict, view
//! times, reasons and rewound hitboxes `review shot N --json` gives; the hostile names are text.
//! Screenshots go to `target/viewer-screenshots/`.
//!
//! Needs Node.js, `/usr/bin/chromium` (or `CHROMIUM`) and `tests/browser/node_modules`:
//! `tests/browser/setup` installs them. `REWIND_NO_BROWSER=1` skips the browser part.

use rewind_record::reader::Recording;
use rewind_record::{review, viewer};
use rewind_shared::Tick;
use rewind_tests::{bots, start_server, temp_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Names that are markup if a page ever pastes them in as HTML (with the bot's index after).
const HOSTILE: [&str; 2] = ["<img src=x onerror=pwned=1>", "</script><b>"];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// What the browser part needs, or why it cannot run.
fn browser_ready() -> Result<(), String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node").arg("--version").output();
    let missing = [
        (node.is_err(), "node"),
        (!Path::new(&chromium).exists(), "chromium"),
        (
            !browser_dir().join("node_modules/playwright-core").exists(),
            "playwright-core",
        ),
    ];
    let missing: Vec<&str> = missing.iter().filter(|m| m.0).map(|m| m.1).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the browser test needs {}: run tests/browser/setup (it installs Node.js, Debian's chromium and playwright-core), or set REWIND_NO_BROWSER=1 to skip it",
            missing.join(", ")
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_page_shows_in_chromium_what_review_says() {
    let dir = temp_dir("viewer");
    let server = start_server(|c| {
        c.record_dir = Some(dir.clone());
        c.keyframe_secs = 1;
    })
    .await;
    let mut first = bots(&server, 3, 5.0);
    first.name_prefix = HOSTILE[0].into();
    let mut second = bots(&server, 2, 5.0);
    second.name_prefix = HOSTILE[1].into();
    second.player_base = first.player_base.wrapping_add(1000);
    let (a, b) = tokio::join!(client_sim::run(first), client_sim::run(second));
    let stats = server.shutdown().await;
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.bots_connected + b.bots_connected,
        5,
        "{:?} {:?}",
        a.errors,
        b.errors
    );
    let path = stats
        .recordings()
        .next()
        .expect("a recording")
        .to_path_buf();
    let rec = Recording::open(&path).unwrap();

    let page = viewer::page(&rec, "viewer test", None).unwrap();
    let r = &page.report;
    assert_eq!(r.replay_problem, None);
    assert_eq!(r.shots as u64, stats.game.shots);
    assert!(r.shots > 0, "the bots fired");
    assert_eq!(r.explained, r.shots, "every shot explained");
    assert_eq!(r.players, 5);
    // The names are in the page only inside JSON strings, escaped: nothing closes the data's
    // script element or opens a tag.
    for name in HOSTILE {
        assert!(!page.html.contains(name), "{name} is in the page as it is");
    }
    assert_eq!(
        page.html.matches("</script>").count(),
        3,
        "the page's own three"
    );

    // A file cut short still gives a page, of its readable part, that says it is damaged.
    let bytes = std::fs::read(&path).unwrap();
    let cut = Recording::parse(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let part = viewer::page(&cut, "cut", None).unwrap();
    assert!(part.report.ticks < r.ticks && part.report.ticks > 1);
    assert!(
        part.html.contains("\"damage\":\""),
        "the page carries the damage"
    );

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/viewer-screenshots");

    // The oracle: what the review library (`review ... --json`) says.
    let summary = review::summary(&rec);
    let hostile: Vec<String> = summary
        .players
        .iter()
        .map(|p| p.name.clone())
        .filter(|n| HOSTILE.iter().any(|h| n.starts_with(h)))
        .collect();
    assert_eq!(hostile.len(), 5);
    let shots = review::shots(&rec);
    let mut chosen: Vec<usize> = [
        shots.iter().find(|s| s.verdict == "headshot"),
        shots.iter().find(|s| s.verdict.starts_with("hit")),
        shots.iter().find(|s| s.verdict == "miss"),
        shots.iter().find(|s| s.verdict.starts_with("rejected")),
        shots.last(),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.index)
    .collect();
    chosen.dedup();
    assert!(shots.iter().any(|s| s.target.is_some()), "a hit to look at");
    let first_tick = rec.keyframes[0].tick.0;
    let last_tick = rec.last_tick().unwrap().0;
    let mid = first_tick + (last_tick - first_tick) / 2;
    // Everyone is in the match at `mid` (the browser looks for every name there).
    let everyone = review::world_at(&rec, Tick(mid)).unwrap().players.len();
    assert_eq!(everyone, 5, "all five players at tick {mid}");
    let mut ticks = vec![first_tick, first_tick + 1, mid, last_tick];
    ticks.extend(chosen.iter().map(|i| shots[*i].tick));
    let whole = oracle(&rec, &ticks, mid, &chosen, &hostile);

    // A window of the match, from the middle: its shots keep their indexes in the file.
    let start = rec.keyframe_before(Tick(mid)).unwrap().tick.0;
    let window = viewer::page(&rec, "window", Some((Tick(mid), Tick(last_tick)))).unwrap();
    let in_window: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|i| shots[*i].tick > start)
        .collect();
    assert!(
        in_window.iter().any(|i| *i >= window.report.listed),
        "indexes beyond the rows"
    );
    let window_ticks = [mid, last_tick];
    let part = oracle(&rec, &window_ticks, mid, &in_window, &hostile);
    let _ = std::fs::remove_dir_all(&dir);

    let pages = [
        ("match", page.html, whole, ticks.len(), chosen.len()),
        (
            "window",
            window.html,
            part,
            window_ticks.len(),
            in_window.len(),
        ),
    ];
    for (name, html, oracle, ticks, shots) in pages {
        let out = out.join(name);
        std::fs::create_dir_all(&out).unwrap();
        let page = out.join(format!("{name}.html"));
        std::fs::write(&page, html).unwrap();
        let oracle_path = out.join("oracle.json");
        std::fs::write(&oracle_path, oracle.to_string()).unwrap();
        if std::env::var_os("REWIND_NO_BROWSER").is_some() {
            eprintln!("REWIND_NO_BROWSER is set: the page was written and checked, not opened");
            continue;
        }
        browser_ready().unwrap_or_else(|why| panic!("{why}"));
        let run = Command::new("node")
            .arg(browser_dir().join("viewer.mjs"))
            .arg("check")
            .arg(&page)
            .arg(&oracle_path)
            .arg(&out)
            .output()
            .expect("node runs");
        let said = String::from_utf8_lossy(&run.stdout);
        eprintln!("{name}: {said}{}", String::from_utf8_lossy(&run.stderr));
        assert!(
            run.status.success(),
            "the browser checks of {name} failed: {said}"
        );
        let result: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
        assert_eq!(result["ticks"], ticks);
        assert_eq!(result["shots"], shots);
        assert!(result["hitboxes"].as_u64().unwrap() >= 1, "{result}");
        assert_eq!(result["requests"], 0);
        assert_eq!(result["console"], 0);
    }
}

/// What the review library (`review FILE world TICK --json`, `review FILE shot N --json`)
/// says of those ticks and shots, and of one tick step from `step`.
fn oracle(
    rec: &Recording,
    ticks: &[u32],
    step: u32,
    shots: &[usize],
    hostile: &[String],
) -> serde_json::Value {
    let world = |t: u32| serde_json::to_value(review::world_at(rec, Tick(t)).unwrap()).unwrap();
    serde_json::json!({
        "worlds": ticks.iter().map(|t| world(*t)).collect::<Vec<_>>(),
        "step": [world(step), world(step + 1)],
        "shots": shots
            .iter()
            .map(|i| serde_json::to_value(review::explain(rec, *i).unwrap()).unwrap())
            .collect::<Vec<_>>(),
        "hostile_names": hostile,
    })
}
