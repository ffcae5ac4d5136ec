//! Writes a recording off the tick thread: the tick loop hands records to a bounded queue
//! (never waiting); a writer thread batches them into frames, flushes at least every
//! `flush_every`, and on finish writes the footer, fsyncs and renames `<name>.rwd.part` to
//! `<name>.rwd`, so a finished recording appears whole or not at all.

use super::format::{self, Frame, FrameError};
use super::{Footer, Header, Keyframe, TickRecord};
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

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the recording writer stopped unexpectedly")]
    WriterGone,
}

enum Msg {
    Tick(Box<TickRecord>),
    Keyframe(Box<Keyframe>),
    Finish,
}

/// A recording being written.
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
        let mut file = File::create(&part).map_err(io(&part))?;
        let mut bytes = format::preamble().to_vec();
        format::encode_frame(&Frame::Header(header.clone()), &mut bytes)?;
        file.write_all(&bytes).map_err(io(&part))?;
        file.flush().map_err(io(&part))?;
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            offset: bytes.len() as u64,
            part,
            path: path.clone(),
            pending: Vec::with_capacity(TICKS_PER_FRAME),
            footer: Footer::default(),
            buf: Vec::new(),
            dropped: dropped.clone(),
        };
        let flush_every = config.flush_every;
        let thread = std::thread::Builder::new()
            .name("rewind-recorder".into())
            .spawn(move || writer.run(rx, flush_every))
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

    /// Writes what is queued, the footer, fsyncs and renames; blocks until done.
    pub fn finish(self) -> Result<PathBuf, RecordError> {
        // A full queue still drains: wait for room rather than lose the finish.
        self.tx
            .send(Msg::Finish)
            .map_err(|_| RecordError::WriterGone)?;
        self.thread.join().map_err(|_| RecordError::WriterGone)?
    }
}

struct Writer {
    file: File,
    offset: u64,
    part: PathBuf,
    path: PathBuf,
    pending: Vec<TickRecord>,
    footer: Footer,
    buf: Vec<u8>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(
        mut self,
        rx: mpsc::Receiver<Msg>,
        flush_every: Duration,
    ) -> Result<PathBuf, RecordError> {
        let mut last_flush = Instant::now();
        loop {
            let wait = flush_every.saturating_sub(last_flush.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Msg::Tick(r)) => {
                    if self.footer.ticks == 0 {
                        self.footer.first_tick = r.tick;
                    }
                    self.footer.ticks += 1;
                    self.footer.last_tick = r.tick;
                    self.pending.push(*r);
                    if self.pending.len() >= TICKS_PER_FRAME {
                        self.write_ticks()?;
                    }
                }
                Ok(Msg::Keyframe(k)) => {
                    self.write_ticks()?;
                    self.footer.keyframes.push((k.tick, self.offset));
                    self.write(&Frame::Keyframe(*k))?;
                }
                Ok(Msg::Finish) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_flush.elapsed() >= flush_every {
                self.write_ticks()?;
                self.file.flush().map_err(|e| self.io(e))?;
                last_flush = Instant::now();
            }
        }
        self.write_ticks()?;
        self.footer.dropped = self.dropped.load(Relaxed);
        let footer = std::mem::take(&mut self.footer);
        self.write(&Frame::Footer(footer))?;
        self.file.flush().map_err(|e| self.io(e))?;
        self.file.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&self.part, &self.path).map_err(|e| self.io(e))?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.path)
    }

    fn io(&self, source: io::Error) -> RecordError {
        RecordError::Io {
            path: self.part.clone(),
            source,
        }
    }

    fn write_ticks(&mut self) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ticks = std::mem::take(&mut self.pending);
        self.write(&Frame::Ticks(ticks))?;
        Ok(())
    }

    fn write(&mut self, frame: &Frame) -> Result<(), RecordError> {
        self.buf.clear();
        format::encode_frame(frame, &mut self.buf)?;
        self.file.write_all(&self.buf).map_err(|e| self.io(e))?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }
}
