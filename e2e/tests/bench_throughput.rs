//! Benchmark (not a test): open-loop throughput of REST `execute`, with the cost of each
//! execution, for both exec transports of the operator in one run. Prints its numbers and
//! writes `docs/benchmarks/throughput.csv`, `docs/benchmarks/latency.csv`,
//! `docs/benchmarks/throughput.svg` (throughput against latency) and
//! `docs/benchmarks/throughput.md` (the tables); asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_throughput -- --nocapture   (or e2e/bench)
//!
//! For each transport (`KUBEXEC_EXEC_TRANSPORT=exec`, then `=channel`; the operator is
//! restarted with it):
//! - Poisson arrivals of `execute` of `true` at each rate, spread over the sessions, each rate
//!   for a fixed time; the achieved rate, p50/p95/p99 (from each request's planned send time,
//!   so a slow answer never hides the requests queued behind it) and the errors. A rate that
//!   the system cannot keep up with (under 80 % achieved) ends the ladder for that transport.
//! - CPU milliseconds per execution: node-wide (`/proc/stat`), and per process from
//!   `/proc/<pid>/stat` (`utime + stime + cutime + cstime`, so children reaped in the window,
//!   such as `runc` under the containerd shim, count for their parent), minus what the same
//!   processes spend while idle. Other helpers' compilers on a shared machine are counted
//!   apart ("builds"), and the node-wide figure is also given without them.
//! - apiserver writes per execution, from `apiserver_request_total` (verbs POST, PUT, PATCH,
//!   DELETE, APPLY) by resource, minus the idle rate; each step waits for the TTL deletes of
//!   its Executions (the api runs with `--execution-ttl 5`).
//! - Closed-loop REST `execute` of `true`, the first SSE stdout byte of `echo x`, and
//!   `kubectl apply` of an Execution until Complete against a raw `kubectl exec` of `true`.
//!
//! Knobs (environment): `KUBEXEC_BENCH_STEP_SECS` (30), `KUBEXEC_BENCH_RATES` (25,50,100,150),
//! `KUBEXEC_BENCH_SESSIONS` (10), `KUBEXEC_BENCH_IDLE_SECS` (15), `KUBEXEC_BENCH_ROUNDS` (40),
//! `KUBEXEC_BENCH_TRANSPORTS` (exec,channel), `KUBEXEC_BENCH_OUT` (docs/benchmarks).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use kube::{
    api::ListParams,
    runtime::{watcher, WatchStreamExt},
    Api,
};
use kubexec::crd::{Execution, ExecutionPhase, Session};
use kubexec_e2e::{
    api::{ApiServer, Http},
    repo_root, TestNs,
};
use serde_json::json;
use tokio::sync::Notify;

/// Execution TTL of the api under test: short, so a step's deletes fall in its window.
const EXECUTION_TTL: u64 = 5;
/// A request that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a step may take to drain (its Executions deleted) before it is measured anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

struct Knobs {
    step: Duration,
    rates: Vec<f64>,
    sessions: usize,
    idle: Duration,
    rounds: usize,
    transports: Vec<String>,
    out: PathBuf,
}

impl Knobs {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        Self {
            step: Duration::from_secs(number("KUBEXEC_BENCH_STEP_SECS", 30)),
            rates: var("KUBEXEC_BENCH_RATES")
                .unwrap_or_else(|| "25,50,100,150".into())
                .split(',')
                .filter_map(|r| r.trim().parse().ok())
                .collect(),
            sessions: number("KUBEXEC_BENCH_SESSIONS", 10) as usize,
            idle: Duration::from_secs(number("KUBEXEC_BENCH_IDLE_SECS", 15)),
            rounds: number("KUBEXEC_BENCH_ROUNDS", 40) as usize,
            transports: var("KUBEXEC_BENCH_TRANSPORTS")
                .unwrap_or_else(|| "exec,channel".into())
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            out: var("KUBEXEC_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("docs/benchmarks")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements from /proc and from the apiserver.

/// Clock ticks per second of `/proc` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Busy ticks of the whole node (`/proc/stat`: everything but idle and iowait).
fn node_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum()
}

/// One process: its group, its start (to notice a reused pid), and its CPU ticks including
/// the reaped children's.
#[derive(Clone)]
struct ProcessTicks {
    group: &'static str,
    started: u64,
    ticks: u64,
}

const GROUPS: [&str; 13] = [
    "operator",
    "api",
    "kube-apiserver",
    "etcd",
    "kubelet",
    "containerd",
    "containerd-shim (+runc)",
    "runc",
    "runner (sandboxes)",
    "other k8s",
    "bench client",
    "builds",
    "other",
];

fn group_of(pid: u32, comm: &str, known: &KnownPids) -> &'static str {
    if pid == known.operator {
        return "operator";
    }
    if pid == known.api {
        return "api";
    }
    if pid == known.bench {
        return "bench client";
    }
    match comm {
        "kube-apiserver" => "kube-apiserver",
        "etcd" => "etcd",
        "kubelet" => "kubelet",
        "containerd" => "containerd",
        "runc" | "runc:[0:PARENT]" | "runc:[1:CHILD]" | "runc:[2:INIT]" => "runc",
        "kubexec-runner" => "runner (sandboxes)",
        "rustc" | "cargo" | "cc" | "cc1" | "ld" | "ld.lld" | "rust-lld" | "collect2" | "as"
        | "clippy-driver" | "cargo-clippy" => "builds",
        c if c.starts_with("containerd-shim") => "containerd-shim (+runc)",
        c if c.starts_with("kube-") || c == "coredns" || c == "flanneld" || c == "calico" => {
            "other k8s"
        }
        c if c.starts_with("build-script") || c.starts_with("build_script") => "builds",
        _ => "other",
    }
}

struct KnownPids {
    operator: u32,
    api: u32,
    bench: u32,
}

fn processes(known: &KnownPids) -> HashMap<u32, ProcessTicks> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let rest: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // After the name: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime(11) stime(12) cutime(13) cstime(14) ... starttime(19)
        let ticks = (11..=14).filter_map(|i| rest.get(i)).sum();
        found.insert(
            pid,
            ProcessTicks {
                group: group_of(pid, comm, known),
                started: rest.get(19).copied().unwrap_or(0),
                ticks,
            },
        );
    }
    found
}

/// CPU use at one moment.
struct CpuSnapshot {
    at: Instant,
    node: u64,
    processes: HashMap<u32, ProcessTicks>,
}

fn cpu_snapshot(known: &KnownPids) -> CpuSnapshot {
    CpuSnapshot {
        at: Instant::now(),
        node: node_busy_ticks(),
        processes: processes(known),
    }
}

/// CPU milliseconds spent between two snapshots: node-wide and by group.
#[derive(Clone, Default)]
struct CpuSpent {
    seconds: f64,
    node_ms: f64,
    groups: BTreeMap<&'static str, f64>,
}

impl CpuSpent {
    fn between(before: &CpuSnapshot, after: &CpuSnapshot, ticks_per_second: f64) -> Self {
        let ms = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_second;
        let mut groups: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (pid, now) in &after.processes {
            // A process that started in the window counts whole; one that ended in it was
            // counted in its parent's children's time when it was reaped.
            let earlier = before
                .processes
                .get(pid)
                .filter(|then| then.started == now.started)
                .map_or(0, |then| then.ticks);
            *groups.entry(now.group).or_default() += ms(now.ticks.saturating_sub(earlier));
        }
        Self {
            seconds: after.at.duration_since(before.at).as_secs_f64(),
            node_ms: ms(after.node.saturating_sub(before.node)),
            groups,
        }
    }

    /// What was spent beyond `idle`'s rate over the same time.
    fn beyond(&self, idle: &CpuSpent) -> Self {
        let scale = if idle.seconds > 0.0 {
            self.seconds / idle.seconds
        } else {
            0.0
        };
        let mut groups = self.groups.clone();
        for (group, spent) in &idle.groups {
            *groups.entry(group).or_default() -= spent * scale;
        }
        Self {
            seconds: self.seconds,
            node_ms: self.node_ms - idle.node_ms * scale,
            groups,
        }
    }

    fn group(&self, name: &str) -> f64 {
        self.groups.get(name).copied().unwrap_or(0.0)
    }
}

/// Not a write of its own: the Executions created (POST answered 201), the per-execution
/// denominator (a request that timed out on the client still created and ran one).
const CREATED: &str = "created executions";
const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];
const WRITE_RESOURCES: [&str; 5] = ["executions", "sessions", "secrets", "events", "leases"];

/// apiserver writes so far, by resource (`other` for the rest), from its own metrics.
fn apiserver_writes() -> BTreeMap<String, f64> {
    let out = Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("kubectl get --raw /metrics");
    count_writes(&String::from_utf8_lossy(&out.stdout))
}

/// The write requests in the apiserver's metrics text, by resource.
fn count_writes(text: &str) -> BTreeMap<String, f64> {
    let mut writes: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !WRITE_VERBS.contains(&verb.as_str()) {
            continue;
        }
        let resource = label("resource");
        let count = value.trim().parse::<f64>().unwrap_or(0.0);
        if resource == "executions" && verb == "POST" && label("code") == "201" {
            *writes.entry(CREATED.to_string()).or_default() += count;
        }
        let key = if WRITE_RESOURCES.contains(&resource.as_str()) {
            resource
        } else {
            "other".to_string()
        };
        *writes.entry(key).or_default() += count;
    }
    writes
}

fn writes_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(resource, n)| {
            let then = before.get(resource).copied().unwrap_or(0.0);
            (resource.clone(), n - then)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Load.

/// A tiny PRNG (xorshift64*), seeded per step, so runs are repeatable without a crate.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed gap of a Poisson process with `rate` per second.
    fn gap(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

struct Sample {
    latency: Duration,
    ok: bool,
    /// What went wrong, for the error breakdown.
    error: Option<String>,
}

/// `execute` of `command` in `session`: `None` when it answered 200 with exit code 0, else
/// what it answered (status and error code, or `timeout`).
async fn execute(http: Http, key: &str, session: &str, command: &str) -> Option<String> {
    let body = json!({"sessionId": session, "command": command});
    match tokio::time::timeout(REQUEST_TIMEOUT, http.post("/execute", Some(key), &body)).await {
        Ok(reply) if reply.status == 200 && reply.json()["exitCode"] == 0 => None,
        Ok(reply) if reply.status == 200 => Some(format!("exit {}", reply.json()["exitCode"])),
        Ok(reply) => Some(format!(
            "{} {}",
            reply.status,
            reply.json()["error"]["code"].as_str().unwrap_or("?")
        )),
        Err(_) => Some("timeout".into()),
    }
}

/// Open-loop Poisson arrivals at `rate` for `duration`; latencies from the planned send time.
async fn open_loop(
    http: Http,
    key: &str,
    sessions: &[String],
    rate: f64,
    duration: Duration,
    seed: u64,
) -> (Vec<Sample>, Duration) {
    let mut rng = Rng(seed | 1);
    let start = tokio::time::Instant::now();
    let mut planned = 0.0;
    let mut tasks = Vec::new();
    loop {
        planned += rng.gap(rate);
        if planned >= duration.as_secs_f64() {
            break;
        }
        let at = start + Duration::from_secs_f64(planned);
        tokio::time::sleep_until(at).await;
        let session =
            sessions[(rng.next_f64() * sessions.len() as f64) as usize % sessions.len()].clone();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let error = execute(http, &key, &session, "true").await;
            Sample {
                latency: at.elapsed(),
                ok: error.is_none(),
                error,
            }
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A request task that panicked (a refused connection) is an error.
        samples.push(task.await.unwrap_or(Sample {
            latency: REQUEST_TIMEOUT,
            ok: false,
            error: Some("refused".into()),
        }));
    }
    (samples, start.elapsed())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[index.clamp(1, sorted.len()) - 1]
}

fn sorted_ms(samples: impl IntoIterator<Item = Duration>) -> Vec<f64> {
    let mut ms: Vec<f64> = samples
        .into_iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// Waits until every Execution of the namespace is gone (their TTL passed), up to a limit.
async fn drain(executions: &Api<Execution>) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    tokio::time::sleep(Duration::from_secs(EXECUTION_TTL)).await;
    while Instant::now() < deadline {
        let left = executions
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map(|l| l.items.len())
            .unwrap_or(1);
        if left == 0 {
            // The garbage collector and Events settle a moment after the last delete.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("   (not drained after {DRAIN_LIMIT:?}; measured anyway)");
}

// ---------------------------------------------------------------------------------------------
// Results.

struct Step {
    transport: String,
    offered: f64,
    achieved: f64,
    requests: usize,
    errors: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    cpu: CpuSpent,
    writes: BTreeMap<String, f64>,
}

impl Step {
    /// Executions created in the step (each ran, whether or not its client waited for it).
    fn ok(&self) -> f64 {
        self.writes.get(CREATED).copied().unwrap_or(0.0).max(1.0)
    }

    fn node_excluding_builds(&self) -> f64 {
        self.cpu.node_ms - self.cpu.group("builds")
    }

    fn writes_per_execution(&self) -> f64 {
        let all: f64 = self
            .writes
            .iter()
            .filter(|(resource, _)| resource.as_str() != CREATED)
            .map(|(_, n)| n)
            .sum();
        all / self.ok()
    }
}

struct Point {
    transport: String,
    measure: &'static str,
    samples: Vec<f64>,
}

impl Point {
    fn p(&self, p: f64) -> f64 {
        percentile(&self.samples, p)
    }
}

fn throughput_csv(steps: &[Step]) -> String {
    let mut csv = String::from(
        "transport,offered_per_s,achieved_per_s,requests,errors,p50_ms,p95_ms,p99_ms,\
         cpu_node_ms_per_exec,cpu_node_excl_builds_ms_per_exec",
    );
    for group in GROUPS {
        let _ = write!(csv, ",cpu_{}_ms_per_exec", column(group));
    }
    csv.push_str(",apiserver_writes_per_exec");
    for resource in WRITE_RESOURCES.iter().chain(["other"].iter()) {
        let _ = write!(csv, ",writes_{resource}_per_exec");
    }
    csv.push('\n');
    for s in steps {
        let ok = s.ok();
        let _ = write!(
            csv,
            "{},{},{:.1},{},{},{:.1},{:.1},{:.1},{:.2},{:.2}",
            s.transport,
            s.offered,
            s.achieved,
            s.requests,
            s.errors,
            s.p50,
            s.p95,
            s.p99,
            s.cpu.node_ms / ok,
            s.node_excluding_builds() / ok,
        );
        for group in GROUPS {
            let _ = write!(csv, ",{:.2}", s.cpu.group(group) / ok);
        }
        let _ = write!(csv, ",{:.2}", s.writes_per_execution());
        for resource in WRITE_RESOURCES.iter().chain(["other"].iter()) {
            let n = s.writes.get(*resource).copied().unwrap_or(0.0);
            let _ = write!(csv, ",{:.2}", n / ok);
        }
        csv.push('\n');
    }
    csv
}

fn column(group: &str) -> String {
    group
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn latency_csv(points: &[Point]) -> String {
    let mut csv = String::from("transport,measure,n,p50_ms,p99_ms\n");
    for p in points {
        let _ = writeln!(
            csv,
            "{},{},{},{:.1},{:.1}",
            p.transport,
            p.measure,
            p.samples.len(),
            p.p(0.5),
            p.p(0.99)
        );
    }
    csv
}

fn markdown(steps: &[Step], points: &[Point], machine: &str) -> String {
    let mut md = format!("Measured on {machine}.\n\n");
    md.push_str(
        "| transport | offered /s | achieved /s | errors | p50 ms | p95 ms | p99 ms | CPU ms/exec node | node w/o builds | operator | api | kube-apiserver | etcd | kubelet | containerd | shim+runc | runner | writes/exec |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in steps {
        let ok = s.ok();
        let g = |name| s.cpu.group(name) / ok;
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            s.transport,
            s.offered,
            s.achieved,
            s.errors,
            s.p50,
            s.p95,
            s.p99,
            s.cpu.node_ms / ok,
            s.node_excluding_builds() / ok,
            g("operator"),
            g("api"),
            g("kube-apiserver"),
            g("etcd"),
            g("kubelet"),
            g("containerd"),
            g("containerd-shim (+runc)") + g("runc"),
            g("runner (sandboxes)"),
            s.writes_per_execution(),
        );
    }
    md.push_str("\napiserver writes per execution, by resource:\n\n| transport | offered /s |");
    for resource in WRITE_RESOURCES.iter().chain(["other"].iter()) {
        let _ = write!(md, " {resource} |");
    }
    md.push_str("\n|---|---|");
    for _ in 0..=WRITE_RESOURCES.len() {
        md.push_str("---|");
    }
    md.push('\n');
    for s in steps {
        let _ = write!(md, "| {} | {} |", s.transport, s.offered);
        for resource in WRITE_RESOURCES.iter().chain(["other"].iter()) {
            let n = s.writes.get(*resource).copied().unwrap_or(0.0);
            let _ = write!(md, " {:.2} |", n / s.ok());
        }
        md.push('\n');
    }
    md.push_str("\n| transport | measure | n | p50 ms | p99 ms |\n|---|---|---|---|---|\n");
    for p in points {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} |",
            p.transport,
            p.measure,
            p.samples.len(),
            p.p(0.5),
            p.p(0.99)
        );
    }
    md
}

/// Throughput (x) against latency (y, log scale): p50 and p99 of each transport.
fn svg(steps: &[Step]) -> String {
    let (width, height) = (720.0, 420.0);
    let (left, right, top, bottom) = (70.0, 190.0, 30.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max_x = steps
        .iter()
        .map(|s| s.achieved.max(s.offered))
        .fold(10.0_f64, f64::max);
    let max_x = (max_x / 25.0).ceil() * 25.0;
    let finite = |v: f64| if v.is_finite() && v > 0.0 { v } else { 1.0 };
    let max_y = steps
        .iter()
        .map(|s| finite(s.p99))
        .fold(100.0_f64, f64::max);
    let (min_exp, max_exp) = (0i32, max_y.log10().ceil() as i32);
    let x = |v: f64| left + v / max_x * plot_w;
    let y = |ms: f64| {
        let l = finite(ms).log10().clamp(min_exp as f64, max_exp as f64);
        top + plot_h - (l - min_exp as f64) / (max_exp - min_exp).max(1) as f64 * plot_h
    };
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="18" text-anchor="middle" font-size="14">REST execute of `true`: achieved throughput against latency</text>
"##,
        cx = left + plot_w / 2.0
    );
    // Axes and grid.
    for e in min_exp..=max_exp {
        let v = 10f64.powi(e);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{py:.1}" x2="{x2:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{v} ms</text>"##,
            py = y(v),
            x2 = left + plot_w,
            tx = left - 6.0,
            ty = y(v) + 4.0
        );
    }
    let mut tick = 0.0;
    while tick <= max_x {
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{y2:.1}" stroke="#eee"/><text x="{px:.1}" y="{ty:.1}" text-anchor="middle">{tick}</text>"##,
            px = x(tick),
            y2 = top + plot_h,
            ty = top + plot_h + 16.0
        );
        tick += 25.0;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>
<text x="{cx:.1}" y="{ly:.1}" text-anchor="middle">achieved executions per second</text>
<text x="16" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 16 {cy:.1})">latency (log scale)</text>"##,
        cx = left + plot_w / 2.0,
        ly = height - 12.0,
        cy = top + plot_h / 2.0
    );
    // Series.
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let mut transports: Vec<&str> = Vec::new();
    for s in steps {
        if !transports.contains(&s.transport.as_str()) {
            transports.push(&s.transport);
        }
    }
    let mut legend_y = top + 10.0;
    for (i, transport) in transports.iter().enumerate() {
        let color = colors[i % colors.len()];
        let series: Vec<&Step> = steps.iter().filter(|s| s.transport == *transport).collect();
        for (label, dash, pick) in [
            ("p50", "", (|s: &Step| s.p50) as fn(&Step) -> f64),
            ("p99", "6,4", |s: &Step| s.p99),
        ] {
            let points: Vec<String> = series
                .iter()
                .map(|s| format!("{:.1},{:.1}", x(s.achieved), y(pick(s))))
                .collect();
            let _ = writeln!(
                out,
                r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"##,
                points.join(" ")
            );
            for s in &series {
                let _ = writeln!(
                    out,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{transport} {label}: offered {}/s, achieved {:.1}/s, {:.0} ms</title></circle>"##,
                    x(s.achieved),
                    y(pick(s)),
                    s.offered,
                    s.achieved,
                    pick(s)
                );
            }
            let lx = left + plot_w + 14.0;
            let _ = writeln!(
                out,
                r##"<line x1="{lx}" y1="{legend_y}" x2="{x2}" y2="{legend_y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{tx}" y="{ty}">{transport} {label}</text>"##,
                x2 = lx + 28.0,
                tx = lx + 34.0,
                ty = legend_y + 4.0
            );
            legend_y += 18.0;
        }
    }
    out.push_str("</svg>\n");
    out
}

// ---------------------------------------------------------------------------------------------
// kubectl apply -> Complete, against kubectl exec.

/// When the watch first saw each Execution Complete.
#[derive(Clone, Default)]
struct Completions {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
}

impl Completions {
    fn watch(&self, api: Api<Execution>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default().labels("kubexec.dev/bench"))
                .applied_objects()
                .boxed();
            while let Ok(Some(e)) = events.try_next().await {
                let phase = e.status.as_ref().and_then(|s| s.phase);
                if matches!(
                    phase,
                    Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
                ) {
                    let name = e.metadata.name.clone().unwrap_or_default();
                    let mut seen = this.seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.entry(name).or_insert_with(Instant::now);
                    this.changed.notify_waiters();
                }
            }
        });
    }

    async fn wait(&self, name: &str) -> Option<Instant> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
            {
                return Some(*at);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

fn kubectl_apply(ns: &str, manifest: &str) -> bool {
    let Ok(mut child) = Command::new("kubectl")
        .args(["-n", ns, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(manifest.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------

async fn warm_up(http: Http, key: &str, sessions: &[String]) {
    let runs = sessions
        .iter()
        .map(|session| async move { execute(http, key, session, "true").await });
    let errors = futures::future::join_all(runs).await;
    assert!(
        errors.iter().all(Option::is_none),
        "every session answers an execute before the measurements: {errors:?}"
    );
}

#[allow(clippy::too_many_arguments)]
async fn point_measurements(
    transport: &str,
    ns: &TestNs,
    http: Http,
    key: &str,
    session: &str,
    pod: &str,
    rounds: usize,
    completions: &Completions,
) -> Vec<Point> {
    let mut rest = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        if execute(http, key, session, "true").await.is_none() {
            rest.push(start.elapsed());
        }
    }
    let mut first_byte = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let body = json!({"sessionId": session, "command": "echo x", "stream": true});
        let (status, events) = http.post_sse("/execute", key, &body).await;
        if let Some(first) = events.iter().find(|e| e.event == "stdout") {
            if status == 200 {
                first_byte.push(first.at - start);
            }
        }
    }
    let kubectl_rounds = rounds.div_ceil(4).max(5);
    let mut applied = Vec::new();
    let mut exec = Vec::new();
    for i in 0..kubectl_rounds {
        let name = format!("bench-{transport}-{i}");
        let manifest = json!({
            "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
            "metadata": {"name": name, "labels": {"kubexec.dev/bench": "true"}},
            "spec": {"sessionRef": {"name": session}, "command": "true",
                     "ttlSecondsAfterFinished": EXECUTION_TTL}
        })
        .to_string();
        let start = Instant::now();
        if kubectl_apply(&ns.name, &manifest) {
            if let Some(at) = completions.wait(&name).await {
                applied.push(at - start);
            }
        }
        let start = Instant::now();
        if ns
            .kubectl(&["exec", pod, "-c", "sandbox", "--", "true"])
            .status
            .success()
        {
            exec.push(start.elapsed());
        }
    }
    let point = |measure, samples: Vec<Duration>| Point {
        transport: transport.to_string(),
        measure,
        samples: sorted_ms(samples),
    };
    vec![
        point("REST execute `true`, closed loop", rest),
        point("SSE first stdout byte, `echo x`", first_byte),
        point("kubectl apply Execution -> Complete", applied),
        point("raw kubectl exec `true`", exec),
    ]
}

#[tokio::test]
async fn bench_open_loop_throughput() {
    let knobs = Knobs::from_env();
    let ticks = clock_ticks();
    let mut ns = TestNs::new("bench-tp").await;
    let mut api = ApiServer::start(&ns.name, &["--execution-ttl", &EXECUTION_TTL.to_string()]);
    // Enterprise: 200 requests/s sustained, 1000 unfinished executions.
    let key = api.create_key(&ns.name, "enterprise").await;
    let http = api.client();

    // Small sandboxes, so that ten fit on a small node.
    let created = futures::future::join_all((0..knobs.sessions).map(|_| {
        let key = key.clone();
        async move {
            let body = json!({"resourceLimits": {"memory": 256, "cpu": 0.5}});
            http.post("/sessions/create", Some(&key), &body).await
        }
    }))
    .await;
    let sessions: Vec<String> = created
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, 201, "{}", reply.text());
            reply.json()["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string()
        })
        .collect();
    warm_up(http, &key, &sessions).await;
    let first: Session = ns
        .api::<Session>()
        .get(&sessions[0])
        .await
        .expect("session");
    let pod = first
        .status
        .and_then(|s| s.pod_name)
        .expect("a ready session has a Pod");
    let executions: Api<Execution> = ns.api();
    let completions = Completions::default();
    completions.watch(executions.clone());

    let machine = format!(
        "{} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::var("KUBEXEC_BIN").unwrap_or_else(|_| "target/debug/kubexec".into())
    );
    println!(
        "== open-loop throughput: {} sessions, {:?} per rate, rates {:?}, transports {:?} ({machine})",
        knobs.sessions, knobs.step, knobs.rates, knobs.transports
    );

    let mut steps = Vec::new();
    let mut points = Vec::new();
    for transport in &knobs.transports {
        ns.kill_operator();
        ns.start_operator_with(&[("KUBEXEC_EXEC_TRANSPORT", transport.as_str())]);
        warm_up(http, &key, &sessions).await;
        drain(&executions).await;
        let known = KnownPids {
            operator: ns.operator_pid().unwrap_or(0),
            api: api.pid().unwrap_or(0),
            bench: std::process::id(),
        };

        // What the cluster spends with nothing to do.
        let (cpu_before, writes_before) = (cpu_snapshot(&known), apiserver_writes());
        tokio::time::sleep(knobs.idle).await;
        let idle_cpu = CpuSpent::between(&cpu_before, &cpu_snapshot(&known), ticks);
        let idle_writes = writes_between(&writes_before, &apiserver_writes());
        let idle_seconds = idle_cpu.seconds;
        println!(
            "-- {transport}: idle {:.0} CPU ms/s node-wide, {:.2} apiserver writes/s",
            idle_cpu.node_ms / idle_seconds,
            idle_writes
                .iter()
                .filter(|(r, _)| r.as_str() != CREATED)
                .map(|(_, n)| n)
                .sum::<f64>()
                / idle_seconds
        );

        for (i, &rate) in knobs.rates.iter().enumerate() {
            let (cpu_before, writes_before) = (cpu_snapshot(&known), apiserver_writes());
            let (samples, took) =
                open_loop(http, &key, &sessions, rate, knobs.step, 0x9e37 + i as u64).await;
            drain(&executions).await;
            let cpu = CpuSpent::between(&cpu_before, &cpu_snapshot(&known), ticks);
            let window = cpu.seconds;
            let mut writes = writes_between(&writes_before, &apiserver_writes());
            for (resource, n) in idle_writes.iter().filter(|(r, _)| r.as_str() != CREATED) {
                *writes.entry(resource.clone()).or_default() -= n * window / idle_seconds;
            }
            let errors = samples.iter().filter(|s| !s.ok).count();
            let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
            for error in samples.iter().filter_map(|s| s.error.as_deref()) {
                *kinds.entry(error).or_default() += 1;
            }
            if !kinds.is_empty() {
                println!("   {rate:>5}/s offered: errors by kind {kinds:?}");
            }
            let ok = sorted_ms(samples.iter().filter(|s| s.ok).map(|s| s.latency));
            let step = Step {
                transport: transport.clone(),
                offered: rate,
                achieved: ok.len() as f64 / took.as_secs_f64().max(knobs.step.as_secs_f64()),
                requests: samples.len(),
                errors,
                p50: percentile(&ok, 0.5),
                p95: percentile(&ok, 0.95),
                p99: percentile(&ok, 0.99),
                cpu: cpu.beyond(&idle_cpu),
                writes,
            };
            println!(
                "   {rate:>5}/s offered: {:>6.1}/s achieved, {} requests, {} errors, p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, {:.1} CPU ms/exec node-wide ({:.1} without builds), {:.2} writes/exec",
                step.achieved,
                step.requests,
                step.errors,
                step.p50,
                step.p95,
                step.p99,
                step.cpu.node_ms / step.ok(),
                step.node_excluding_builds() / step.ok(),
                step.writes_per_execution()
            );
            let saturated = step.achieved < 0.8 * rate;
            steps.push(step);
            if saturated {
                println!("   {transport} is saturated at {rate}/s: higher rates skipped");
                break;
            }
        }

        let measured = point_measurements(
            transport,
            &ns,
            http,
            &key,
            &sessions[0],
            &pod,
            knobs.rounds,
            &completions,
        )
        .await;
        for p in &measured {
            println!(
                "   {:<40} n={:<3} p50 {:>7.1} ms  p99 {:>7.1} ms",
                p.measure,
                p.samples.len(),
                p.p(0.5),
                p.p(0.99)
            );
        }
        points.extend(measured);
        drain(&executions).await;
    }

    let out = &knobs.out;
    std::fs::create_dir_all(out).expect("output directory");
    let files = [
        ("throughput.csv", throughput_csv(&steps)),
        ("latency.csv", latency_csv(&points)),
        ("throughput.svg", svg(&steps)),
        ("throughput.md", markdown(&steps, &points, &machine)),
    ];
    for (name, content) in files {
        std::fs::write(out.join(name), content).expect("write a result file");
    }
    println!("\n{}", markdown(&steps, &points, &machine));
    println!("written to {}", out.display());
}

#[test]
fn percentiles_take_the_nearest_rank() {
    let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&sorted, 0.5), 50.0);
    assert_eq!(percentile(&sorted, 0.99), 99.0);
    assert_eq!(percentile(&[7.0], 0.99), 7.0);
    assert!(percentile(&[], 0.5).is_nan());
}

#[test]
fn apiserver_write_counts_are_parsed_by_resource() {
    let text = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="kubexec.dev",resource="executions",scope="resource",subresource="",verb="POST",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubexec.dev",resource="executions",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 14
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 99
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 1
"#;
    let writes = count_writes(text);
    assert_eq!(writes.get("executions"), Some(&21.0));
    assert_eq!(writes.get(CREATED), Some(&7.0));
    assert_eq!(writes.get("leases"), Some(&3.0));
    assert_eq!(writes.get("other"), Some(&1.0));
    assert_eq!(writes.get("pods"), None, "reads are not writes");
}

#[test]
fn poisson_gaps_average_one_over_the_rate() {
    assert_eq!(column("containerd-shim (+runc)"), "containerd_shim_runc");
    let mut rng = Rng(1);
    let mean = (0..10_000).map(|_| rng.gap(100.0)).sum::<f64>() / 10_000.0;
    assert!((0.009..0.011).contains(&mean), "{mean}");
}
