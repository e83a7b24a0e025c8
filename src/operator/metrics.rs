//! Prometheus metrics of the operator.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `kubexec_reconciliations_total` | counter | `controller`, `result` (`ok` or an error label) |
//! | `kubexec_reconcile_duration_seconds` | histogram | `controller` |
//! | `kubexec_session_pods_created_total` | counter | |
//! | `kubexec_session_pods_recreated_total` | counter | `reason` (`missing`, `failed`) |
//! | `kubexec_sessions` | gauge (on scrape) | `phase` |
//! | `kubexec_executions_total` | counter | `result` (`succeeded`, `failed`, `timed_out`, `oom_killed`, `error`) |
//! | `kubexec_execution_duration_seconds` | histogram (run wall time, from the runner) | |
//! | `kubexec_executions_in_flight` | gauge (runs whose exec is in progress; at most `--max-runs`) | |
//! | `kubexec_execution_queue_depth` | gauge (runs waiting for a slot under `--max-runs` or `--max-runs-per-session`) | |
//! | `kubexec_execution_queue_wait_seconds` | histogram (how long each run that had to wait waited) | |
//! | `kubexec_executions_in_flight` | gauge | |
//! | `kubexec_runner_channels_open` | gauge (runner channels open now) | |
//! | `kubexec_runner_channel_opens_total` | counter (runner channels opened) | |

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `session`, `execution` or `network-policy`.
    pub controller: &'static str,
    /// `ok` or the error's metric label.
    pub result: &'static str,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `session`, `execution` or `network-policy`.
    pub controller: &'static str,
}

/// Labels naming why a Pod was recreated.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecreateLabels {
    /// `missing` (the Pod disappeared) or `failed` (it failed or was evicted).
    pub reason: &'static str,
}

/// Labels of a finished Execution.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutionResultLabels {
    /// `succeeded` (exit 0), `failed` (non-zero exit), `timed_out`, `oom_killed`, or `error`
    /// (it could not run: missing session or secret, lost Pod, runner error).
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

fn execution_histogram() -> Histogram {
    // 5 ms .. ~5.5 min (the longest timeout is 300 s)
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 17,
    ))
}

/// All operator metrics. Cheap to share behind an `Arc`; every metric is internally atomic.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles by controller and result.
    pub reconciliations: Family<ReconcileLabels, Counter>,
    /// Reconcile wall time by controller.
    pub reconcile_duration: HistogramFamily<ControllerLabels>,
    /// Sandbox Pods created (first start, resume or replacement).
    pub pods_created: Counter,
    /// Sandbox Pods recreated after they were lost.
    pub pods_recreated: Family<RecreateLabels, Counter>,
    /// Finished Executions by result.
    pub executions: Family<ExecutionResultLabels, Counter>,
    /// Wall time of runs, as the runner measured it.
    pub execution_duration: Histogram,
    /// Runs whose exec is in progress in this process.
    pub executions_in_flight: Gauge,
    /// Runs waiting for a slot.
    pub execution_queue_depth: Gauge,
    /// How long runs that had to wait for a slot waited.
    pub execution_queue_wait: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciliations: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            pods_created: Counter::default(),
            pods_recreated: Family::default(),
            executions: Family::default(),
            execution_duration: execution_histogram(),
            executions_in_flight: Gauge::default(),
            execution_queue_depth: Gauge::default(),
            execution_queue_wait: duration_histogram(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "kubexec_reconciliations",
            "Reconciles by controller and result",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "kubexec_reconcile_duration_seconds",
            "Reconcile wall time in seconds",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "kubexec_session_pods_created",
            "Sandbox Pods created",
            metrics.pods_created.clone(),
        );
        registry.register(
            "kubexec_session_pods_recreated",
            "Sandbox Pods recreated after being lost, by reason",
            metrics.pods_recreated.clone(),
        );
        registry.register(
            "kubexec_executions",
            "Finished Executions by result",
            metrics.executions.clone(),
        );
        registry.register(
            "kubexec_execution_duration_seconds",
            "Wall time of execution runs in seconds, as measured by the runner",
            metrics.execution_duration.clone(),
        );
        registry.register(
            "kubexec_executions_in_flight",
            "Execution runs in progress in this operator",
            metrics.executions_in_flight.clone(),
        );
        registry.register(
            "kubexec_execution_queue_depth",
            "Execution runs waiting for a slot (--max-runs, --max-runs-per-session)",
            metrics.execution_queue_depth.clone(),
        );
        registry.register(
            "kubexec_execution_queue_wait_seconds",
            "How long execution runs that had to wait for a slot waited, in seconds",
            metrics.execution_queue_wait.clone(),
        );
        metrics
    }

    /// Starts timing a reconcile; call [`ReconcileTimer::finish`] with its outcome.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }
}

/// Registers the runner channel pool's counters (with `--exec-transport channel`).
pub fn register_channels(registry: &mut Registry, channels: &crate::sandbox::ChannelMetrics) {
    registry.register(
        "kubexec_runner_channels_open",
        "Runner channels (one long-lived exec per sandbox) open now",
        channels.open.clone(),
    );
    registry.register(
        "kubexec_runner_channel_opens",
        "Runner channels opened",
        channels.opens.clone(),
    );
}

/// Times one reconcile.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the duration and the result (`ok` or an error label).
    pub fn finish(self, result: &'static str) {
        let controller = self.controller;
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .reconciliations
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
    }
}
