//! A disk that fills and frees mid-match, for real: the recordings go to a small tmpfs, a
//! filler file takes its last byte while bots play, and is deleted a few seconds later. The
//! recording loses only the ticks it could not write, says so, and goes on in a second file
//! from the next keyframe; both files verify.
//!
//! Mounting a tmpfs needs root (these machines' CI runs as root). Elsewhere the test fails
//! saying so, unless `REWIND_NO_MOUNT=1` is set, which skips it with a message.

use rewind_record::reader::Recording;
use rewind_record::replay::Replayer;
use rewind_tests::{bots, start_server, temp_dir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = temp_dir("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir));
        }
        if std::env::var_os("REWIND_NO_MOUNT").is_some() {
            eprintln!("skipped: no tmpfs could be mounted (REWIND_NO_MOUNT is set)");
            return None;
        }
        panic!(
            "mounting a tmpfs failed: this test needs root (or set REWIND_NO_MOUNT=1 to skip it)"
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes zeros to `path` until the disk is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_and_frees_mid_match_loses_only_what_could_not_be_written() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let recordings = disk.0.join("recordings");
    let server = start_server(|c| {
        c.record_dir = Some(recordings.clone());
        c.keyframe_secs = 1;
    })
    .await;
    let play = tokio::spawn(client_sim::run(bots(&server, 4, 8.0)));
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // The disk fills up: for 2.5 s every write of the recording fails.
    let filler = disk.0.join("filler");
    let taken = fill(&filler);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Space comes back: the recording resumes at the next keyframe it can write.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let report = play.await.unwrap().unwrap();
    let stats = server.shutdown().await;
    assert_eq!(report.bots_connected, 4, "{:?}", report.errors);

    let m = &stats.matches[0];
    let first = m.recording.as_ref().expect("the first file was finished");
    assert_eq!(
        m.more_segments.len(),
        1,
        "writing resumed once, in a second file: {:?}",
        m.more_segments
    );
    let second = &m.more_segments[0];
    let error = m.recording_error.as_deref().expect("the loss is reported");
    eprintln!("filler took {taken} bytes; the report says: {error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains(&first.display().to_string()), "{error}");

    let a = Recording::open(first).unwrap();
    let b = Recording::open(second).unwrap();
    assert!(a.damage.is_none() && b.damage.is_none());
    assert_eq!((a.header.segment, b.header.segment), (1, 2));
    // Both files are whole in themselves: every tick in them replays, every keyframe matches.
    for (rec, name) in [(&a, "first"), (&b, "second")] {
        let v = Replayer::new(rec).unwrap().verify().unwrap().unwrap();
        assert_eq!(
            (v.from_tick + 1, v.to_tick),
            (
                rec.ticks.first().unwrap().tick.0,
                rec.ticks.last().unwrap().tick.0
            ),
            "the {name} file replays from its first tick to its last"
        );
    }
    // What was lost is exactly what fell between the files: the ticks after the first file's
    // last one up to the second file's keyframe, and the keyframes that could not start it.
    let last = a.ticks.last().unwrap().tick.0;
    let resumed = b.keyframes[0].tick.0;
    let every = 64;
    let keyframes_lost = (last..resumed)
        .filter(|t| t % every == 0 && !a.keyframes.iter().any(|k| k.tick.0 == *t))
        .count() as u64;
    let lost_ticks = u64::from(resumed - last);
    let footer = a.footer.as_ref().expect("the first file has its footer");
    assert!(
        lost_ticks >= 64,
        "the disk was full for more than a second: {lost_ticks} ticks"
    );
    assert_eq!(
        footer.dropped,
        lost_ticks + keyframes_lost,
        "the first file's footer counts the gap: ticks {}..={resumed} and {keyframes_lost} keyframes",
        last + 1
    );
    assert!(
        error.contains(&format!("{} records", footer.dropped)),
        "{error}"
    );
    assert_eq!(b.footer.as_ref().map(|f| f.dropped), Some(0));
    assert_eq!(
        b.ticks.first().unwrap().tick.0,
        resumed + 1,
        "the second file goes on right after its keyframe"
    );
    // The match's other ticks are all there: from the start to the end, less the gap.
    let total = m.game.ticks;
    assert_eq!(
        a.ticks.len() as u64 + b.ticks.len() as u64 + lost_ticks,
        total,
        "every tick the match ran is in a file or counted as lost"
    );
}
