//! Files of a request: validated and sized before anything is created, then delivered either
//! inline in the Execution (small) or streamed into the workspace through
//! `kubexec-runner write-files` over exec stdin (anything larger), decoded chunk by chunk so the
//! only full copy in memory is the request body itself.

use std::borrow::Cow;

use base64::{engine::general_purpose::STANDARD, Engine};
use kubexec_runner::protocol::{FilesWritten, Staged, WriteFilesFrame};

use super::{
    cluster::Cluster,
    errors::{codes, ApiError, ApiResult},
    model::{Encoding, FileInput},
    sandbox_errors::from_sandbox,
    tiers::TierLimits,
};
use crate::{
    crd::{validate::workspace_path, FileEncoding, FileSpec, MAX_INLINE_FILE_BYTES},
    sandbox::{transfer_deadline, within, SandboxError},
};

/// Files ride inline in the Execution only up to this total (as encoded in the request), and
/// each only up to [`MAX_INLINE_FILE_BYTES_API`]: anything larger is streamed into the
/// workspace, so that Executions stay small in etcd and in every cache that holds them.
pub const MAX_INLINE_TOTAL_BYTES: usize = 64 * 1024;
/// Largest file that rides inline in an Execution the api creates (the CRD itself allows
/// [`MAX_INLINE_FILE_BYTES`] for kubectl users).
pub const MAX_INLINE_FILE_BYTES_API: usize = 16 * 1024;
/// Largest code that rides inline in an Execution the api creates; larger code is staged in the
/// workspace first ([`stage_code`]) and named by the Execution's `stagedCode`.
pub const MAX_INLINE_CODE_BYTES: usize = 16 * 1024;
/// Decoded bytes per chunk on the streamed path.
const CHUNK_BYTES: usize = 64 * 1024;

/// A file that passed validation.
#[derive(Debug)]
pub struct PlannedFile<'r> {
    /// Path relative to `/workspace`.
    pub path: String,
    /// Content as sent.
    pub content: &'r str,
    /// How `content` is encoded.
    pub encoding: Encoding,
    /// Decoded size in bytes.
    pub size: u64,
}

/// How the files of a request reach the workspace.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Delivery {
    /// In the Execution's spec.
    Inline,
    /// Through `write-files`, before the Execution is created.
    Streamed,
}

/// Checks every file of a request against the tier: count, paths, encoding and size. Returns
/// them ready to deliver; nothing is written by this.
pub fn plan_files<'r>(
    files: &'r [FileInput<'r>],
    limits: &TierLimits,
) -> ApiResult<Vec<PlannedFile<'r>>> {
    if files.len() > limits.files_per_request {
        return Err(ApiError::invalid_with(
            codes::TOO_MANY_FILES,
            "files",
            format!(
                "at most {} files per request on this tier, got {}",
                limits.files_per_request,
                files.len()
            ),
        ));
    }
    let mut planned = Vec::with_capacity(files.len());
    let mut seen = std::collections::HashSet::new();
    for (i, file) in files.iter().enumerate() {
        let field = format!("files[{i}].path");
        let relative = workspace_path(&field, &file.path)
            .map_err(|e| ApiError::invalid_with(codes::INVALID_PATH, field.clone(), e.message))?;
        let relative = relative.trim_start_matches("./").to_string();
        if relative.split('/').any(|s| s == ".kubexec") {
            return Err(ApiError::invalid_with(
                codes::INVALID_PATH,
                field,
                ".kubexec is reserved for kubexec's own files",
            ));
        }
        if !seen.insert(relative.clone()) {
            return Err(ApiError::invalid_with(
                codes::INVALID_PATH,
                field,
                format!("{relative} appears twice"),
            ));
        }
        let size = decoded_size(file, i, limits.file_bytes)?;
        planned.push(PlannedFile {
            path: relative,
            content: &file.content,
            encoding: file.encoding,
            size,
        });
    }
    Ok(planned)
}

fn too_large(i: usize, limit: u64) -> ApiError {
    ApiError::TooLarge {
        code: codes::FILE_TOO_LARGE,
        field: Some(format!("files[{i}].content")),
        message: format!("files[{i}] is larger than the tier's file size limit of {limit} bytes"),
        limit,
    }
}

/// The decoded size of a file, checked against `limit`, with its base64 fully validated.
fn decoded_size(file: &FileInput<'_>, i: usize, limit: u64) -> ApiResult<u64> {
    match file.encoding {
        Encoding::Utf8 => {
            let size = file.content.len() as u64;
            if size > limit {
                return Err(too_large(i, limit));
            }
            Ok(size)
        }
        Encoding::Base64 => {
            // A cheap bound first, so an oversized upload is refused before it is decoded.
            let estimate = (file.content.len() as u64 / 4) * 3;
            if estimate > limit + 3 {
                return Err(too_large(i, limit));
            }
            let mut size = 0u64;
            for chunk in Base64Chunks::new(&file.content) {
                let chunk = chunk
                    .map_err(|message| ApiError::invalid(format!("files[{i}].content"), message))?;
                size += chunk.len() as u64;
            }
            if size > limit {
                return Err(too_large(i, limit));
            }
            Ok(size)
        }
    }
}

/// Decodes base64 a chunk at a time, skipping whitespace.
pub struct Base64Chunks<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Base64Chunks<'a> {
    /// Chunks of `text`.
    pub fn new(text: &'a str) -> Self {
        Self {
            rest: text.as_bytes(),
            failed: false,
        }
    }
}

impl Iterator for Base64Chunks<'_> {
    type Item = Result<Vec<u8>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let want = CHUNK_BYTES / 3 * 4;
        let mut encoded = Vec::with_capacity(want);
        while encoded.len() < want {
            let Some((&b, rest)) = self.rest.split_first() else {
                break;
            };
            self.rest = rest;
            if !b.is_ascii_whitespace() {
                encoded.push(b);
            }
        }
        if encoded.is_empty() {
            return None;
        }
        let decoded = STANDARD.decode(&encoded).map_err(|e| {
            self.failed = true;
            format!("is not valid base64: {e}")
        });
        Some(decoded)
    }
}

/// The decoded bytes of a planned file, in chunks.
pub fn content_chunks<'r>(
    file: &PlannedFile<'r>,
) -> Box<dyn Iterator<Item = Result<Cow<'r, [u8]>, String>> + Send + 'r> {
    match file.encoding {
        Encoding::Utf8 => Box::new(
            file.content
                .as_bytes()
                .chunks(CHUNK_BYTES)
                .map(|c| Ok(Cow::Borrowed(c))),
        ),
        Encoding::Base64 => Box::new(Base64Chunks::new(file.content).map(|r| r.map(Cow::Owned))),
    }
}

/// Inline when every file fits an Execution's inline limits and the total stays small.
pub fn choose_delivery(files: &[PlannedFile<'_>]) -> Delivery {
    let total: usize = files.iter().map(|f| f.content.len()).sum();
    let each_fits = files
        .iter()
        .all(|f| f.content.len() <= MAX_INLINE_FILE_BYTES_API.min(MAX_INLINE_FILE_BYTES));
    if each_fits && total <= MAX_INLINE_TOTAL_BYTES {
        Delivery::Inline
    } else {
        Delivery::Streamed
    }
}

/// The files as Execution spec entries.
pub fn inline_specs(files: &[PlannedFile<'_>]) -> Vec<FileSpec> {
    files
        .iter()
        .map(|f| FileSpec {
            path: f.path.clone(),
            content: f.content.to_string(),
            encoding: match f.encoding {
                Encoding::Utf8 => FileEncoding::Utf8,
                Encoding::Base64 => FileEncoding::Base64,
            },
        })
        .collect()
}

/// Streams files into the workspace of `pod` with `kubexec-runner write-files`: all of them
/// are renamed into place, or none.
pub async fn stream_files(
    cluster: &dyn Cluster,
    namespace: &str,
    pod: &str,
    files: &[PlannedFile<'_>],
    limits: &TierLimits,
) -> ApiResult<Vec<String>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let args = vec![
        "write-files".to_string(),
        "--max-file-bytes".to_string(),
        limits.file_bytes.to_string(),
        "--max-files".to_string(),
        limits.files_per_request.to_string(),
    ];
    let total: u64 = files.iter().map(|f| f.size).sum();
    let output = within(transfer_deadline(total), async {
        let mut upload = cluster.upload(namespace, pod, args).await?;
        let sent = async {
            for file in files {
                let header = WriteFilesFrame::File {
                    path: file.path.clone(),
                    size: file.size,
                    mode: None,
                };
                upload.write(&header.to_frame()).await?;
                for chunk in content_chunks(file) {
                    // Validated before: a decoding error here cannot happen, but is not a panic.
                    let chunk = chunk.map_err(SandboxError::Protocol)?;
                    upload.write(&chunk).await?;
                }
            }
            upload.write(&WriteFilesFrame::End.to_frame()).await
        }
        .await;
        // Even when sending failed, the helper's own error (on stderr) says best what went
        // wrong.
        let output = upload.finish(1 << 20).await?.check()?;
        sent.map(|()| output)
    })
    .await
    .map_err(|e| from_sandbox(e, codes::FILE_NOT_FOUND))?;
    let written: FilesWritten = serde_json::from_slice(&output.stdout)
        .map_err(ApiError::internal_from("parse write-files output"))?;
    Ok(written.files_written)
}

/// How a request's code reaches the sandbox: inline up to [`MAX_INLINE_CODE_BYTES`], else
/// staged.
pub fn code_delivery(code: Option<&str>) -> Delivery {
    match code {
        Some(code) if code.len() > MAX_INLINE_CODE_BYTES => Delivery::Streamed,
        _ => Delivery::Inline,
    }
}

/// Streams `code` into the workspace of `pod` as the staged code `name` (`kubexec-runner
/// stage`), for an Execution whose `stagedCode` names it.
pub async fn stage_code(
    cluster: &dyn Cluster,
    namespace: &str,
    pod: &str,
    name: &str,
    code: &str,
) -> ApiResult<()> {
    let args = vec![
        "stage".to_string(),
        name.to_string(),
        "--size".to_string(),
        code.len().to_string(),
    ];
    let output = within(transfer_deadline(code.len() as u64), async {
        let mut upload = cluster.upload(namespace, pod, args).await?;
        let sent = async {
            for chunk in code.as_bytes().chunks(CHUNK_BYTES) {
                upload.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        // The helper reads exactly `--size` bytes: it never waits for an EOF that an exec
        // stream may not deliver.
        let output = upload.finish(1 << 20).await?.check()?;
        sent.map(|()| output)
    })
    .await
    .map_err(|e| from_sandbox(e, codes::FILE_NOT_FOUND))?;
    let staged: Staged = serde_json::from_slice(&output.stdout)
        .map_err(ApiError::internal_from("parse stage output"))?;
    if staged.size != code.len() as u64 {
        return Err(ApiError::internal(
            "stage code",
            format!("staged {} of {} bytes", staged.size, code.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, encoding: Encoding) -> FileInput<'static> {
        FileInput {
            path: path.into(),
            content: Cow::Owned(content.into()),
            encoding,
        }
    }

    #[test]
    fn base64_is_decoded_in_chunks_ignoring_whitespace() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut encoded = STANDARD.encode(&data);
        encoded.insert(100, '\n');
        let decoded: Vec<u8> = Base64Chunks::new(&encoded)
            .flat_map(|c| c.expect("valid"))
            .collect();
        assert_eq!(decoded, data);
        assert!(Base64Chunks::new("no!").any(|c| c.is_err()));
    }

    #[test]
    fn files_are_checked_against_the_tier() {
        let limits = TierLimits {
            file_bytes: 10,
            files_per_request: 2,
            ..TierLimits::free()
        };
        let ok = [file("a.txt", "hello", Encoding::Utf8)];
        let planned = plan_files(&ok, &limits).expect("valid");
        assert_eq!(planned[0].size, 5);
        assert_eq!(choose_delivery(&planned), Delivery::Inline);

        let big = [file("a.txt", "12345678901", Encoding::Utf8)];
        assert!(matches!(
            plan_files(&big, &limits),
            Err(ApiError::TooLarge { .. })
        ));
        let big64 = [file("a.bin", &STANDARD.encode([0u8; 11]), Encoding::Base64)];
        assert!(matches!(
            plan_files(&big64, &limits),
            Err(ApiError::TooLarge { .. })
        ));

        let many = [
            file("a", "", Encoding::Utf8),
            file("b", "", Encoding::Utf8),
            file("c", "", Encoding::Utf8),
        ];
        assert!(matches!(
            plan_files(&many, &limits),
            Err(ApiError::Invalid {
                code: codes::TOO_MANY_FILES,
                ..
            })
        ));
        for bad in ["../x", "/etc/passwd", "a/../../b", ".kubexec/runs/x"] {
            let files = [file(bad, "", Encoding::Utf8)];
            assert!(
                matches!(plan_files(&files, &limits), Err(ApiError::Invalid { code: codes::INVALID_PATH, ref field, .. }) if field == "files[0].path"),
                "{bad}"
            );
        }
        let bad64 = [file("a.bin", "!!!!", Encoding::Base64)];
        assert!(matches!(
            plan_files(&bad64, &limits),
            Err(ApiError::Invalid { .. })
        ));
    }

    #[test]
    fn large_files_are_streamed() {
        let content = "x".repeat(MAX_INLINE_FILE_BYTES + 1);
        let files = [file("big.txt", &content, Encoding::Utf8)];
        let planned = plan_files(&files, &TierLimits::free()).expect("valid");
        assert_eq!(choose_delivery(&planned), Delivery::Streamed);
    }
}
