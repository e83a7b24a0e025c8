//! Extractors that answer bad input in the API's own error format instead of axum's plain
//! text rejections.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequest, FromRequestParts, Request},
    http::{request::Parts, StatusCode},
};
use std::{cell::Cell, collections::BTreeMap, marker::PhantomData};

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::errors::{codes, ApiError};

/// The raw body of a JSON request. Parse it with [`parse_json`]: types may borrow from it, so
/// large file contents are not copied a second time.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(JsonBody(bytes)),
            Err(rejection) => Err(body_rejection(rejection)),
        }
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge {
            code: codes::PAYLOAD_TOO_LARGE,
            field: None,
            message: "request body is too large".into(),
            limit: 0,
        }
    } else {
        ApiError::InvalidJson(rejection.body_text())
    }
}

/// Parses a JSON body. Syntax errors are `INVALID_JSON`; a well-formed body of the wrong shape
/// is `INVALID_REQUEST` naming the field (`timeout`, `files[0].path`).
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() && path != "." {
            ApiError::invalid(path, strip_position(&inner))
        } else if inner.is_data() {
            ApiError::invalid("body", strip_position(&inner))
        } else {
            ApiError::InvalidJson(inner.to_string())
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok(value)
}

fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// How many items of a request's lists the parser keeps: one more than the tier allows, so
/// that the tier's check still sees too many and names it (`TOO_MANY_FILES`,
/// `TOO_MANY_ENV_VARS`), while a body with a million tiny items never allocates them all.
#[derive(Clone, Copy, Debug)]
pub struct ItemLimits {
    /// Most `files` the tier allows.
    pub files: usize,
    /// Most `env` entries the tier allows.
    pub env: usize,
}

/// The list limits of a tier.
pub fn item_limits(limits: &super::tiers::TierLimits) -> ItemLimits {
    ItemLimits {
        files: limits.files_per_request,
        env: limits.env_vars,
    }
}

thread_local! {
    // Set only while `parse_json_bounded` runs; deserializing is synchronous.
    static ITEM_LIMITS: Cell<Option<ItemLimits>> = const { Cell::new(None) };
}

/// [`parse_json`], keeping at most one item past `limits` of the lists that use
/// [`bounded_seq`] (`files`) and [`bounded_map`] (`env`). The items past those are read and
/// dropped.
pub fn parse_json_bounded<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    limits: ItemLimits,
) -> Result<T, ApiError> {
    ITEM_LIMITS.with(|l| l.set(Some(limits)));
    let parsed = parse_json(bytes);
    ITEM_LIMITS.with(|l| l.set(None));
    parsed
}

fn kept(pick: fn(ItemLimits) -> usize) -> usize {
    ITEM_LIMITS
        .with(Cell::get)
        .map_or(usize::MAX, |limits| pick(limits).saturating_add(1))
}

/// Deserializes a list of files, keeping at most one past the tier's count (see
/// [`parse_json_bounded`]).
pub fn bounded_seq<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T>(usize, PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0).min(64));
            while items.len() < self.0 {
                match seq.next_element()? {
                    Some(item) => items.push(item),
                    None => return Ok(items),
                }
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(items)
        }
    }
    deserializer.deserialize_seq(Bounded(kept(|l| l.files), PhantomData))
}

/// Deserializes the env map, keeping at most one entry past the tier's count (see
/// [`parse_json_bounded`]).
pub fn bounded_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Bounded(usize);
    impl<'de> Visitor<'de> for Bounded {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while entries.len() < self.0 {
                match map.next_entry::<String, String>()? {
                    Some((name, value)) => entries.insert(name, value),
                    None => return Ok(entries),
                };
            }
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Bounded(kept(|l| l.env)))
}

/// A JSON body deserialized into an owned `T`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(bytes) = JsonBody::from_request(req, state).await?;
        // An empty body is an empty object: `POST /sessions/create` needs no fields.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse_json(b"{}").map(ApiJson);
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Query parameters; a bad one is `INVALID_REQUEST`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[allow(dead_code)]
        session_id: String,
        #[allow(dead_code)]
        timeout: Option<u32>,
    }

    #[test]
    fn syntax_and_shape_errors_differ() {
        let syntax = parse_json::<Body>(b"{\"sessionId\":").expect_err("bad");
        assert!(matches!(syntax, ApiError::InvalidJson(_)));
        let shape = parse_json::<Body>(br#"{"sessionId":"s","timeout":"x"}"#).expect_err("bad");
        assert!(
            matches!(&shape, ApiError::Invalid { field, .. } if field == "timeout"),
            "{shape:?}"
        );
        let negative = parse_json::<Body>(br#"{"sessionId":"s","timeout":-1}"#).expect_err("bad");
        assert!(matches!(&negative, ApiError::Invalid { field, .. } if field == "timeout"));
        assert!(parse_json::<Body>(br#"{"sessionId":"s"} x"#).is_err());
    }

    #[test]
    fn huge_lists_are_not_allocated_past_the_tier() {
        let files: Vec<_> = (0..10_000)
            .map(|i| serde_json::json!({"path": format!("f{i}"), "content": ""}))
            .collect();
        let env: serde_json::Map<_, _> = (0..10_000)
            .map(|i| (format!("V{i}"), serde_json::json!("x")))
            .collect();
        let body = serde_json::json!({"sessionId": "s", "code": "1", "files": files, "env": env})
            .to_string();
        let limits = ItemLimits { files: 2, env: 5 };
        let request: crate::api::model::ExecuteRequest<'_> =
            parse_json_bounded(body.as_bytes(), limits).expect("parses");
        assert_eq!(
            request.files.len(),
            3,
            "one past the limit, so it is refused by name"
        );
        assert_eq!(request.env.len(), 6);
        let unbounded: crate::api::model::ExecuteRequest<'_> =
            parse_json(body.as_bytes()).expect("parses");
        assert_eq!(unbounded.files.len(), 10_000);
        let bad = parse_json_bounded::<crate::api::model::ExecuteRequest<'_>>(
            br#"{"sessionId":"s","env":{"A":1}}"#,
            limits,
        );
        assert!(matches!(bad, Err(ApiError::Invalid { .. })), "{bad:?}");
    }
}
