//! Prometheus metrics (`--metrics ADDR`): the process's counters, read at each scrape, and
//! what the matches report as they tick: tick durations per match, inputs applied and refused
//! by reason, shots by verdict and rejection reason, lag-compensation clamps, the recorders'
//! queues. `docs/metrics.md` lists every series.
//!
//! Served as OpenMetrics text on `GET /metrics` by a small HTTP/1 server (hyper): at most
//! [`MAX_SCRAPERS`] connections at once, each given [`SCRAPE_LIMIT`] to finish.

use crate::stats::Counters;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Scrapes served at once; more connections are closed at once.
pub const MAX_SCRAPERS: usize = 16;
/// The longest a scrape's connection may stay open.
pub const SCRAPE_LIMIT: Duration = Duration::from_secs(10);
/// What the endpoint answers with.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A match, as a label (`match_id="3"`: its id in this process).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MatchLabel {
    pub match_id: u32,
}

/// A reason or a kind, as a label (`reason="too_old"`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// A shot's verdict, as a label (`verdict="headshot"`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Verdict {
    pub verdict: &'static str,
}

type TickHistograms = Family<MatchLabel, Histogram, fn() -> Histogram>;

/// Every series the server exports.
pub struct Metrics {
    registry: Registry,
    /// Time each tick took (its work, not the wait for the next), seconds, per match.
    pub tick_duration: TickHistograms,
    /// Records waiting for each match's recording writer.
    pub recorder_queue: Family<MatchLabel, Gauge>,
    pub inputs_applied: Counter,
    /// Refused inputs (datagrams for the slot and the protocol's rules), by reason.
    pub inputs_refused: Family<Reason, Counter>,
    /// Shots by verdict: hit, headshot, miss, rejected.
    pub shots: Family<Verdict, Counter>,
    pub shots_rejected: Family<Reason, Counter>,
    /// Shots judged at another instant than claimed, by why.
    pub clamps: Family<Reason, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn tick_histogram() -> Histogram {
    // 50 µs to about 100 ms: a 64 Hz tick has 15.6 ms.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 12))
}

impl Metrics {
    pub fn new(counters: Arc<Counters>) -> Metrics {
        let mut registry = Registry::default();
        let tick_duration: TickHistograms = Family::new_with_constructor(tick_histogram);
        registry.register_with_unit(
            "rewind_tick_duration",
            "Time a match's tick took (its work, not the wait for the next)",
            Unit::Seconds,
            tick_duration.clone(),
        );
        let recorder_queue = Family::<MatchLabel, Gauge>::default();
        registry.register(
            "rewind_recorder_queue_depth",
            "Records waiting for the match's recording writer",
            recorder_queue.clone(),
        );
        let inputs_applied = Counter::default();
        registry.register(
            "rewind_inputs_applied",
            "Player inputs applied by the matches",
            inputs_applied.clone(),
        );
        let inputs_refused = Family::<Reason, Counter>::default();
        registry.register(
            "rewind_inputs_refused",
            "Player input refused, by reason (inputs for buffer_full, datagrams otherwise)",
            inputs_refused.clone(),
        );
        let shots = Family::<Verdict, Counter>::default();
        registry.register(
            "rewind_shots",
            "Shots by verdict (hit, headshot, miss, rejected)",
            shots.clone(),
        );
        let shots_rejected = Family::<Reason, Counter>::default();
        registry.register(
            "rewind_shots_rejected",
            "Shots not judged, by reason",
            shots_rejected.clone(),
        );
        let clamps = Family::<Reason, Counter>::default();
        registry.register(
            "rewind_lag_compensation_clamps",
            "Shots judged at another instant than their claim, by why (band, jump, window, history)",
            clamps.clone(),
        );
        registry.register_collector(Box::new(Process(counters)));
        Metrics {
            registry,
            tick_duration,
            recorder_queue,
            inputs_applied,
            inputs_refused,
            shots,
            shots_rejected,
            clamps,
        }
    }

    /// Every series, as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            debug!(error = %e, "metrics could not be encoded");
        }
        out
    }

    /// A match ended: its series go.
    pub fn forget_match(&self, id: u32) {
        let label = MatchLabel { match_id: id };
        self.tick_duration.remove(&label);
        self.recorder_queue.remove(&label);
    }
}

/// The process's counters ([`Counters`]), read at each scrape.
#[derive(Debug)]
struct Process(Arc<Counters>);

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.read();
        // Counters; the byte counts carry their unit (`_bytes` in the name).
        let counters: [(&str, &str, u64, Option<Unit>); 22] = [
            (
                "rewind_connections",
                "QUIC connections that completed the handshake",
                s.connections,
                None,
            ),
            (
                "rewind_handshakes_failed",
                "Connections that failed or timed out before joining",
                s.handshakes_failed,
                None,
            ),
            (
                "rewind_version_mismatches",
                "Hellos with a protocol version this server does not speak",
                s.version_mismatches,
                None,
            ),
            (
                "rewind_peer_errors",
                "Connections closed for a malformed frame or datagram or a protocol violation",
                s.peer_errors,
                None,
            ),
            (
                "rewind_joins_refused",
                "Joins refused (full, bad name, refused token)",
                s.joins_refused,
                None,
            ),
            (
                "rewind_tokens_refused",
                "Connect tokens refused (missing, forged, expired, another match)",
                s.tokens_refused,
                None,
            ),
            (
                "rewind_players_dropped",
                "Players whose connection dropped with their place kept",
                s.dropped_players,
                None,
            ),
            (
                "rewind_reconnects",
                "Players back on a new connection as the player they were",
                s.reconnects,
                None,
            ),
            (
                "rewind_matches_opened",
                "Matches opened",
                s.matches_opened,
                None,
            ),
            (
                "rewind_matches_ended",
                "Matches ended",
                s.matches_ended,
                None,
            ),
            (
                "rewind_input_datagrams",
                "Input datagrams received and decoded",
                s.input_datagrams,
                None,
            ),
            (
                "rewind_input_datagrams_dropped",
                "Input datagrams dropped because the sender's input slot was full",
                s.input_datagrams_dropped,
                None,
            ),
            (
                "rewind_connections_too_slow",
                "Connections closed because their reliable queue overflowed",
                s.too_slow,
                None,
            ),
            ("rewind_ticks", "Ticks run, every match", s.ticks, None),
            (
                "rewind_tick_overruns",
                "Ticks that ended after the next tick's deadline",
                s.tick_overruns,
                None,
            ),
            (
                "rewind_ticks_skipped",
                "Ticks given up after a match fell far behind",
                s.ticks_skipped,
                None,
            ),
            (
                "rewind_snapshots_sent",
                "Snapshot datagrams handed to QUIC",
                s.datagrams_sent,
                None,
            ),
            (
                "rewind_recording_records_dropped",
                "Recording records dropped (the writer's queue was full)",
                s.records_dropped,
                None,
            ),
            (
                "rewind_snapshot_send_failures",
                "Snapshot datagrams QUIC refused",
                s.datagram_send_failed,
                None,
            ),
            (
                "rewind_udp_received",
                "UDP payload received (QUIC packets)",
                s.udp_bytes_received,
                Some(Unit::Bytes),
            ),
            (
                "rewind_udp_sent",
                "UDP payload the kernel took to send",
                s.udp_bytes_sent,
                Some(Unit::Bytes),
            ),
            (
                "rewind_snapshot_payload_sent",
                "Snapshot payload handed to QUIC",
                s.datagram_bytes_sent,
                Some(Unit::Bytes),
            ),
        ];
        for (name, help, value, unit) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, unit.as_ref(), c.metric_type())?)?;
        }
        let gauges: [(&str, &str, u64); 2] = [
            (
                "rewind_players",
                "Players in a match now (away ones included)",
                s.players,
            ),
            ("rewind_matches", "Matches running now", s.matches),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "a metrics connection failed");
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("too many metrics scrapers at once; one closed");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = respond(&metrics, &req);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(SCRAPE_LIMIT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(SCRAPE_LIMIT, conn).await {
                debug!(error = %e, "a metrics connection failed");
            }
            drop(slot);
        });
    }
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let answer = |status, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = kind.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => answer(StatusCode::OK, CONTENT_TYPE, metrics.render()),
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics is served here\n".into(),
        ),
    }
}
