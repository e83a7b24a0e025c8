//! Prometheus metrics of the operator.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `kubexec_reconciliations_total` | counter | `controller`, `result` (`ok` or an error label) |
//! | `kubexec_reconcile_duration_seconds` | histogram | `controller` |
//! | `kubexec_session_pods_created_total` | counter | |
//! | `kubexec_session_pods_recreated_total` | counter | `reason` (`missing`, `failed`) |
//! | `kubexec_sessions` | gauge (on scrape) | `phase` |

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `session` (later also `execution`).
    pub controller: &'static str,
    /// `ok` or the error's metric label.
    pub result: &'static str,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `session` (later also `execution`).
    pub controller: &'static str,
}

/// Labels naming why a Pod was recreated.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecreateLabels {
    /// `missing` (the Pod disappeared) or `failed` (it failed or was evicted).
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciliations: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            pods_created: Counter::default(),
            pods_recreated: Family::default(),
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

/// Renders a registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
