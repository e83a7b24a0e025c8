//! Property tests of the request parsers: whatever bytes or JSON a client sends, the api
//! answers a named 4xx or a plan that builds a valid object, and never panics or calls its own
//! mistake a server error. The case count is bounded (CI runs them with the unit tests);
//! `PROPTEST_CASES` raises it for a longer local run.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{
    api::{
        auth::Caller,
        errors::ApiError,
        extract::parse_json,
        files::plan_files,
        model::{CreateSessionRequest, ExecuteRequest, WriteFilesRequest},
        routes::{
            execute::{build_execution, plan_execute},
            sessions::session_spec,
        },
        tiers::{Tier, TierLimits},
    },
    crd::validate::{validate_execution, workspace_path},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A client's mistake: 400, 413 or 429, never a 5xx.
fn is_client_error(error: &ApiError) -> bool {
    error.status().is_client_error()
}

/// Short strings that hit the interesting cases: paths, dots, slashes, NUL, `=`, unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./=~ -]{0,24}",
        Just(String::new()),
        Just("..".to_string()),
        Just("/workspace/../etc".to_string()),
        Just("a\u{0}b".to_string()),
        Just("ünïcödé/🦀".to_string()),
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

/// Any JSON scalar: what a field of the wrong type may carry.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// A field: mostly of its type (`typed`), sometimes anything, sometimes absent (`None`).
fn field(typed: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => typed.prop_map(Some),
        1 => scalar().prop_map(Some),
        2 => Just(None),
    ]
}

fn file() -> impl Strategy<Value = Value> {
    (
        text(),
        text(),
        prop_oneof![Just("utf8"), Just("base64"), Just("utf-16")],
    )
        .prop_map(|(path, content, encoding)| {
            json!({"path": path, "content": content, "encoding": encoding})
        })
}

fn env() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), text(), 0..6)
        .prop_map(|env| Value::Object(env.into_iter().map(|(k, v)| (k, v.into())).collect()))
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name.to_string(), v)))
            .collect(),
    )
}

fn execute_request() -> impl Strategy<Value = Value> {
    (
        field(text().prop_map(Value::from)),
        field(text().prop_map(Value::from)),
        field(text().prop_map(Value::from)),
        field(prop::collection::vec(file(), 0..4).prop_map(Value::from)),
        field(env()),
        field(prop_oneof![any::<i64>(), -5i64..400].prop_map(Value::from)),
        field(text().prop_map(Value::from)),
        field(any::<bool>().prop_map(Value::from)),
    )
        .prop_map(
            |(session, code, command, files, env, timeout, working_dir, stream)| {
                object(vec![
                    ("sessionId", session),
                    ("code", code),
                    ("command", command),
                    ("files", files),
                    ("env", env),
                    ("timeout", timeout),
                    ("workingDir", working_dir),
                    ("stream", stream),
                ])
            },
        )
}

fn session_request() -> impl Strategy<Value = Value> {
    let number = || {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from)
        ]
    };
    (
        field(number()),
        field(
            prop::collection::btree_map(text(), scalar(), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ),
        field(
            (
                field(number()),
                field(number()),
                field(number()),
                field(number()),
            )
                .prop_map(|(memory, cpu, timeout, disk)| {
                    object(vec![
                        ("memory", memory),
                        ("cpu", cpu),
                        ("timeout", timeout),
                        ("disk", disk),
                    ])
                }),
        ),
    )
        .prop_map(|(ttl, metadata, limits)| {
            object(vec![
                ("ttl", ttl),
                ("metadata", metadata),
                ("resourceLimits", limits),
            ])
        })
}

fn caller(limits: &TierLimits) -> Caller {
    Caller {
        key_id: "k1".into(),
        tenant: "acme".into(),
        namespace: "kubexec-acme".into(),
        tier: Tier::Free,
        limits: limits.clone(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_a_request_or_a_named_4xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = parse_json::<ExecuteRequest<'_>>(&body) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
        if let Err(e) = parse_json::<WriteFilesRequest<'_>>(&body) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
        if let Err(e) = parse_json::<CreateSessionRequest>(&body) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    /// An accepted execute request builds an Execution that the apiserver's own rules accept,
    /// within the tier; everything else is a 4xx.
    #[test]
    fn execute_requests_plan_a_valid_execution_or_a_4xx(request in execute_request()) {
        let limits = TierLimits::free();
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let parsed = match parse_json::<ExecuteRequest<'_>>(&body) {
            Ok(parsed) => parsed,
            Err(e) => {
                prop_assert!(is_client_error(&e), "{e:?}");
                return Ok(());
            }
        };
        match plan_execute(&parsed, &limits) {
            Err(e) => prop_assert!(is_client_error(&e), "{request}: {e:?}"),
            Ok(plan) => {
                prop_assert!(plan.code.is_some() != plan.command.is_some());
                prop_assert!(plan
                    .timeout
                    .is_none_or(|t| t >= 1 && i64::from(t) <= i64::from(limits.timeout_seconds)));
                prop_assert!(plan.env.len() <= limits.env_vars);
                let (execution, secret) = build_execution("exe-prop", &caller(&limits), &plan, 300);
                prop_assert!(
                    validate_execution(&execution.spec).is_ok(),
                    "{request} planned an invalid Execution: {:?}",
                    validate_execution(&execution.spec)
                );
                prop_assert_eq!(secret.is_some(), !plan.env.is_empty());
            }
        }
    }

    /// Accepted file writes name paths inside the workspace.
    #[test]
    fn file_writes_stay_in_the_workspace_or_get_a_4xx(
        files in prop::collection::vec(file(), 0..5),
        session in text(),
    ) {
        let body = serde_json::to_vec(&json!({"sessionId": session, "files": files}))
            .unwrap_or_default();
        let parsed = match parse_json::<WriteFilesRequest<'_>>(&body) {
            Ok(parsed) => parsed,
            Err(e) => {
                prop_assert!(is_client_error(&e), "{e:?}");
                return Ok(());
            }
        };
        match plan_files(&parsed.files, &TierLimits::free()) {
            Err(e) => prop_assert!(is_client_error(&e), "{e:?}"),
            Ok(planned) => {
                for file in &planned {
                    prop_assert!(workspace_path("path", &file.path).is_ok(), "{}", file.path);
                }
            }
        }
    }

    /// Session creates are within the tier or a 4xx.
    #[test]
    fn session_creates_fit_the_tier_or_get_a_4xx(request in session_request()) {
        let limits = TierLimits::free();
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let parsed = match parse_json::<CreateSessionRequest>(&body) {
            Ok(parsed) => parsed,
            Err(e) => {
                prop_assert!(is_client_error(&e), "{e:?}");
                return Ok(());
            }
        };
        match session_spec(&parsed, &limits) {
            Err(e) => prop_assert!(is_client_error(&e), "{request}: {e:?}"),
            Ok(spec) => {
                prop_assert!(spec.ttl_seconds >= 1);
                prop_assert!(spec
                    .default_timeout_seconds
                    .is_some_and(|t| t >= 1 && t as u32 <= limits.timeout_seconds));
            }
        }
    }
}

#[test]
fn the_generators_reach_accepted_requests() {
    // A property that only ever sees refusals proves little: the shapes above do get planned.
    let body = serde_json::to_vec(&json!({
        "sessionId": "ses-a", "code": "1", "files": [{"path": "a.txt", "content": "x"}],
        "env": {"A": "b"}, "timeout": 5, "workingDir": "app"
    }))
    .unwrap_or_default();
    let parsed: ExecuteRequest<'_> = parse_json(&body).expect("parses");
    assert!(plan_execute(&parsed, &TierLimits::free()).is_ok());
}
