//! A thin Redfish HTTP client: TLS with a chosen CA, session or basic auth, JSON requests, and
//! Redfish error bodies turned into [`DeviceError::Redfish`].

use super::config::{AuthMode, Credentials, RedfishConfig};
use crate::device::DeviceError;
use serde_json::Value;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::{Agent, SendBody};

/// The service root, below the base URL.
pub(crate) const SERVICE_ROOT: &str = "/redfish/v1";

/// Largest response body read (a Redfish resource is a few KiB).
const MAX_BODY: u64 = 16 << 20;

/// A response: status, `Location` and `X-Auth-Token` headers, and the body (JSON, or `Null`).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub token: Option<String>,
    pub body: Value,
    /// The body as text, when it was not JSON.
    pub text: String,
}

/// An open session: its token and the URI to delete it.
#[derive(Debug)]
struct Session {
    token: String,
    uri: Option<String>,
}

/// A connection to one BMC.
#[derive(Debug)]
pub(crate) struct Client {
    agent: Agent,
    base: String,
    credentials: Credentials,
    mode: AuthMode,
    sessions_uri: String,
    session: Mutex<Option<Session>>,
    upload_timeout: Duration,
}

/// Where a request goes and what it carries.
pub(crate) enum Body<'a> {
    /// No body.
    Empty,
    /// A JSON body.
    Json(&'a Value),
    /// A streamed body of known length and content type.
    Stream {
        content_type: String,
        len: u64,
        reader: &'a mut dyn std::io::Read,
    },
}

impl Client {
    /// A client for `config`'s BMC; no request is sent yet.
    pub fn new(config: &RedfishConfig, credentials: Credentials) -> Result<Client, DeviceError> {
        let base = config.base_url()?;
        let roots = match &config.ca_file {
            Some(path) => load_ca(path)?,
            None => RootCerts::WebPki,
        };
        let agent_config = Agent::config_builder()
            .http_status_as_error(false)
            .https_only(true)
            .max_redirects(0)
            .user_agent(concat!("entente-devices/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_millis(config.connect_timeout_ms)))
            .timeout_global(Some(Duration::from_millis(config.request_timeout_ms)))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        Ok(Client {
            agent: Agent::new_with_config(agent_config),
            base,
            credentials,
            mode: config.auth,
            sessions_uri: format!("{SERVICE_ROOT}/SessionService/Sessions"),
            session: Mutex::new(None),
            upload_timeout: Duration::from_millis(config.upload_timeout_ms),
        })
    }

    /// The absolute URL of `uri` (a path from the service, or already absolute).
    pub fn url(&self, uri: &str) -> String {
        if uri.starts_with("https://") || uri.starts_with("http://") {
            uri.to_string()
        } else {
            format!("{}{}", self.base, uri)
        }
    }

    /// Authenticates: opens a session (session mode, at `sessions_uri` when the service root
    /// names one) or checks the credentials on `probe_uri` (basic mode).
    pub fn log_in(
        &mut self,
        sessions_uri: Option<&str>,
        probe_uri: &str,
    ) -> Result<(), DeviceError> {
        if let Some(uri) = sessions_uri {
            self.sessions_uri = uri.to_string();
        }
        match self.mode {
            AuthMode::Session => self.open_session(),
            AuthMode::Basic => self
                .get(probe_uri, "checking the credentials on")
                .map(|_| ()),
        }
    }

    fn open_session(&self) -> Result<(), DeviceError> {
        let what = format!(
            "logging in as {} at {}",
            self.credentials.user,
            self.url(&self.sessions_uri)
        );
        let body = serde_json::json!({
            "UserName": self.credentials.user,
            "Password": self.credentials.password,
        });
        let reply = self.send_once("POST", &self.sessions_uri, Body::Json(&body), &what, false)?;
        if !(200..300).contains(&reply.status) {
            return Err(refusal(&what, &reply));
        }
        let token = reply.token.clone().ok_or_else(|| DeviceError::Redfish {
            what: what.clone(),
            status: Some(reply.status),
            message_id: None,
            message: "the service answered without an X-Auth-Token header".into(),
        })?;
        let uri = reply.location.clone().or_else(|| odata_id(&reply.body));
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(Session { token, uri });
        Ok(())
    }

    /// Ends the session, if one is open (best effort: the BMC expires it anyway).
    pub fn log_out(&self) {
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Session {
            token,
            uri: Some(uri),
        }) = session
        {
            let _ = self
                .agent
                .delete(self.url(&uri))
                .header("X-Auth-Token", token)
                .call();
        }
    }

    /// GETs `uri` and returns its JSON, or the service's refusal.
    pub fn get(&self, uri: &str, what: &str) -> Result<Value, DeviceError> {
        let what = format!("{what} {}", self.url(uri));
        let reply = self.send("GET", uri, Body::Empty, &what)?;
        if reply.status != 200 {
            return Err(refusal(&what, &reply));
        }
        Ok(reply.body)
    }

    /// Sends a request with authentication; in session mode, an expired session (401) is opened
    /// again once and the request repeated, unless its body was a stream.
    pub fn send(
        &self,
        method: &str,
        uri: &str,
        body: Body<'_>,
        what: &str,
    ) -> Result<Reply, DeviceError> {
        let json = match body {
            Body::Stream { .. } => return self.send_once(method, uri, body, what, true),
            Body::Json(v) => Some(v),
            Body::Empty => None,
        };
        let body = || json.map_or(Body::Empty, Body::Json);
        let reply = self.send_once(method, uri, body(), what, true)?;
        if reply.status == 401 && self.mode == AuthMode::Session {
            self.open_session()?;
            return self.send_once(method, uri, body(), what, true);
        }
        Ok(reply)
    }

    fn send_once(
        &self,
        method: &str,
        uri: &str,
        body: Body<'_>,
        what: &str,
        authenticated: bool,
    ) -> Result<Reply, DeviceError> {
        let url = self.url(uri);
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        if authenticated {
            request = match self.mode {
                AuthMode::Basic => request.header(
                    "Authorization",
                    format!(
                        "Basic {}",
                        base64(
                            format!("{}:{}", self.credentials.user, self.credentials.password)
                                .as_bytes()
                        )
                    ),
                ),
                AuthMode::Session => {
                    match &*self.session.lock().unwrap_or_else(PoisonError::into_inner) {
                        Some(s) => request.header("X-Auth-Token", s.token.clone()),
                        None => request,
                    }
                }
            };
        }
        let transport = |e: ureq::Error| DeviceError::Redfish {
            what: what.to_string(),
            status: None,
            message_id: None,
            message: e.to_string(),
        };
        let result = match body {
            Body::Empty => {
                let request = request.body(()).map_err(|e| transport(e.into()))?;
                self.agent.run(request)
            }
            Body::Json(v) => {
                let data = serde_json::to_vec(v).expect("a JSON value serialises");
                let request = request
                    .header("Content-Type", "application/json")
                    .body(data)
                    .map_err(|e| transport(e.into()))?;
                self.agent.run(request)
            }
            Body::Stream {
                content_type,
                len,
                reader,
            } => {
                let request = request
                    .header("Content-Type", content_type)
                    .header("Content-Length", len.to_string())
                    .body(SendBody::from_reader(reader))
                    .map_err(|e| transport(e.into()))?;
                let request = self
                    .agent
                    .configure_request(request)
                    .timeout_global(Some(self.upload_timeout))
                    .build();
                self.agent.run(request)
            }
        };
        let mut response = result.map_err(transport)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let location = header("Location");
        let token = header("X-Auth-Token");
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(transport)?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Reply {
            status,
            location,
            token,
            body,
            text,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.log_out();
    }
}

/// The CA certificates of a PEM file, for verifying the BMC.
fn load_ca(path: &std::path::Path) -> Result<RootCerts, DeviceError> {
    let bad = |reason: String| DeviceError::Config {
        what: format!("CA file {}", path.display()),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(format!("is not valid PEM: {e}")))? {
            PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(RootCerts::from(certs))
}

/// The `@odata.id` of a resource.
pub(crate) fn odata_id(v: &Value) -> Option<String> {
    v.get("@odata.id")?.as_str().map(str::to_string)
}

/// The `@odata.id` of the link `key` in a resource (`"UpdateService": {"@odata.id": ...}`).
pub(crate) fn link(v: &Value, key: &str) -> Option<String> {
    odata_id(v.get(key)?)
}

/// The service's refusal of a request, from its Redfish error body when it sent one.
pub(crate) fn refusal(what: &str, reply: &Reply) -> DeviceError {
    let (message_id, message) = error_message(&reply.body).unwrap_or_else(|| {
        let text: String = reply.text.trim().chars().take(300).collect();
        (None, text)
    });
    DeviceError::Redfish {
        what: what.to_string(),
        status: Some(reply.status),
        message_id,
        message,
    }
}

/// The first `@Message.ExtendedInfo` entry of a Redfish error body (MessageId, Message), or its
/// `code` and `message` when it has none.
fn error_message(body: &Value) -> Option<(Option<String>, String)> {
    let error = body.get("error")?;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(info) = error
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        if let Some(message) = str_of(info, "Message") {
            return Some((str_of(info, "MessageId"), message));
        }
    }
    Some((
        str_of(error, "code"),
        str_of(error, "message").unwrap_or_default(),
    ))
}

/// Standard base64 with padding (RFC 4648), for the basic auth header.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn error_bodies_give_the_first_extended_info_or_the_code() {
        let body = serde_json::json!({"error": {"code": "Base.1.0.GeneralError", "message": "x",
            "@Message.ExtendedInfo": [{"MessageId": "Update.1.0.ApplyFailed", "Message": "m"}]}});
        assert_eq!(
            error_message(&body),
            Some((Some("Update.1.0.ApplyFailed".into()), "m".into()))
        );
        let body = serde_json::json!({"error": {"code": "Base.1.0.InternalError", "message": "y"}});
        assert_eq!(
            error_message(&body),
            Some((Some("Base.1.0.InternalError".into()), "y".into()))
        );
        let reply = Reply {
            status: 500,
            location: None,
            token: None,
            body: Value::Null,
            text: "<html>oops</html>\n".into(),
        };
        let e = refusal("updating", &reply).to_string();
        assert_eq!(
            e,
            "redfish: updating: HTTP 500 Internal Server Error: <html>oops</html>"
        );
    }
}
