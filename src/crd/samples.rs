//! Checks the manifests users copy from: every sample in `manifests/samples/` passes both the
//! CEL rules of the CRDs (evaluated client-side by kube's CEL engine) and [`super::validate`];
//! every fixture in `e2e/fixtures/invalid/` fails both, with the message its comment promises.

use std::path::{Path, PathBuf};

use super::{validate, Execution, Session};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

enum Manifest {
    Session(Box<Session>),
    Execution(Box<Execution>),
}

fn load(path: &Path) -> (Manifest, String) {
    let text = std::fs::read_to_string(path).expect("readable");
    let value: serde_json::Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    let manifest = match value["kind"].as_str() {
        Some("Session") => Manifest::Session(Box::new(
            serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )),
        Some("Execution") => Manifest::Execution(Box::new(
            serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )),
        other => panic!("{}: unexpected kind {other:?}", path.display()),
    };
    (manifest, text)
}

/// Every message the CEL rules of an object produce, joined.
fn cel_errors(manifest: &Manifest) -> Option<String> {
    let result = match manifest {
        Manifest::Session(s) => s.validate_cel(),
        Manifest::Execution(e) => e.validate_cel(),
    };
    result.err().map(|errs| {
        errs.as_slice()
            .iter()
            .map(|e| format!("{}: {} ({:?})", e.field_path, e.message, e.kind))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn code_errors(manifest: &Manifest) -> Option<String> {
    let result = match manifest {
        Manifest::Session(s) => {
            validate::validate_session(s.metadata.name.as_deref().unwrap_or_default(), &s.spec)
        }
        Manifest::Execution(e) => validate::validate_execution(&e.spec),
    };
    result.err().map(|e| e.to_string())
}

#[test]
fn samples_are_valid() {
    for path in yaml_files("manifests/samples") {
        let (manifest, _) = load(&path);
        assert_eq!(
            cel_errors(&manifest),
            None,
            "{}: CEL rules refuse it",
            path.display()
        );
        assert_eq!(
            code_errors(&manifest),
            None,
            "{}: validation refuses it",
            path.display()
        );
    }
}

#[test]
fn invalid_fixtures_are_refused_with_their_message() {
    for path in yaml_files("e2e/fixtures/invalid") {
        let (manifest, text) = load(&path);
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expected error: "))
            .unwrap_or_else(|| panic!("{}: no '# expected error:' comment", path.display()));
        // The readable part of the message, after the apiserver's field and value prefix.
        let message = expected.rsplit(": ").next().unwrap_or(expected);
        assert!(
            code_errors(&manifest).is_some(),
            "{}: validation accepts it",
            path.display()
        );
        // Bounds such as `maximum` are OpenAPI schema checks, not CEL; everything else is CEL.
        if !expected.contains("in body should be") {
            let errors = cel_errors(&manifest)
                .unwrap_or_else(|| panic!("{}: CEL rules accept it", path.display()));
            assert!(
                errors.contains(message),
                "{}: expected {message:?}, CEL said {errors}",
                path.display()
            );
        }
    }
}

#[test]
fn execution_spec_is_immutable() {
    let (Manifest::Execution(old), _) = load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/samples/execution-command.yaml"),
    ) else {
        panic!("expected an Execution");
    };
    let mut new = old.clone();
    assert!(
        new.validate_cel_update(&old).is_ok(),
        "an unchanged spec is fine"
    );
    new.spec.command = Some("echo changed".into());
    let errors = new.validate_cel_update(&old).expect_err("changed spec");
    assert!(errors
        .as_slice()
        .iter()
        .any(|e| e.message.contains("immutable")));
}

/// Fencing: an operator that lost its lease may still write, but never reopens a finished run.
#[test]
fn a_finished_execution_cannot_change_phase() {
    use super::{ExecutionPhase, ExecutionStatus};
    let (Manifest::Execution(sample), _) = load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/samples/execution-command.yaml"),
    ) else {
        panic!("expected an Execution");
    };
    let with = |phase: Option<ExecutionPhase>| {
        let mut e = sample.clone();
        e.status = Some(ExecutionStatus {
            phase,
            ..ExecutionStatus::default()
        });
        e
    };
    let refused = |from: Option<ExecutionPhase>, to: Option<ExecutionPhase>| {
        with(to)
            .validate_cel_update(&with(from))
            .err()
            .map(|e| format!("{e:?}"))
    };
    use ExecutionPhase::*;
    for (from, to) in [
        (None, Some(Running)),
        (Some(Pending), Some(Running)),
        (Some(Running), Some(Succeeded)),
        (Some(Running), Some(Failed)),
        (Some(Succeeded), Some(Succeeded)),
        (Some(Failed), Some(Failed)),
    ] {
        assert_eq!(refused(from, to), None, "{from:?} -> {to:?}");
    }
    for (from, to) in [
        (Some(Succeeded), Some(Running)),
        (Some(Failed), Some(Pending)),
        (Some(Succeeded), Some(Failed)),
        (Some(Failed), None),
    ] {
        let errors = refused(from, to).unwrap_or_else(|| panic!("{from:?} -> {to:?} accepted"));
        assert!(errors.contains("cannot change phase"), "{errors}");
    }
}

#[test]
fn cel_rules_catch_what_the_samples_do_not_show() {
    let session = |f: &dyn Fn(&mut Session)| {
        let mut s = Session::new("s", Default::default());
        f(&mut s);
        s.validate_cel().err().map(|e| format!("{e:?}"))
    };
    assert_eq!(session(&|_| {}), None);
    assert!(session(&|s| s.spec.resources.memory = Some("lots".into())).is_some());
    assert!(session(&|s| s.spec.resources.cpu = Some("0".into())).is_some());
    assert!(session(&|s| {
        s.spec.metadata.insert("a".into(), "x".repeat(16_000));
        s.spec.metadata.insert("b".into(), "y".repeat(1_000));
    })
    .is_some_and(|e| e.contains("16 KiB")));
    assert!(session(&|s| s.metadata.name = Some("n".repeat(64))).is_some());

    let execution = |f: &dyn Fn(&mut Execution)| {
        let mut e = Execution::new("e", Default::default());
        e.spec.session_ref.name = "s".into();
        e.spec.command = Some("true".into());
        f(&mut e);
        e.validate_cel().err().map(|e| format!("{e:?}"))
    };
    assert_eq!(execution(&|_| {}), None);
    assert!(execution(&|e| e.spec.command = None).is_some_and(|m| m.contains("nothing to do")));
    for bad in ["/etc/passwd", "a/../../b", "..", "x/.."] {
        let path = bad.to_string();
        let got = execution(&|e| {
            e.spec.files = vec![super::FileSpec {
                path: path.clone(),
                ..Default::default()
            }]
        });
        assert!(got.is_some(), "CEL accepts path {bad}");
    }
    assert!(execution(&|e| e.spec.working_dir = Some("/tmp".into())).is_some());
    assert_eq!(
        execution(&|e| e.spec.working_dir = Some("/workspace/app".into())),
        None
    );
}
