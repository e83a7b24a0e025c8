//! Renders the CustomResourceDefinitions from the Rust types (`kubexec crdgen`).

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use thiserror::Error;

use crate::crd::{Execution, Session, SessionPool};

/// Why the CRDs could not be rendered or written.
#[derive(Debug, Error)]
pub enum Error {
    /// YAML serialization failed.
    #[error("cannot render CRD {name} as YAML: {message}")]
    Render {
        /// CRD name.
        name: String,
        /// Serializer message.
        message: String,
    },
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Every CRD kubexec serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Session::crd(), Execution::crd(), SessionPool::crd()]
}

/// One CRD as a YAML document (without the `---` separator).
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, Error> {
    serde_saphyr::to_string(crd).map_err(|e| Error::Render {
        name: crd_name(crd),
        message: e.to_string(),
    })
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}

/// The file name a CRD is kept under in `crds/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd_name(crd))
}

/// Writes every CRD to `dir/<name>.yaml` and returns the paths written.
pub fn write_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for crd in crds() {
        let path = dir.join(file_name(&crd));
        std::fs::write(&path, to_yaml(&crd)?).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn crd_name(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is committed; CI must fail when it no longer matches the types.
    #[test]
    fn committed_crds_match_the_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for crd in crds() {
            let path = dir.join(file_name(&crd));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            let generated = to_yaml(&crd).expect("renders");
            assert!(
                committed == generated,
                "{} is out of date with the Rust types. Regenerate it with:\n    cargo run -- crdgen --dir crds",
                path.display()
            );
        }
    }

    #[test]
    fn crds_have_names_short_names_and_columns() {
        let names: Vec<_> = crds().iter().map(crd_name).collect();
        assert_eq!(
            names,
            [
                "sessions.kubexec.dev",
                "executions.kubexec.dev",
                "sessionpools.kubexec.dev"
            ]
        );
        for crd in crds() {
            assert_eq!(crd.spec.scope, "Namespaced");
            assert!(crd
                .spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()));
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            assert!(version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some());
            assert!(version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3));
        }
    }

    /// `kubectl explain` shows descriptions; every property must have one.
    #[test]
    fn every_field_is_described() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    let here = format!("{path}.{name}");
                    if prop.get("description").is_none()
                        && !matches!(name.as_str(), "metadata" | "apiVersion" | "kind")
                    {
                        missing.push(here.clone());
                    }
                    walk(&here, prop, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("json");
            walk(&crd_name(&crd), &schema["openAPIV3Schema"], &mut missing);
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
        );
    }
}
