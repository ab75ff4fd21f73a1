//! The admin commands' client of a running console: finds it, authenticates with the admin
//! token, and turns the console's error bodies into errors that say what to fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tasknode_protocol::wire::ErrorBody;

use crate::cli::Global;
use crate::commands::default_data_dir;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the console at {url}: {source}; is `tasknode-console serve` running there? (set --console or TASKNODE_CONSOLE)"
    )]
    Unreachable {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the TLS handshake with the console at {url} failed: {detail}; this command trusts the system's CAs and the console CA in {}{}: pass --data with the console's data directory, or --console with a name its certificate holds",
        .ca.display(),
        missing(.ca)
    )]
    Tls {
        url: String,
        detail: String,
        ca: PathBuf,
    },
    #[error("console refused the request (HTTP {status}){}: {message}", field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
    Refused {
        status: u16,
        field: Option<String>,
        message: String,
    },
    #[error("unexpected answer from the console at {url} (HTTP {status}): {message}")]
    BadAnswer {
        url: Url,
        status: u16,
        message: String,
    },
    #[error("--console: {value:?} is not a console URL; use http://HOST:PORT or https://HOST:PORT")]
    BadUrl { value: String },
    #[error(
        "reading the admin token from {path}: {source}; pass --token-file or set TASKNODE_TOKEN_FILE"
    )]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// " (not found)" when `path` does not exist, for an error that names it.
fn missing(path: &Path) -> &'static str {
    if path.exists() { "" } else { " (not found)" }
}

pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    token: String,
    /// The console CA this client trusts when the file exists (DATA/tls/ca.pem).
    ca: PathBuf,
}

/// Parses a console URL, accepting only http and https with a host.
pub fn parse_console_url(value: &str) -> Result<Url, ClientError> {
    let bad = || ClientError::BadUrl {
        value: value.to_owned(),
    };
    let url = Url::parse(value).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    Ok(url)
}

impl AdminClient {
    /// Resolves the console URL and admin token from flags, environment and the data directory.
    pub fn resolve(global: &Global) -> Result<AdminClient, ClientError> {
        let data = global.data.clone().unwrap_or_else(default_data_dir);
        let url = match &global.console {
            Some(url) => url.clone(),
            None => std::fs::read_to_string(data.join("console.url"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned()),
        };
        let base = parse_console_url(&url)?;
        let token_path = global
            .token_file
            .clone()
            .unwrap_or_else(|| data.join("admin.token"));
        let token = read_token(&token_path)?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        // A console serving with --tls: trust its CA, as the servers it installs do.
        let ca_path = data.join("tls").join("ca.pem");
        if base.scheme() == "https"
            && let Ok(pem) = std::fs::read(&ca_path)
        {
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                ClientError::Unreachable {
                    url: base.clone(),
                    source,
                }
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|source| ClientError::Unreachable {
            url: base.clone(),
            source,
        })?;
        Ok(AdminClient {
            http,
            base,
            token,
            ca: ca_path,
        })
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self
            .http
            .get(url.clone())
            .bearer_auth(&self.token)
            .query(query);
        self.send(url, req).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self
            .http
            .post(url.clone())
            .bearer_auth(&self.token)
            .json(body);
        self.send(url, req).await
    }

    /// A POST of a JSON document sent as it is (not re-encoded), e.g. a signed file.
    pub async fn post_json_text<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let req = self
            .http
            .post(url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(url, req).await
    }

    /// A GET whose successful answer is raw bytes, returned with its headers.
    pub async fn get_bytes(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let url = self.url(path);
        let req = self
            .http
            .get(url.clone())
            .bearer_auth(&self.token)
            .query(query);
        let (status, headers, bytes) = self.exchange(&url, req).await?;
        if status.is_success() {
            return Ok((headers, bytes.to_vec()));
        }
        Err(refusal(url, status, &bytes))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: Url,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let (status, _, bytes) = self.exchange(&url, req).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
                url,
                status: status.as_u16(),
                message: e.to_string(),
            });
        }
        Err(refusal(url, status, &bytes))
    }

    /// Sends a request and reads the whole answer, whatever its status.
    async fn exchange(
        &self,
        url: &Url,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, axum::body::Bytes), ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            url: url.clone(),
            source,
        };
        let res = req.send().await.map_err(|e| match tls_failure(&e) {
            Some(detail) => ClientError::Tls {
                url: url.to_string(),
                detail,
                ca: self.ca.clone(),
            },
            None => unreachable(e),
        })?;
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.map_err(unreachable)?;
        Ok((status, headers, bytes))
    }
}

/// What TLS said, when a request failed in its handshake: a certificate this client does not
/// trust, or a handshake the console refused. Asking again changes neither.
fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's source() skips the error it wraps (here an io::Error wrapping
        // rustls's), so the walk steps into it instead.
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped),
            None => cause.source(),
        };
    }
    None
}

/// The error for a non-success answer: the console's own words where it gave them.
fn refusal(url: Url, status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) if status.is_client_error() => ClientError::Refused {
            status: status.as_u16(),
            field: body.error.field,
            message: body.error.message,
        },
        Ok(body) => ClientError::BadAnswer {
            url,
            status: status.as_u16(),
            message: body.error.message,
        },
        Err(_) => ClientError::BadAnswer {
            url,
            status: status.as_u16(),
            message: describe(status, bytes),
        },
    }
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(200).collect();
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("no body").to_owned()
    } else {
        text
    }
}

fn read_token(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::Token {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim().to_owned())
}
