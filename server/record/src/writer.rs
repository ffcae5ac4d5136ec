//! Writing recordings.
//!
//! [`RecordWriter`] frames a match onto any `Write`: the preamble and header first, tick
//! records batched into frames, keyframes, and the footer at the end. It does no I/O of its
//! own beyond `write_all` and `flush`, so a test can write into a `Vec<u8>`.
//!
//! [`Recorder`] is what a server uses: the tick loop hands records to a bounded queue (never
//! waiting); a writer thread feeds them to a [`RecordWriter`] over `<name>.rwd.part`, flushes
//! at least every `flush_every`, and on finish writes the footer, fsyncs and renames the file
//! to `<name>.rwd`, so a finished recording appears whole or not at all.

use crate::format::{self, Frame, FrameError};
use crate::{Footer, Header, Keyframe, TickRecord};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Ticks per frame at most (one second at 64 Hz).
const TICKS_PER_FRAME: usize = 64;

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("writing the recording: {0}")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the recording writer stopped unexpectedly")]
    WriterGone,
}

/// Frames a recording onto `W`.
pub struct RecordWriter<W: Write> {
    out: W,
    /// Bytes written so far (the offset of the next frame).
    offset: u64,
    pending: Vec<TickRecord>,
    footer: Footer,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// Writes the preamble and the header.
    pub fn new(mut out: W, header: &Header) -> Result<RecordWriter<W>, RecordError> {
        let mut buf = format::preamble().to_vec();
        format::encode_frame(&Frame::Header(header.clone()), &mut buf)?;
        out.write_all(&buf).map_err(RecordError::Write)?;
        Ok(RecordWriter {
            out,
            offset: buf.len() as u64,
            pending: Vec::with_capacity(TICKS_PER_FRAME),
            footer: Footer::default(),
            buf,
        })
    }

    /// Adds one tick record; a frame is written every [`TICKS_PER_FRAME`] ticks.
    pub fn tick(&mut self, record: TickRecord) -> Result<(), RecordError> {
        if self.footer.ticks == 0 {
            self.footer.first_tick = record.tick;
        }
        self.footer.ticks += 1;
        self.footer.last_tick = record.tick;
        self.pending.push(record);
        if self.pending.len() >= TICKS_PER_FRAME {
            self.write_ticks()?;
        }
        Ok(())
    }

    /// Writes the pending ticks, then the keyframe.
    pub fn keyframe(&mut self, keyframe: Keyframe) -> Result<(), RecordError> {
        self.write_ticks()?;
        self.footer.keyframes.push((keyframe.tick, self.offset));
        self.write(&Frame::Keyframe(keyframe))
    }

    /// Writes the pending ticks and flushes `W`.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.write_ticks()?;
        self.out.flush().map_err(RecordError::Write)
    }

    /// Writes the pending ticks and the footer (with `dropped` records the caller lost) and
    /// returns `W`, flushed.
    pub fn finish(mut self, dropped: u64) -> Result<W, RecordError> {
        self.write_ticks()?;
        self.footer.dropped = dropped;
        let footer = std::mem::take(&mut self.footer);
        self.write(&Frame::Footer(footer))?;
        self.out.flush().map_err(RecordError::Write)?;
        Ok(self.out)
    }

    fn write_ticks(&mut self) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ticks = std::mem::take(&mut self.pending);
        self.write(&Frame::Ticks(ticks))?;
        self.pending.reserve(TICKS_PER_FRAME);
        Ok(())
    }

    fn write(&mut self, frame: &Frame) -> Result<(), RecordError> {
        self.buf.clear();
        format::encode_frame(frame, &mut self.buf)?;
        self.out.write_all(&self.buf).map_err(RecordError::Write)?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }
}

/// Recorder settings. Every field documents its default and its trade-off.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// Folder for recordings. Created if missing.
    pub dir: PathBuf,
    /// Longest time between two flushes to the OS. Default 1 s: a crash loses at most this.
    pub flush_every: Duration,
    /// Records queued for the writer. Default 4096 (a minute at 64 Hz); a full queue drops
    /// records (counted, and the replay stops at the gap) rather than stall the tick.
    pub queue: usize,
}

impl RecorderConfig {
    pub fn new(dir: impl Into<PathBuf>) -> RecorderConfig {
        RecorderConfig {
            dir: dir.into(),
            flush_every: Duration::from_secs(1),
            queue: 4096,
        }
    }
}

enum Msg {
    Tick(Box<TickRecord>),
    Keyframe(Box<Keyframe>),
    Finish,
}

/// A recording being written to a file by its own thread.
pub struct Recorder {
    tx: SyncSender<Msg>,
    thread: JoinHandle<Result<PathBuf, RecordError>>,
    dropped: Arc<AtomicU64>,
    path: PathBuf,
}

impl Recorder {
    /// Creates `<dir>/<name>.rwd.part`, writes the preamble and the header, and starts the
    /// writer thread.
    pub fn create(
        config: &RecorderConfig,
        name: &str,
        header: &Header,
    ) -> Result<Recorder, RecordError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Io { path, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let path = config.dir.join(format!("{name}.rwd"));
        let part = config.dir.join(format!("{name}.rwd.part"));
        let file = File::create(&part).map_err(io(&part))?;
        let started = RecordWriter::new(file, header).and_then(|mut w| w.flush().map(|()| w));
        let writer = match started {
            Ok(w) => w,
            Err(e) => {
                // A disk full from the start leaves no empty `.part` file behind.
                let _ = std::fs::remove_file(&part);
                return Err(at(&part, e));
            }
        };
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let job = FileJob {
            writer,
            part,
            path: path.clone(),
            dropped: dropped.clone(),
        };
        let flush_every = config.flush_every;
        let thread = std::thread::Builder::new()
            .name("rewind-recorder".into())
            .spawn(move || job.run(rx, flush_every))
            .map_err(io(&path))?;
        Ok(Recorder {
            tx,
            thread,
            dropped,
            path,
        })
    }

    /// Where the finished recording will be.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a tick record; never blocks. `false` if the queue was full (the record is lost).
    pub fn tick(&self, record: TickRecord) -> bool {
        self.send(Msg::Tick(Box::new(record)))
    }

    /// Queues a keyframe; never blocks.
    pub fn keyframe(&self, keyframe: Keyframe) -> bool {
        self.send(Msg::Keyframe(Box::new(keyframe)))
    }

    fn send(&self, msg: Msg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Writes what is queued, the footer, fsyncs and renames; blocks until done. When the
    /// writer stopped early (a write failed), its error says why: the cause, not only that it
    /// stopped.
    pub fn finish(self) -> Result<PathBuf, RecordError> {
        // A full queue still drains: wait for room rather than lose the finish. If the writer
        // is gone, the send fails and the join returns what stopped it.
        let _ = self.tx.send(Msg::Finish);
        self.thread.join().map_err(|_| RecordError::WriterGone)?
    }
}

/// A write error names the file it happened to.
fn at(path: &Path, e: RecordError) -> RecordError {
    match e {
        RecordError::Write(source) => RecordError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

/// The writer thread's side of a [`Recorder`].
struct FileJob {
    writer: RecordWriter<File>,
    part: PathBuf,
    path: PathBuf,
    dropped: Arc<AtomicU64>,
}

impl FileJob {
    fn run(self, rx: mpsc::Receiver<Msg>, flush_every: Duration) -> Result<PathBuf, RecordError> {
        let part = self.part.clone();
        let dropped = self.dropped.clone();
        self.write_all(rx, flush_every).map_err(|e| {
            let e = at(&part, e);
            // Said when it happens, not only at the end of the match; what the match sends
            // from now on is counted as dropped.
            tracing::error!(error = %e, dropped = dropped.load(Relaxed), "recording stopped: a write failed");
            e
        })
    }

    fn write_all(
        mut self,
        rx: mpsc::Receiver<Msg>,
        flush_every: Duration,
    ) -> Result<PathBuf, RecordError> {
        let mut last_flush = Instant::now();
        loop {
            let wait = flush_every.saturating_sub(last_flush.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Msg::Tick(r)) => self.writer.tick(*r)?,
                Ok(Msg::Keyframe(k)) => self.writer.keyframe(*k)?,
                Ok(Msg::Finish) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_flush.elapsed() >= flush_every {
                self.writer.flush()?;
                last_flush = Instant::now();
            }
        }
        let file = self.writer.finish(self.dropped.load(Relaxed))?;
        file.sync_all().map_err(RecordError::Write)?;
        std::fs::rename(&self.part, &self.path).map_err(RecordError::Write)?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Recording;
    use rewind_match::MatchConfig;
    use rewind_shared::Tick;

    #[test]
    fn a_recording_written_into_memory_reads_back() {
        let header = Header::new(
            "map".into(),
            "hitboxes".into(),
            &MatchConfig::default(),
            7,
            0,
        );
        let mut w = RecordWriter::new(Vec::new(), &header).unwrap();
        w.keyframe(Keyframe {
            tick: Tick(0),
            next_id: 1,
            next_spawn: 0,
            players: vec![],
            history: vec![],
        })
        .unwrap();
        for t in 1..=150 {
            w.tick(TickRecord {
                tick: Tick(t),
                hash: u64::from(t),
                ..TickRecord::default()
            })
            .unwrap();
        }
        let bytes = w.finish(0).unwrap();
        let rec = Recording::parse(Path::new("memory.rwd"), &bytes).unwrap();
        assert_eq!(rec.header, header);
        assert_eq!(rec.ticks.len(), 150);
        assert!(rec.damage.is_none());
        let footer = rec.footer.unwrap();
        assert_eq!((footer.first_tick, footer.last_tick), (Tick(1), Tick(150)));
        assert_eq!(footer.keyframes.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_disk_full_from_the_start_leaves_no_part_file() {
        // The `.part` file is a link to /dev/full: every write fails with "no space left".
        let dir = std::env::temp_dir().join(format!("rewind-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let part = dir.join("m.rwd.part");
        std::os::unix::fs::symlink("/dev/full", &part).unwrap();
        let header = Header::new("map".into(), "hb".into(), &MatchConfig::default(), 1, 0);
        let err = Recorder::create(&RecorderConfig::new(&dir), "m", &header)
            .err()
            .expect("no space left");
        assert!(err.to_string().contains("m.rwd.part"), "{err}");
        assert!(
            std::error::Error::source(&err).is_some_and(|s| s.to_string().contains("space")),
            "{err}"
        );
        assert!(
            std::fs::symlink_metadata(&part).is_err(),
            "the .part is gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
