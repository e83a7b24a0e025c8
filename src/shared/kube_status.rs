//! The apiserver's answers, as the kube client reports them.

/// True when `err` is the apiserver answering with HTTP status `code` (404, 409, ...).
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// True for "not found" and "conflict": what an idempotent create or delete may ignore.
pub fn is_gone_or_conflict(err: &kube::Error) -> bool {
    is_status(err, 404) || is_status(err, 409)
}

/// True when the apiserver refused a create because a ResourceQuota of the namespace is used up
/// (403 "exceeded quota"). The quota admission counts atomically, so concurrent creates cannot
/// overshoot it.
pub fn is_quota_exceeded(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status)
        if status.code == 403 && status.message.contains("exceeded quota"))
}

/// True when the apiserver refused a create because the quota controller has not counted a
/// resource of a ResourceQuota of the namespace yet (403 "status unknown for quota"): a new
/// namespace, or a kind (a CRD) the controller has not discovered yet. It passes once the
/// controller catches up, within its discovery and resync periods.
pub fn is_quota_uncounted(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status)
        if status.code == 403 && status.message.contains("status unknown for quota"))
}

/// True when the apiserver could not be reached or could not answer now: no connection, a
/// connection cut, or a 5xx or 429 of its own (restarting, etcd slow, overloaded). A retry
/// later may pass; nothing about the request was wrong.
pub fn is_unavailable(err: &kube::Error) -> bool {
    match err {
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        _ => false,
    }
}

/// The apiserver answering `code` with `message`, as the kube client reports it (for tests).
#[cfg(test)]
pub fn api_error(code: u16, message: &str) -> kube::Error {
    let status: kube::core::Status = serde_json::from_value(serde_json::json!({
        "status": "Failure", "code": code, "message": message
    }))
    .expect("a Status");
    kube::Error::Api(Box::new(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_up_quota_and_an_uncounted_quota_are_told_apart_from_other_refusals() {
        let used_up = api_error(403, "sessions.kubexec.dev \"a\" is forbidden: exceeded quota: kubexec-tenant, requested: count/sessions.kubexec.dev=1, used: count/sessions.kubexec.dev=5, limited: count/sessions.kubexec.dev=5");
        let uncounted = api_error(403, "sessions.kubexec.dev \"a\" is forbidden: status unknown for quota: kubexec-tenant, resources: count/sessions.kubexec.dev");
        let rbac = api_error(
            403,
            "sessions.kubexec.dev is forbidden: User \"x\" cannot create resource",
        );
        assert!(is_quota_exceeded(&used_up) && !is_quota_uncounted(&used_up));
        assert!(is_quota_uncounted(&uncounted) && !is_quota_exceeded(&uncounted));
        assert!(!is_quota_exceeded(&rbac) && !is_quota_uncounted(&rbac));
    }

    #[test]
    fn an_apiserver_that_cannot_answer_now_is_unavailable_and_a_refusal_is_not() {
        assert!(is_unavailable(&api_error(
            503,
            "the server is currently unable to handle the request"
        )));
        assert!(is_unavailable(&api_error(
            504,
            "the server was unable to return a response in the time allotted"
        )));
        assert!(is_unavailable(&kube::Error::Service(
            "connection refused".into()
        )));
        assert!(!is_unavailable(&api_error(403, "forbidden")));
        assert!(!is_unavailable(&api_error(404, "not found")));
        assert!(!is_unavailable(&api_error(422, "invalid")));
    }
}
