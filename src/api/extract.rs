//! Extractors that answer bad input in the API's own error format instead of axum's plain
//! text rejections.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequest, FromRequestParts, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;
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
}
