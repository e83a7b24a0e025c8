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
