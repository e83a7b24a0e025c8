//! Prometheus text rendering, the same for every component's `/metrics`.

use prometheus_client::registry::Registry;

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
