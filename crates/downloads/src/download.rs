//! One download: to `<name>.part`, resumed with HTTP `Range` after a dropped connection (from zero only when the
//! server cannot do ranges), checked against the free disk space before it starts, verified with SHA-256, then
//! renamed into place. Cancelling, a wrong checksum or a full disk leave no file behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::remote::{self, Reach};

/// What to fetch and where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct DownloadRequest {
    pub url: String,
    /// The folder the file lands in.
    pub dest_dir: String,
    /// The file name [default: the URL's last path segment].
    pub file_name: Option<String>,
    /// Expected SHA-256 (hex). Without it, Hugging Face's own hash of the file is used where the server gives one.
    pub sha256: Option<String>,
    /// Expected size in bytes. A server offering another size is refused before a byte is written; when the
    /// server gives no length, this one is used for the disk check and to notice a body that ends early.
    #[serde(default)]
    pub size: Option<f64>,
    /// A Hugging Face token for gated repositories (sent to huggingface.co only).
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// Which hosts it may reach, redirects included (set by the door that starts it, never by a client).
    #[serde(skip)]
    pub reach: Reach,
    /// The most bytes the file may have; a server announcing more is refused, a body running past it is cut.
    #[serde(skip)]
    pub max_bytes: Option<u64>,
}

/// How a download is going.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum DownloadStage {
    Started {
        url: String,
        file: String,
        /// Bytes in all, when the server says.
        total_bytes: Option<f64>,
        /// Bytes already on disk from an earlier attempt.
        resumed_from: f64,
    },
    Progress {
        bytes: f64,
        total_bytes: Option<f64>,
        bytes_per_second: f64,
        eta_seconds: Option<f64>,
    },
    /// The connection dropped; trying again from `resume_from` after a pause.
    Retrying {
        attempt: u32,
        reason: String,
        resume_from: f64,
    },
    /// The server ignored the range request: starting over from zero.
    Restarted {
        reason: String,
    },
    Verifying,
    Done {
        path: String,
        /// The file's SHA-256 (empty for a file that was already there).
        sha256: String,
        /// Whether it was checked against an expected hash (given, from the catalog, or from Hugging Face).
        verified: bool,
    },
    Failed {
        error: String,
    },
    Cancelled,
}

/// Why a download failed. Messages say what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{path} already exists; remove it first or pick another file name")]
    Exists { path: String },
    #[error("not enough disk space in {dir}: the file needs {needed} bytes, {available} are free")]
    DiskFull {
        dir: String,
        needed: u64,
        available: u64,
    },
    #[error("{url} is {offered} bytes on the server, but {expected} were expected: the file changed upstream or the catalog is out of date; nothing was downloaded")]
    SizeMismatch {
        url: String,
        expected: u64,
        offered: u64,
    },
    #[error("{path} is already there but is {size} bytes, not the {expected} bytes of the file to download; move it aside and pull again")]
    Occupied {
        path: String,
        size: u64,
        expected: u64,
    },
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}; the file was removed")]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{url} needs permission ({status}): for a gated Hugging Face model accept its licence on the model page and set HF_TOKEN")]
    Unauthorized { url: String, status: u16 },
    #[error("{url} answered {status}")]
    Http { url: String, status: u16 },
    #[error("{url} is larger than the {limit} bytes a download may have ({reason})")]
    TooLarge {
        url: String,
        limit: u64,
        reason: String,
    },
    #[error("the download of {url} kept failing: {reason}")]
    Network { url: String, reason: String },
    #[error("{0}")]
    Io(String),
    #[error("cancelled")]
    Cancelled,
}

/// How often to retry a dropped connection that made no progress, and the pauses between tries.
const MAX_FAILURES_WITHOUT_PROGRESS: u32 = 6;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(250 * (1 << failures.min(5))).min(Duration::from_secs(8))
}

/// The file name a URL suggests (its last path segment, without query), made safe for a file system.
pub fn file_name_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let last = path.rsplit('/').next()?;
    let decoded = percent_decode(last);
    let safe: String = decoded
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let safe = safe.trim().trim_start_matches('.').to_string();
    (!safe.is_empty()).then_some(safe)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_hugging_face(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h == "huggingface.co" || h.ends_with(".huggingface.co"))
        })
        .unwrap_or(false)
}

fn valid_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hugging Face gives an LFS file's SHA-256 as `X-Linked-Etag` on the un-followed `resolve` URL.
async fn hugging_face_sha256(url: &str, token: Option<&str>) -> Option<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .ok()?;
    let mut request = client.head(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.ok()?;
    let etag = response
        .headers()
        .get("x-linked-etag")
        .or_else(|| response.headers().get("etag"))?
        .to_str()
        .ok()?
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase();
    valid_sha256(&etag).then_some(etag)
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> DownloadError {
    DownloadError::Io(format!("{context}: {e}"))
}

/// Hashes what an earlier attempt left in `.part`, so a resumed file is verified in full.
async fn hash_existing(path: &Path, hasher: &mut Sha256) -> Result<u64, DownloadError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(path.display(), e)),
    };
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .map_err(|e| io(path.display(), e))?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
}

/// Runs one download to the end, reporting every stage to `on_stage` (the last is `done`, `failed` or
/// `cancelled`). Setting `cancel` to true stops it and removes the partial file.
pub async fn download(
    request: &DownloadRequest,
    cancel: watch::Receiver<bool>,
    on_stage: &mut (dyn FnMut(DownloadStage) + Send),
) -> Result<PathBuf, DownloadError> {
    let result = run(request, cancel, on_stage).await;
    on_stage(match &result {
        Ok(_) => return result,
        Err(DownloadError::Cancelled) => DownloadStage::Cancelled,
        Err(e) => DownloadStage::Failed {
            error: e.to_string(),
        },
    });
    result
}

async fn run(
    request: &DownloadRequest,
    mut cancel: watch::Receiver<bool>,
    on_stage: &mut (dyn FnMut(DownloadStage) + Send),
) -> Result<PathBuf, DownloadError> {
    let url = request.url.trim();
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::Invalid {
        field: "url",
        message: format!("'{url}' is not a URL ({e})"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DownloadError::Invalid {
            field: "url",
            message: format!("'{url}': only http:// and https:// URLs can be downloaded"),
        });
    }
    let name = match &request.file_name {
        Some(name) => file_name_from_url(name)
            .filter(|n| n == name.trim())
            .ok_or_else(|| DownloadError::Invalid {
                field: "file_name",
                message: format!("'{name}' is not a plain file name"),
            })?,
        None => file_name_from_url(url).ok_or_else(|| DownloadError::Invalid {
            field: "url",
            message: format!("'{url}' names no file; give a file name"),
        })?,
    };
    let mut expected = match &request.sha256 {
        Some(sha) if valid_sha256(sha.trim()) => Some(sha.trim().to_ascii_lowercase()),
        Some(sha) => {
            return Err(DownloadError::Invalid {
                field: "sha256",
                message: format!("'{sha}' is not a SHA-256 (64 hex digits)"),
            })
        }
        None => None,
    };
    let expected_size = match request.size {
        None => None,
        Some(size) if size.is_finite() && size > 0.0 && size.fract() == 0.0 => Some(size as u64),
        Some(size) => {
            return Err(DownloadError::Invalid {
                field: "size",
                message: format!("{size} is not a size in bytes (a whole number above 0)"),
            })
        }
    };
    let dir = PathBuf::from(&request.dest_dir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io(dir.display(), e))?;
    let target = dir.join(&name);
    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        return Err(DownloadError::Exists {
            path: target.display().to_string(),
        });
    }
    let part = dir.join(format!("{name}.part"));
    let token = request.token.as_deref().filter(|_| is_hugging_face(url));
    if expected.is_none() && is_hugging_face(url) {
        expected = hugging_face_sha256(url, token).await;
    }

    let mut client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if request.reach == Reach::PublicOnly {
        client = client
            .dns_resolver(std::sync::Arc::new(remote::PublicOnlyResolver))
            .no_proxy();
    }
    let client = client
        .build()
        .map_err(|e| DownloadError::Io(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut offset = hash_existing(&part, &mut hasher).await?;
    let mut failures = 0u32;
    let mut announced = false;
    let mut attempt = 0u32;
    let total: u64 = loop {
        if *cancel.borrow() {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(DownloadError::Cancelled);
        }
        attempt += 1;
        let sent = tokio::select! {
            sent = send(&client, &parsed, request, offset) => sent,
            _ = cancelled(&mut cancel) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(DownloadError::Cancelled);
            }
        };
        let response = match sent {
            Ok(r) => r,
            Err(Sent::Refused(e)) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
            Err(Sent::Failed(reason)) => {
                failures += 1;
                if failures > MAX_FAILURES_WITHOUT_PROGRESS {
                    return Err(DownloadError::Network {
                        url: url.into(),
                        reason,
                    });
                }
                on_stage(DownloadStage::Retrying {
                    attempt,
                    reason,
                    resume_from: offset as f64,
                });
                pause_unless_cancelled(&mut cancel, retry_pause(failures), &part).await?;
                continue;
            }
        };
        let status = response.status().as_u16();
        let total = match status {
            206 => {
                let range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let start: Option<u64> = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse().ok());
                let total: Option<u64> = range.rsplit('/').next().and_then(|t| t.parse().ok());
                if start != Some(offset) {
                    // A range we did not ask for: trust nothing and start over.
                    offset = 0;
                    hasher = Sha256::new();
                    let _ = tokio::fs::remove_file(&part).await;
                    on_stage(DownloadStage::Restarted {
                        reason: format!("the server sent range '{range}'"),
                    });
                    continue;
                }
                total
            }
            200 => {
                if offset > 0 {
                    offset = 0;
                    hasher = Sha256::new();
                    on_stage(DownloadStage::Restarted {
                        reason: "the server cannot resume (no range support); starting over".into(),
                    });
                }
                response.content_length()
            }
            416 if offset > 0 => {
                // Asked for bytes past the end: the .part is already complete (or bigger than the file).
                let total = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|t| t.parse::<u64>().ok());
                if total == Some(offset) {
                    break offset;
                }
                offset = 0;
                hasher = Sha256::new();
                let _ = tokio::fs::remove_file(&part).await;
                on_stage(DownloadStage::Restarted {
                    reason: "the partial file does not fit the server's file".into(),
                });
                continue;
            }
            401 | 403 => {
                return Err(DownloadError::Unauthorized {
                    url: url.into(),
                    status,
                })
            }
            500..=599 => {
                failures += 1;
                if failures > MAX_FAILURES_WITHOUT_PROGRESS {
                    return Err(DownloadError::Http {
                        url: url.into(),
                        status,
                    });
                }
                on_stage(DownloadStage::Retrying {
                    attempt,
                    reason: format!("the server answered {status}"),
                    resume_from: offset as f64,
                });
                pause_unless_cancelled(&mut cancel, retry_pause(failures), &part).await?;
                continue;
            }
            _ => {
                return Err(DownloadError::Http {
                    url: url.into(),
                    status,
                })
            }
        };
        if let (Some(expected), Some(offered)) = (expected_size, total) {
            if offered != expected {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(DownloadError::SizeMismatch {
                    url: url.into(),
                    expected,
                    offered,
                });
            }
        }
        let total = total.or(expected_size);
        if let (Some(limit), Some(total)) = (request.max_bytes, total) {
            if total > limit {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(DownloadError::TooLarge {
                    url: url.into(),
                    limit,
                    reason: format!("the server announces {total} bytes"),
                });
            }
        }
        if !announced {
            announced = true;
            on_stage(DownloadStage::Started {
                url: url.into(),
                file: name.clone(),
                total_bytes: total.map(|t| t as f64),
                resumed_from: offset as f64,
            });
        }
        // Room for what is still to come, before writing a byte of it.
        if let Some(total) = total {
            let needed = total.saturating_sub(offset);
            let available = fs4::available_space(&dir).map_err(|e| io(dir.display(), e))?;
            if needed > available {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(DownloadError::DiskFull {
                    dir: dir.display().to_string(),
                    needed,
                    available,
                });
            }
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(offset > 0)
            .truncate(offset == 0)
            .open(&part)
            .await
            .map_err(|e| io(part.display(), e))?;
        let mut body = response.bytes_stream();
        let started = Instant::now();
        let started_at = offset;
        let mut last_report = Instant::now() - PROGRESS_EVERY;
        let mut dropped = None;
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = cancel.changed() => {
                    drop(file);
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(DownloadError::Cancelled);
                }
            };
            match chunk {
                None => break,
                Some(Err(e)) => {
                    dropped = Some(e.to_string());
                    break;
                }
                Some(Ok(bytes)) => {
                    if let Some(limit) = request.max_bytes {
                        if offset + bytes.len() as u64 > limit {
                            drop(file);
                            let _ = tokio::fs::remove_file(&part).await;
                            return Err(DownloadError::TooLarge {
                                url: url.into(),
                                limit,
                                reason: "the server sent more than that".into(),
                            });
                        }
                    }
                    if let Err(e) = file.write_all(&bytes).await {
                        drop(file);
                        let _ = tokio::fs::remove_file(&part).await;
                        if e.raw_os_error() == Some(28)
                            || e.kind() == std::io::ErrorKind::StorageFull
                        {
                            return Err(DownloadError::DiskFull {
                                dir: dir.display().to_string(),
                                needed: total.unwrap_or(0).saturating_sub(offset),
                                available: 0,
                            });
                        }
                        return Err(io(part.display(), e));
                    }
                    hasher.update(&bytes);
                    offset += bytes.len() as u64;
                    failures = 0;
                    if last_report.elapsed() >= PROGRESS_EVERY {
                        last_report = Instant::now();
                        let seconds = started.elapsed().as_secs_f64().max(1e-3);
                        let rate = (offset - started_at) as f64 / seconds;
                        on_stage(DownloadStage::Progress {
                            bytes: offset as f64,
                            total_bytes: total.map(|t| t as f64),
                            bytes_per_second: rate,
                            eta_seconds: total
                                .filter(|_| rate > 0.0)
                                .map(|t| t.saturating_sub(offset) as f64 / rate),
                        });
                    }
                }
            }
        }
        file.flush().await.map_err(|e| io(part.display(), e))?;
        file.sync_all().await.map_err(|e| io(part.display(), e))?;
        drop(file);
        let short = total.is_some_and(|t| offset < t);
        if dropped.is_none() && !short {
            break offset;
        }
        failures += 1;
        let reason = dropped.unwrap_or_else(|| "the connection closed early".into());
        if failures > MAX_FAILURES_WITHOUT_PROGRESS {
            return Err(DownloadError::Network {
                url: url.into(),
                reason,
            });
        }
        on_stage(DownloadStage::Retrying {
            attempt,
            reason,
            resume_from: offset as f64,
        });
        pause_unless_cancelled(&mut cancel, retry_pause(failures), &part).await?;
    };
    on_stage(DownloadStage::Progress {
        bytes: total as f64,
        total_bytes: Some(total as f64),
        bytes_per_second: 0.0,
        eta_seconds: Some(0.0),
    });
    on_stage(DownloadStage::Verifying);
    let actual = hex(&hasher.finalize());
    let verified = expected.is_some();
    if let Some(expected) = expected {
        if expected != actual {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(DownloadError::ChecksumMismatch {
                file: name,
                expected,
                actual,
            });
        }
    }
    tokio::fs::rename(&part, &target)
        .await
        .map_err(|e| io(target.display(), e))?;
    if !verified {
        tracing::warn!(url, sha256 = %actual, "downloaded without an expected SHA-256 to check against");
    }
    on_stage(DownloadStage::Done {
        path: target.display().to_string(),
        sha256: actual,
        verified,
    });
    Ok(target)
}

/// Resolves once the download is cancelled (never, when nobody can cancel it any more).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The pause before the next try; a cancel during it stops the download at once (and removes the partial file)
/// instead of after the pause.
async fn pause_unless_cancelled(
    cancel: &mut watch::Receiver<bool>,
    pause: Duration,
    part: &Path,
) -> Result<(), DownloadError> {
    tokio::select! {
        _ = tokio::time::sleep(pause) => Ok(()),
        _ = cancelled(cancel) => {
            let _ = tokio::fs::remove_file(part).await;
            Err(DownloadError::Cancelled)
        }
    }
}

/// How a request went before its body: an answer, a refusal that retrying cannot change, or a failure worth a retry.
enum Sent {
    Refused(DownloadError),
    Failed(String),
}

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// GETs `start` (from `offset` on), following redirects itself so that each hop is checked against the request's
/// reach before it is contacted; the Hugging Face token goes to huggingface.co only.
async fn send(
    client: &reqwest::Client,
    start: &reqwest::Url,
    request: &DownloadRequest,
    offset: u64,
) -> Result<reqwest::Response, Sent> {
    let refused = |message: String| {
        Sent::Refused(DownloadError::Invalid {
            field: "url",
            message,
        })
    };
    let mut url = start.clone();
    for _ in 0..=MAX_REDIRECTS {
        remote::check(&url, request.reach).await.map_err(refused)?;
        let mut get = client.get(url.clone());
        if let Some(token) = request
            .token
            .as_deref()
            .filter(|_| is_hugging_face(url.as_str()))
        {
            get = get.bearer_auth(token);
        }
        if offset > 0 {
            get = get.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let response = match get.send().await {
            Ok(response) => response,
            Err(e) => {
                return Err(match remote::not_public(&e) {
                    Some(reason) => refused(format!(
                    "{url}: {reason}; over the API DiffuGen downloads from public addresses only"
                )),
                    None => Sent::Failed(e.to_string()),
                })
            }
        };
        if !response.status().is_redirection() {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                Sent::Refused(DownloadError::Http {
                    url: url.to_string(),
                    status: response.status().as_u16(),
                })
            })?;
        url = url.join(location).map_err(|e| {
            refused(format!(
                "{url} redirects to '{location}', which is not a URL ({e})"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!(
                "a redirect leads to {url}: only http(s) URLs are followed"
            )));
        }
    }
    Err(refused(format!(
        "{start} redirects more than {MAX_REDIRECTS} times"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_url_and_are_made_safe() {
        assert_eq!(
            file_name_from_url(
                "https://huggingface.co/a/b/resolve/main/ae.safetensors?download=true"
            )
            .unwrap(),
            "ae.safetensors"
        );
        assert_eq!(
            file_name_from_url("https://x/y/flux%201.gguf").unwrap(),
            "flux 1.gguf"
        );
        assert_eq!(
            file_name_from_url("https://x/y/..%2F..%2Fetc"),
            Some("_.._etc".into())
        );
        assert_eq!(file_name_from_url("https://x/"), None);
    }
}
