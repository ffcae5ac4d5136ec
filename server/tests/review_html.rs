//! `rewind-server review FILE html`: the real binary writes the viewer page of a recorded
//! match (the fuzz seed: two seconds of a real demo match) and says what went into it; a page
//! it cannot write is a one-line error.

use std::path::Path;
use std::process::Command;

fn seed() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/recording/demo-2s.rwd"
    ))
}

/// `rewind-server review SEED html ARGS... --out OUT`.
fn review_html(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewind-server"))
        .arg("review")
        .arg(seed())
        .arg("html")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// The JSON report of a run that succeeded.
fn reported(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    said["report"].clone()
}

#[test]
fn review_html_writes_a_self_contained_page_and_reports_it() {
    let dir = std::env::temp_dir().join(format!("rewind-review-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("match.html");
    let report = reported(&review_html(&["--json"], &page));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(report["html_bytes"], html.len());
    assert!(report["shots"].as_u64().unwrap() > 0);
    assert_eq!(report["explained"], report["shots"]);
    assert!(report["replay_problem"].is_null());
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Nothing to fetch: no address of any kind outside the data.
    for outside in ["http:", "https:", "src=", "href="] {
        assert!(!html.contains(outside), "the page refers to {outside}");
    }

    // A window of the match: from the keyframe at or before tick 60 to tick 120, with the
    // shots of those ticks under their indexes in the file.
    let part = reported(&review_html(
        &["--json", "--from", "60", "--to", "120"],
        &page,
    ));
    assert!(part["first_tick"].as_u64().unwrap() <= 60);
    assert_eq!(part["last_tick"], 120);
    assert!(part["ticks"].as_u64().unwrap() < report["ticks"].as_u64().unwrap());
    assert_eq!(part["shots"], report["shots"], "the file's shots");
    assert!(part["listed"].as_u64().unwrap() < report["shots"].as_u64().unwrap());

    let bad = review_html(&[], &dir.join("no-such-folder/match.html"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("cannot write"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
