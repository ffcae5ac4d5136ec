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
    /// Bytes written so far (the offset of the next frame): a failed write leaves the file's
    /// complete frames below it.
    offset: u64,
    pending: Vec<TickRecord>,
    /// What the written frames hold (a failed frame is not counted).
    footer: Footer,
    buf: Vec<u8>,
    /// Records handed to this writer that no frame holds (a write failed).
    lost: u64,
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
            lost: 0,
        })
    }

    /// Adds one tick record; a frame is written every [`TICKS_PER_FRAME`] ticks.
    pub fn tick(&mut self, record: TickRecord) -> Result<(), RecordError> {
        self.pending.push(record);
        if self.pending.len() >= TICKS_PER_FRAME {
            self.write_ticks()?;
        }
        Ok(())
    }

    /// Writes the pending ticks, then the keyframe.
    pub fn keyframe(&mut self, keyframe: Keyframe) -> Result<(), RecordError> {
        self.write_ticks()?;
        let (tick, at) = (keyframe.tick, self.offset);
        self.write(&Frame::Keyframe(keyframe))
            .inspect_err(|_| self.lost += 1)?;
        self.footer.keyframes.push((tick, at));
        Ok(())
    }

    /// Records handed to this writer that no written frame holds: a write failed.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The length of the complete frames written.
    pub fn good_len(&self) -> u64 {
        self.offset
    }

    /// The last tick a written frame holds, if any.
    pub fn last_tick(&self) -> Option<rewind_shared::Tick> {
        (self.footer.ticks > 0).then_some(self.footer.last_tick)
    }

    /// The output, for repairs after a failed write.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the pending ticks and flushes `W`.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.write_ticks()?;
        self.out.flush().map_err(RecordError::Write)
    }

    /// Writes the pending ticks and the footer (with `dropped` records the caller lost) and
    /// returns `W`, flushed.
    pub fn finish(mut self, dropped: u64) -> Result<W, RecordError> {
        self.seal(dropped)?;
        Ok(self.out)
    }

    /// Writes the pending ticks and the footer (with `dropped` records the caller lost) and
    /// flushes; nothing may follow.
    pub fn seal(&mut self, dropped: u64) -> Result<(), RecordError> {
        self.write_ticks()?;
        let footer = Footer {
            dropped,
            ..self.footer.clone()
        };
        self.write(&Frame::Footer(footer))?;
        self.out.flush().map_err(RecordError::Write)
    }

    fn write_ticks(&mut self) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ticks = std::mem::take(&mut self.pending);
        let (n, first, last) = (
            ticks.len() as u64,
            ticks[0].tick,
            ticks[ticks.len() - 1].tick,
        );
        self.write(&Frame::Ticks(ticks))
            .inspect_err(|_| self.lost += n)?;
        if self.footer.ticks == 0 {
            self.footer.first_tick = first;
        }
        self.footer.ticks += n;
        self.footer.last_tick = last;
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

/// What a finished [`Recorder`] left on disk.
#[derive(Debug)]
pub struct Finished {
    /// The recording's files in order: `<name>.rwd`, then `<name>-2.rwd`, ... when writing
    /// failed and resumed in a new segment.
    pub segments: Vec<PathBuf>,
    /// Records of the match that no file holds: the queue was full, or a write failed and the
    /// next segment had not started yet.
    pub lost: u64,
    /// The first write that failed, with its cause.
    pub failure: Option<RecordError>,
}

/// A recording being written to files by its own thread.
pub struct Recorder {
    tx: SyncSender<Msg>,
    thread: JoinHandle<Result<Finished, RecordError>>,
    dropped: Arc<AtomicU64>,
    /// Records in the queue, not yet taken by the writer.
    queued: Arc<AtomicU64>,
    path: PathBuf,
}

impl Recorder {
    /// Creates `<dir>/<name>.rwd.part` (for a header's segment 1; `<name>-<N>.rwd.part` for
    /// segment N, a match resumed after a crash), writes the preamble and the header, and
    /// starts the writer thread.
    pub fn create(
        config: &RecorderConfig,
        name: &str,
        header: &Header,
    ) -> Result<Recorder, RecordError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| RecordError::Io {
            path: config.dir.clone(),
            source,
        })?;
        let number = header.segment.max(1);
        let first = Segment::create(&config.dir, name, header, number)?;
        let path = first.path.clone();
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicU64::new(0));
        let job = FileJob {
            queued: queued.clone(),
            dir: config.dir.clone(),
            name: name.to_string(),
            header: header.clone(),
            number,
            current: Some(first),
            broken: None,
            gap: 0,
            queue_mark: 0,
            segments: Vec::new(),
            lost: 0,
            failure: None,
            dropped: dropped.clone(),
        };
        let flush_every = config.flush_every;
        let thread = std::thread::Builder::new()
            .name("rewind-recorder".into())
            .spawn(move || job.run(rx, flush_every))
            .map_err(|source| RecordError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Recorder {
            tx,
            thread,
            dropped,
            queued,
            path,
        })
    }

    /// Where the finished recording (its first segment) will be.
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
        // Counted before the send, so that the writer never takes a record not yet counted.
        self.queued.fetch_add(1, Relaxed);
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Relaxed);
                self.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Records waiting in the queue for the writer now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Relaxed)
    }

    /// Writes what is queued, the footer, fsyncs and renames; blocks until done. `Err` when
    /// the last segment could not be finished, with the cause.
    pub fn finish(self) -> Result<Finished, RecordError> {
        // A full queue still drains: wait for room rather than lose the finish.
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

/// One file of a recording.
struct Segment {
    writer: RecordWriter<File>,
    part: PathBuf,
    path: PathBuf,
}

impl Segment {
    /// `<dir>/<name>.rwd.part` (segment 1) or `<dir>/<name>-<number>.rwd.part`, with the
    /// preamble and the header written and flushed; no file is left behind when that fails.
    fn create(
        dir: &Path,
        name: &str,
        header: &Header,
        number: u32,
    ) -> Result<Segment, RecordError> {
        let stem = match number {
            1 => name.to_string(),
            n => format!("{name}-{n}"),
        };
        let path = dir.join(format!("{stem}.rwd"));
        let part = dir.join(format!("{stem}.rwd.part"));
        let file = File::create(&part).map_err(|source| RecordError::Io {
            path: part.clone(),
            source,
        })?;
        let header = Header {
            segment: number,
            ..header.clone()
        };
        match RecordWriter::new(file, &header).and_then(|mut w| w.flush().map(|()| w)) {
            Ok(writer) => Ok(Segment { writer, part, path }),
            Err(e) => {
                // A full disk leaves no empty `.part` file behind.
                let _ = std::fs::remove_file(&part);
                Err(at(&part, e))
            }
        }
    }

    /// Cuts the file back to its complete frames (a failed write may have left part of one;
    /// on a full disk that also frees the room a footer needs).
    fn cut(&mut self) {
        let len = self.writer.good_len();
        let file = self.writer.get_mut();
        let _ = file.set_len(len);
        let _ = io::Seek::seek(file, io::SeekFrom::Start(len));
    }

    /// Writes the footer, fsyncs and renames the file to its final name.
    /// On failure the file is left as `.part`, cut back to its complete frames, and the error
    /// names it.
    fn close(mut self, dropped: u64) -> Result<PathBuf, RecordError> {
        let done = self
            .writer
            .seal(dropped)
            .and_then(|()| self.writer.get_mut().sync_all().map_err(RecordError::Write))
            .and_then(|()| std::fs::rename(&self.part, &self.path).map_err(RecordError::Write));
        if let Err(e) = done {
            self.cut();
            return Err(at(&self.part, e));
        }
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.path)
    }
}

/// The writer thread's side of a [`Recorder`]. When a write fails (a full disk) the cause is
/// logged at once, the file is cut back to its complete frames, and records are counted as
/// lost until a keyframe arrives that a new segment can start with; the broken segment is
/// then finished with a footer that counts the gap.
struct FileJob {
    dir: PathBuf,
    name: String,
    header: Header,
    /// The newest segment's number.
    number: u32,
    /// The segment being written, `None` while writing is broken.
    current: Option<Segment>,
    /// The segment a write failed in, waiting for its footer.
    broken: Option<Segment>,
    /// Records lost since the broken segment's last complete frame.
    gap: u64,
    /// The queue's drop count when the current segment started.
    queue_mark: u64,
    segments: Vec<PathBuf>,
    /// Records lost to write failures so far.
    lost: u64,
    failure: Option<RecordError>,
    dropped: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
}

impl FileJob {
    fn run(
        mut self,
        rx: mpsc::Receiver<Msg>,
        flush_every: Duration,
    ) -> Result<Finished, RecordError> {
        let mut last_flush = Instant::now();
        loop {
            let wait = flush_every.saturating_sub(last_flush.elapsed());
            let msg = rx.recv_timeout(wait);
            if matches!(msg, Ok(Msg::Tick(_) | Msg::Keyframe(_))) {
                self.queued.fetch_sub(1, Relaxed);
            }
            match msg {
                Ok(Msg::Tick(r)) => match &mut self.current {
                    Some(seg) => {
                        if let Err(e) = seg.writer.tick(*r) {
                            self.broke(e);
                        }
                    }
                    None => self.gap += 1,
                },
                Ok(Msg::Keyframe(k)) => match &mut self.current {
                    Some(seg) => {
                        if let Err(e) = seg.writer.keyframe(*k) {
                            self.broke(e);
                        }
                    }
                    None => self.resume(*k),
                },
                Ok(Msg::Finish) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_flush.elapsed() >= flush_every {
                if let Some(seg) = &mut self.current {
                    if let Err(e) = seg.writer.flush() {
                        self.broke(e);
                    }
                }
                last_flush = Instant::now();
            }
        }
        self.finish()
    }

    /// Records lost to the queue since the current segment started.
    fn queue_drops(&mut self) -> u64 {
        let now = self.dropped.load(Relaxed);
        let n = now.saturating_sub(self.queue_mark);
        self.queue_mark = now;
        n
    }

    /// A write failed: said at once, with its cause; the file is cut back to its complete
    /// frames and kept for its footer.
    fn broke(&mut self, e: RecordError) {
        let Some(mut seg) = self.current.take() else {
            return;
        };
        let e = at(&seg.part, e);
        self.gap = seg.writer.lost();
        tracing::error!(
            error = %e,
            segment = self.number,
            last_tick_written = seg.writer.last_tick().map(|t| t.0),
            "recording write failed; the match's records are counted as lost until a new segment can start at the next keyframe"
        );
        seg.cut();
        if let Some(old) = self.broken.replace(seg) {
            tracing::warn!(file = %old.part.display(), "an earlier broken segment is left without a footer");
        }
        self.failure.get_or_insert(e);
    }

    /// While broken: a keyframe starts a new segment if the disk takes it; the broken one is
    /// then finished, its footer counting the gap.
    fn resume(&mut self, keyframe: Keyframe) {
        let tick = keyframe.tick;
        let number = self.number + 1;
        let started =
            Segment::create(&self.dir, &self.name, &self.header, number).and_then(|mut seg| {
                match seg
                    .writer
                    .keyframe(keyframe)
                    .and_then(|()| seg.writer.flush())
                {
                    Ok(()) => Ok(seg),
                    Err(e) => {
                        let _ = std::fs::remove_file(&seg.part);
                        Err(e)
                    }
                }
            });
        let seg = match started {
            Ok(seg) => seg,
            Err(e) => {
                self.gap += 1;
                tracing::debug!(error = %e, "the recording cannot resume yet");
                return;
            }
        };
        self.number = number;
        let gap = self.gap + self.queue_drops();
        if let Some(broken) = self.broken.take() {
            match broken.close(gap) {
                Ok(path) => self.segments.push(path),
                Err(e) => tracing::warn!(error = %e, "a broken segment is left without a footer"),
            }
        }
        tracing::warn!(
            segment = number,
            tick = tick.0,
            lost = self.gap,
            "recording resumed in a new segment"
        );
        self.lost += self.gap;
        self.gap = 0;
        self.current = Some(seg);
    }

    fn finish(mut self) -> Result<Finished, RecordError> {
        let queue = self.queue_drops();
        let mut last_error = None;
        if let Some(broken) = self.broken.take() {
            // Writing never resumed: the broken segment's footer counts everything after it.
            self.lost += self.gap;
            match broken.close(self.gap + queue) {
                Ok(path) => self.segments.push(path),
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(seg) = self.current.take() {
            match seg.close(queue) {
                Ok(path) => self.segments.push(path),
                Err(e) => last_error = Some(e),
            }
        }
        let lost = self.lost + self.dropped.load(Relaxed);
        match last_error {
            Some(e) => {
                tracing::error!(error = %e, lost, "the recording could not be finished");
                Err(e)
            }
            None => Ok(Finished {
                segments: self.segments,
                lost,
                failure: self.failure,
            }),
        }
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
